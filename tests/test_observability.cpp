// Seeing what a pool's calls do (issue 19): per-call timings and counts in stats(), the
// call_observer hook, reports of calls running too long, and the figures outliving the pool.
//
// Distributed under the Boost Software License, Version 1.0.
#include "catch.hpp"
#include "loop_helpers.hpp"
#include "net_errors.hpp"
#include "probes.hpp"
#include "stderr_capture.hpp"

#include <offload/call_observer.hpp>
#include <offload/call_stats.hpp>
#include <offload/context.hpp>
#include <offload/detail/histogram.hpp>
#include <offload/errors.hpp>
#include <offload/event_loop.hpp>
#include <offload/gather.hpp>
#include <offload/limiter.hpp>
#include <offload/serial_thread.hpp>
#include <offload/thread_pool.hpp>
#include <offload/to_thread.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <typeinfo>
#include <utility>
#include <vector>

namespace {

namespace net = offload::net;
using namespace std::chrono_literals;
using offload_test::eventually;
using offload_test::submit_plain;

/// A pool's options with timings on (they are off by default).
offload::thread_pool_options options_with(std::size_t max_workers,
                                          std::shared_ptr<offload::call_observer> observer = {}) {
  offload::thread_pool_options o;
  o.max_workers = max_workers;
  o.observer = std::move(observer);
  o.timings = true;
  return o;
}

/// Runs `body` as a coroutine on a fresh loop to its end.
template <typename Body>
void run_on_loop(Body body) {
  offload::event_loop loop;
  loop.run_until_complete(body());
}

/// One event an observer was told of, with the thread it came on.
struct event {
  enum kind { submit, start, finish, abandon } what;
  std::uint64_t id;
  std::string callable;
  std::thread::id thread;
  offload::call_end end{};
  offload::call_durations durations{};
  std::string context;  // the context hook's value on the observer's thread
};

thread_local std::string tl_request_id;

/// Writes down every event, in the order they happen.
class recording_observer final : public offload::call_observer {
 public:
  std::vector<event> events() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return events_;
  }
  std::vector<offload::running_call> long_calls() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return long_calls_;
  }
  std::size_t finished() const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::size_t n = 0;
    for (const event& e : events_) n += e.what == event::finish;
    return n;
  }

  void on_submit(const offload::call_info& c) override { add(event::submit, c); }
  void on_start(const offload::call_info& c) override { add(event::start, c); }
  void on_finish(const offload::call_info& c, offload::call_end end,
                 const offload::call_durations& d) override {
    add(event::finish, c, end, d);
  }
  void on_abandon(const offload::call_info& c) override { add(event::abandon, c); }
  void on_long_call(const offload::running_call& call) override {
    std::lock_guard<std::mutex> lock(mutex_);
    long_calls_.push_back(call);
  }

 private:
  void add(event::kind what, const offload::call_info& c, offload::call_end end = {},
           offload::call_durations d = {}) {
    event e{what, c.id, c.callable, std::this_thread::get_id(), end, d, tl_request_id};
    std::lock_guard<std::mutex> lock(mutex_);
    events_.push_back(std::move(e));
  }

  mutable std::mutex mutex_;
  std::vector<event> events_;
  std::vector<offload::running_call> long_calls_;
};

std::vector<event> events_of(const std::vector<event>& all, std::uint64_t id) {
  std::vector<event> mine;
  for (const event& e : all) {
    if (e.id == id) mine.push_back(e);
  }
  return mine;
}

/// What `f` threw, or null.
template <typename F>
std::exception_ptr error_of(F&& f) {
  try {
    std::forward<F>(f)();
  } catch (...) {
    return std::current_exception();
  }
  return nullptr;
}

struct sleeper {
  std::chrono::milliseconds d;
  int operator()() const {
    std::this_thread::sleep_for(d);
    return 1;
  }
};

}  // namespace

// -- the histogram -----------------------------------------------------------------------------

