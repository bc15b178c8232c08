// serial_thread: calls made through it run one at a time, in the order they reach it, always on
// the one thread it owns; what offload gives other targets (cancellation of a queued call,
// limiters, shutdown that loses no call, stats) holds there too.
#include "catch.hpp"
#include "loop_helpers.hpp"

#include <offload/offload.hpp>
#include <offload/serial_thread.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <exception>
#include <future>
#include <latch>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using namespace std::chrono_literals;

namespace {

using offload_test::is_cancelled;
using offload_test::yield_once;

// What the serial thread saw, written only by calls on it (one at a time) and read after they
// have completed.
struct journal {
  std::vector<int> order;
  std::vector<std::thread::id> threads;
  std::atomic<int> running{0};
  std::atomic<int> most_at_once{0};

  void record(int i) {
    const int now = running.fetch_add(1) + 1;
    int seen = most_at_once.load();
    while (now > seen && !most_at_once.compare_exchange_weak(seen, now)) {
    }
    order.push_back(i);
    threads.push_back(std::this_thread::get_id());
    std::this_thread::yield();  // widens the window in which a second thread would overlap
    running.fetch_sub(1);
  }
};

offload::awaitable<void> record_on(offload::serial_thread& serial, journal& log, int i) {
  co_await offload::run_in_executor(serial, [&log, i] { log.record(i); });
}

// The journal as the caller expects it: calls 0..n-1 in order, all on `thread`, never two at once.
void require_serial(const journal& log, std::size_t n, std::thread::id thread) {
  REQUIRE(log.order.size() == n);
  for (std::size_t i = 0; i < n; ++i) REQUIRE(log.order[i] == static_cast<int>(i));
  for (const std::thread::id& t : log.threads) REQUIRE(t == thread);
  REQUIRE(log.most_at_once.load() == 1);
}

}  // namespace

TEST_CASE("thousands of calls from concurrent coroutines run in submission order on one thread",
          "[serial_thread]") {
  constexpr int calls = 3000;
  offload::serial_thread serial;
  offload::event_loop loop;
  journal log;
  // Tasks start in creation order, and each submits at its first step: the calls reach the
  // serial thread in that order, and all are in flight together.
  std::vector<offload::task<void>> tasks;
  for (int i = 0; i < calls; ++i) tasks.push_back(loop.create_task(record_on(serial, log, i)));
  for (auto& t : tasks) loop.run_until_complete(t.join());
  require_serial(log, calls, serial.thread_id());
  REQUIRE(serial.thread_id() != std::this_thread::get_id());
  REQUIRE(serial.stats().workers == 1);
  // A call counts as completed just after its awaiter is answered: exact once the thread is gone.
  serial.shutdown();
  REQUIRE(serial.stats().completed == static_cast<std::uint64_t>(calls));
  REQUIRE(serial.stats().workers == 0);
}

TEST_CASE("every form of target reaches the same thread: by reference, its executor, async_run",
          "[serial_thread]") {
  offload::serial_thread serial;
  offload::event_loop loop;
  const auto here = [] { return std::this_thread::get_id(); };
  REQUIRE(loop.run_until_complete(offload::run_in_executor(serial, here)) == serial.thread_id());
  REQUIRE(loop.run_until_complete(offload::run_in_executor(serial.get_executor(), here)) ==
          serial.thread_id());
  REQUIRE(loop.run_until_complete(loop.run_in_executor(serial, here)) == serial.thread_id());
  // From a plain thread with no loop.
  std::future<std::thread::id> f = offload::async_run(serial, here, offload::net::use_future);
  REQUIRE(f.get() == serial.thread_id());
}

TEST_CASE("plain threads' calls each keep their own order and never overlap", "[serial_thread]") {
  constexpr int submitters = 4;
  constexpr int per_submitter = 500;
  offload::serial_thread serial;
  std::vector<std::vector<int>> seen(submitters);  // written on the serial thread only
  std::vector<std::thread> threads;
  std::atomic<int> running{0};
  std::atomic<bool> overlapped{false};
  std::latch go(submitters);
  for (int s = 0; s < submitters; ++s) {
    threads.emplace_back([&, s] {
      go.arrive_and_wait();
      std::vector<std::future<void>> done;
      for (int i = 0; i < per_submitter; ++i) {
        done.push_back(offload::async_run(
            serial,
            [&, s, i] {
              if (running.fetch_add(1) != 0) overlapped = true;
              seen[s].push_back(i);
              std::this_thread::yield();
              running.fetch_sub(1);
            },
            offload::net::use_future));
      }
      for (auto& d : done) d.get();
    });
  }
  for (auto& t : threads) t.join();
  REQUIRE_FALSE(overlapped.load());
  for (const auto& calls : seen) {
    REQUIRE(calls.size() == per_submitter);
    for (int i = 0; i < per_submitter; ++i) REQUIRE(calls[i] == i);
  }
}

