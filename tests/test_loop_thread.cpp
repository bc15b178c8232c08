// offload::loop_thread: an event loop on a thread of its own: call() as a blocking
// portal, call_soon(), loop(), would_deadlock from its own thread, and a destructor that stops the
// loop, fails what is pending with loop_closed, destroys the frames and joins, without hanging.
//
// Distributed under the Boost Software License, Version 1.0.
#include "catch.hpp"
#include "loop_helpers.hpp"

#include <offload/concurrent_future.hpp>
#include <offload/errors.hpp>
#include <offload/event_loop.hpp>
#include <offload/loop_thread.hpp>
#include <offload/threadsafe.hpp>

#include <atomic>
#include <chrono>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using offload_test::code_thrown_by;
using offload_test::current_thread_id;
using offload_test::guarded_wait;
using offload_test::move_only_after_yield;
using offload_test::sleep_for;
using offload_test::throw_my_error;
using offload_test::what_thrown_by;
using offload_test::yield_once;

// -- probes ------------------------------------------------------------------------------------

using offload_test::code_of;
using offload_test::eventually;
using offload_test::flag_ptr;
using offload_test::make_flag;
using offload_test::my_error;
using offload_test::raii_flag;

/// Sets `flag` when the calling thread exits (thread_local destructors run as it ends).
void flag_on_thread_exit(flag_ptr flag) {
  thread_local raii_flag on_exit{nullptr};
  on_exit.flag = std::move(flag);
}

/// Runs `f` on a detached thread and waits up to `limit` for it: a hang fails the test instead
/// of blocking it. `f` must only use what it owns (shared state), since on a timeout it is
/// left running.
bool finishes_within(std::chrono::milliseconds limit, std::function<void()> f) {
  auto done = std::make_shared<std::promise<void>>();
  auto finished = done->get_future();
  std::thread([done, f = std::move(f)] {
    f();
    done->set_value();
  }).detach();
  return finished.wait_for(limit) == std::future_status::ready;
}

// -- coroutines --------------------------------------------------------------------------------

offload::awaitable<int> value_after(clock_type::duration d, int v) {
  co_await sleep_for(d);
  co_return v;
}

offload::awaitable<std::string> text_after_yield() {
  co_await yield_once();
  co_return std::string(100, 'y') + "!";
}

offload::awaitable<void> count_after_yield(std::atomic<int>* n) {
  co_await yield_once();
  n->fetch_add(1);
}

offload::awaitable<int> guarded_value([[maybe_unused]] raii_flag param, int v) {
  co_await yield_once();
  co_return v;
}

struct where {
  std::thread::id thread;
  offload::event_loop* running_loop = nullptr;
  bool in_loop_thread = false;
  bool on_strand = false;
};

offload::awaitable<where> where_am_i() {
  co_await yield_once();
  where w;
  w.thread = std::this_thread::get_id();
  w.running_loop = &offload::get_running_loop();
  w.in_loop_thread = w.running_loop->in_loop_thread();
  w.on_strand = w.running_loop->get_executor().running_in_this_thread();
  co_return w;
}

// ================================================================================================
// call / call_soon / loop
// ================================================================================================

TEST_CASE("loop_thread::call() runs the coroutine on the loop's own thread and returns its value",
          "[loop_thread]") {
  offload::loop_thread bg;
  REQUIRE(eventually([&] { return bg.loop().is_running(); }));
  REQUIRE_FALSE(bg.loop().is_closed());
  REQUIRE_FALSE(bg.loop().in_loop_thread());

  const where w = bg.call(where_am_i());
  REQUIRE(w.thread != std::this_thread::get_id());
  REQUIRE(w.running_loop == &bg.loop());  // loop() is the loop that runs the coroutines
  REQUIRE(w.in_loop_thread);
  REQUIRE(w.on_strand);
  REQUIRE(bg.call(current_thread_id()) == w.thread);  // always the same thread

  REQUIRE(bg.call(value_after(5ms, 42)) == 42);
  REQUIRE(bg.call(text_after_yield()) == std::string(100, 'y') + "!");
  std::unique_ptr<int> p = bg.call(move_only_after_yield(3));
  REQUIRE(p != nullptr);
  REQUIRE(*p == 3);
  std::atomic<int> n{0};
  bg.call(count_after_yield(&n));
  REQUIRE(n.load() == 1);
}

