// The loop: event_loop's construction, running, stopping and closing; the running
// loop; callbacks and timers; the exception handler; the slow-callback report; the strand that
// serializes loop-side code; and the default executor's replacement and shutdown.
#include "catch.hpp"
#include "loop_helpers.hpp"

#include <offload/event_loop.hpp>
#include <offload/thread_pool.hpp>
#include <offload/to_thread.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <latch>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using offload_test::code_thrown_by;
using offload_test::sleep_for;
using offload_test::starts_with;
using offload_test::throw_my_error;
using offload_test::wait_until;
using offload_test::yield_once;

using offload_test::my_error;

struct no_default {
  explicit no_default(int v) : value(v) {}
  no_default(const no_default&) = delete;
  no_default(no_default&&) = default;
  int value;
};

offload::awaitable<int> answer() { co_return 42; }

offload::awaitable<std::string> text_after_yield() {
  co_await yield_once();
  co_return std::string("hello from the loop");
}

offload::awaitable<void> append_after_yield(std::vector<int>& v) {
  v.push_back(1);
  co_await yield_once();
  v.push_back(2);
}

offload::awaitable<no_default> make_no_default(int v) {
  co_await yield_once();
  co_return no_default(v);
}

offload::awaitable<void> throw_int() {
  co_await yield_once();
  throw 42;
}

offload::awaitable<std::thread::id> loop_thread_id() {
  co_await yield_once();
  co_return std::this_thread::get_id();
}

// -- the strand --------------------------------------------------------------------------------

struct strand_checks {
  bool at_start = false;
  bool after_yield = false;
  bool after_timer = false;
  bool after_to_thread = false;
  bool in_callback = false;
  bool worker_off_strand = false;
  std::thread::id loop_thread;
  std::thread::id after_to_thread_thread;
};

offload::awaitable<strand_checks> check_strand(offload::event_loop& loop) {
  strand_checks c;
  const auto strand = loop.get_executor();
  c.at_start = strand.running_in_this_thread();
  c.loop_thread = std::this_thread::get_id();
  co_await yield_once();
  c.after_yield = strand.running_in_this_thread();
  co_await sleep_for(1ms);
  c.after_timer = strand.running_in_this_thread();
  c.worker_off_strand =
      co_await offload::to_thread([&strand] { return !strand.running_in_this_thread(); });
  c.after_to_thread = strand.running_in_this_thread();
  c.after_to_thread_thread = std::this_thread::get_id();
  bool called = false;
  loop.call_soon([&c, &called, &strand] {
    c.in_callback = strand.running_in_this_thread();
    called = true;
  });
  co_await wait_until([&called] { return called; });
  co_return c;
}

// -- nested and misplaced runs
// ---------------------------------------------------------------------

struct nested_result {
  std::error_code from_callback;
  std::string callback_what;
  std::error_code from_coroutine;
  std::error_code run_forever_inside;
  std::error_code from_other_thread;
  std::string other_thread_what;
};

offload::awaitable<nested_result> run_nested(offload::event_loop& loop) {
  nested_result r;
  bool done = false;
  loop.call_soon([&] {
    try {
      (void)loop.run_until_complete(answer());
    } catch (const std::system_error& e) {
      r.from_callback = e.code();
      r.callback_what = e.what();
    }
    done = true;
  });
  co_await wait_until([&done] { return done; });
  r.from_coroutine = code_thrown_by([&] { (void)loop.run_until_complete(answer()); });
  r.run_forever_inside = code_thrown_by([&] { loop.run_forever(); });
  std::thread other([&] {
    try {
      (void)loop.run_until_complete(answer());
    } catch (const std::system_error& e) {
      r.from_other_thread = e.code();
      r.other_thread_what = e.what();
    }
  });
  other.join();
  co_return r;
}

// -- is_running / in_loop_thread
// -------------------------------------------------------------------

struct running_checks {
  bool running_inside = false;
  bool in_loop_inside = false;
  bool in_loop_in_callback = false;
  bool other_thread_in_loop = true;
  bool other_thread_sees_running = false;
  bool worker_in_loop = true;
};

offload::awaitable<running_checks> check_running(offload::event_loop& loop) {
  running_checks c;
  c.running_inside = loop.is_running();
  c.in_loop_inside = loop.in_loop_thread();
  bool called = false;
  loop.call_soon([&] {
    c.in_loop_in_callback = loop.in_loop_thread();
    called = true;
  });
  co_await wait_until([&called] { return called; });
  std::thread other([&] {
    c.other_thread_in_loop = loop.in_loop_thread();
    c.other_thread_sees_running = loop.is_running();
  });
  other.join();
  c.worker_in_loop = co_await offload::to_thread([&loop] { return loop.in_loop_thread(); });
  co_return c;
}

// -- get_running_loop
// --------------------------------------------------------------------------------

struct running_loop_checks {
  offload::event_loop* in_coroutine = nullptr;
  offload::event_loop* after_await = nullptr;
  offload::event_loop* in_callback = nullptr;
  std::error_code in_worker;
  std::string worker_what;
};

offload::awaitable<running_loop_checks> check_get_running_loop(offload::event_loop& loop) {
  running_loop_checks c;
  c.in_coroutine = &offload::get_running_loop();
  co_await sleep_for(1ms);
  c.after_await = &offload::get_running_loop();
  bool called = false;
  loop.call_soon([&] {
    c.in_callback = &offload::get_running_loop();
    called = true;
  });
  co_await wait_until([&called] { return called; });
  c.in_worker = co_await offload::to_thread(
      [] { return code_thrown_by([] { (void)offload::get_running_loop(); }); });
  co_return c;
}

