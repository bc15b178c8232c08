// offload::concurrent_future (what run_coroutine_threadsafe returns) and offload::wrap_future:
// result / result(timeout) / exception / done / cancelled / wait / wait_for / add_done_callback /
// cancel, and awaiting a future from a coroutine on another loop.
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

namespace net = offload::net;
using offload_test::current_thread_id;
using offload_test::guarded_wait;
using offload_test::move_only_after_yield;
using offload_test::throw_my_error;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using offload_test::sleep_for;
using offload_test::wait_until;
using offload_test::yield_once;

// -- probes ------------------------------------------------------------------------------------

using offload_test::eventually;
using offload_test::flag_ptr;
using offload_test::make_flag;
using offload_test::my_error;
using offload_test::raii_flag;

using offload_test::is_cancelled;  // the backend's cancellation (operation_aborted)

// -- coroutines --------------------------------------------------------------------------------

offload::awaitable<int> value_after(clock_type::duration d, int v) {
  co_await sleep_for(d);
  co_return v;
}

offload::awaitable<std::string> text_after_yield() {
  co_await yield_once();
  co_return std::string(200, 'x') + "-end";  // longer than any small-string buffer
}

offload::awaitable<void> void_after_yield(std::atomic<int>* ran) {
  co_await yield_once();
  ran->fetch_add(1);
}

offload::awaitable<int> throw_int(int v) {
  co_await yield_once();
  throw v;
}

/// Finishes only once `delay` has passed and the test opened `gate`: the future stays pending
/// for as long as the test wants, however slow the machine.
offload::awaitable<int> slow_then_gate(clock_type::duration delay, std::atomic<bool>* gate, int v) {
  co_await sleep_for(delay);
  auto is_open = [gate] { return gate->load(); };
  (void)co_await wait_until(is_open, 60s);
  co_return v;
}

/// Waits an hour unless cancelled; `param` dies with the frame, `local` when the body unwinds.
/// Catches the cancellation and finishes normally with 99.
offload::awaitable<int> swallow_cancel(std::atomic<bool>* started) {
  started->store(true);
  try {
    co_await sleep_for(1h);
  } catch (const offload::net_system_error&) {
  }
  co_return 99;
}

// ================================================================================================
// result / exception / done / cancelled
// ================================================================================================

TEST_CASE("result() returns the coroutine's value; done() and cancelled() follow the outcome",
          "[future]") {
  offload::loop_thread bg;
  auto fut = offload::run_coroutine_threadsafe(value_after(20ms, 42), bg.loop());
  REQUIRE(fut.valid());
  REQUIRE(fut.result() == 42);
  REQUIRE(fut.done());
  REQUIRE_FALSE(fut.cancelled());
  REQUIRE(fut.exception() == nullptr);
  // A copyable result can be asked for again; copies share the state.
  REQUIRE(fut.result() == 42);
  auto copy = fut;
  REQUIRE(copy.done());
  REQUIRE(copy.result() == 42);

  REQUIRE_FALSE(offload::concurrent_future<int>{}.valid());
}

TEST_CASE("result() carries std::string, move-only and void results", "[future]") {
  offload::loop_thread bg;
  SECTION("std::string") {
    auto fut = offload::run_coroutine_threadsafe(text_after_yield(), bg.loop());
    const std::string s = fut.result();
    REQUIRE(s.size() == 204);
    REQUIRE(s.substr(200) == "-end");
  }
  SECTION("std::unique_ptr<int>") {
    auto fut = offload::run_coroutine_threadsafe(move_only_after_yield(7), bg.loop());
    std::unique_ptr<int> p = fut.result();
    REQUIRE(p != nullptr);
    REQUIRE(*p == 7);
  }
  SECTION("void") {
    std::atomic<int> ran{0};
    auto fut = offload::run_coroutine_threadsafe(void_after_yield(&ran), bg.loop());
    fut.result();
    REQUIRE(fut.done());
    REQUIRE(ran.load() == 1);
    REQUIRE(fut.exception() == nullptr);
  }
}