TEST_CASE("a latency histogram reads back each value within 1/16, and exactly below 16 ns",
          "[observability][histogram]") {
  using h = offload::detail::latency_histogram;
  for (std::uint64_t v : {0ull, 1ull, 7ull, 15ull, 16ull, 17ull, 100ull, 1000ull, 123456ull,
                          50'000'000ull, 7'000'000'000'000ull}) {
    const std::uint64_t read = h::bucket_middle(h::bucket_of(v));
    if (v < 16) {
      CHECK(read == v);
    } else {
      CHECK(read * 16 >= v * 15);
      CHECK(read * 16 <= v * 17);
    }
  }
  // Buckets are ordered and contiguous: each value's bucket is its predecessor's or the next.
  for (std::uint64_t v = 1; v < 100'000; ++v) {
    const auto b = h::bucket_of(v);
    const auto before = h::bucket_of(v - 1);
    REQUIRE((b == before || b == before + 1));
  }
  CHECK(h::bucket_of(~std::uint64_t{0}) == h::bucket_count - 1);
}

TEST_CASE("a histogram's percentiles, count, sum and max", "[observability][histogram]") {
  offload::detail::latency_histogram h;
  for (std::uint64_t v = 1; v <= 1000; ++v) h.add_owned(v * 1000);  // 1 us .. 1 ms
  offload::detail::histogram_snapshot s;
  h.add_into(s);
  const offload::latency_summary sum = s.summary();
  CHECK(sum.count == 1000);
  CHECK(sum.sum == std::chrono::nanoseconds(500'500'000));
  CHECK(sum.max == 1ms);
  CHECK(sum.p50 >= 470us);
  CHECK(sum.p50 <= 532us);
  CHECK(sum.p90 >= 846us);
  CHECK(sum.p90 <= 957us);
  CHECK(sum.p99 >= 930us);
  CHECK(sum.p99 <= 1ms);
}

// -- timings and counts in stats() ---------------------------------------------------------------

TEST_CASE("stats() times each phase of a call: queued, running and handing back",
          "[observability][timings]") {
  offload::thread_pool pool(options_with(1));
  // One thread and three calls of 30 ms made at once: the third waits for the other two.
  run_on_loop([&]() -> offload::awaitable<void> {
    auto f = sleeper{30ms};
    std::vector<offload::call<int>> calls;
    for (int i = 0; i < 3; ++i) calls.push_back(offload::run_in_executor(pool, f));
    (void)co_await offload::gather(std::move(calls));
  });
  const offload::thread_pool_stats s = pool.stats();
  CHECK(s.timings.running.count == 3);
  CHECK(s.timings.running.p50 >= 28ms);  // a bucket's middle is within 1/16 of the value
  CHECK(s.timings.running.max >= 30ms);
  CHECK(s.timings.running.sum >= 90ms);
  CHECK(s.timings.queued.count == 3);
  CHECK(s.timings.queued.max >= 45ms);  // the last call waited for two 30 ms calls
  CHECK(s.timings.handing_back.count == 3);
  CHECK(s.timings.handing_back.max < 10s);
  // All within the current window.
  CHECK(s.recent.running.count == 3);
  CHECK(s.recent.queued.count == 3);
  CHECK(s.recent.handing_back.count == 3);
  CHECK(s.calls.completed == 3);
  CHECK(s.calls.failed == 0);
}

TEST_CASE("without timings stats() still counts the calls but times none",
          "[observability][timings]") {
  offload::thread_pool_options o = options_with(2);
  o.timings = false;
  offload::thread_pool pool(o);
  run_on_loop([&]() -> offload::awaitable<void> {
    auto f = [] { return 1; };
    for (int i = 0; i < 5; ++i) (void)co_await offload::run_in_executor(pool, f);
  });
  const offload::thread_pool_stats s = pool.stats();
  CHECK(s.calls.completed == 5);
  CHECK(s.timings.running.count == 0);
  CHECK(s.timings.queued.count == 0);
  CHECK(s.timings.handing_back.count == 0);
}