offload::awaitable<offload::event_loop*> running_loop_address() {
  co_await yield_once();
  co_return &offload::get_running_loop();
}

offload::awaitable<std::error_code> running_loop_from_plain_run(offload::event_loop& loop) {
  co_await yield_once();
  offload::event_loop* found = nullptr;
  auto ec = code_thrown_by([&] { found = &offload::get_running_loop(); });
  if (ec) co_return ec;
  co_return found == &loop ? std::error_code{} : std::make_error_code(std::errc::invalid_argument);
}

offload::awaitable<int> offloaded_answer() {
  co_return co_await offload::to_thread([] { return 6 * 7; });
}

// -- exception handler ----------------------------------------------------------------------------

struct handled {
  int calls = 0;
  std::vector<std::string> messages;
  std::vector<int> my_error_codes;
  int non_std = 0;
};

// -- slow callbacks -------------------------------------------------------------------------------

struct slow_log {
  std::mutex m;
  std::vector<offload::slow_callback_report> reports;
  std::size_t size() {
    std::lock_guard<std::mutex> lock(m);
    return reports.size();
  }
};

void record_slow(offload::event_loop& loop, slow_log& log) {
  loop.set_slow_callback_handler([&log](const offload::slow_callback_report& r) {
    std::lock_guard<std::mutex> lock(log.m);
    log.reports.push_back(r);
  });
}

offload::awaitable<void> blocking_step_between_awaits() {
  co_await yield_once();
  std::this_thread::sleep_for(40ms);  // the mistake the report is for
  co_await yield_once();
}

offload::awaitable<void> blocking_step_after_to_thread() {
  (void)co_await offload::to_thread([] { return 1; });
  std::this_thread::sleep_for(40ms);  // blocks in the step that the hand-back resumed
  co_await yield_once();
}

offload::awaitable<void> many_fast_steps(offload::event_loop& loop) {
  int ran = 0;
  for (int i = 0; i < 50; ++i) loop.call_soon([&ran] { ++ran; });
  for (int i = 0; i < 20; ++i) co_await yield_once();
  co_await wait_until([&ran] { return ran == 50; });
  (void)co_await offload::to_thread([] { return 1; });
  co_await sleep_for(2ms);
}

// -- serialization with 4 threads ----------------------------------------------------------------

constexpr int serial_coroutines = 48;
constexpr int serial_awaits = 8;

struct serial_state {
  int count = 0;  // deliberately plain: only the strand keeps it race-free (TSan checks)
  std::atomic<bool> inside{false};
  std::atomic<int> overlaps{0};
  std::atomic<int> off_strand{0};
  std::atomic<int> not_in_loop{0};
  std::atomic<int> failures{0};
  std::atomic<int> remaining{serial_coroutines};
  std::atomic<int> threads_seen{0};
  std::promise<void> all_done;
};

void serial_step(offload::event_loop& loop, serial_state& s) {
  thread_local bool counted = false;
  if (!counted) {
    counted = true;
    s.threads_seen.fetch_add(1, std::memory_order_relaxed);
  }
  // Relaxed on purpose: the flag must not create the happens-before the strand is meant to.
  if (s.inside.exchange(true, std::memory_order_relaxed)) s.overlaps.fetch_add(1);
  if (!loop.get_executor().running_in_this_thread()) s.off_strand.fetch_add(1);
  if (!loop.in_loop_thread()) s.not_in_loop.fetch_add(1);
  const int before = s.count;
  std::this_thread::yield();  // widen the window an overlapping step would hit
  s.count = before + 1;
  s.inside.store(false, std::memory_order_relaxed);
}

offload::awaitable<void> serial_worker(offload::event_loop& loop, serial_state& s) {
  for (int i = 0; i < serial_awaits; ++i) {
    serial_step(loop, s);
    (void)co_await offload::to_thread([i] { return i; });
  }
  serial_step(loop, s);
}

// -- default executor
// ------------------------------------------------------------------------------

offload::awaitable<std::string> worker_thread_name() {
  co_return co_await offload::to_thread([] { return offload_test::this_thread_name(); });
}

struct straggler_result {
  offload::shutdown_report report;
  int joined_value = 0;
  std::error_code after_shutdown;
  std::thread::id loop_thread;
};

offload::awaitable<int> blocked_call(std::latch& release, std::atomic<bool>& started) {
  co_return co_await offload::to_thread([&release, &started] {
    started.store(true);
    release.wait();
    return 5;
  });
}

offload::awaitable<straggler_result> shutdown_with_straggler(offload::event_loop& loop,
                                                             std::latch& release) {
  straggler_result r;
  r.loop_thread = std::this_thread::get_id();
  std::atomic<bool> started{false};
  auto t = loop.create_task(blocked_call(release, started));
  co_await wait_until([&started] { return started.load(); });
  co_await sleep_for(2ms);  // so running_for is measurably > 0
  r.report = co_await loop.shutdown_default_executor(50ms);
  release.count_down();
  r.joined_value = co_await t.join();  // the straggler still finishes and is delivered
  try {
    (void)co_await offload::to_thread([] { return 1; });
  } catch (const std::system_error& e) {
    r.after_shutdown = e.code();
  }
  co_return r;
}

struct clean_shutdown_result {
  offload::shutdown_report report;
  std::error_code after_shutdown;
  int before = 0;
};

