// offload::async_run: the completion-token form of run_in_executor: use_awaitable,
// use_future, callbacks bound to an executor, deferred; and its errors.
//
// Distributed under the Boost Software License, Version 1.0.
#include "catch.hpp"
#include "probes.hpp"

#include <offload/errors.hpp>
#include <offload/event_loop.hpp>
#include <offload/thread_pool.hpp>
#include <offload/to_thread.hpp>

// deferred: net::deferred from Asio 1.24 (Boost 1.80) on, in <asio.hpp>; before, only
// net::experimental::deferred, in its own header.
#if OFFLOAD_ASIO_VERSION < 102400
#if defined(OFFLOAD_USE_BOOST_ASIO)
#include <boost/asio/experimental/deferred.hpp>
#else
#include <asio/experimental/deferred.hpp>
#endif
#endif

#include <algorithm>
#include <exception>
#include <future>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

namespace net = offload::net;
using namespace std::chrono_literals;

// Polls `ctx` until `delivered()`; then one more poll finds no work left (no call counts as in
// flight) and stops the context. True when both happened.
template <typename Delivered>
bool delivers_then_runs_out(net::io_context& ctx, Delivered delivered) {
  const bool all = offload_test::eventually([&] {
    ctx.poll();
    return delivered();
  });
  ctx.poll();
  return all && ctx.stopped();
}
#if OFFLOAD_ASIO_VERSION >= 102400
constexpr auto deferred = net::deferred;
#else
constexpr auto deferred = net::experimental::deferred;
#endif
using offload_test::contains;
using offload_test::this_thread_name;

struct custom_error : std::runtime_error {
  explicit custom_error(int c) : std::runtime_error("custom_error"), code(c) {}
  int code;
};

struct no_default {
  no_default() = delete;
  explicit no_default(int v) : value(v) {}
  int value;
};
static_assert(!std::is_default_constructible_v<no_default>);

offload::thread_pool_options named_pool(const char* prefix, std::size_t max_workers = 2) {
  offload::thread_pool_options o;
  o.thread_name_prefix = prefix;
  o.max_workers = max_workers;
  return o;
}

// -- use_awaitable ---------------------------------------------------------------------------

offload::awaitable<void> with_use_awaitable(offload::thread_pool& pool) {
  auto& loop = offload::get_running_loop();
  static_assert(std::is_same_v<decltype(offload::async_run(
                                   pool, [] { return 1; }, net::use_awaitable)),
                               offload::awaitable<int>>);

  auto f = [] { return std::make_pair(this_thread_name(), 5); };
  const auto [name, value] = co_await offload::async_run(pool, f, net::use_awaitable);
  CHECK(value == 5);
  CHECK(name == "ar-1");
  CHECK(loop.in_loop_thread());
  CHECK(loop.get_executor().running_in_this_thread());

  bool caught = false;
  try {
    (void)co_await offload::async_run(
        pool, []() -> int { throw custom_error(4); }, net::use_awaitable);
  } catch (const custom_error& e) {
    caught = true;
    CHECK(e.code == 4);
  }
  CHECK(caught);
}

TEST_CASE("async_run with asio::use_awaitable runs f on the pool and resumes on the loop",
          "[async_run]") {
  offload::thread_pool pool(named_pool("ar"));
  offload::run(with_use_awaitable(pool));
}

// -- callbacks bound to an executor ----------------------------------------------------------

TEST_CASE(
    "async_run with a callback bound to an io_context's executor calls it there, with "
    "the value",
    "[async_run]") {
  offload::thread_pool pool(named_pool("cb"));
  net::io_context ctx;
  struct outcome {
    int calls = 0;
    int value = 0;
    std::exception_ptr error;
    std::thread::id callback_thread;
    std::thread::id worker;
  } r;
  offload::async_run(
      pool,
      [&r] {
        r.worker = std::this_thread::get_id();
        return 11;
      },
      net::bind_executor(ctx.get_executor(), [&r](std::exception_ptr e, int v) {
        ++r.calls;
        r.value = v;
        r.error = e;
        r.callback_thread = std::this_thread::get_id();
      }));
  // The pending call keeps the io_context busy: run() returns only after the callback ran.
  std::thread runner([&ctx] { ctx.run(); });
  const std::thread::id runner_id = runner.get_id();
  runner.join();
  CHECK(r.calls == 1);
  CHECK(r.value == 11);
  CHECK_FALSE(r.error);
  CHECK(r.callback_thread == runner_id);
  CHECK(r.worker != runner_id);
  CHECK(r.worker != std::this_thread::get_id());
}