TEST_CASE("loop_thread::call() rethrows the coroutine's exception with its type; the loop goes on",
          "[loop_thread]") {
  offload::loop_thread bg;
  // Held until the loop has surely let go of the coroutine's state (the next call() below): the
  // exception object is shared with it, and its last release must not race this thread's reads
  // as TSan sees them (libstdc++'s exception_ptr reference count is not instrumented).
  std::exception_ptr held;
  try {
    (void)bg.call(throw_my_error(17));
    FAIL("call() returned");
  } catch (const my_error& e) {
    held = std::current_exception();
    REQUIRE(e.code == 17);
  }
  REQUIRE(bg.loop().is_running());
  REQUIRE(bg.call(value_after(0ms, 5)) == 5);
}

TEST_CASE("loop_thread::call() from several threads at once: each gets its own result",
          "[loop_thread]") {
  offload::loop_thread bg;
  constexpr int threads = 4;
  constexpr int calls = 200;
  std::atomic<int> wrong{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < threads; ++t) {
    callers.emplace_back([&, t] {
      for (int i = 0; i < calls; ++i) {
        if (bg.call(value_after(0ms, t * 1000 + i)) != t * 1000 + i) wrong.fetch_add(1);
      }
    });
  }
  for (auto& c : callers) c.join();
  REQUIRE(wrong.load() == 0);
}

TEST_CASE(
    "loop_thread::call_soon runs f on the loop thread, in FIFO order, and returns a "
    "cancellable handle",
    "[loop_thread]") {
  offload::loop_thread bg;
  const std::thread::id loop_id = bg.call(current_thread_id());
  REQUIRE(loop_id != std::this_thread::get_id());

  SECTION("thread and order") {
    std::vector<int> order;  // loop thread only
    std::vector<std::thread::id> ids;
    std::promise<void> done;
    for (int i = 0; i < 100; ++i) {
      bg.call_soon([&order, &ids, i] {
        order.push_back(i);
        ids.push_back(std::this_thread::get_id());
      });
    }
    bg.call_soon([&done] { done.set_value(); });
    auto f = done.get_future();
    REQUIRE(f.wait_for(60s) == std::future_status::ready);
    REQUIRE(order.size() == 100);
    for (int i = 0; i < 100; ++i) {
      REQUIRE(order[i] == i);
      REQUIRE(ids[i] == loop_id);
    }
  }
  SECTION("cancel() before it runs") {
    std::atomic<bool> gate{false};
    std::atomic<bool> blocked{false};
    std::atomic<int> ran{0};
    bg.call_soon([&] {
      blocked.store(true);
      (void)eventually([&] { return gate.load(); }, 30s);  // holds the loop
    });
    REQUIRE(eventually([&] { return blocked.load(); }));
    offload::handle h = bg.call_soon([&ran] { ran.fetch_add(1); });
    REQUIRE(h.cancel());
    REQUIRE(h.cancelled());
    REQUIRE_FALSE(h.cancel());
    gate.store(true);
    (void)bg.call(current_thread_id());
    std::promise<void> drained;
    bg.call_soon([&drained] { drained.set_value(); });
    REQUIRE(drained.get_future().wait_for(60s) == std::future_status::ready);
    REQUIRE(ran.load() == 0);
  }
}

// ================================================================================================
// would_deadlock
// ================================================================================================

offload::awaitable<std::error_code> call_from_inside(offload::loop_thread& bg, flag_ptr frame) {
  co_await yield_once();
  co_return code_thrown_by([&] { (void)bg.call(guarded_value(raii_flag(frame), 1)); });
}

TEST_CASE("loop_thread::call() from the loop's own thread throws would_deadlock at once",
          "[loop_thread][would_deadlock]") {
  offload::loop_thread bg;
  SECTION("from a call_soon callback") {
    auto frame = make_flag();
    std::promise<std::pair<std::error_code, std::string>> p;
    bg.call_soon([&] {
      std::error_code ec;
      std::string what;
      try {
        (void)bg.call(guarded_value(raii_flag(frame), 1));
      } catch (const std::system_error& e) {
        ec = e.code();
        what = e.what();
      }
      p.set_value({ec, what});
    });
    auto f = p.get_future();
    REQUIRE(f.wait_for(60s) == std::future_status::ready);
    const auto [ec, what] = f.get();
    REQUIRE(ec == offload::errc::would_deadlock);
    INFO(what);
    REQUIRE_THAT(what, offload_test::contains("loop_thread::call"));
    REQUIRE(frame->load());  // the refused coroutine was destroyed, not leaked
  }
  SECTION("from a coroutine that call() runs") {
    auto frame = make_flag();
    REQUIRE(bg.call(call_from_inside(bg, frame)) == offload::errc::would_deadlock);
    REQUIRE(frame->load());
  }
  // Refusing did not disturb the loop.
  REQUIRE(bg.call(value_after(0ms, 9)) == 9);
}