offload::awaitable<clean_shutdown_result> shutdown_idle(bool use_pool_first) {
  clean_shutdown_result r;
  auto& loop = offload::get_running_loop();
  if (use_pool_first) r.before = co_await offload::to_thread([] { return 3; });
  r.report = co_await loop.shutdown_default_executor(5s);
  try {
    (void)co_await offload::to_thread([] { return 1; });
  } catch (const std::system_error& e) {
    r.after_shutdown = e.code();
  }
  co_return r;
}

struct busy_shutdown_result {
  offload::shutdown_report report;
  bool callback_ran_during_wait = false;
  int joined_value = 0;
};

offload::awaitable<busy_shutdown_result> shutdown_while_loop_works(offload::event_loop& loop,
                                                                   std::latch& release) {
  busy_shutdown_result r;
  std::atomic<bool> started{false};
  auto t = loop.create_task(blocked_call(release, started));
  co_await wait_until([&started] { return started.load(); });
  // Only a loop that keeps running while shutdown_default_executor waits can run this callback,
  // and only this callback lets the blocked call (and so the shutdown) finish.
  loop.call_soon([&r, &release] {
    r.callback_ran_during_wait = true;
    release.count_down();
  });
  r.report = co_await loop.shutdown_default_executor(30s);
  r.joined_value = co_await t.join();
  co_return r;
}

}  // namespace

// ================================================================================================
// Construction and the strand
// ================================================================================================

TEST_CASE("an event_loop owns an io_context of its own", "[event_loop]") {
  offload::event_loop a;
  offload::event_loop b;
  REQUIRE(&a.context() != &b.context());
  REQUIRE(&a.get_executor().context() == &a.context());
  REQUIRE(a.run_until_complete(answer()) == 42);
  REQUIRE(b.run_until_complete(loop_thread_id()) == std::this_thread::get_id());
  REQUIRE_FALSE(a.is_closed());
}

TEST_CASE("an event_loop can wrap an io_context the caller owns", "[event_loop]") {
  offload::net::io_context ctx;
  {
    offload::event_loop loop{ctx};
    REQUIRE(&loop.context() == &ctx);
    REQUIRE(&loop.get_executor().context() == &ctx);
    REQUIRE(loop.run_until_complete(answer()) == 42);
    REQUIRE(loop.run_until_complete(loop_thread_id()) == std::this_thread::get_id());
    // One loop per io_context: a second one over the same context is refused.
    REQUIRE_THROWS_AS(offload::event_loop{ctx}, std::logic_error);
  }
  // The wrapped context outlives its loop and stays usable.
  bool ran = false;
  offload::net::post(ctx, [&ran] { ran = true; });
  ctx.restart();
  ctx.run();
  REQUIRE(ran);
  // And once the first loop is gone, a new one may wrap it.
  offload::event_loop again{ctx};
  REQUIRE(again.run_until_complete(answer()) == 42);
}

TEST_CASE("every coroutine and callback the loop runs is on its strand", "[event_loop]") {
  offload::event_loop loop;
  REQUIRE_FALSE(loop.get_executor().running_in_this_thread());
  const auto c = loop.run_until_complete(check_strand(loop));
  REQUIRE(c.at_start);
  REQUIRE(c.after_yield);
  REQUIRE(c.after_timer);
  REQUIRE(c.worker_off_strand);  // the offloaded call did not run on the strand
  REQUIRE(c.after_to_thread);    // but the coroutine came back to it
  REQUIRE(c.after_to_thread_thread == c.loop_thread);
  REQUIRE(c.loop_thread == std::this_thread::get_id());
  REQUIRE(c.in_callback);
}

// ================================================================================================
// run_until_complete
// ================================================================================================

TEST_CASE("run_until_complete returns the coroutine's result", "[event_loop]") {
  offload::event_loop loop;
  REQUIRE(loop.run_until_complete(answer()) == 42);
  REQUIRE(loop.run_until_complete(text_after_yield()) == "hello from the loop");

  std::vector<int> v;
  loop.run_until_complete(append_after_yield(v));
  REQUIRE(v == std::vector<int>{1, 2});

  no_default nd = loop.run_until_complete(make_no_default(7));
  REQUIRE(nd.value == 7);
}

TEST_CASE("run_until_complete rethrows the coroutine's exception with its type", "[event_loop]") {
  offload::event_loop loop;
  SECTION("a std::exception subclass") {
    try {
      (void)loop.run_until_complete(throw_my_error(13));
      FAIL("no exception");
    } catch (const my_error& e) {
      REQUIRE(e.code == 13);
    }
  }
  SECTION("a thrown int") {
    try {
      loop.run_until_complete(throw_int());
      FAIL("no exception");
    } catch (int v) {
      REQUIRE(v == 42);
    }
  }
  // The loop is still usable after a failed run.
  REQUIRE(loop.run_until_complete(answer()) == 42);
  REQUIRE_FALSE(loop.is_running());
}

TEST_CASE("running the loop from inside itself is would_deadlock, not a hang", "[event_loop]") {
  offload::event_loop loop;
  const auto r = loop.run_until_complete(run_nested(loop));
  REQUIRE(r.from_callback == offload::errc::would_deadlock);
  REQUIRE_THAT(r.callback_what, offload_test::contains("co_await"));
  REQUIRE(r.from_coroutine == offload::errc::would_deadlock);
  REQUIRE(r.run_forever_inside == offload::errc::would_deadlock);
  REQUIRE(r.from_other_thread == offload::errc::would_deadlock);
  REQUIRE_THAT(r.other_thread_what, offload_test::contains("another thread"));
  // The refused runs did not disturb the loop.
  REQUIRE(loop.run_until_complete(answer()) == 42);
}