TEST_CASE(
    "result(timeout) throws timeout and leaves the future pending; a later result() "
    "returns the value",
    "[future]") {
  offload::loop_thread bg;
  std::atomic<bool> gate{false};
  const auto start = clock_type::now();
  auto fut = offload::run_coroutine_threadsafe(slow_then_gate(300ms, &gate, 7), bg.loop());

  std::error_code ec;
  std::string what;
  try {
    (void)fut.result(50ms);
    FAIL("result(50ms) returned on a coroutine that cannot finish yet");
  } catch (const std::system_error& e) {
    ec = e.code();
    what = e.what();
  }
  REQUIRE(ec == offload::errc::timeout);
  REQUIRE(ec.category() == offload::error_category());
  INFO(what);
  REQUIRE_THAT(what, offload_test::contains("result"));
  REQUIRE(clock_type::now() - start >= 50ms);  // it did wait (a lower bound only)
  // Still pending: the timeout did not cancel or complete it.
  REQUIRE_FALSE(fut.done());
  REQUIRE_FALSE(fut.cancelled());

  gate.store(true);
  REQUIRE(fut.result() == 7);
  REQUIRE(clock_type::now() - start >= 300ms);  // the coroutine really waited for its timer
  REQUIRE(fut.done());
  REQUIRE_FALSE(fut.cancelled());
  // Once done, result(timeout) returns at once with the value.
  REQUIRE(fut.result(0ms) == 7);
}

TEST_CASE("exception() returns the coroutine's exception; result() rethrows it with its type",
          "[future]") {
  offload::loop_thread bg;
  SECTION("a std::exception subclass") {
    auto fut = offload::run_coroutine_threadsafe(throw_my_error(13), bg.loop());
    std::exception_ptr e = fut.exception();
    REQUIRE(e != nullptr);
    REQUIRE(fut.done());
    REQUIRE_FALSE(fut.cancelled());
    try {
      std::rethrow_exception(e);
    } catch (const my_error& err) {
      REQUIRE(err.code == 13);
    }
    try {
      (void)fut.result();
      FAIL("result() returned");
    } catch (const my_error& err) {
      REQUIRE(err.code == 13);
    }
    // And again: the exception stays.
    REQUIRE_THROWS_AS(fut.result(), my_error);
    REQUIRE_THROWS_AS(fut.result(1s), my_error);
  }
  SECTION("a thrown int") {
    auto fut = offload::run_coroutine_threadsafe(throw_int(5), bg.loop());
    try {
      (void)fut.result();
      FAIL("result() returned");
    } catch (int v) {
      REQUIRE(v == 5);
    }
    REQUIRE(fut.exception() != nullptr);
    REQUIRE_FALSE(fut.cancelled());
  }
}

// ================================================================================================
// wait / wait_for
// ================================================================================================

TEST_CASE("wait() blocks until done; wait_for(d) is false while pending, true once done",
          "[future]") {
  offload::loop_thread bg;
  std::atomic<bool> gate{false};
  auto fut = offload::run_coroutine_threadsafe(slow_then_gate(0ms, &gate, 11), bg.loop());

  const auto before = clock_type::now();
  REQUIRE_FALSE(fut.wait_for(30ms));
  REQUIRE(clock_type::now() - before >= 30ms);
  REQUIRE_FALSE(fut.done());

  // A thread blocks in wait() until the coroutine finishes.
  std::atomic<bool> waited{false};
  std::thread waiter([&] {
    fut.wait();
    waited.store(true);
  });
  std::this_thread::sleep_for(20ms);
  REQUIRE_FALSE(waited.load());  // the gate is closed: wait() cannot have returned
  gate.store(true);
  waiter.join();
  REQUIRE(waited.load());
  REQUIRE(fut.done());
  REQUIRE(fut.wait_for(0ms));
  REQUIRE(fut.wait_for(10s));
  REQUIRE(fut.result() == 11);
}

// ================================================================================================
// add_done_callback
// ================================================================================================

struct callback_record {
  int index = 0;
  std::thread::id thread;
  bool done_inside = false;
  int value = 0;
};

struct callback_log {
  std::mutex m;
  std::vector<callback_record> records;
  void add(callback_record r) {
    std::lock_guard<std::mutex> lock(m);
    records.push_back(r);
  }
  std::vector<callback_record> snapshot() {
    std::lock_guard<std::mutex> lock(m);
    return records;
  }
  std::size_t size() {
    std::lock_guard<std::mutex> lock(m);
    return records.size();
  }
};