TEST_CASE(
    "stats() counts how calls ended: completed, failed, cancelled, abandoned, timed out, "
    "refused",
    "[observability][counts]") {
  offload::thread_pool pool(options_with(1));
  offload::event_loop loop;
  std::latch release_first(1), release_abandoned(1);
  auto hold = [&release_first] { release_first.wait(); };
  auto fail = []() -> int { throw std::runtime_error("no"); };
  auto quick = [] { return 7; };

  run_on_loop([&]() -> offload::awaitable<void> {
    // Two that return, one that throws.
    (void)co_await offload::run_in_executor(pool, quick);
    (void)co_await offload::run_in_executor(pool, quick);
    try {
      (void)co_await offload::run_in_executor(pool, fail);
    } catch (const std::runtime_error&) {
    }
    co_return;
  });
  CHECK(pool.stats().calls.completed == 2);
  CHECK(pool.stats().calls.failed == 1);

  // A call queued behind a held one and cancelled there never starts; one queued with a 20 ms
  // timeout times out there.
  std::optional<std::exception_ptr> held, cancelled, timed_out;
  net::cancellation_signal signal;
  auto held_call = [&]() -> offload::awaitable<void> {
    co_await offload::run_in_executor(pool, hold);
  };
  auto queued_call = [&]() -> offload::awaitable<void> {
    (void)co_await offload::run_in_executor(pool, quick);
  };
  auto timed_call = [&]() -> offload::awaitable<void> {
    (void)co_await offload::run_in_executor(pool, {.timeout = 20ms}, quick);
  };
  net::co_spawn(loop.get_executor(), held_call(), [&](std::exception_ptr e) { held = e; });
  net::co_spawn(
      loop.get_executor(), queued_call(),
      net::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr e) { cancelled = e; }));
  net::co_spawn(loop.get_executor(), timed_call(), [&](std::exception_ptr e) { timed_out = e; });
  auto until_both_queued = [&]() -> offload::awaitable<void> {
    co_await offload_test::wait_until([&] { return pool.stats().queued == 2; });
    signal.emit(net::cancellation_type::terminal);
    co_await offload_test::wait_until([&] { return cancelled && timed_out; });
  };
  loop.run_until_complete(until_both_queued());
  release_first.count_down();
  auto until_held_done = [&]() -> offload::awaitable<void> {
    co_await offload_test::wait_until([&] { return held.has_value(); });
  };
  loop.run_until_complete(until_held_done());
  REQUIRE(cancelled.has_value());
  CHECK(offload_test::is_cancelled(*cancelled));
  CHECK(pool.stats().calls.cancelled_before_start == 2);
  CHECK(pool.stats().calls.timed_out == 1);
  CHECK(pool.stats().calls.completed == 3);  // the held call

  // Cancelled while running under the wait policy, and under abandon.
  std::latch running(1), release_waited(1);
  auto waited = [&] {
    running.count_down();
    release_waited.wait();
    return 1;
  };
  std::optional<std::exception_ptr> waited_result, abandoned_result;
  net::cancellation_signal signal2, signal3;
  auto waited_call = [&]() -> offload::awaitable<void> {
    (void)co_await offload::run_in_executor(pool, waited);
  };
  net::co_spawn(loop.get_executor(), waited_call(),
                net::bind_cancellation_slot(signal2.slot(),
                                            [&](std::exception_ptr e) { waited_result = e; }));
  auto cancel_waited = [&]() -> offload::awaitable<void> {
    co_await offload_test::wait_until([&] { return running.try_wait(); });
    signal2.emit(net::cancellation_type::terminal);
    release_waited.count_down();
    co_await offload_test::wait_until([&] { return waited_result.has_value(); });
  };
  loop.run_until_complete(cancel_waited());
  CHECK(offload_test::is_cancelled(*waited_result));
  CHECK(pool.stats().calls.cancelled_while_running == 1);
  CHECK(pool.stats().calls.completed == 4);  // it ran to its end

  std::latch abandoned_running(1);
  auto abandoned = [&] {
    abandoned_running.count_down();
    release_abandoned.wait();
  };
  auto abandoned_call = [&]() -> offload::awaitable<void> {
    co_await offload::run_in_executor(pool, {.policy = offload::cancel_policy::abandon}, abandoned);
  };
  net::co_spawn(loop.get_executor(), abandoned_call(),
                net::bind_cancellation_slot(signal3.slot(),
                                            [&](std::exception_ptr e) { abandoned_result = e; }));
  auto cancel_abandoned = [&]() -> offload::awaitable<void> {
    co_await offload_test::wait_until([&] { return abandoned_running.try_wait(); });
    signal3.emit(net::cancellation_type::terminal);
    co_await offload_test::wait_until([&] { return abandoned_result.has_value(); });
  };
  loop.run_until_complete(cancel_abandoned());
  CHECK(pool.stats().calls.abandoned == 1);
  release_abandoned.count_down();
  CHECK(eventually([&] { return pool.stats().calls.completed == 5; }));

  // Refused once shut down.
  pool.shutdown();
  CHECK(offload_test::code_of(error_of([&] { submit_plain(pool, quick).get(); })) ==
        offload::errc::executor_shutdown);
  CHECK(pool.stats().calls.refused == 1);
  const offload::call_counts c = pool.stats().calls;
  CHECK(c.completed == 5);
  CHECK(c.failed == 1);
  CHECK(c.cancelled_before_start == 2);
  CHECK(c.cancelled_while_running == 1);
  CHECK(c.abandoned == 1);
  CHECK(c.timed_out == 1);
}