// ================================================================================================
// close / is_closed / is_running / in_loop_thread
// ================================================================================================

TEST_CASE("a closed loop refuses work with loop_closed", "[event_loop]") {
  offload::event_loop loop;
  REQUIRE_FALSE(loop.is_closed());
  loop.close();
  REQUIRE(loop.is_closed());

  bool ran = false;
  auto cb = [&ran] { ran = true; };
  REQUIRE(code_thrown_by([&] { (void)loop.run_until_complete(answer()); }) ==
          offload::errc::loop_closed);
  REQUIRE(code_thrown_by([&] { loop.run_forever(); }) == offload::errc::loop_closed);
  REQUIRE(code_thrown_by([&] { loop.call_soon(cb); }) == offload::errc::loop_closed);
  REQUIRE(code_thrown_by([&] { loop.call_later(1ms, cb); }) == offload::errc::loop_closed);
  REQUIRE(code_thrown_by([&] { loop.call_at(clock_type::now(), cb); }) ==
          offload::errc::loop_closed);
  REQUIRE(code_thrown_by([&] { (void)loop.create_task(answer()); }) == offload::errc::loop_closed);
  REQUIRE_FALSE(ran);

  // The error says which call was refused.
  const auto what = offload_test::what_thrown_by([&] { loop.call_soon(cb); });
  REQUIRE(what.has_value());
  REQUIRE_THAT(*what, offload_test::contains("call_soon"));
}

TEST_CASE("close() twice is a no-op", "[event_loop]") {
  offload::net::io_context ctx;
  offload::event_loop loop{ctx};
  loop.close();
  REQUIRE_NOTHROW(loop.close());
  REQUIRE(loop.is_closed());
  // The wrapped context survives both closes.
  bool ran = false;
  offload::net::post(ctx, [&ran] { ran = true; });
  ctx.run();
  REQUIRE(ran);
}

TEST_CASE("stop() on a closed loop is harmless", "[event_loop]") {
  offload::event_loop loop;  // owns its io_context, which close() destroys
  REQUIRE(loop.run_until_complete(answer()) == 42);
  loop.close();
  REQUIRE_NOTHROW(loop.stop());
  REQUIRE(loop.is_closed());
  REQUIRE_FALSE(loop.is_running());
}

TEST_CASE("close() on a running loop is an error and leaves it open", "[event_loop]") {
  offload::event_loop loop;
  std::error_code ec;
  std::string what;
  loop.call_soon([&] {
    try {
      loop.close();
    } catch (const std::system_error& e) {
      ec = e.code();
      what = e.what();
    }
    loop.stop();
  });
  loop.run_forever();
  REQUIRE(ec == offload::errc::would_deadlock);
  REQUIRE_THAT(what, offload_test::contains("stop()"));
  REQUIRE_FALSE(loop.is_closed());
  REQUIRE(loop.run_until_complete(answer()) == 42);
  loop.close();
  REQUIRE(loop.is_closed());
}

TEST_CASE("is_running() and in_loop_thread() say where code runs", "[event_loop]") {
  offload::event_loop loop;
  REQUIRE_FALSE(loop.is_running());
  REQUIRE_FALSE(loop.in_loop_thread());
  const auto c = loop.run_until_complete(check_running(loop));
  REQUIRE(c.running_inside);
  REQUIRE(c.in_loop_inside);
  REQUIRE(c.in_loop_in_callback);
  REQUIRE_FALSE(c.other_thread_in_loop);
  REQUIRE(c.other_thread_sees_running);  // is_running() is a fact about the loop, not the thread
  REQUIRE_FALSE(c.worker_in_loop);
  REQUIRE_FALSE(loop.is_running());
  REQUIRE_FALSE(loop.in_loop_thread());
}

// ================================================================================================
// run_forever / stop
// ================================================================================================

TEST_CASE("stop() from another thread makes run_forever() return", "[event_loop]") {
  offload::event_loop loop;
  std::atomic<bool> ticked{false};
  std::atomic<bool> other_saw_running{false};
  std::atomic<bool> other_in_loop{true};
  loop.call_soon([&ticked] { ticked.store(true); });
  std::thread stopper([&] {
    while (!ticked.load()) std::this_thread::yield();
    std::this_thread::sleep_for(20ms);  // let the idle loop park
    other_saw_running.store(loop.is_running());
    other_in_loop.store(loop.in_loop_thread());
    loop.stop();
  });
  loop.run_forever();
  stopper.join();
  REQUIRE(ticked.load());
  REQUIRE(other_saw_running.load());
  REQUIRE_FALSE(other_in_loop.load());
  REQUIRE_FALSE(loop.is_running());
}

TEST_CASE("stop() from a callback makes run_forever() return; the loop can run again",
          "[event_loop]") {
  offload::event_loop loop;
  int first = 0;
  loop.call_soon([&] {
    ++first;
    loop.stop();
  });
  loop.run_forever();
  REQUIRE(first == 1);
  REQUIRE_FALSE(loop.is_running());
  // A second run_forever works and does not re-run the first callback.
  int second = 0;
  loop.call_soon([&] {
    ++second;
    loop.stop();
  });
  loop.run_forever();
  REQUIRE(first == 1);
  REQUIRE(second == 1);
  REQUIRE(loop.run_until_complete(answer()) == 42);
}

