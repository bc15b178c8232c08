// call_options.deadline / timeout: a call still queued at its deadline never starts and its
// awaiter hears errc::timeout then, not when a thread frees up; a running call sees its deadline
// (from_thread::deadline) and its stop_token at the deadline, and its awaiter is answered as its
// cancel policy says. Also wait_until, which the deadline is built on.
#include "catch.hpp"
#include "loop_helpers.hpp"

#include <offload/offload.hpp>

#include <atomic>
#include <chrono>
#include <exception>
#include <latch>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

namespace {

using offload_test::code_of;
using offload_test::code_thrown_by;

// Generous: a deadline is answered by a timer on a loop that may share a busy CPU.
constexpr auto late_bound = 5s;

// Awaits `aw`, keeping the exception it failed with (null if it succeeded).
template <typename T>
offload::awaitable<std::exception_ptr> error_of(offload::awaitable<T> aw) {
  try {
    (void)co_await std::move(aw);
  } catch (...) {
    co_return std::current_exception();
  }
  co_return nullptr;
}

struct non_default {
  explicit non_default(int v) : value(v) {}
  int value;
};

}  // namespace

TEST_CASE(
    "a call still queued at its deadline never runs; its awaiter hears timeout at the "
    "deadline, while the thread is still busy",
    "[deadline]") {
  offload::thread_pool pool(1);
  offload::event_loop loop;
  std::latch started(1), release(1);
  std::atomic<bool> queued_ran{false};
  auto blocker = [&] {
    started.count_down();
    release.wait();
  };
  auto queued = [&] { queued_ran = true; };
  auto busy = loop.create_task(offload::run_in_executor(pool, blocker));
  loop.run_until_complete(offload_test::yield_once());
  started.wait();

  const auto before = clock_type::now();
  const auto deadline = before + 50ms;
  std::exception_ptr error = loop.run_until_complete(
      error_of(offload::run_in_executor(pool, {.deadline = deadline}, queued)));
  const auto answered = clock_type::now();
  REQUIRE(code_of(error) == offload::errc::timeout);
  REQUIRE(answered >= deadline);
  REQUIRE(answered - deadline < late_bound);

  release.count_down();  // only now does the pool's thread free up
  loop.run_until_complete(busy.join());
  pool.shutdown();  // every queued call has run or been dropped
  REQUIRE_FALSE(queued_ran.load());
}

TEST_CASE("a running call reads its deadline; without one, or outside a call, there is none",
          "[deadline]") {
  offload::thread_pool pool(1);
  offload::event_loop loop;
  const auto read = [] { return offload::from_thread::deadline(); };

  const auto deadline = clock_type::now() + 1h;
  REQUIRE(loop.run_until_complete(offload::run_in_executor(pool, {.deadline = deadline}, read)) ==
          deadline);
  // The same thread, a call made without one: the previous call's deadline is gone.
  REQUIRE(loop.run_until_complete(offload::run_in_executor(pool, read)) == std::nullopt);
  REQUIRE(loop.run_until_complete(offload::run_in_executor(pool, {}, read)) == std::nullopt);
  REQUIRE(offload::from_thread::deadline() == std::nullopt);

  // timeout counts from the co_await, not from when the awaitable was made.
  auto lazy = offload::run_in_executor(pool, {.timeout = 1h}, read);
  std::this_thread::sleep_for(20ms);  // a gap the deadline must not include
  const auto awaited = clock_type::now();
  const std::optional<clock_type::time_point> seen = loop.run_until_complete(std::move(lazy));
  REQUIRE(seen.has_value());
  REQUIRE(*seen >= awaited + 1h);
  REQUIRE(*seen <= clock_type::now() + 1h);
}

TEST_CASE("deadline and timeout together: the earlier wins", "[deadline]") {
  offload::thread_pool pool(1);
  offload::event_loop loop;
  const auto read = [] { return *offload::from_thread::deadline(); };
  const auto far = clock_type::now() + 2h;
  SECTION("the timeout is earlier") {
    const auto seen = loop.run_until_complete(
        offload::run_in_executor(pool, {.deadline = far, .timeout = 1h}, read));
    REQUIRE(seen < far);
  }
  SECTION("the deadline is earlier") {
    const auto seen = loop.run_until_complete(
        offload::run_in_executor(pool, {.deadline = far, .timeout = 3h}, read));
    REQUIRE(seen == far);
  }
}

// One thread, already running and idle, so a call starts as soon as it is submitted. Whether it
// started before its deadline still depends on the machine: the tests below check what each
// case promises (a call that started was waited for, or abandoned; one that did not never runs).
static offload::thread_pool_options warm_single_thread() {
  offload::thread_pool_options o;
  o.max_workers = 1;
  o.min_workers = 1;
  return o;
}