TEST_CASE(
    "add_done_callback: each runs exactly once, in order, after completion; on the "
    "completing thread, or at once on the adding thread if already done",
    "[future]") {
  offload::loop_thread bg;
  const std::thread::id loop_id = bg.call(current_thread_id());
  REQUIRE(loop_id != std::this_thread::get_id());

  std::atomic<bool> gate{false};
  auto fut = offload::run_coroutine_threadsafe(slow_then_gate(0ms, &gate, 7), bg.loop());
  callback_log log;
  for (int i = 0; i < 3; ++i) {
    fut.add_done_callback([&log, i](offload::concurrent_future<int> f) {
      log.add({i, std::this_thread::get_id(), f.done(), f.result()});
    });
  }
  std::this_thread::sleep_for(10ms);
  REQUIRE(log.size() == 0);  // not before completion
  gate.store(true);
  REQUIRE(fut.result() == 7);
  REQUIRE(eventually([&] { return log.size() == 3; }));

  // Already done: runs at once, on this thread, before add_done_callback returns.
  fut.add_done_callback([&log](offload::concurrent_future<int> f) {
    log.add({3, std::this_thread::get_id(), f.done(), f.result()});
  });
  REQUIRE(log.size() == 4);

  // Give a stray second run every chance to happen, then count.
  (void)bg.call(current_thread_id());
  std::this_thread::sleep_for(20ms);
  const auto records = log.snapshot();
  REQUIRE(records.size() == 4);
  for (int i = 0; i < 4; ++i) {
    INFO("callback " << i);
    REQUIRE(records[i].index == i);
    REQUIRE(records[i].done_inside);
    REQUIRE(records[i].value == 7);
    REQUIRE(records[i].thread == (i < 3 ? loop_id : std::this_thread::get_id()));
  }
}

TEST_CASE("add_done_callback runs on a failed future too, exactly once", "[future]") {
  offload::loop_thread bg;
  auto fut = offload::run_coroutine_threadsafe(throw_my_error(3), bg.loop());
  std::atomic<int> calls{0};
  std::atomic<int> code{0};
  fut.add_done_callback([&](offload::concurrent_future<int> f) {
    try {
      std::rethrow_exception(f.exception());
    } catch (const my_error& e) {
      code.store(e.code);
    }
    calls.fetch_add(1);
  });
  REQUIRE_THROWS_AS(fut.result(), my_error);
  REQUIRE(eventually([&] { return calls.load() >= 1; }));
  (void)bg.call(current_thread_id());
  REQUIRE(calls.load() == 1);
  REQUIRE(code.load() == 3);
}

TEST_CASE("a throwing done-callback is reported and does not stop the others", "[future]") {
  offload::loop_thread bg;
  std::atomic<bool> gate{false};
  auto fut = offload::run_coroutine_threadsafe(slow_then_gate(0ms, &gate, 5), bg.loop());
  std::mutex m;
  std::vector<int> ran;
  auto record = [&](int i) {
    std::lock_guard<std::mutex> lock(m);
    ran.push_back(i);
  };
  auto ran_snapshot = [&] {
    std::lock_guard<std::mutex> lock(m);
    return ran;
  };
  std::string text;
  {
    offload_test::stderr_capture capture;
    fut.add_done_callback([&](offload::concurrent_future<int>) {
      record(1);
      throw std::runtime_error("cb-boom-1");
    });
    fut.add_done_callback([&](offload::concurrent_future<int>) { record(2); });
    fut.add_done_callback([&](offload::concurrent_future<int>) {
      record(3);
      throw 42;  // not a std::exception
    });
    fut.add_done_callback([&](offload::concurrent_future<int>) { record(4); });
    gate.store(true);
    REQUIRE(fut.result() == 5);
    REQUIRE(eventually([&] { return ran_snapshot().size() == 4; }));

    // Added after completion: runs here; its exception does not escape add_done_callback.
    REQUIRE_NOTHROW(fut.add_done_callback([&](offload::concurrent_future<int>) {
      record(5);
      throw std::runtime_error("cb-boom-5");
    }));
    fut.add_done_callback([&](offload::concurrent_future<int>) { record(6); });
    capture.restore();
    text = capture.text();
  }
  REQUIRE(ran_snapshot() == std::vector<int>{1, 2, 3, 4, 5, 6});
  INFO(text);
  REQUIRE_THAT(text, offload_test::contains("cb-boom-1"));
  REQUIRE_THAT(text, offload_test::contains("cb-boom-5"));
  REQUIRE_THAT(text, offload_test::contains("done-callback"));
}

// ================================================================================================
// cancel
// ================================================================================================

struct cancel_observation {
  std::atomic<int> calls{0};
  std::atomic<bool> local_unwound{false};
  std::atomic<bool> param_destroyed{false};
  std::atomic<bool> done_inside{false};
  std::atomic<bool> cancelled_inside{false};
  std::atomic<bool> aborted_inside{false};
};