TEST_CASE("a queued call cancelled behind a running one never runs; the next one does",
          "[serial_thread][cancel]") {
  offload::serial_thread serial;
  offload::event_loop loop;
  std::latch started(1), release(1);
  std::atomic<bool> cancelled_ran{false};
  std::vector<int> order;  // written on the serial thread only

  auto blocker = [&] {
    started.count_down();
    release.wait();
    order.push_back(1);
  };
  auto cancelled_call = [&] { cancelled_ran = true; };
  auto after = [&] { order.push_back(3); };
  auto first = loop.create_task(offload::run_in_executor(serial, blocker));
  auto second = loop.create_task(offload::run_in_executor(serial, cancelled_call));
  auto third = loop.create_task(offload::run_in_executor(serial, after));
  loop.run_until_complete(yield_once());  // all three are submitted
  started.wait();
  REQUIRE(second.cancel());
  // The queued call's awaiter is answered while the thread is still busy with the first call.
  std::exception_ptr error;
  try {
    loop.run_until_complete(second.join());
  } catch (...) {
    error = std::current_exception();
  }
  REQUIRE(is_cancelled(error));
  release.count_down();
  loop.run_until_complete(first.join());
  loop.run_until_complete(third.join());
  REQUIRE_FALSE(cancelled_ran.load());
  REQUIRE(order == std::vector<int>{1, 3});
}

TEST_CASE("the initializer runs first, on the serial thread; if it throws, the constructor does",
          "[serial_thread]") {
  SECTION("it runs once, on the thread every call then runs on") {
    std::thread::id init_thread;
    int init_runs = 0;  // written on the serial thread before thread_id() is known
    offload::serial_thread_options o;
    o.thread_name = "db";
    o.initializer = [&] {
      ++init_runs;
      init_thread = std::this_thread::get_id();
    };
    offload::serial_thread serial(std::move(o));
    REQUIRE(init_runs == 1);
    REQUIRE(init_thread == serial.thread_id());
    offload::event_loop loop;
    auto name = [] { return offload_test::this_thread_name(); };
    REQUIRE(loop.run_until_complete(offload::run_in_executor(serial, name)) == "db-1");
  }
  SECTION("its exception leaves the constructor, and no thread is left behind") {
    offload::serial_thread_options o;
    o.initializer = [] { throw std::runtime_error("cannot open the connection"); };
    REQUIRE_THROWS_WITH(offload::serial_thread(std::move(o)), "cannot open the connection");
  }
}

TEST_CASE("shutdown loses no call: queued calls run, or with cancel_pending are answered",
          "[serial_thread][shutdown]") {
  constexpr int queued_calls = 50;
  offload::event_loop loop;
  for (const bool cancel_pending : {false, true}) {
    offload::serial_thread serial;
    std::latch started(1), release(1);
    std::atomic<int> ran{0};
    auto blocker = [&] {
      started.count_down();
      release.wait();
    };
    auto count = [&] { ++ran; };
    auto first = loop.create_task(offload::run_in_executor(serial, blocker));
    std::vector<offload::task<void>> queued;
    for (int i = 0; i < queued_calls; ++i)
      queued.push_back(loop.create_task(offload::run_in_executor(serial, count)));
    loop.run_until_complete(yield_once());
    started.wait();
    REQUIRE(serial.stats().queued == queued_calls);
    serial.shutdown(false, cancel_pending);  // while the first call still runs
    release.count_down();
    serial.join();
    REQUIRE(serial.is_shutdown());
    loop.run_until_complete(first.join());
    int answered_cancelled = 0;
    for (auto& t : queued) {
      try {
        loop.run_until_complete(t.join());
      } catch (...) {
        REQUIRE(is_cancelled(std::current_exception()));
        ++answered_cancelled;
      }
    }
    REQUIRE(ran.load() + answered_cancelled == queued_calls);
    REQUIRE(ran.load() == (cancel_pending ? 0 : queued_calls));
    // After shutdown a call is refused at once.
    auto late = [] {};
    REQUIRE(offload_test::code_thrown_by([&] {
              loop.run_until_complete(offload::run_in_executor(serial, late));
            }) == offload::errc::executor_shutdown);
  }
}

TEST_CASE("a capacity limiter shared with a pool bounds the serial thread's calls too",
          "[serial_thread][limiter]") {
  offload::serial_thread serial;
  offload::thread_pool pool(4);
  offload::capacity_limiter limiter(1);
  offload::event_loop loop;
  std::atomic<int> inside{0};
  std::atomic<int> most{0};
  auto guarded = [&] {
    const int now = ++inside;
    int seen = most.load();
    while (now > seen && !most.compare_exchange_weak(seen, now)) {
    }
    std::this_thread::sleep_for(1ms);  // long enough for another call to overlap if allowed
    --inside;
  };
  offload::call_options opts;
  opts.limiter = &limiter;
  std::vector<offload::task<void>> tasks;
  for (int i = 0; i < 10; ++i) {
    tasks.push_back(loop.create_task(offload::run_in_executor(serial, opts, guarded)));
    tasks.push_back(loop.create_task(offload::run_in_executor(pool, opts, guarded)));
  }
  for (auto& t : tasks) loop.run_until_complete(t.join());
  REQUIRE(most.load() == 1);
  REQUIRE(limiter.stats().borrowed_tokens == 0);
}