TEST_CASE(
    "shutdown(cancel_pending) counts the calls it cancelled; a pool's figures survive the "
    "threads that recorded them",
    "[observability][counts]") {
  offload::thread_pool_options o = options_with(1);
  o.keep_alive = 1ms;  // the thread exits soon after its calls: its figures must stay
  offload::thread_pool pool(o);
  auto quick = [] { return 1; };
  for (int i = 0; i < 3; ++i) CHECK(submit_plain(pool, quick).get() == 1);
  REQUIRE(eventually([&] { return pool.stats().workers == 0; }));
  CHECK(pool.stats().calls.completed == 3);
  CHECK(pool.stats().timings.running.count == 3);

  offload_test::gate g;
  auto blocker = [&g] { g.wait(); };
  auto first = submit_plain(pool, blocker);
  REQUIRE(eventually([&] { return pool.stats().running == 1; }));
  auto second = submit_plain(pool, quick);
  auto third = submit_plain(pool, quick);
  pool.shutdown(false, true);
  g.open();
  first.get();
  CHECK(offload_test::is_cancelled(error_of([&] { second.get(); })));
  CHECK(offload_test::is_cancelled(error_of([&] { third.get(); })));
  pool.join();
  CHECK(pool.stats().calls.cancelled_before_start == 2);
  CHECK(pool.stats().calls.completed == 4);
}

// -- the observer --------------------------------------------------------------------------------

TEST_CASE(
    "an observer hears submit, start and finish of each call, in that order, on the "
    "caller's and the worker's threads, with the caller's context on the worker",
    "[observability][observer]") {
  auto observer = std::make_shared<recording_observer>();
  offload::thread_pool pool(options_with(2, observer));
  offload::context_hook request_id(
      [] { return tl_request_id; },
      [](std::string id) { return std::exchange(tl_request_id, std::move(id)); });
  std::thread::id loop_thread;
  std::vector<std::thread::id> worker_threads;
  std::mutex worker_threads_mutex;
  auto record_thread = [&] {
    std::lock_guard<std::mutex> lock(worker_threads_mutex);
    worker_threads.push_back(std::this_thread::get_id());
    return 1;
  };
  auto fail = []() -> int { throw std::runtime_error("no"); };
  run_on_loop([&]() -> offload::awaitable<void> {
    loop_thread = std::this_thread::get_id();
    for (int i = 0; i < 3; ++i) {
      tl_request_id = "request-" + std::to_string(i);
      (void)co_await offload::run_in_executor(pool, record_thread);
    }
    tl_request_id = "request-fails";
    try {
      (void)co_await offload::run_in_executor(pool, fail);
    } catch (const std::runtime_error&) {
    }
    tl_request_id.clear();
  });
  const std::vector<event> all = observer->events();
  REQUIRE(all.size() == 12);
  for (std::uint64_t id = 1; id <= 4; ++id) {
    const std::vector<event> mine = events_of(all, id);
    REQUIRE(mine.size() == 3);
    CHECK(mine[0].what == event::submit);
    CHECK(mine[1].what == event::start);
    CHECK(mine[2].what == event::finish);
    CHECK(mine[0].thread == loop_thread);
    CHECK(mine[1].thread != loop_thread);
    CHECK(mine[1].thread == mine[2].thread);  // start and finish on the worker that ran it
    const std::string context =
        id <= 3 ? "request-" + std::to_string(id - 1) : std::string("request-fails");
    CHECK(mine[0].context == context);  // on the caller's thread
    CHECK(mine[1].context == context);  // installed on the worker
    CHECK(mine[2].context == context);
    CHECK(mine[2].end == (id <= 3 ? offload::call_end::returned : offload::call_end::threw));
    CHECK(mine[0].callable == mine[2].callable);
  }
  CHECK(events_of(all, 1)[0].callable == typeid(record_thread).name());
  CHECK(events_of(all, 4)[0].callable == typeid(fail).name());
  {
    std::lock_guard<std::mutex> lock(worker_threads_mutex);
    REQUIRE(worker_threads.size() == 3);
    for (std::uint64_t id = 1; id <= 3; ++id) {
      CHECK(events_of(all, id)[1].thread == worker_threads[id - 1]);
    }
  }
  // The worker's context was restored after each call.
  std::string after;
  auto read_context = [] { return tl_request_id; };
  after = submit_plain(pool, read_context).get();
  CHECK(after.empty());
}