offload::awaitable<int> wait_for_flag(bool& flag, int& steps, bool& finished) {
  while (!flag) {
    ++steps;
    co_await sleep_for(1ms);
  }
  finished = true;
  co_return 7;
}

TEST_CASE("run_until_complete stopped early throws; the coroutine goes on at the next run",
          "[event_loop]") {
  offload::event_loop loop;
  bool flag = false;
  bool finished = false;
  int steps = 0;
  loop.call_soon([&loop] { loop.stop(); });
  bool threw = false;
  try {
    (void)loop.run_until_complete(wait_for_flag(flag, steps, finished));
  } catch (const std::exception& e) {
    threw = true;
    INFO(e.what());
    REQUIRE_THAT(std::string(e.what()), offload_test::contains("stopped"));
  }
  REQUIRE(threw);
  REQUIRE_FALSE(finished);
  REQUIRE_FALSE(loop.is_running());
  const int steps_when_stopped = steps;
  // The first coroutine is still pending: running the loop again lets it go on.
  loop.call_later(10ms, [&flag] { flag = true; });
  loop.call_later(50ms, [&loop] { loop.stop(); });
  loop.run_forever();
  REQUIRE(steps > steps_when_stopped);
  REQUIRE(finished);
}

TEST_CASE("stop() before run_forever(): the run does one pass and returns", "[event_loop]") {
  offload::event_loop loop;
  bool ran = false;
  loop.call_soon([&ran] { ran = true; });
  loop.stop();
  loop.run_forever();
  REQUIRE(ran);
  REQUIRE_FALSE(loop.is_running());
}

// ================================================================================================
// get_running_loop / offload::run
// ================================================================================================

TEST_CASE("get_running_loop() finds the loop inside and throws no_running_loop outside",
          "[event_loop]") {
  offload::event_loop loop;
  const auto c = loop.run_until_complete(check_get_running_loop(loop));
  REQUIRE(c.in_coroutine == &loop);
  REQUIRE(c.after_await == &loop);
  REQUIRE(c.in_callback == &loop);
  // A to_thread worker is not the loop's thread.
  REQUIRE(c.in_worker == offload::errc::no_running_loop);

  // Outside any running loop, with a message that says where to call it from.
  REQUIRE(code_thrown_by([] { (void)offload::get_running_loop(); }) ==
          offload::errc::no_running_loop);
  const auto what = offload_test::what_thrown_by([] { (void)offload::get_running_loop(); });
  REQUIRE(what.has_value());
  // It names the call that failed and says where to call it from.
  REQUIRE_THAT(*what, offload_test::contains("get_running_loop"));
  REQUIRE_THAT(*what,
               offload_test::contains("call this from a coroutine running on an event loop"));

  // On another thread while the loop runs here.
  std::error_code other;
  loop.call_soon([&] {
    std::thread t([&] { other = code_thrown_by([] { (void)offload::get_running_loop(); }); });
    t.join();
    loop.stop();
  });
  loop.run_forever();
  REQUIRE(other == offload::errc::no_running_loop);
}

TEST_CASE("get_running_loop() inside nested different loops names the innermost running one",
          "[event_loop]") {
  offload::event_loop outer;
  offload::event_loop inner;
  offload::event_loop* seen_inner = nullptr;
  offload::event_loop* seen_outer_after = nullptr;
  outer.call_soon([&] {
    // A different loop may run inside a callback of this one (a blocking bridge).
    seen_inner = inner.run_until_complete(running_loop_address());
    seen_outer_after = &offload::get_running_loop();
    outer.stop();
  });
  outer.run_forever();
  REQUIRE(seen_inner == &inner);
  REQUIRE(seen_outer_after == &outer);
}

// A loop over an io_context that the application runs itself (ctx.run()) still runs its
// coroutines "on the loop", so get_running_loop() finds the loop there.
TEST_CASE("get_running_loop() finds a wrapped loop whose io_context is run by ctx.run()",
          "[event_loop]") {
  offload::net::io_context ctx;
  offload::event_loop loop{ctx};
  auto fut = offload::net::co_spawn(loop.get_executor(), running_loop_from_plain_run(loop),
                                    offload::net::use_future);
  ctx.run();
  REQUIRE(fut.get() == std::error_code{});
}

TEST_CASE("offload::run returns the value and leaves no running loop", "[event_loop]") {
  REQUIRE(offload::run(answer()) == 42);
  REQUIRE(code_thrown_by([] { (void)offload::get_running_loop(); }) ==
          offload::errc::no_running_loop);
  // Offloaded work inside run() is finished and delivered.
  REQUIRE(offload::run(offloaded_answer()) == 42);
  std::vector<int> v;
  offload::run(append_after_yield(v));
  REQUIRE(v == std::vector<int>{1, 2});
  REQUIRE_THROWS_AS(offload::run(throw_my_error(1)), my_error);
  REQUIRE(code_thrown_by([] { (void)offload::get_running_loop(); }) ==
          offload::errc::no_running_loop);
}

// ================================================================================================
// call_soon / call_later / call_at
// ================================================================================================

TEST_CASE("call_soon callbacks run in FIFO order", "[event_loop]") {
  offload::event_loop loop;
  std::vector<int> order;
  for (int i = 0; i < 100; ++i) loop.call_soon([&order, i] { order.push_back(i); });
  loop.call_soon([&loop] { loop.stop(); });
  loop.run_forever();
  REQUIRE(order.size() == 100);
  for (int i = 0; i < 100; ++i) REQUIRE(order[static_cast<std::size_t>(i)] == i);
}