TEST_CASE(
    "async_run with a callback bound to an executor and a cancellation slot keeps both: "
    "the cancelled call never runs and the callback runs on the bound executor",
    "[async_run][cancellation]") {
  offload::thread_pool pool(1);
  net::io_context ctx;
  offload_test::gate g;
  std::atomic<bool> blocker_started{false};
  std::atomic<bool> queued_ran{false};
  int blocker_calls = 0;
  std::exception_ptr queued_error;
  int queued_calls = 0;
  std::thread::id queued_thread;
  offload::async_run(
      pool,
      [&] {
        blocker_started = true;
        g.wait();
      },
      net::bind_executor(ctx.get_executor(), [&](std::exception_ptr) { ++blocker_calls; }));
  net::cancellation_signal signal;
  offload::async_run(
      pool, [&] { queued_ran = true; },
      net::bind_executor(ctx.get_executor(),
                         net::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr e) {
                           ++queued_calls;
                           queued_error = e;
                           queued_thread = std::this_thread::get_id();
                         })));
  REQUIRE(offload_test::eventually([&] { return blocker_started.load(); }));
  net::post(ctx, [&] { signal.emit(net::cancellation_type::terminal); });
  ctx.run_one();  // the emit
  ctx.run_one();  // the cancelled call's callback: the pool's only worker is still blocked
  CHECK(queued_calls == 1);
  CHECK(offload_test::is_cancelled(queued_error));
  CHECK(queued_thread == std::this_thread::get_id());
  CHECK(blocker_calls == 0);
  g.open();
  ctx.run();
  CHECK(blocker_calls == 1);
  CHECK_FALSE(queued_ran.load());
}

TEST_CASE(
    "a callback throwing out of io_context::run() leaves the calls after it queued and counted: "
    "the next run() delivers them and then runs out of work",
    "[async_run]") {
  offload::thread_pool pool(1);
  net::io_context ctx;
  std::vector<int> delivered;
  auto callback = [&](std::exception_ptr, int v) {
    delivered.push_back(v);
    if (v == 0) throw std::runtime_error("from a callback");
  };
  for (int i = 0; i < 3; ++i) {
    offload::async_run(
        pool, [i] { return i; }, net::bind_executor(ctx.get_executor(), callback));
  }
  // All three are handed back before the context runs: one drain meets them all.
  REQUIRE(offload_test::eventually([&] { return pool.stats().completed == 3; }));
  CHECK_THROWS_AS(ctx.run(), std::runtime_error);
  CHECK(delivered == std::vector<int>{0});
  ctx.restart();
  CHECK(delivers_then_runs_out(ctx, [&] { return delivered.size() == 3; }));
  CHECK(delivered == std::vector<int>{0, 1, 2});
}

TEST_CASE(
    "a loop step's burst of calls counts ahead and gives back what it did not use: once the calls "
    "are delivered, their io_contexts (the loop's, and another) run out of work",
    "[async_run]") {
  offload::thread_pool pool(2);
  offload::event_loop loop;
  net::io_context other;
  constexpr int calls = 100;  // per context: more than one block counted ahead
  int on_loop = 0;
  int on_other = 0;
  auto loop_callback = [&](std::exception_ptr, int) {
    if (++on_loop == calls) loop.stop();
  };
  auto other_callback = [&](std::exception_ptr, int) { ++on_other; };
  loop.call_soon([&] {
    for (int i = 0; i < calls; ++i) {  // alternating: each switch gives the other's back
      offload::async_run(
          pool, [] { return 1; }, net::bind_executor(loop.context().get_executor(), loop_callback));
      offload::async_run(
          pool, [] { return 2; }, net::bind_executor(other.get_executor(), other_callback));
    }
  });
  loop.run_forever();
  CHECK(on_loop == calls);
  CHECK(delivers_then_runs_out(other, [&] { return on_other == calls; }));
  loop.context().restart();
  loop.context().poll();
  CHECK(loop.context().stopped());
}

TEST_CASE(
    "a loop step that waits for another io_context to deliver the calls it made sees that "
    "context run out of work: only the loop's own calls are counted ahead",
    "[async_run]") {
  offload::event_loop loop;
  net::thread_pool asio_pool(1);  // a foreign executor: its calls go out at once, unbatched
  int delivered = 0;
  bool ran_out = false;
  auto callback = [&](std::exception_ptr, int v) { delivered += v; };
  loop.call_soon([&] {
    net::io_context other;
    for (int i = 0; i < 3; ++i) {
      offload::async_run(
          asio_pool, [] { return 1; }, net::bind_executor(other.get_executor(), callback));
    }
    ran_out = delivers_then_runs_out(other, [&] { return delivered == 3; });
    loop.stop();
  });
  loop.run_forever();
  CHECK(delivered == 3);
  CHECK(ran_out);
}