TEST_CASE("an observer's durations: queued and running of the call that ended",
          "[observability][observer]") {
  auto observer = std::make_shared<recording_observer>();
  offload::thread_pool pool(options_with(1, observer));
  auto f = sleeper{20ms};
  run_on_loop([&]() -> offload::awaitable<void> {
    std::vector<offload::call<int>> calls;
    calls.push_back(offload::run_in_executor(pool, f));
    calls.push_back(offload::run_in_executor(pool, f));
    (void)co_await offload::gather(std::move(calls));
  });
  const std::vector<event> second = events_of(observer->events(), 2);
  REQUIRE(second.size() == 3);
  CHECK(second[2].durations.running >= 20ms);
  CHECK(second[2].durations.queued >= 10ms);  // it waited for the first call (20 ms)
}

TEST_CASE("an observer hears of a cancelled queued call, an abandoned one and a refused one",
          "[observability][observer]") {
  auto observer = std::make_shared<recording_observer>();
  offload::thread_pool pool(options_with(1, observer));
  offload::event_loop loop;
  std::latch running(1), release(1);
  auto hold = [&] {
    running.count_down();
    release.wait();
  };
  auto quick = [] { return 1; };
  std::optional<std::exception_ptr> held, queued;
  net::cancellation_signal cancel_held, cancel_queued;
  auto held_call = [&]() -> offload::awaitable<void> {
    co_await offload::run_in_executor(pool, {.policy = offload::cancel_policy::abandon}, hold);
  };
  auto queued_call = [&]() -> offload::awaitable<void> {
    (void)co_await offload::run_in_executor(pool, quick);
  };
  net::co_spawn(
      loop.get_executor(), held_call(),
      net::bind_cancellation_slot(cancel_held.slot(), [&](std::exception_ptr e) { held = e; }));
  net::co_spawn(
      loop.get_executor(), queued_call(),
      net::bind_cancellation_slot(cancel_queued.slot(), [&](std::exception_ptr e) { queued = e; }));
  std::thread::id loop_thread;
  auto cancel_both = [&]() -> offload::awaitable<void> {
    loop_thread = std::this_thread::get_id();
    co_await offload_test::wait_until(
        [&] { return running.try_wait() && pool.stats().queued == 1; });
    cancel_queued.emit(net::cancellation_type::terminal);
    cancel_held.emit(net::cancellation_type::terminal);
    co_await offload_test::wait_until([&] { return held && queued; });
  };
  loop.run_until_complete(cancel_both());
  // Abandoned while running: on_abandon on the awaiter's thread, and no finish until f returns.
  std::vector<event> first = events_of(observer->events(), 1);
  REQUIRE(first.size() == 3);
  CHECK(first[2].what == event::abandon);
  CHECK(first[2].thread == loop_thread);
  // Cancelled while queued: finished at once, on the thread that cancelled it.
  const std::vector<event> second = events_of(observer->events(), 2);
  REQUIRE(second.size() == 2);
  CHECK(second[1].what == event::finish);
  CHECK(second[1].end == offload::call_end::cancelled_before_start);
  CHECK(second[1].thread == loop_thread);
  release.count_down();
  REQUIRE(eventually([&] { return events_of(observer->events(), 1).size() == 4; }));
  first = events_of(observer->events(), 1);
  CHECK(first[3].what == event::finish);
  CHECK(first[3].end == offload::call_end::returned);
  CHECK(first[3].thread == first[1].thread);

  pool.shutdown();
  (void)error_of([&] { submit_plain(pool, quick).get(); });
  const std::vector<event> third = events_of(observer->events(), 3);
  REQUIRE(third.size() == 2);
  CHECK(third[0].what == event::submit);
  CHECK(third[1].what == event::finish);
  CHECK(third[1].end == offload::call_end::refused);
}