TEST_CASE("call_soon's handle: cancel() true means the callback never runs", "[event_loop]") {
  offload::event_loop loop;
  std::vector<int> ran;
  auto h1 = loop.call_soon([&ran] { ran.push_back(1); });
  auto h2 = loop.call_soon([&ran] { ran.push_back(2); });
  auto h3 = loop.call_soon([&ran] { ran.push_back(3); });
  REQUIRE(h2.cancel());
  REQUIRE(h2.cancelled());
  REQUIRE_FALSE(h2.cancel());  // a second cancel has nothing left to do
  loop.call_soon([&loop] { loop.stop(); });
  loop.run_forever();
  REQUIRE(ran == std::vector<int>{1, 3});
  // After it ran, cancel() is false.
  REQUIRE_FALSE(h1.cancel());
  REQUIRE_FALSE(h1.cancelled());
  REQUIRE_FALSE(h3.cancel());
  // A default handle cancels nothing.
  offload::handle empty;
  REQUIRE_FALSE(empty.cancel());
}

TEST_CASE("call_later runs after its delay, in deadline order", "[event_loop]") {
  offload::event_loop loop;
  std::vector<int> order;
  clock_type::time_point at20{}, at5{};
  const auto start = clock_type::now();
  loop.call_later(20ms, [&] {
    order.push_back(20);
    at20 = clock_type::now();
  });
  loop.call_later(5ms, [&] {
    order.push_back(5);
    at5 = clock_type::now();
  });
  loop.call_later(20ms + 20ms, [&loop] { loop.stop(); });
  loop.run_forever();
  REQUIRE(order == std::vector<int>{5, 20});
  REQUIRE(at20 - start >= 20ms);
  REQUIRE(at5 - start >= 5ms);
}

TEST_CASE("call_at runs at its time point, in time order", "[event_loop]") {
  offload::event_loop loop;
  std::vector<int> order;
  clock_type::time_point ran_late{}, ran_early{};
  const auto base = clock_type::now();
  const auto late = base + 30ms;
  const auto early = base + 15ms;
  loop.call_at(late, [&] {
    order.push_back(2);
    ran_late = clock_type::now();
  });
  loop.call_at(early, [&] {
    order.push_back(1);
    ran_early = clock_type::now();
  });
  loop.call_at(base - 1s, [&order] { order.push_back(0); });  // already due: runs first
  loop.call_at(late + 5ms, [&loop] { loop.stop(); });
  loop.run_forever();
  REQUIRE(order == std::vector<int>{0, 1, 2});
  REQUIRE(ran_early >= early);
  REQUIRE(ran_late >= late);
}

TEST_CASE("cancelling a call_later: it never runs and its wait ends now", "[event_loop]") {
  offload::event_loop loop;
  bool ran = false;
  auto token = std::make_shared<int>(1);
  std::weak_ptr<int> watch = token;
  {
    auto cb = [token, &ran] { ran = true; };
    token.reset();
    auto h = loop.call_later(10s, std::move(cb));
    REQUIRE(h.cancel());
    REQUIRE(h.cancelled());
    REQUIRE_FALSE(h.cancel());
  }  // only the timer's wait still holds the callback now
  const auto start = clock_type::now();
  // The timer's wait ends at the cancel, not after 10 s: the callback is then freed.
  const bool freed = loop.run_until_complete(wait_until([&watch] { return watch.expired(); }, 5s));
  REQUIRE(freed);
  REQUIRE(clock_type::now() - start < 5s);
  REQUIRE_FALSE(ran);
}

// ================================================================================================
// Exceptions escaping callbacks
// ================================================================================================

TEST_CASE("an exception escaping a callback goes to the exception handler; the loop goes on",
          "[event_loop]") {
  offload::event_loop loop;
  handled h;
  loop.set_exception_handler([&h](const offload::exception_context& ctx) {
    ++h.calls;
    h.messages.push_back(ctx.message);
    try {
      if (ctx.exception) std::rethrow_exception(ctx.exception);
    } catch (const my_error& e) {
      h.my_error_codes.push_back(e.code);
    } catch (int) {
      ++h.non_std;
    } catch (...) {
    }
  });
  std::vector<int> ran;
  loop.call_soon([&ran] {
    ran.push_back(1);
    throw my_error(5);
  });
  loop.call_soon([&ran] { ran.push_back(2); });
  loop.call_later(1ms, [&ran] {
    ran.push_back(3);
    throw 99;
  });
  loop.call_later(5ms, [&ran] { ran.push_back(4); });
  loop.call_later(10ms, [&loop] { loop.stop(); });
  loop.run_forever();
  REQUIRE(ran == std::vector<int>{1, 2, 3, 4});
  REQUIRE(h.calls == 2);
  REQUIRE(h.my_error_codes == std::vector<int>{5});
  REQUIRE(h.non_std == 1);
  for (const auto& m : h.messages) REQUIRE_THAT(m, offload_test::contains("callback"));

  // call_exception_handler reaches the same handler.
  loop.call_exception_handler({"by hand", nullptr});
  REQUIRE(h.calls == 3);
  REQUIRE(h.messages.back() == "by hand");
}

