// create_task and run_coroutine_threadsafe schedule, as asyncio does: a coroutine's body starts
// on a later loop step, after its creator suspends, and coroutines start in creation order.
// Blocking waits on a concurrent_future refuse the loop's own thread whether or not it is done.
#include "catch.hpp"
#include "loop_helpers.hpp"

#include <offload/event_loop.hpp>
#include <offload/threadsafe.hpp>

#include <chrono>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace {

using offload_test::code_thrown_by;
using offload_test::yield_once;

offload::awaitable<void> append(std::vector<int>& log, int value) {
  log.push_back(value);
  co_return;
}

offload::awaitable<int> answer() { co_return 42; }

// The body of a created task must not have run when create_task returns.
offload::awaitable<void> body_not_run_on_return(offload::event_loop& loop, std::vector<int>& log,
                                                std::vector<int>& seen_on_return) {
  auto t = loop.create_task(append(log, 1));
  seen_on_return = log;
  co_await t.join();
}

offload::awaitable<void> create_many(offload::event_loop& loop, std::vector<int>& log, int n) {
  std::vector<offload::task<void>> tasks;
  for (int i = 0; i < n; ++i) tasks.push_back(loop.create_task(append(log, i)));
  log.push_back(-1);  // the creator runs on until it suspends
  for (auto& t : tasks) co_await t.join();
}

offload::awaitable<void> threadsafe_on_own_loop(offload::event_loop& loop, std::vector<int>& log,
                                                std::vector<int>& seen_on_return) {
  auto fut = offload::run_coroutine_threadsafe(append(log, 7), loop);
  seen_on_return = log;
  while (!fut.done()) co_await yield_once();
}

}  // namespace

TEST_CASE("create_task returns before the task's body runs", "[scheduling]") {
  offload::event_loop loop;
  std::vector<int> log;
  std::vector<int> seen_on_return{-99};
  loop.run_until_complete(body_not_run_on_return(loop, log, seen_on_return));
  REQUIRE(seen_on_return.empty());
  REQUIRE(log == std::vector<int>{1});
}

TEST_CASE("tasks created in one step start after the creator suspends, in creation order",
          "[scheduling]") {
  offload::event_loop loop;
  std::vector<int> log;
  constexpr int n = 50;
  loop.run_until_complete(create_many(loop, log, n));
  std::vector<int> expected{-1};
  for (int i = 0; i < n; ++i) expected.push_back(i);
  REQUIRE(log == expected);
}

TEST_CASE("a task created from a callback starts after the callback returns", "[scheduling]") {
  offload::event_loop loop;
  std::vector<int> log;
  std::vector<offload::task<void>> tasks;
  loop.call_soon([&] {
    tasks.push_back(loop.create_task(append(log, 1)));
    tasks.push_back(loop.create_task(append(log, 2)));
    log.push_back(0);
  });
  loop.run_until_complete(yield_once());
  for (auto& t : tasks) loop.run_until_complete(t.join());
  REQUIRE(log == std::vector<int>{0, 1, 2});
}

TEST_CASE("run_coroutine_threadsafe on the loop's own thread schedules too", "[scheduling]") {
  offload::event_loop loop;
  std::vector<int> log;
  std::vector<int> seen_on_return{-99};
  loop.run_until_complete(threadsafe_on_own_loop(loop, log, seen_on_return));
  REQUIRE(seen_on_return.empty());
  REQUIRE(log == std::vector<int>{7});
}

TEST_CASE("a task that never started gets loop_closed when its loop closes", "[scheduling]") {
  offload::event_loop other;
  std::error_code seen;
  {
    offload::event_loop loop;
    auto t = loop.create_task(answer());  // scheduled; loop never runs
    auto joined = other.create_task([](offload::task<int> t, std::error_code& seen)
                                        -> offload::awaitable<void> {
      try {
        (void)co_await t.join();
      } catch (const std::system_error& e) {
        seen = e.code();
      }
    }(t, seen));
    other.run_until_complete(yield_once());  // the joiner is now waiting on `t`
    loop.close();
    other.run_until_complete(joined.join());
  }
  REQUIRE(seen == offload::errc::loop_closed);
}

namespace {

// On the loop's own thread, a finished concurrent_future is still not waited on: whether the
// line works must not depend on how fast the coroutine was.
offload::awaitable<void> blocking_waits_on_done_future(offload::event_loop& loop,
                                                       std::vector<std::error_code>& codes,
                                                       bool& queries_ok) {
  auto fut = offload::run_coroutine_threadsafe(answer(), loop);
  while (!fut.done()) co_await yield_once();
  codes.push_back(code_thrown_by([&] { (void)fut.result(); }));
  codes.push_back(code_thrown_by([&] { (void)fut.result(std::chrono::seconds(1)); }));
  codes.push_back(code_thrown_by([&] { (void)fut.exception(); }));
  codes.push_back(code_thrown_by([&] { fut.wait(); }));
  codes.push_back(code_thrown_by([&] { (void)fut.wait_for(std::chrono::seconds(1)); }));
  bool called = false;
  fut.add_done_callback([&](const offload::concurrent_future<int>&) { called = true; });
  queries_ok = fut.done() && !fut.cancelled() && called;
}

}  // namespace

TEST_CASE("every blocking wait on the loop's own thread throws would_deadlock, done or not",
          "[scheduling][future]") {
  offload::event_loop loop;
  std::vector<std::error_code> codes;
  bool queries_ok = false;
  loop.run_until_complete(blocking_waits_on_done_future(loop, codes, queries_ok));
  REQUIRE(codes.size() == 5);
  for (const auto& code : codes) REQUIRE(code == offload::errc::would_deadlock);
  REQUIRE(queries_ok);
}

TEST_CASE("wrap_future on the loop's own thread reads a done future without blocking",
          "[scheduling][future]") {
  offload::event_loop loop;
  const int value = loop.run_until_complete([](offload::event_loop& loop) -> offload::awaitable<int> {
    auto fut = offload::run_coroutine_threadsafe(answer(), loop);
    co_return co_await offload::wrap_future(std::move(fut));
  }(loop));
  REQUIRE(value == 42);
}