TEST_CASE("an observer that throws is reported on stderr; the call goes on",
          "[observability][observer]") {
  struct throwing_observer final : offload::call_observer {
    void on_start(const offload::call_info&) override { throw std::runtime_error("observer"); }
  };
  offload::thread_pool pool(options_with(1, std::make_shared<throwing_observer>()));
  offload_test::stderr_capture err;
  auto quick = [] { return 5; };
  CHECK(submit_plain(pool, quick).get() == 5);
  CHECK(err.text().find("call_observer") != std::string::npos);
}

// -- long calls ----------------------------------------------------------------------------------

TEST_CASE(
    "a call running past report_calls_longer_than is reported once, with its thread's "
    "name; shorter calls are not",
    "[observability][long_calls]") {
  auto observer = std::make_shared<recording_observer>();
  offload::thread_pool_options o = options_with(2, observer);
  o.thread_name_prefix = "slowpool";
  o.report_calls_longer_than = 60ms;
  offload::thread_pool pool(o);
  auto short_call = sleeper{5ms};
  for (int i = 0; i < 5; ++i) CHECK(submit_plain(pool, short_call).get() == 1);
  // The long call: held until the report came, then for several more looks of the watchdog.
  const auto started = std::chrono::steady_clock::now();
  std::chrono::steady_clock::duration reported_after{};
  bool seen_reported = false;  // checked on the test's thread: Catch2 asserts on one thread
  auto long_call = [&] {
    seen_reported = eventually([&] { return !observer->long_calls().empty(); });
    reported_after = std::chrono::steady_clock::now() - started;
    std::this_thread::sleep_for(100ms);  // more looks by the watchdog: no second report
    return offload_test::this_thread_name();
  };
  const std::string thread_name = submit_plain(pool, long_call).get();
  REQUIRE(seen_reported);
  const std::vector<offload::running_call> reported = observer->long_calls();
  REQUIRE(reported.size() == 1);
  CHECK(reported[0].thread_name == thread_name);
  CHECK(reported[0].thread_name.rfind("slowpool-", 0) == 0);
  CHECK(reported[0].running_for >= 60ms);
  CHECK(reported_after >= 60ms);
  CHECK(reported[0].callable == typeid(long_call).name());
}

TEST_CASE("without an observer a long call is reported on stderr", "[observability][long_calls]") {
  offload_test::stderr_capture err;
  {
    offload::thread_pool_options o = options_with(1);
    o.thread_name_prefix = "lonely";
    o.report_calls_longer_than = 20ms;
    offload::thread_pool pool(o);
    // Far past the threshold and the watchdog's looks (a few per threshold). stderr is only
    // read once the call is over: reading rewinds the file the report is written to.
    auto slow = [] {
      std::this_thread::sleep_for(300ms);
      return 1;
    };
    CHECK(submit_plain(pool, slow).get() == 1);
  }
  const std::string text = err.text();
  CHECK(text.find("has run for") != std::string::npos);
  CHECK(text.find("lonely-1") != std::string::npos);
}

TEST_CASE("running_calls() is a snapshot of the calls running now", "[observability][long_calls]") {
  offload::thread_pool pool(options_with(2));
  offload_test::gate g;
  std::latch both(2);
  auto hold = [&] {
    both.count_down();
    g.wait();
  };
  auto a = submit_plain(pool, hold);
  auto b = submit_plain(pool, hold);
  both.wait();
  std::this_thread::sleep_for(30ms);  // running_for reads a clock of 1-10 ms ticks
  const std::vector<offload::running_call> now = pool.running_calls();
  g.open();
  a.get();
  b.get();
  REQUIRE(now.size() == 2);
  for (const offload::running_call& c : now) {
    CHECK(c.thread_name.rfind("offload-", 0) == 0);
    CHECK(c.running_for >= 10ms);
    CHECK(c.callable == typeid(hold).name());
  }
  // A thread counts as running a call until it has handed the result back, which is after
  // the future is ready.
  CHECK(eventually([&] { return pool.running_calls().empty(); }));
}