TEST_CASE("the default exception handler prints to stderr and the loop goes on", "[event_loop]") {
  offload::event_loop loop;
  int custom_calls = 0;
  loop.set_exception_handler(
      [&custom_calls](const offload::exception_context&) { ++custom_calls; });
  loop.set_exception_handler({});  // empty: back to the default
  std::vector<int> ran;
  std::string text;
  {
    offload_test::stderr_capture capture;
    loop.call_soon([&ran] {
      ran.push_back(1);
      throw std::runtime_error("boom-4711");
    });
    loop.call_soon([&ran] {
      ran.push_back(2);
      throw 42;
    });
    loop.call_soon([&ran] { ran.push_back(3); });
    loop.call_soon([&loop] { loop.stop(); });
    loop.run_forever();
    capture.restore();
    text = capture.text();
  }
  REQUIRE(custom_calls == 0);
  REQUIRE(ran == std::vector<int>{1, 2, 3});
  INFO(text);
  REQUIRE_THAT(text, offload_test::contains("an exception escaped a callback"));
  REQUIRE_THAT(text, offload_test::contains("boom-4711"));
  REQUIRE_THAT(text, offload_test::contains("a non-std exception"));
}

TEST_CASE("a throwing exception handler is reported too; the loop goes on", "[event_loop]") {
  offload::event_loop loop;
  loop.set_exception_handler(
      [](const offload::exception_context&) { throw std::runtime_error("handler-broke"); });
  std::vector<int> ran;
  std::string text;
  {
    offload_test::stderr_capture capture;
    loop.call_soon([&ran] {
      ran.push_back(1);
      throw std::runtime_error("original-err");
    });
    loop.call_soon([&ran] { ran.push_back(2); });
    loop.call_soon([&loop] { loop.stop(); });
    loop.run_forever();
    capture.restore();
    text = capture.text();
  }
  REQUIRE(ran == std::vector<int>{1, 2});
  INFO(text);
  REQUIRE_THAT(text, offload_test::contains("handler-broke"));
  REQUIRE_THAT(text, offload_test::contains("original-err"));
}

// ================================================================================================
// Slow-callback report
// ================================================================================================

TEST_CASE("set_slow_callback_threshold reports a callback that blocks the loop",
          "[event_loop][slow]") {
  offload::event_loop loop;
  slow_log log;
  record_slow(loop, log);
  loop.set_slow_callback_threshold(10ms);
  REQUIRE(loop.slow_callback_threshold() == 10ms);
  bool after = false;
  loop.call_soon([] { std::this_thread::sleep_for(40ms); });
  loop.call_soon([&after] { after = true; });
  loop.call_later(5ms, [&loop] { loop.stop(); });
  loop.run_forever();
  REQUIRE(after);
  std::lock_guard<std::mutex> lock(log.m);
  REQUIRE(log.reports.size() >= 1);
  bool found = false;
  for (const auto& r : log.reports) {
    REQUIRE(r.threshold == 10ms);
    REQUIRE(r.took > r.threshold);
    if (r.took >= 39ms) found = true;
  }
  REQUIRE(found);
}

TEST_CASE("the slow-callback report stays quiet for fast steps, and zero turns it off",
          "[event_loop][slow]") {
  offload::event_loop loop;
  slow_log log;
  record_slow(loop, log);
  // Generous: a fast step never takes a quarter second, even under a sanitizer.
  loop.set_slow_callback_threshold(250ms);
  loop.run_until_complete(many_fast_steps(loop));
  REQUIRE(log.size() == 0);

  loop.set_slow_callback_threshold(std::chrono::nanoseconds::zero());
  REQUIRE(loop.slow_callback_threshold() == std::chrono::nanoseconds::zero());
  loop.call_soon([&loop] {
    std::this_thread::sleep_for(30ms);
    loop.stop();
  });
  loop.run_forever();
  REQUIRE(log.size() == 0);
}

TEST_CASE("the slow-callback report catches a coroutine step that blocks", "[event_loop][slow]") {
  offload::event_loop loop;
  slow_log log;
  record_slow(loop, log);
  loop.set_slow_callback_threshold(10ms);
  loop.run_until_complete(blocking_step_between_awaits());
  std::lock_guard<std::mutex> lock(log.m);
  REQUIRE(log.reports.size() >= 1);
  bool found = false;
  for (const auto& r : log.reports) {
    if (r.took >= 39ms) found = true;
  }
  REQUIRE(found);
}

// LIBRARY BUG (reported): when the loop spins for a hand-back, run_steps delivers it with an
// untimed ctx.poll(), so the step a to_thread completion resumes is never timed. A long spin makes
// the loop be spinning at hand-back time every run (with the default 50 us spin: ~10% of runs).
TEST_CASE("the slow-callback report catches a step resumed by a to_thread hand-back",
          "[event_loop][slow]") {
  offload::event_loop loop;
  slow_log log;
  record_slow(loop, log);
  loop.set_slow_callback_threshold(10ms);
  loop.set_spin(1s);
  loop.run_until_complete(blocking_step_after_to_thread());
  std::lock_guard<std::mutex> lock(log.m);
  bool found = false;
  for (const auto& r : log.reports) {
    if (r.took >= 39ms) found = true;
  }
  REQUIRE(found);
}

TEST_CASE("without a slow-callback handler the report goes to stderr and names to_thread",
          "[event_loop][slow]") {
  offload::event_loop loop;
  loop.set_slow_callback_threshold(5ms);
  std::string text;
  {
    offload_test::stderr_capture capture;
    loop.call_soon([&loop] {
      std::this_thread::sleep_for(20ms);
      loop.stop();
    });
    loop.run_forever();
    capture.restore();
    text = capture.text();
  }
  INFO(text);
  REQUIRE_THAT(text, offload_test::contains("to_thread"));
}