TEST_CASE(
    "async_run with a callback bound to the loop calls it on the loop; a bound lvalue is copied, "
    "not moved from",
    "[async_run]") {
  offload::thread_pool pool(named_pool("lb"));
  offload::event_loop loop;
  const auto ex = loop.get_executor();
  const std::string tag(40, 't');  // on the heap: a moved-from copy would be empty
  std::vector<int> values;
  std::vector<std::string> tags;
  int on_loop = 0;
  auto callback = [&, tag](std::exception_ptr e, int v) {
    CHECK_FALSE(e);
    values.push_back(v);
    tags.push_back(tag);
    if (ex.running_in_this_thread() && loop.in_loop_thread()) ++on_loop;
    if (values.size() == 2) loop.stop();
  };
  auto bound = net::bind_executor(ex, callback);
  loop.call_soon([&] {
    offload::async_run(
        pool, [] { return 1; }, bound);
    offload::async_run(
        pool, [] { return 2; }, net::bind_executor(ex, callback));
  });
  loop.run_forever();
  std::sort(values.begin(), values.end());
  CHECK(values == std::vector<int>{1, 2});
  CHECK(on_loop == 2);
  bound(std::exception_ptr(), 3);  // still whole
  CHECK(tags == std::vector<std::string>(3, tag));
}

TEST_CASE("async_run with a void f completes a (std::exception_ptr) callback", "[async_run]") {
  offload::thread_pool pool(named_pool("cbv"));
  net::io_context ctx;
  int calls = 0;
  bool ran = false;
  std::exception_ptr ok_error = std::make_exception_ptr(0);  // must be reset to null
  std::exception_ptr failure;
  std::thread::id callback_thread;
  offload::async_run(
      pool, [&ran] { ran = true; },
      net::bind_executor(ctx.get_executor(), [&](std::exception_ptr e) {
        ++calls;
        ok_error = e;
        callback_thread = std::this_thread::get_id();
      }));
  offload::async_run(
      pool, [] { throw custom_error(9); },
      net::bind_executor(ctx.get_executor(), [&](std::exception_ptr e) {
        ++calls;
        failure = e;
      }));
  ctx.run();
  CHECK(calls == 2);
  CHECK(ran);
  CHECK_FALSE(ok_error);
  CHECK(callback_thread == std::this_thread::get_id());
  REQUIRE(failure);
  try {
    std::rethrow_exception(failure);
  } catch (const custom_error& e) {
    CHECK(e.code == 9);
  } catch (...) {
    FAIL("the callback got an exception of another type");
  }
}

TEST_CASE(
    "async_run with a result that is not default-constructible completes with "
    "(std::exception_ptr, std::optional<T>)",
    "[async_run]") {
  offload::thread_pool pool(named_pool("nd"));
  net::io_context ctx;
  std::optional<no_default> value;
  bool value_had_error = true;
  bool error_had_value = true;
  std::exception_ptr error;
  offload::async_run(
      pool, [] { return no_default(21); },
      net::bind_executor(ctx.get_executor(), [&](std::exception_ptr e, auto v) {
        static_assert(std::is_same_v<decltype(v), std::optional<no_default>>);
        value_had_error = e != nullptr;
        value = std::move(v);
      }));
  offload::async_run(
      pool, []() -> no_default { throw custom_error(2); },
      net::bind_executor(ctx.get_executor(), [&](std::exception_ptr e, auto v) {
        static_assert(std::is_same_v<decltype(v), std::optional<no_default>>);
        error_had_value = v.has_value();
        error = e;
      }));
  ctx.run();
  CHECK_FALSE(value_had_error);
  REQUIRE(value.has_value());
  CHECK(value->value == 21);
  CHECK_FALSE(error_had_value);  // an error carries no value
  REQUIRE(error);
  CHECK_THROWS_AS(std::rethrow_exception(error), custom_error);

  // With use_awaitable the optional shows too.
  static_assert(std::is_same_v<decltype(offload::async_run(
                                   pool, [] { return no_default(1); }, net::use_awaitable)),
                               offload::awaitable<std::optional<no_default>>>);
}