// ================================================================================================
// The destructor
// ================================================================================================

struct teardown_state {
  std::unique_ptr<offload::loop_thread> bg;
  flag_ptr thread_exited = make_flag();
  // A thread blocked in call():
  flag_ptr call_local = make_flag();
  flag_ptr call_param = make_flag();
  std::atomic<bool> call_started{false};
  std::exception_ptr call_error;  // inspected on the test's thread only (see below)
  // A future nobody waits on:
  flag_ptr fut_local = make_flag();
  flag_ptr fut_param = make_flag();
  std::atomic<bool> fut_started{false};
  offload::concurrent_future<int> fut;
  std::atomic<int> fut_callbacks{0};
  std::error_code fut_callback_code;
  bool setup_ok = false;
};

TEST_CASE(
    "the loop_thread destructor fails pending work with loop_closed, destroys the frames "
    "and joins its thread",
    "[loop_thread][close]") {
  auto st = std::make_shared<teardown_state>();
  const bool finished = finishes_within(30s, [st] {
    st->bg = std::make_unique<offload::loop_thread>();
    offload::loop_thread* bg = st->bg.get();
    bg->call_soon([flag = st->thread_exited] { flag_on_thread_exit(flag); });

    std::thread caller([st, bg] {
      // Kept, not read here: the exception object is shared with the future's state, whose
      // last reference another thread may drop, and libstdc++'s (uninstrumented) reference
      // count would make TSan see that as a race with a read on this thread.
      try {
        (void)bg->call(guarded_wait(raii_flag(st->call_param), st->call_local, &st->call_started));
      } catch (...) {
        st->call_error = std::current_exception();
      }
    });
    st->fut = offload::run_coroutine_threadsafe(
        guarded_wait(raii_flag(st->fut_param), st->fut_local, &st->fut_started), bg->loop());
    st->fut.add_done_callback([st](offload::concurrent_future<int> f) {
      st->fut_callback_code = code_of(f.exception());
      st->fut_callbacks.fetch_add(1);
    });
    st->setup_ok = eventually([&] { return st->call_started.load() && st->fut_started.load(); });
    std::this_thread::sleep_for(20ms);  // let the caller reach its wait in result()

    st->bg.reset();  // stop, close, join
    caller.join();
  });
  REQUIRE(finished);  // no hang
  REQUIRE(st->setup_ok);

  REQUIRE(st->thread_exited->load());  // joined: its thread has ended
  REQUIRE(code_of(st->call_error) == offload::errc::loop_closed);
  REQUIRE(st->call_local->load());
  REQUIRE(st->call_param->load());

  REQUIRE(st->fut.done());
  REQUIRE(code_of(st->fut.exception()) == offload::errc::loop_closed);
  REQUIRE(code_thrown_by([&] { (void)st->fut.result(); }) == offload::errc::loop_closed);
  REQUIRE_FALSE(st->fut.cancelled());
  REQUIRE(st->fut_callbacks.load() == 1);
  REQUIRE(st->fut_callback_code == offload::errc::loop_closed);
  REQUIRE(st->fut_local->load());
  REQUIRE(st->fut_param->load());
}

struct accepted_state {
  std::unique_ptr<offload::loop_thread> bg;
  std::atomic<bool> gate{false};
  std::atomic<bool> first_started{false};
  std::atomic<int> first{0};
  std::atomic<int> second{0};
};

TEST_CASE("the loop_thread destructor runs the callbacks it accepted before it, exactly once",
          "[loop_thread][close]") {
  auto st = std::make_shared<accepted_state>();
  st->bg = std::make_unique<offload::loop_thread>();
  st->bg->call_soon([st] {
    st->first.fetch_add(1);
    st->first_started.store(true);
    (void)eventually([&] { return st->gate.load(); }, 30s);  // holds the loop
  });
  REQUIRE(eventually([&] { return st->first_started.load(); }));
  st->bg->call_soon([st] { st->second.fetch_add(1); });  // accepted, waits behind the first

  auto destroyed = std::make_shared<std::promise<void>>();
  auto destroyed_future = destroyed->get_future();
  std::thread([st, destroyed] {
    st->bg.reset();
    destroyed->set_value();
  }).detach();
  std::this_thread::sleep_for(20ms);  // the destructor is now waiting for the loop's step
  st->gate.store(true);
  REQUIRE(destroyed_future.wait_for(30s) == std::future_status::ready);
  REQUIRE(st->first.load() == 1);
  REQUIRE(st->second.load() == 1);
}