// -- lifetime ------------------------------------------------------------------------------------

TEST_CASE(
    "a call handed back by a pool that is gone before its awaiter resumes is still "
    "delivered (the figures outlive the pool)",
    "[observability][lifetime]") {
  offload::thread_pool_options o = options_with(1);
  o.timings = GENERATE(true, false);
  offload::event_loop loop;
  auto pool = std::make_unique<offload::thread_pool>(o);
  std::latch ran(1), release(1);
  auto f = [&] {
    ran.count_down();
    release.wait();  // returns only once the loop has stopped running: no delivery until later
    return 42;
  };
  std::optional<int> result;
  auto call = [&]() -> offload::awaitable<void> {
    result = co_await offload::run_in_executor(*pool, f);
  };
  net::co_spawn(loop.get_executor(), call(), net::detached);
  // Run the loop only until the call is submitted, then let the pool finish it and go.
  auto until_ran = [&]() -> offload::awaitable<void> {
    co_await offload_test::wait_until([&] { return ran.try_wait(); });
  };
  loop.run_until_complete(until_ran());
  release.count_down();
  pool.reset();  // joins its thread: the call is handed back, not yet delivered
  REQUIRE_FALSE(result.has_value());
  auto until_result = [&]() -> offload::awaitable<void> {
    co_await offload_test::wait_until([&] { return result.has_value(); });
  };
  loop.run_until_complete(until_result());
  CHECK(result == 42);
}

TEST_CASE("a call handed back by a pool that is gone, destroyed undelivered with its loop",
          "[observability][lifetime]") {
  offload::thread_pool_options o = options_with(1);
  o.timings = GENERATE(true, false);
  auto pool = std::make_unique<offload::thread_pool>(o);
  {
    offload::event_loop loop;
    std::latch ran(1), release(1);
    auto f = [&] {
      ran.count_down();
      release.wait();
      return 42;
    };
    auto call = [&]() -> offload::awaitable<void> {
      (void)co_await offload::run_in_executor(*pool, f);
    };
    net::co_spawn(loop.get_executor(), call(), net::detached);
    auto until_ran = [&]() -> offload::awaitable<void> {
      co_await offload_test::wait_until([&] { return ran.try_wait(); });
    };
    loop.run_until_complete(until_ran());
    release.count_down();
    pool.reset();
  }  // the loop goes with the call still queued for delivery
  SUCCEED("no leak, no use after free (checked by ASan)");
}

TEST_CASE("a serial_thread takes the same options and reports the same figures",
          "[observability][serial]") {
  auto observer = std::make_shared<recording_observer>();
  offload::serial_thread_options o;
  o.observer = observer;
  o.timings = true;
  offload::serial_thread serial(o);
  auto quick = [] { return 3; };
  run_on_loop([&]() -> offload::awaitable<void> {
    for (int i = 0; i < 4; ++i) (void)co_await offload::run_in_executor(serial, quick);
  });
  CHECK(serial.stats().calls.completed == 4);
  CHECK(serial.stats().timings.running.count == 4);
  CHECK(observer->finished() == 4);
}

TEST_CASE("a capacity_limiter times how long calls waited for a token and held it",
          "[observability][limiter]") {
  offload::thread_pool pool(options_with(3));
  offload::capacity_limiter one{1};
  auto f = sleeper{20ms};
  run_on_loop([&]() -> offload::awaitable<void> {
    std::vector<offload::call<int>> calls;
    for (int i = 0; i < 3; ++i)
      calls.push_back(offload::run_in_executor(pool, {.limiter = &one}, f));
    (void)co_await offload::gather(std::move(calls));
  });
  const offload::capacity_limiter::stats_type s = one.stats();
  CHECK(s.waited.count == 3);
  CHECK(s.held.count == 3);
  CHECK(s.held.p50 >= 18ms);  // a bucket's middle is within 1/16 of the value
  CHECK(s.held.sum >= 60ms);
  CHECK(s.waited.max >= 30ms);  // the third call waited for two 20 ms calls
  CHECK(s.recent_waited.count == 3);
  CHECK(s.recent_held.count == 3);
}