// -- deferred --------------------------------------------------------------------------------

offload::awaitable<void> with_deferred(offload::thread_pool& pool, offload_test::gate& g) {
  // Block the pool's only worker: a call submitted now would sit in its queue.
  std::promise<void> blocker_done;
  offload::async_run(
      pool, [&g] { g.wait(); }, [&blocker_done](std::exception_ptr) { blocker_done.set_value(); });
  REQUIRE(offload_test::eventually([&] { return pool.stats().running == 1; }));

  auto op = offload::async_run(
      pool, [] { return std::make_pair(this_thread_name(), 9); }, deferred);
  // Deferred: nothing is submitted until the operation is launched.
  CHECK(pool.stats().queued == 0);
  g.open();
  const auto [name, value] = co_await std::move(op)(net::use_awaitable);
  CHECK(value == 9);
  CHECK(name == "df-1");
  CHECK(offload::get_running_loop().in_loop_thread());
  blocker_done.get_future().get();
}

TEST_CASE("async_run with deferred submits when launched", "[async_run]") {
  offload::thread_pool pool(named_pool("df", 1));
  offload_test::gate g;
  offload::run(with_deferred(pool, g));
}

// -- the default executor needs a loop -------------------------------------------------------

TEST_CASE(
    "async_run(default_executor) with a handler that has no executor, outside a running "
    "loop, throws no_running_loop synchronously",
    "[async_run][errors]") {
  // A loop running on another thread does not count: the rule is about this thread.
  offload_test::loop_on_thread other;
  bool ran = false;
  bool called = false;
  std::error_code code;
  std::string what;
  try {
    offload::async_run(
        offload::default_executor,
        [&ran] {
          ran = true;
          return 1;
        },
        [&called](std::exception_ptr, int) { called = true; });
  } catch (const std::system_error& e) {
    code = e.code();
    what = e.what();
  }
  CHECK(code == offload::errc::no_running_loop);
  // Says where to call it, or what to pass instead.
  CHECK_THAT(what, contains("event loop"));
  CHECK_THAT(what, contains("pool"));
  CHECK_FALSE(ran);
  CHECK_FALSE(called);
}

offload::awaitable<std::string> default_executor_with_bare_callback() {
  std::promise<std::string> name;
  auto named = name.get_future();
  offload::async_run(
      offload::default_executor, [] { return this_thread_name(); },
      [&name](std::exception_ptr e, std::string n) {
        if (e) {
          name.set_exception(e);
        } else {
          name.set_value(std::move(n));
        }
      });
  co_return named.get();  // completes on the worker: waiting here does not deadlock
}

TEST_CASE(
    "async_run(default_executor) with a handler that has no executor, on a running "
    "loop's thread, uses that loop's default executor",
    "[async_run]") {
  CHECK(offload::run(default_executor_with_bare_callback()) == "offload-1");
}

// -- use_future ------------------------------------------------------------------------------

TEST_CASE("async_run with asio::use_future from a plain thread returns the value or rethrows",
          "[async_run][use_future]") {
  offload::thread_pool pool(named_pool("fut"));
  std::future<int> value = offload::async_run(
      pool, [] { return 7; }, net::use_future);
  CHECK(value.get() == 7);

  std::future<int> failed = offload::async_run(
      pool, []() -> int { throw custom_error(8); }, net::use_future);
  CHECK_THROWS_AS(failed.get(), custom_error);

  std::future<std::string> name = offload::async_run(
      pool, [] { return this_thread_name(); }, net::use_future);
  CHECK_THAT(name.get(), contains("fut-"));

  bool ran = false;
  std::future<void> done = offload::async_run(
      pool, [&ran] { ran = true; }, net::use_future);
  done.get();
  CHECK(ran);
}

TEST_CASE(
    "async_run(default_executor, f, asio::use_future) outside a running loop throws "
    "no_running_loop synchronously",
    "[async_run][use_future][errors]") {
  bool ran = false;
  std::error_code code;
  std::string what;
  try {
    auto never = offload::async_run(
        offload::default_executor,
        [&ran] {
          ran = true;
          return 1;
        },
        net::use_future);
    (void)never;
  } catch (const std::system_error& e) {
    code = e.code();
    what = e.what();
  }
  CHECK(code == offload::errc::no_running_loop);
  CHECK_THAT(what, contains("event loop"));
  CHECK_THAT(what, contains("pool"));
  CHECK_FALSE(ran);
}

}  // namespace
