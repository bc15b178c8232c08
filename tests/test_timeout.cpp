// wait_for: an awaitable's result, or errc::timeout once the duration has passed (the inner
// operation cancelled and awaited per its policy); cancellation of the awaiter stays
// cancellation.
#include "catch.hpp"
#include "loop_helpers.hpp"

#include <offload/offload.hpp>
#include <offload/timeout.hpp>

#include <atomic>
#include <chrono>
#include <latch>
#include <stop_token>
#include <string>
#include <thread>

namespace net = offload::net;
using namespace std::chrono_literals;

namespace {

using offload_test::is_cancelled;

// Blocks until stopped (or a guard passes); records whether it saw the stop request.
struct stoppable_wait {
  std::atomic<bool>* saw_stop;
  std::atomic<bool>* returned;
  std::atomic<bool>* started = nullptr;
  int operator()(std::stop_token stop) const {
    if (started != nullptr) started->store(true);
    const auto guard = std::chrono::steady_clock::now() + 10s;
    while (!stop.stop_requested() && std::chrono::steady_clock::now() < guard) {
      std::this_thread::sleep_for(1ms);
    }
    saw_stop->store(stop.stop_requested());
    returned->store(true);
    return 1;
  }
};

}  // namespace

TEST_CASE("wait_for gives the result when the operation finishes in time", "[timeout]") {
  auto body = []() -> offload::awaitable<std::string> {
    auto f = [] { return std::string("in time"); };
    co_return co_await offload::wait_for(offload::to_thread(std::move(f)), 10s);
  };
  CHECK(offload::run(body()) == "in time");
}

TEST_CASE("wait_for rethrows the operation's own exception", "[timeout]") {
  auto body = []() -> offload::awaitable<int> {
    auto f = []() -> int { throw offload_test::my_error(7); };
    co_return co_await offload::wait_for(offload::to_thread(std::move(f)), 10s);
  };
  try {
    offload::run(body());
    FAIL("should have thrown");
  } catch (const offload_test::my_error& e) {
    CHECK(e.code == 7);
  }
}

TEST_CASE(
    "on the deadline wait_for cancels the call (its stop_token is stopped), waits for f under "
    "the wait policy, and reports errc::timeout",
    "[timeout][stop_token]") {
  std::atomic<bool> saw_stop{false}, returned{false}, returned_before{false}, started{false};
  auto body = [&](std::chrono::milliseconds d) -> offload::awaitable<std::error_code> {
    try {
      const stoppable_wait f{&saw_stop, &returned, &started};
      co_await offload::wait_for(offload::to_thread(f), d);
    } catch (const std::system_error& e) {
      returned_before = returned.load();
      co_return e.code();
    }
    co_return std::error_code();
  };
  // A call still queued at the deadline never starts (a loaded machine may not start a thread
  // within 20 ms): then again with more time, until f ran into the deadline.
  std::error_code code;
  for (auto d : {20ms, 200ms, 2000ms}) {
    code = offload::run(body(d));
    if (started.load()) break;
  }
  REQUIRE(started.load());
  CHECK(code == offload::errc::timeout);
  CHECK(code.category() == offload::error_category());
  CHECK(code != std::errc::operation_canceled);
  CHECK(saw_stop.load());
  CHECK(returned_before.load());  // wait policy: f had returned before the awaiter resumed
}

TEST_CASE("wait_for with a timeout that is not positive never starts the operation", "[timeout]") {
  offload::thread_pool pool(1);
  std::atomic<bool> ran{false};
  auto body = [&](std::chrono::milliseconds d) -> offload::awaitable<std::error_code> {
    auto f = [&ran] { ran = true; };
    try {
      co_await offload::wait_for(offload::run_in_executor(pool, std::move(f)), d);
    } catch (const std::system_error& e) {
      co_return e.code();
    }
    co_return std::error_code();
  };
  CHECK(offload::run(body(0ms)) == offload::errc::timeout);
  CHECK(offload::run(body(-5ms)) == offload::errc::timeout);
  pool.shutdown();
  CHECK_FALSE(ran.load());
  CHECK(pool.stats().completed == 0);
}

