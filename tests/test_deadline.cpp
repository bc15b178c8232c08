// call_options.deadline / timeout: a call still queued at its deadline never starts and its
// awaiter hears errc::timeout then, not when a thread frees up; a running call sees its deadline
// (from_thread::deadline) and its stop_token at the deadline, and its awaiter is answered as its
// cancel policy says. Also wait_until, which the deadline is built on, and the deadline a
// coroutine under wait_for / wait_until passes to the calls it makes.
#include "catch.hpp"
#include "loop_helpers.hpp"

#include <offload/offload.hpp>

#include <atomic>
#include <chrono>
#include <exception>
#include <future>
#include <latch>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

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

// A one-thread pool whose thread is taken by a call made first, so the next call stays queued
// until finish().
struct busy_single_thread {
  offload::thread_pool pool{1};
  offload::event_loop loop;
  std::latch started{1}, release{1};
  std::atomic<bool> queued_ran{false};
  offload::task<void> busy;

  busy_single_thread()
      : busy(loop.create_task(offload::run_in_executor(pool, [this] {
          started.count_down();
          release.wait();
        }))) {
    loop.run_until_complete(offload_test::yield_once());
    started.wait();
  }
  // A call for the queue: it says whether it ever ran.
  auto queued() {
    return [this] { queued_ran = true; };
  }
  // Frees the thread; then every queued call has run or been dropped.
  void finish() {
    release.count_down();
    loop.run_until_complete(busy.join());
    pool.shutdown();
  }
};

}  // namespace