TEST_CASE(
    "cancel() from another thread cancels the coroutine on its loop; done() and the "
    "callbacks follow only after its frame has unwound",
    "[future][cancel]") {
  offload::loop_thread bg;
  const std::thread::id loop_id = bg.call(current_thread_id());
  auto local_flag = make_flag();
  auto param_flag = make_flag();
  std::atomic<bool> started{false};
  auto fut = offload::run_coroutine_threadsafe(
      guarded_wait(raii_flag(param_flag), local_flag, &started), bg.loop());
  REQUIRE(eventually([&] { return started.load(); }));

  cancel_observation seen;
  std::atomic<bool> callback_on_loop{false};
  fut.add_done_callback([&, loop_id](offload::concurrent_future<int> f) {
    seen.local_unwound.store(local_flag->load());
    seen.param_destroyed.store(param_flag->load());
    seen.done_inside.store(f.done());
    seen.cancelled_inside.store(f.cancelled());
    seen.aborted_inside.store(is_cancelled(f.exception()));
    callback_on_loop.store(std::this_thread::get_id() == loop_id);
    seen.calls.fetch_add(1);
  });
  REQUIRE_FALSE(fut.done());
  REQUIRE_FALSE(local_flag->load());

  // A watcher thread: the moment it sees done(), the frame must already be gone.
  std::atomic<bool> watcher_saw_unwound{false};
  std::thread watcher([&] {
    while (!fut.done()) std::this_thread::yield();
    watcher_saw_unwound.store(local_flag->load() && param_flag->load());
  });

  bool cancel_result = false;
  std::thread canceller([&] { cancel_result = fut.cancel(); });
  canceller.join();
  REQUIRE(cancel_result);

  try {
    (void)fut.result();
    FAIL("result() returned after cancel()");
  } catch (const offload::net_system_error& e) {
    REQUIRE(offload_test::is_operation_aborted(e.code()));
  }
  watcher.join();
  REQUIRE(fut.done());
  REQUIRE(fut.cancelled());
  REQUIRE(is_cancelled(fut.exception()));
  REQUIRE(watcher_saw_unwound.load());
  REQUIRE(local_flag->load());
  REQUIRE(param_flag->load());

  REQUIRE(eventually([&] { return seen.calls.load() == 1; }));
  REQUIRE(seen.local_unwound.load());
  REQUIRE(seen.param_destroyed.load());
  REQUIRE(seen.done_inside.load());
  REQUIRE(seen.cancelled_inside.load());
  REQUIRE(seen.aborted_inside.load());
  REQUIRE(callback_on_loop.load());

  // Done: a second cancel() is refused and changes nothing.
  REQUIRE_FALSE(fut.cancel());
  REQUIRE(fut.cancelled());
  (void)bg.call(current_thread_id());
  REQUIRE(seen.calls.load() == 1);
}

TEST_CASE("cancel() right after submission cancels the coroutine", "[future][cancel]") {
  offload::loop_thread bg;
  auto local_flag = make_flag();
  auto param_flag = make_flag();
  std::atomic<bool> started{false};
  auto fut = offload::run_coroutine_threadsafe(
      guarded_wait(raii_flag(param_flag), local_flag, &started), bg.loop());
  REQUIRE(fut.cancel());
  REQUIRE(is_cancelled(fut.exception()));
  REQUIRE(fut.cancelled());
  REQUIRE(param_flag->load());  // the frame is gone, started or not
  REQUIRE(local_flag->load() == started.load());
}

TEST_CASE("cancel() on a done future returns false and changes nothing", "[future][cancel]") {
  offload::loop_thread bg;
  auto fut = offload::run_coroutine_threadsafe(value_after(0ms, 42), bg.loop());
  REQUIRE(fut.result() == 42);
  REQUIRE_FALSE(fut.cancel());
  REQUIRE_FALSE(fut.cancelled());
  REQUIRE(fut.result() == 42);

  auto failed = offload::run_coroutine_threadsafe(throw_my_error(1), bg.loop());
  REQUIRE(failed.exception() != nullptr);
  REQUIRE_FALSE(failed.cancel());
  REQUIRE_FALSE(failed.cancelled());
  REQUIRE_THROWS_AS(failed.result(), my_error);
}

TEST_CASE("a coroutine that handles the cancellation and returns is not cancelled()",
          "[future][cancel]") {
  offload::loop_thread bg;
  std::atomic<bool> started{false};
  auto fut = offload::run_coroutine_threadsafe(swallow_cancel(&started), bg.loop());
  REQUIRE(eventually([&] { return started.load(); }));
  REQUIRE(fut.cancel());
  REQUIRE(fut.result() == 99);
  REQUIRE_FALSE(fut.cancelled());
  REQUIRE(fut.exception() == nullptr);
}

// ================================================================================================
// wrap_future
// ================================================================================================