TEST_CASE("wait_for under the abandon policy resumes at the deadline while f is still blocked",
          "[timeout][abandon]") {
  std::latch release(1);
  std::atomic<bool> returned{false};
  auto body = [&]() -> offload::awaitable<std::error_code> {
    auto f = [&] {
      release.wait();
      returned = true;
    };
    try {
      co_await offload::wait_for(
          offload::to_thread({.policy = offload::cancel_policy::abandon}, std::move(f)), 10ms);
    } catch (const std::system_error& e) {
      co_return e.code();
    }
    co_return std::error_code();
  };
  offload::event_loop loop;
  CHECK(loop.run_until_complete(body()) == offload::errc::timeout);
  CHECK_FALSE(returned.load());
  release.count_down();
  CHECK(offload_test::eventually([&] { return returned.load(); }));
}

TEST_CASE("wait_for works on any awaitable, not only offloaded calls", "[timeout]") {
  auto body = []() -> offload::awaitable<std::error_code> {
    try {
      co_await offload::wait_for(offload_test::sleep_for(10s), 10ms);
    } catch (const std::system_error& e) {
      co_return e.code();
    }
    co_return std::error_code();
  };
  const auto started = std::chrono::steady_clock::now();
  CHECK(offload::run(body()) == offload::errc::timeout);
  CHECK(std::chrono::steady_clock::now() - started < 5s);
}

namespace {
offload::awaitable<void> wait_for_stoppable(std::atomic<bool>* saw_stop,
                                            std::atomic<bool>* returned,
                                            std::chrono::milliseconds d) {
  co_await offload::wait_for(offload::to_thread(stoppable_wait{saw_stop, returned}), d);
}
}  // namespace

TEST_CASE("cancelling the awaiter of wait_for is reported as cancellation, not timeout",
          "[timeout][cancellation]") {
  offload::event_loop loop;
  std::atomic<bool> saw_stop{false}, returned{false};
  std::exception_ptr error;
  bool done = false;
  net::cancellation_signal signal;
  net::co_spawn(loop.get_executor(), wait_for_stoppable(&saw_stop, &returned, 10s),
                net::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr e) {
                  error = e;
                  done = true;
                }));
  loop.run_until_complete(
      offload_test::wait_until([&] { return loop.default_executor_pool().stats().running == 1; }));
  signal.emit(net::cancellation_type::terminal);
  loop.run_until_complete(offload_test::wait_until([&] { return done; }));
  CHECK(is_cancelled(error));
  CHECK(saw_stop.load());
}

namespace {
offload::awaitable<void> wait_for_stubborn(std::atomic<bool>* saw_stop, std::latch* release) {
  // Sees the stop request but returns only when released: the deadline has passed and the
  // awaiter is still waiting for f when the outer cancellation arrives.
  auto f = [saw_stop, release](std::stop_token stop) {
    while (!stop.stop_requested()) std::this_thread::sleep_for(1ms);
    saw_stop->store(true);
    release->wait();
  };
  co_await offload::wait_for(offload::to_thread(std::move(f)), 5ms);
}
}  // namespace

TEST_CASE(
    "an outer cancellation racing the deadline is reported as cancellation even when the "
    "deadline passed first",
    "[timeout][cancellation]") {
  offload::event_loop loop;
  std::atomic<bool> saw_stop{false};
  std::latch release(1);
  std::exception_ptr error;
  bool done = false;
  net::cancellation_signal signal;
  net::co_spawn(loop.get_executor(), wait_for_stubborn(&saw_stop, &release),
                net::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr e) {
                  error = e;
                  done = true;
                }));
  loop.run_until_complete(offload_test::wait_until([&] { return saw_stop.load(); }));
  CHECK_FALSE(done);  // the deadline passed; the awaiter waits for f (wait policy)
  signal.emit(net::cancellation_type::terminal);
  release.count_down();
  loop.run_until_complete(offload_test::wait_until([&] { return done; }));
  CHECK(is_cancelled(error));
}