TEST_CASE(
    "at the deadline a running call's stop_token is signalled; under the wait policy its "
    "awaiter hears timeout only once f has returned",
    "[deadline]") {
  offload::thread_pool pool(warm_single_thread());
  offload::event_loop loop;
  std::atomic<bool> started{false}, returned{false};
  auto until_stopped = [&](std::stop_token stop) {
    started = true;
    while (!stop.stop_requested()) std::this_thread::sleep_for(1ms);
    returned = true;
  };
  std::exception_ptr error = loop.run_until_complete(
      error_of(offload::run_in_executor(pool, {.timeout = 100ms}, until_stopped)));
  REQUIRE(code_of(error) == offload::errc::timeout);
  // Answered only after f returned (if it started at all: else it never runs).
  REQUIRE(returned.load() == started.load());
  pool.shutdown();
  REQUIRE(returned.load() == started.load());
}

TEST_CASE("under the abandon policy the awaiter hears timeout at the deadline while f still runs",
          "[deadline]") {
  offload::thread_pool pool(warm_single_thread());
  offload::event_loop loop;
  std::latch release(1);
  std::atomic<bool> started{false}, returned{false};
  auto stuck = [&release, &started, &returned] {
    started = true;
    release.wait();
    returned = true;
  };
  std::exception_ptr error = loop.run_until_complete(error_of(offload::run_in_executor(
      pool, {.policy = offload::cancel_policy::abandon, .timeout = 100ms}, stuck)));
  REQUIRE(code_of(error) == offload::errc::timeout);
  REQUIRE_FALSE(returned.load());  // answered while f was still blocked (or had not started)
  release.count_down();
  pool.shutdown();
  REQUIRE(returned.load() == started.load());
}

TEST_CASE("a deadline already past when the call is awaited: timeout at once, nothing submitted",
          "[deadline]") {
  offload::thread_pool pool(1);
  offload::event_loop loop;
  std::atomic<bool> ran{false};
  auto f = [&] { ran = true; };
  REQUIRE(code_thrown_by([&] {
            loop.run_until_complete(
                offload::run_in_executor(pool, {.deadline = clock_type::now() - 1s}, f));
          }) == offload::errc::timeout);
  pool.shutdown();
  REQUIRE_FALSE(ran.load());
  REQUIRE(pool.stats().completed == 0);
}

TEST_CASE("a call that beats its deadline returns its value, through to_thread too", "[deadline]") {
  offload::event_loop loop;
  auto answer = [] { return 42; };
  REQUIRE(loop.run_until_complete(offload::to_thread({.timeout = 1h}, answer)) == 42);
  auto make = [](int v) { return non_default(v); };
  REQUIRE(loop.run_until_complete(offload::to_thread({.timeout = 1h}, make, 7)).value == 7);
  auto fails = [] { throw std::runtime_error("f failed"); };
  std::exception_ptr error =
      loop.run_until_complete(error_of(offload::to_thread({.timeout = 1h}, fails)));
  REQUIRE_THROWS_WITH(std::rethrow_exception(error), "f failed");
}

TEST_CASE("async_run refuses a deadline it could not keep", "[deadline]") {
  offload::thread_pool pool(1);
  auto f = [] { return 1; };
  REQUIRE_THROWS_AS(offload::async_run(pool, {.timeout = 1s}, f, offload::net::use_future),
                    std::invalid_argument);
}

TEST_CASE("wait_until: the value before the deadline, timeout after it", "[deadline][wait_until]") {
  offload::event_loop loop;
  REQUIRE(loop.run_until_complete(offload::wait_until(offload::to_thread([] { return 5; }),
                                                      clock_type::now() + 1h)) == 5);
  const auto deadline = clock_type::now() + 20ms;
  std::exception_ptr error =
      loop.run_until_complete(error_of(offload::wait_until(offload_test::sleep_for(1h), deadline)));
  REQUIRE(code_of(error) == offload::errc::timeout);
  REQUIRE(clock_type::now() >= deadline);
}

TEST_CASE("duration::max() means no limit: the deadline saturates instead of overflowing",
          "[deadline][wait_until]") {
  offload::event_loop loop;
  auto answer = [] { return 8; };
  REQUIRE(loop.run_until_complete(
              offload::to_thread({.timeout = clock_type::duration::max()}, answer)) == 8);
  REQUIRE(loop.run_until_complete(
              offload::wait_for(offload::to_thread(answer), std::chrono::nanoseconds::max())) == 8);
}