/// On loop B: finishes only once loop A has run `a_callback_ran` (so A must stay responsive
/// while it awaits this), then returns 42 and B's thread.
offload::awaitable<std::pair<int, std::thread::id>> needs_other_loop(std::atomic<bool>* a_ran) {
  auto ran = [a_ran] { return a_ran->load(); };
  const bool ok = co_await wait_until(ran, 20s);
  co_return std::make_pair(ok ? 42 : -1, std::this_thread::get_id());
}

struct wrap_result {
  int value = 0;
  std::thread::id b_thread;
  std::thread::id a_thread_before;
  std::thread::id a_thread_after;
  std::thread::id a_callback_thread;
  bool resumed_on_a_strand = false;
};

offload::awaitable<wrap_result> await_other_loop(offload::event_loop& a, offload::event_loop& b) {
  wrap_result r;
  r.a_thread_before = std::this_thread::get_id();
  std::atomic<bool> a_ran{false};
  auto fut = offload::run_coroutine_threadsafe(needs_other_loop(&a_ran), b);
  // Runs on A only if A's thread is free while the coroutine below waits.
  a.call_soon([&r, &a_ran] {
    r.a_callback_thread = std::this_thread::get_id();
    a_ran.store(true);
  });
  auto wrapped = offload::wrap_future(std::move(fut));
  const std::pair<int, std::thread::id> got = co_await std::move(wrapped);
  r.value = got.first;
  r.b_thread = got.second;
  r.a_thread_after = std::this_thread::get_id();
  r.resumed_on_a_strand = a.get_executor().running_in_this_thread();
  co_return r;
}

TEST_CASE("wrap_future: a coroutine on loop A awaits a coroutine on loop B without blocking A",
          "[future][wrap_future]") {
  offload::loop_thread b;
  offload::event_loop a;
  const wrap_result r = a.run_until_complete(await_other_loop(a, b.loop()));
  REQUIRE(r.value == 42);  // -1: A's callback never ran, so A was blocked
  REQUIRE(r.a_thread_before == std::this_thread::get_id());
  REQUIRE(r.a_callback_thread == std::this_thread::get_id());
  REQUIRE(r.a_thread_after == std::this_thread::get_id());
  REQUIRE(r.resumed_on_a_strand);
  REQUIRE(r.b_thread != std::this_thread::get_id());
  REQUIRE(r.b_thread == b.call(current_thread_id()));
}

// Each wrap_future test keeps a copy of the future to the end, so the exception object read here
// is released last on this thread (libstdc++'s exception_ptr count is invisible to TSan).
offload::awaitable<int> await_failing(offload::event_loop& b) {
  auto fut = offload::run_coroutine_threadsafe(throw_my_error(21), b);
  auto wrapped = offload::wrap_future(fut);
  try {
    (void)co_await std::move(wrapped);
  } catch (const my_error& e) {
    co_return e.code;
  }
  co_return 0;
}

TEST_CASE("wrap_future rethrows the coroutine's exception with its type", "[future][wrap_future]") {
  offload::loop_thread b;
  offload::event_loop a;
  REQUIRE(a.run_until_complete(await_failing(b.loop())) == 21);
}

offload::awaitable<std::error_code> await_dying_loop(std::unique_ptr<offload::loop_thread>& b,
                                                     flag_ptr local_flag, flag_ptr param_flag) {
  std::atomic<bool> started{false};
  auto fut = offload::run_coroutine_threadsafe(
      guarded_wait(raii_flag(std::move(param_flag)), std::move(local_flag), &started), b->loop());
  std::thread killer([&b, &started] {
    while (!started.load()) std::this_thread::yield();
    b.reset();  // stops, closes and joins loop B while A awaits its coroutine
  });
  std::error_code ec;
  auto wrapped = offload::wrap_future(fut);
  try {
    (void)co_await std::move(wrapped);
  } catch (const std::system_error& e) {
    ec = e.code();
  }
  killer.join();
  REQUIRE(fut.done());
  co_return ec;
}

TEST_CASE("wrap_future completes with loop_closed when the other loop goes away",
          "[future][wrap_future]") {
  auto b = std::make_unique<offload::loop_thread>();
  offload::event_loop a;
  auto local_flag = make_flag();
  auto param_flag = make_flag();
  const std::error_code ec = a.run_until_complete(await_dying_loop(b, local_flag, param_flag));
  REQUIRE(ec == offload::errc::loop_closed);
  REQUIRE(b == nullptr);
  REQUIRE(local_flag->load());
  REQUIRE(param_flag->load());
}

}  // namespace
