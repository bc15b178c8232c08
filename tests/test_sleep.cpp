// offload::sleep / sleep_until (asyncio.sleep): suspend the coroutine, not the loop; sleep(0)
// yields once; cancellable.
#include "catch.hpp"
#include "loop_helpers.hpp"

#include <offload/event_loop.hpp>
#include <offload/sleep.hpp>
#include <offload/timeout.hpp>

#include <atomic>
#include <chrono>
#include <exception>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using offload_test::code_thrown_by;

offload::awaitable<void> sleep_then_log(std::chrono::milliseconds d, std::vector<std::string>& log,
                                        std::string name) {
  co_await offload::sleep(d);
  log.push_back(std::move(name));
}

offload::awaitable<void> two_steps(std::vector<std::string>& log, std::string name) {
  log.push_back(name + "1");
  co_await offload::sleep(0s);
  log.push_back(name + "2");
}

offload::awaitable<void> sleep_an_hour() { co_await offload::sleep(1h); }

}  // namespace

TEST_CASE("sleep suspends the coroutine for at least its duration", "[sleep]") {
  offload::event_loop loop;
  const auto start = std::chrono::steady_clock::now();
  loop.run_until_complete(offload::sleep(20ms));
  REQUIRE(std::chrono::steady_clock::now() - start >= 20ms);
  const auto until = std::chrono::steady_clock::now() + 10ms;
  loop.run_until_complete(offload::sleep_until(until));
  REQUIRE(std::chrono::steady_clock::now() >= until);
}

TEST_CASE("a sleeping coroutine leaves the loop to the others", "[sleep]") {
  offload::event_loop loop;
  std::vector<std::string> log;
  auto sleeper = loop.create_task(sleep_then_log(50ms, log, "sleeper"));
  auto other = loop.create_task(sleep_then_log(0ms, log, "other"));
  loop.run_until_complete(sleeper.join());
  REQUIRE(log == std::vector<std::string>{"other", "sleeper"});
}

TEST_CASE("sleep(0) and a past sleep_until yield once to the other ready coroutines", "[sleep]") {
  offload::event_loop loop;
  std::vector<std::string> log;
  auto a = loop.create_task(two_steps(log, "a"));
  auto b = loop.create_task(two_steps(log, "b"));
  loop.run_until_complete(b.join());
  REQUIRE(log == std::vector<std::string>{"a1", "b1", "a2", "b2"});

  log.clear();
  bool resumed = false;
  auto past = loop.create_task([](bool& resumed) -> offload::awaitable<void> {
    co_await offload::sleep_until(std::chrono::steady_clock::now() - 1h);
    resumed = true;
  }(resumed));
  loop.call_soon([&] { log.push_back(resumed ? "after" : "before"); });
  loop.run_until_complete(past.join());
  REQUIRE(log == std::vector<std::string>{"before"});
}

TEST_CASE("cancelling a sleeping task ends the sleep with operation_aborted", "[sleep][cancel]") {
  offload::event_loop loop;
  auto t = loop.create_task(sleep_an_hour());
  loop.run_until_complete(offload::sleep(0s));  // the task is asleep now
  REQUIRE(t.cancel());
  // The backend's system_error: with Boost.Asio not a std::system_error.
  std::exception_ptr error;
  try {
    loop.run_until_complete(t.join());
  } catch (...) {
    error = std::current_exception();
  }
  REQUIRE(offload_test::is_cancelled(error));
}

TEST_CASE("wait_for around sleep times out", "[sleep][cancel]") {
  offload::event_loop loop;
  REQUIRE(code_thrown_by([&] { loop.run_until_complete(offload::wait_for(sleep_an_hour(), 10ms)); }) ==
          offload::errc::timeout);
}

TEST_CASE("sleep works in any Asio coroutine, without an event_loop", "[sleep]") {
  offload::net::io_context ctx;
  bool done = false;
  offload::net::co_spawn(ctx, offload::sleep(1ms), [&](std::exception_ptr e) { done = !e; });
  ctx.run();
  REQUIRE(done);
}

offload::awaitable<void> sleep_many(int rounds, int& slept) {
  for (int i = 0; i < rounds; ++i) {
    co_await offload::sleep(0s);
    co_await offload::sleep(1us);
    ++slept;
  }
}

// Without a strand, an io_context run by two threads may resume the sleeper on the other thread
// before Asio's initiation of the post or the wait has returned (Asio 1.22 runs it inside
// await_suspend; see detail/awaitable_initiation.hpp). Clean under TSan with Clang 14 at -O1
// and -O2: Asio's own initiations keep their locals off the frame there.
TEST_CASE("sleep on an io_context run by two threads: each sleep ends once, nothing races",
          "[sleep][io_context]") {
  constexpr int sleepers = 4;
  constexpr int rounds = 500;
  offload::net::io_context ctx;
  std::vector<int> slept(sleepers, 0);
  std::atomic<int> failed{0};
  for (int& count : slept) {
    offload::net::co_spawn(ctx, sleep_many(rounds, count), [&failed](std::exception_ptr e) {
      if (e) failed.fetch_add(1);
    });
  }
  std::thread second([&ctx] { ctx.run(); });
  ctx.run();
  second.join();
  CHECK(failed.load() == 0);
  for (const int count : slept) CHECK(count == rounds);
}