TEST_CASE("loop_threads can be created, used and destroyed repeatedly", "[loop_thread]") {
  const bool finished = finishes_within(60s, [] {
    for (int i = 0; i < 20; ++i) {
      offload::loop_thread bg;
      (void)bg.call(value_after(0ms, i));
      bg.call_soon([] {});
    }
    for (int i = 0; i < 5; ++i) {
      offload::loop_thread idle;  // never used
    }
  });
  REQUIRE(finished);
}

// -- the destructor under load
// ---------------------------------------------------------------------

offload::awaitable<void> keep_yielding(std::atomic<bool>* quit, std::atomic<bool>* started) {
  auto ex = co_await offload::net::this_coro::executor;
  started->store(true);
  while (!quit->load()) co_await offload::net::post(ex, offload::net::use_awaitable);
}

struct busy_state {
  std::unique_ptr<offload::loop_thread> bg;
  std::atomic<bool> quit{false};
  std::atomic<bool> started{false};
  offload::concurrent_future<void> fut;
};

// Regression: stop() was only seen once ctx.poll() returned, which it never does while a handler
// is always ready; a coroutine that keeps yielding (or a steady stream of call_soon_threadsafe)
// made stop(), and so this destructor, wait forever. On a hang the test rescues itself by
// letting the coroutine end, and fails.
TEST_CASE("the loop_thread destructor returns while a coroutine on its loop keeps yielding",
          "[loop_thread][close]") {
  auto st = std::make_shared<busy_state>();
  st->bg = std::make_unique<offload::loop_thread>();
  st->fut =
      offload::run_coroutine_threadsafe(keep_yielding(&st->quit, &st->started), st->bg->loop());
  REQUIRE(eventually([&] { return st->started.load(); }));

  auto destroyed = std::make_shared<std::promise<void>>();
  auto destroyed_future = destroyed->get_future();
  std::thread([st, destroyed] {
    st->bg.reset();
    destroyed->set_value();
  }).detach();
  const bool returned = destroyed_future.wait_for(5s) == std::future_status::ready;
  if (!returned) {
    st->quit.store(true);  // rescue: let the loop go idle so that stop() takes effect
    REQUIRE(destroyed_future.wait_for(30s) == std::future_status::ready);
  }
  REQUIRE(returned);
  REQUIRE(st->fut.done());
  REQUIRE(code_of(st->fut.exception()) == offload::errc::loop_closed);
}

// ================================================================================================
// A loop_thread whose loop was stopped from outside
// ================================================================================================

// loop() exposes stop(); once called, the loop thread returns from run_forever and ends, so the
// loop never runs again: what is pending, and every later submission, must not wait forever
// (if the loop stops or closes while the coroutine is pending, the future completes
// with loop_closed: a stopped loop never leaves a waiter hanging).
TEST_CASE(
    "after loop().stop(), a loop_thread neither leaves pending work waiting nor accepts "
    "work it will never run",
    "[loop_thread][close]") {
  offload::loop_thread bg;
  auto local = make_flag();
  auto param = make_flag();
  std::atomic<bool> started{false};
  auto pending =
      offload::run_coroutine_threadsafe(guarded_wait(raii_flag(param), local, &started), bg.loop());
  REQUIRE(eventually([&] { return started.load(); }));

  bg.loop().stop();
  REQUIRE(eventually([&] { return !bg.loop().is_running(); }));

  // The coroutine that was pending: completes with loop_closed rather than never.
  REQUIRE(pending.wait_for(2s));
  REQUIRE(code_of(pending.exception()) == offload::errc::loop_closed);

  // A later submission: refused at once, or completed with loop_closed; never left pending.
  std::error_code later;
  try {
    auto fut = offload::run_coroutine_threadsafe(value_after(0ms, 1), bg.loop());
    later =
        fut.wait_for(2s) ? code_of(fut.exception()) : std::make_error_code(std::errc::timed_out);
  } catch (const std::system_error& e) {
    later = e.code();
  }
  REQUIRE(later == offload::errc::loop_closed);
}

}  // namespace