TEST_CASE(
    "a call still queued at its deadline never runs; its awaiter hears timeout at the "
    "deadline, while the thread is still busy",
    "[deadline]") {
  busy_single_thread thread;
  const auto before = clock_type::now();
  const auto deadline = before + 50ms;
  std::exception_ptr error = thread.loop.run_until_complete(
      error_of(offload::run_in_executor(thread.pool, {.deadline = deadline}, thread.queued())));
  const auto answered = clock_type::now();
  REQUIRE(code_of(error) == offload::errc::timeout);
  REQUIRE(answered >= deadline);
  REQUIRE(answered - deadline < late_bound);

  thread.finish();  // only now does the pool's thread free up
  REQUIRE_FALSE(thread.queued_ran.load());
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

// A coroutine awaited under wait_for / wait_until: the deadline travels with it to every
// offloaded call it makes, as asyncio's timeout() reaches everything the task awaits.

namespace {

using deadline_seen = std::optional<clock_type::time_point>;

deadline_seen read_deadline() { return offload::from_thread::deadline(); }

offload::awaitable<deadline_seen> read_in_a_call(offload::thread_pool& pool) {
  co_return co_await offload::run_in_executor(pool, read_deadline);
}

}  // namespace

TEST_CASE(
    "the calls a coroutine under wait_until makes read its deadline: directly, in coroutines it "
    "awaits or starts on its executor, gathered, mapped, on any target",
    "[deadline][enclosing]") {
  offload::thread_pool pool(2);
  offload::net::thread_pool asio_pool(1);
  offload::event_loop loop;
  const auto when = clock_type::now() + 1h;
  std::vector<deadline_seen> seen;
  auto body = [&]() -> offload::awaitable<void> {
    seen.push_back(co_await offload::run_in_executor(pool, read_deadline));
    seen.push_back(co_await read_in_a_call(pool));
    seen.push_back(co_await offload::to_thread(read_deadline));
    seen.push_back(co_await offload::run_in_executor(asio_pool, read_deadline));
    seen.push_back(co_await offload::run_in_executor(asio_pool.get_executor(), read_deadline));
    auto [a, b] = co_await offload::gather(offload::run_in_executor(pool, read_deadline),
                                           read_in_a_call(pool));
    seen.push_back(a);
    seen.push_back(b);
    const std::vector<int> items{1, 2, 3};
    auto read_each = [](int) { return read_deadline(); };
    for (deadline_seen s : co_await offload::map(pool, read_each, items)) seen.push_back(s);
    seen.push_back(co_await offload::net::co_spawn(co_await offload::net::this_coro::executor,
                                                   read_in_a_call(pool),
                                                   offload::net::use_awaitable));
  };
  auto outer = [&]() -> offload::awaitable<void> {
    co_await offload::wait_until(body(), when);
    // Out of it again: the same coroutine's calls have no deadline.
    seen.push_back(co_await offload::run_in_executor(pool, read_deadline));
  };
  loop.run_until_complete(outer());
  REQUIRE(seen.size() == 12);
  for (std::size_t i = 0; i + 1 < seen.size(); ++i) {
    INFO("call " << i);
    REQUIRE(seen[i] == when);
  }
  REQUIRE(seen.back() == std::nullopt);
}

TEST_CASE("wait_for(call, d): the call itself reads the deadline", "[deadline][enclosing]") {
  offload::thread_pool pool(1);
  offload::event_loop loop;
  const auto before = clock_type::now();
  const deadline_seen seen =
      loop.run_until_complete(offload::wait_for(offload::run_in_executor(pool, read_deadline), 1h));
  REQUIRE(seen.has_value());
  REQUIRE(*seen >= before + 1h);
  REQUIRE(*seen <= clock_type::now() + 1h);
}

TEST_CASE("of an enclosing deadline, a nested one and a call's own, the earliest holds",
          "[deadline][enclosing]") {
  offload::thread_pool pool(1);
  offload::event_loop loop;
  const auto near = clock_type::now() + 1h;
  const auto far = near + 1h;
  auto with_own = [&](clock_type::time_point own) -> offload::awaitable<deadline_seen> {
    co_return co_await offload::run_in_executor(pool, {.deadline = own}, read_deadline);
  };
  auto nested = [&](clock_type::time_point inner) -> offload::awaitable<deadline_seen> {
    co_return co_await offload::wait_until(read_in_a_call(pool), inner);
  };
  SECTION("the enclosing one is earlier than the call's own") {
    REQUIRE(loop.run_until_complete(offload::wait_until(with_own(far), near)) == near);
  }
  SECTION("the call's own is earlier") {
    REQUIRE(loop.run_until_complete(offload::wait_until(with_own(near), far)) == near);
  }
  SECTION("a nested wait_until ending later than the enclosing one") {
    REQUIRE(loop.run_until_complete(offload::wait_until(nested(far), near)) == near);
  }
  SECTION("a nested wait_until ending earlier") {
    REQUIRE(loop.run_until_complete(offload::wait_until(nested(near), far)) == near);
  }
}

TEST_CASE("a task the coroutine creates is the loop's, not under its deadline",
          "[deadline][enclosing]") {
  offload::thread_pool pool(1);
  offload::event_loop loop;
  auto body = [&]() -> offload::awaitable<deadline_seen> {
    auto task = loop.create_task(read_in_a_call(pool));
    co_return co_await task.join();
  };
  REQUIRE(loop.run_until_complete(offload::wait_for(body(), 1h)) == std::nullopt);
}

TEST_CASE(
    "a call still queued when the deadline of the wait_for it was made under passes never runs, "
    "and the pool counts it timed out",
    "[deadline][enclosing]") {
  busy_single_thread thread;
  auto queued = thread.queued();
  auto body = [&]() -> offload::awaitable<void> {
    co_await offload::run_in_executor(thread.pool, queued);
  };
  std::exception_ptr error =
      thread.loop.run_until_complete(error_of(offload::wait_for(body(), 50ms)));
  thread.finish();
  REQUIRE(code_of(error) == offload::errc::timeout);
  REQUIRE_FALSE(thread.queued_ran.load());
  const offload::call_counts counts = thread.pool.stats().calls;
  REQUIRE(counts.cancelled_before_start == 1);
  REQUIRE(counts.timed_out == 1);
}

TEST_CASE("an io_context's coroutine under wait_for: its calls read the deadline",
          "[deadline][enclosing][io_context]") {
  offload::thread_pool pool(1);
  offload::net::io_context io;
  const auto when = clock_type::now() + 1h;
  std::future<deadline_seen> seen = offload::net::co_spawn(
      io, offload::wait_until(read_in_a_call(pool), when), offload::net::use_future);
  io.run();
  REQUIRE(seen.get() == when);
}

TEST_CASE(
    "a coroutine the wait started and left running: once the wait is over, its calls are under "
    "no deadline",
    "[deadline][enclosing]") {
  offload::thread_pool pool(3);
  offload::event_loop loop;
  std::latch first_call_made(1), wait_over(1);
  deadline_seen inside;
  deadline_seen after = clock_type::now();  // must become nullopt
  bool leftover_done = false;
  auto read_and_tell = [&] {
    deadline_seen seen = read_deadline();
    first_call_made.count_down();
    return seen;
  };
  auto wait_until_over = [&] { wait_over.wait(); };
  auto leftover = [&]() -> offload::awaitable<void> {
    inside = co_await offload::run_in_executor(pool, read_and_tell);
    co_await offload::run_in_executor(pool, wait_until_over);
    after = co_await offload::run_in_executor(pool, read_deadline);
    leftover_done = true;
  };
  auto wait_first_call = [&] { first_call_made.wait(); };
  auto body = [&]() -> offload::awaitable<void> {
    offload::net::co_spawn(co_await offload::net::this_coro::executor, leftover(),
                           offload::net::detached);
    co_await offload::run_in_executor(pool, wait_first_call);
  };
  auto outer = [&]() -> offload::awaitable<void> {
    co_await offload::wait_for(body(), 1h);
    wait_over.count_down();
    while (!leftover_done) co_await offload::sleep(1ms);  // polls; asserts no duration
  };
  loop.run_until_complete(outer());
  REQUIRE(inside.has_value());
  REQUIRE(after == std::nullopt);
}