// ================================================================================================
// Serialization when several threads run the io_context
// ================================================================================================

TEST_CASE("loop-side code is serialized when 4 threads run the io_context", "[event_loop][mt]") {
  offload::net::io_context ctx(4);
  offload::event_loop loop{ctx};
  serial_state s;
  auto guard = offload::net::make_work_guard(ctx);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back([&ctx] { ctx.run(); });

  for (int i = 0; i < serial_coroutines; ++i) {
    offload::net::co_spawn(loop.get_executor(), serial_worker(loop, s), [&s](std::exception_ptr e) {
      if (e) s.failures.fetch_add(1);
      if (s.remaining.fetch_sub(1) == 1) s.all_done.set_value();
    });
  }
  auto done = s.all_done.get_future();
  const bool finished = done.wait_for(60s) == std::future_status::ready;
  guard.reset();
  if (!finished) ctx.stop();
  for (auto& t : threads) t.join();

  REQUIRE(finished);
  REQUIRE(s.failures.load() == 0);
  REQUIRE(s.overlaps.load() == 0);
  REQUIRE(s.off_strand.load() == 0);
  REQUIRE(s.not_in_loop.load() == 0);
  REQUIRE(s.count == serial_coroutines * (serial_awaits + 1));
  INFO("threads that ran loop-side steps: " << s.threads_seen.load());
  REQUIRE(s.threads_seen.load() >= 1);
}

// ================================================================================================
// The default executor
// ================================================================================================

TEST_CASE("the default executor's threads are named offload-<n>", "[event_loop][executor]") {
  offload::event_loop loop;
  const std::string name = loop.run_until_complete(worker_thread_name());
  INFO(name);
  REQUIRE(starts_with(name, "offload-"));
}

TEST_CASE("set_default_executor(options) makes to_thread run on that pool",
          "[event_loop][executor]") {
  offload::event_loop loop;
  offload::thread_pool_options options;
  options.thread_name_prefix = "custom";
  options.max_workers = 2;
  loop.set_default_executor(options);
  REQUIRE(loop.default_executor_pool().options().thread_name_prefix == "custom");
  REQUIRE(loop.default_executor_pool().max_workers() == 2);
  const std::string name = loop.run_until_complete(worker_thread_name());
  INFO(name);
  REQUIRE(starts_with(name, "custom-"));
}

TEST_CASE("set_default_executor(shared_ptr<thread_pool>) makes to_thread run on that pool",
          "[event_loop][executor]") {
  offload::thread_pool_options options;
  options.thread_name_prefix = "shared";
  auto pool = std::make_shared<offload::thread_pool>(options);
  {
    offload::event_loop loop;
    // The first default pool is replaced once it has been used.
    REQUIRE(starts_with(loop.run_until_complete(worker_thread_name()), "offload-"));
    loop.set_default_executor(pool);
    REQUIRE(&loop.default_executor_pool() == pool.get());
    const std::string name = loop.run_until_complete(worker_thread_name());
    INFO(name);
    REQUIRE(starts_with(name, "shared-"));
    REQUIRE_THROWS_AS(loop.set_default_executor(std::shared_ptr<offload::thread_pool>{}),
                      std::invalid_argument);
  }
  // close() shut the loop's default executor down, even though the caller still holds it.
  REQUIRE(pool->is_shutdown());
  // Joined by that shutdown: exactly the one call above ran on it.
  REQUIRE(pool->stats().completed == 1);
}

TEST_CASE("shutdown_default_executor reports a call still running after the timeout",
          "[event_loop][executor]") {
  offload::event_loop loop;
  std::latch release(1);
  const auto r = loop.run_until_complete(shutdown_with_straggler(loop, release));
  REQUIRE_FALSE(r.report.completed);
  REQUIRE(r.report.stragglers.size() == 1);
  const auto& s = r.report.stragglers.front();
  REQUIRE(s.running_for > std::chrono::nanoseconds::zero());
  REQUIRE(s.running_for >= 2ms);
  INFO(s.thread_name);
  REQUIRE(starts_with(s.thread_name, "offload"));
  REQUIRE(s.thread != r.loop_thread);
  REQUIRE(r.joined_value == 5);
  REQUIRE(r.after_shutdown == offload::errc::executor_shutdown);
}

TEST_CASE("shutdown_default_executor completes when nothing runs", "[event_loop][executor]") {
  SECTION("the pool was never used") {
    offload::event_loop loop;
    const auto r = loop.run_until_complete(shutdown_idle(false));
    REQUIRE(r.report.completed);
    REQUIRE(r.report.stragglers.empty());
    REQUIRE(r.after_shutdown == offload::errc::executor_shutdown);
  }
  SECTION("the pool has idle threads") {
    offload::event_loop loop;
    const auto r = loop.run_until_complete(shutdown_idle(true));
    REQUIRE(r.before == 3);
    REQUIRE(r.report.completed);
    REQUIRE(r.report.stragglers.empty());
    REQUIRE(r.after_shutdown == offload::errc::executor_shutdown);
  }
}

TEST_CASE("the loop keeps running callbacks while shutdown_default_executor waits",
          "[event_loop][executor]") {
  offload::event_loop loop;
  std::latch release(1);
  const auto r = loop.run_until_complete(shutdown_while_loop_works(loop, release));
  REQUIRE(r.callback_ran_during_wait);
  REQUIRE(r.report.completed);
  REQUIRE(r.report.stragglers.empty());
  REQUIRE(r.joined_value == 5);
}
