// create_task: scheduled on the loop; awaited for result or exception; cancel()led at
// its current suspension; done(); an exception nobody awaits reaches the exception handler.
#include "catch.hpp"
#include "loop_helpers.hpp"

#include <offload/event_loop.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <typeinfo>
#include <vector>

namespace {

using namespace std::chrono_literals;
using offload_test::yield_once;

struct task_error : std::runtime_error {
  explicit task_error(int c) : std::runtime_error("task_error"), code(c) {}
  int code;
};

offload::awaitable<void> set_flag(bool& flag) {
  flag = true;
  co_return;
}

offload::awaitable<int> add_after_yield(int a, int b) {
  co_await yield_once();
  co_return a + b;
}

offload::awaitable<int> throw_after_yield(int code) {
  co_await yield_once();
  throw task_error(code);
}

offload::awaitable<int> throw_now(int code) {
  throw task_error(code);
  co_return 0;
}

offload::awaitable<void> wait_an_hour(bool& reached_end) {
  auto ex = co_await offload::net::this_coro::executor;
  offload::net::steady_timer timer(ex, std::chrono::hours(1));
  co_await timer.async_wait(offload::net::use_awaitable);
  reached_end = true;
}

offload::awaitable<std::unique_ptr<int>> make_unique_after_yield(int v) {
  co_await yield_once();
  co_return std::make_unique<int>(v);
}

offload::awaitable<void> void_work(std::vector<int>& log) {
  log.push_back(1);
  co_await yield_once();
  log.push_back(2);
}

offload::awaitable<std::thread::id> thread_of_task(offload::event_loop& loop, bool& on_strand) {
  co_await yield_once();
  on_strand = loop.get_executor().running_in_this_thread();
  co_return std::this_thread::get_id();
}

// -- coroutine bodies of the tests ---------------------------------------------------------------

offload::awaitable<bool> started_after_one_suspension(offload::event_loop& loop) {
  bool started = false;
  auto t = loop.create_task(set_flag(started));
  co_await yield_once();
  const bool result = started;
  co_await t.join();
  co_return result;
}

offload::awaitable<int> join_value(offload::event_loop& loop) {
  auto t = loop.create_task(add_after_yield(20, 22));
  co_return co_await t.join();
}

offload::awaitable<int> join_twice(offload::event_loop& loop) {
  auto t = loop.create_task(add_after_yield(1, 2));
  const int a = co_await t.join();
  const int b = co_await t.join();
  co_return a * 10 + b;
}

offload::awaitable<int> join_throwing(offload::event_loop& loop, int code) {
  auto t = loop.create_task(throw_after_yield(code));
  co_return co_await t.join();
}

struct done_observations {
  bool before = true;
  bool after = false;
};

offload::awaitable<done_observations> observe_done(offload::event_loop& loop) {
  done_observations obs;
  auto t = loop.create_task(add_after_yield(1, 1));
  obs.before = t.done();
  co_await offload_test::wait_until([&] { return t.done(); });
  obs.after = t.done();
  co_await t.join();
  co_return obs;
}

struct cancel_observations {
  bool cancel_result = false;
  bool done_before_join = true;
  offload::net_error_code join_code;
  bool join_threw_system_error = false;  // the backend's system_error
  bool done_after_join = false;
  bool cancel_after_done = true;
  bool reached_end = false;
};

offload::awaitable<cancel_observations> cancel_waiting_task(offload::event_loop& loop) {
  cancel_observations obs;
  auto t = loop.create_task(wait_an_hour(obs.reached_end));
  co_await yield_once();  // the task is now suspended on its timer
  co_await yield_once();
  obs.done_before_join = t.done();
  obs.cancel_result = t.cancel();
  try {
    co_await t.join();
  } catch (const offload::net_system_error& e) {
    obs.join_threw_system_error = true;
    obs.join_code = e.code();
  }
  obs.done_after_join = t.done();
  obs.cancel_after_done = t.cancel();
  co_return obs;
}

offload::awaitable<bool> cancel_after_completion(offload::event_loop& loop) {
  auto t = loop.create_task(add_after_yield(2, 3));
  const int v = co_await t.join();
  REQUIRE(v == 5);
  co_return t.cancel();
}

struct handler_log {
  std::atomic<int> calls{0};
  std::string message;
  int code = 0;
  bool type_ok = false;
};

void install_recording_handler(offload::event_loop& loop, handler_log& log) {
  loop.set_exception_handler([&log](const offload::exception_context& ctx) {
    log.message = ctx.message;
    try {
      if (ctx.exception) std::rethrow_exception(ctx.exception);
    } catch (const task_error& e) {
      log.type_ok = true;
      log.code = e.code;
    } catch (...) {
    }
    log.calls.fetch_add(1);
  });
}

offload::awaitable<void> drop_handle_before_failure(offload::event_loop& loop, handler_log& log) {
  (void)loop.create_task(throw_after_yield(7));  // the handle is dropped at once
  co_await offload_test::wait_until([&] { return log.calls.load() > 0; });
  // Give the loop more turns: the report must not repeat.
  for (int i = 0; i < 5; ++i) co_await yield_once();
  co_await offload_test::sleep_for(5ms);
}

offload::awaitable<void> drop_handle_after_failure(offload::event_loop& loop, handler_log& log) {
  {
    auto t = loop.create_task(throw_now(8));
    co_await offload_test::wait_until([&] { return t.done(); });
    REQUIRE(log.calls.load() == 0);  // a live handle may still join it
  }                                  // the last handle goes now
  co_await offload_test::wait_until([&] { return log.calls.load() > 0; });
  for (int i = 0; i < 5; ++i) co_await yield_once();
}

offload::awaitable<void> joined_failure_is_not_reported(offload::event_loop& loop) {
  auto t = loop.create_task(throw_after_yield(9));
  try {
    co_await t.join();
  } catch (const task_error&) {
  }
  co_await yield_once();
}

offload::awaitable<void> copied_handles(offload::event_loop& loop, handler_log& log) {
  auto t = loop.create_task(throw_after_yield(10));
  auto copy = t;
  co_await offload_test::wait_until([&] { return t.done(); });
  { auto drop = std::move(t); }
  co_await yield_once();
  REQUIRE(log.calls.load() == 0);  // `copy` still holds it
  try {
    co_await copy.join();
  } catch (const task_error& e) {
    REQUIRE(e.code == 10);
  }
}

offload::awaitable<int> join_move_only(offload::event_loop& loop, bool& second_join_logic_error) {
  auto t = loop.create_task(make_unique_after_yield(99));
  std::unique_ptr<int> p = co_await t.join();
  try {
    (void)co_await t.join();
  } catch (const std::logic_error&) {
    second_join_logic_error = true;
  }
  co_return p ? *p : -1;
}

offload::awaitable<void> join_void(offload::event_loop& loop, std::vector<int>& log) {
  auto t = loop.create_task(void_work(log));
  co_await t.join();
  log.push_back(3);
}

offload::awaitable<std::thread::id> task_thread(offload::event_loop& loop, bool& on_strand) {
  auto t = loop.create_task(thread_of_task(loop, on_strand));
  co_return co_await t.join();
}

}  // namespace

TEST_CASE("create_task starts the coroutine at the creator's next suspension", "[task]") {
  offload::event_loop loop;
  REQUIRE(loop.run_until_complete(started_after_one_suspension(loop)));
}

TEST_CASE("a task runs on the loop's strand and thread", "[task]") {
  offload::event_loop loop;
  bool on_strand = false;
  const auto id = loop.run_until_complete(task_thread(loop, on_strand));
  REQUIRE(id == std::this_thread::get_id());
  REQUIRE(on_strand);
}

TEST_CASE("co_await task.join() gives the task's result", "[task]") {
  offload::event_loop loop;
  REQUIRE(loop.run_until_complete(join_value(loop)) == 42);
  // A copyable result can be joined more than once.
  REQUIRE(loop.run_until_complete(join_twice(loop)) == 33);
}

TEST_CASE("a task's exception reaches the joiner with its type", "[task]") {
  offload::event_loop loop;
  try {
    loop.run_until_complete(join_throwing(loop, 17));
    FAIL("no exception");
  } catch (const task_error& e) {
    REQUIRE(e.code == 17);
  }
}

TEST_CASE("task.done() is false while running and true once finished", "[task]") {
  offload::event_loop loop;
  const auto obs = loop.run_until_complete(observe_done(loop));
  REQUIRE_FALSE(obs.before);
  REQUIRE(obs.after);
}

TEST_CASE("cancel() stops a task at its suspension with operation_aborted", "[task]") {
  offload::event_loop loop;
  const auto obs = loop.run_until_complete(cancel_waiting_task(loop));
  REQUIRE_FALSE(obs.done_before_join);
  REQUIRE(obs.cancel_result);
  REQUIRE(obs.join_threw_system_error);
  REQUIRE(offload_test::is_operation_aborted(obs.join_code));
  REQUIRE_FALSE(obs.reached_end);
  REQUIRE(obs.done_after_join);
  REQUIRE_FALSE(obs.cancel_after_done);
}

TEST_CASE("cancel() on a finished task returns false", "[task]") {
  offload::event_loop loop;
  REQUIRE_FALSE(loop.run_until_complete(cancel_after_completion(loop)));
}

TEST_CASE("an exception from a task nobody joins goes to the exception handler once", "[task]") {
  offload::event_loop loop;
  handler_log log;
  install_recording_handler(loop, log);

  SECTION("handle dropped before the task fails") {
    loop.run_until_complete(drop_handle_before_failure(loop, log));
    REQUIRE(log.calls.load() == 1);
    REQUIRE(log.type_ok);
    REQUIRE(log.code == 7);
    REQUIRE_THAT(log.message, offload_test::contains("task"));
  }
  SECTION("handle dropped after the task failed") {
    loop.run_until_complete(drop_handle_after_failure(loop, log));
    REQUIRE(log.calls.load() == 1);
    REQUIRE(log.type_ok);
    REQUIRE(log.code == 8);
  }
  SECTION("a joined failure is not reported") {
    loop.run_until_complete(joined_failure_is_not_reported(loop));
    REQUIRE(log.calls.load() == 0);
  }
  SECTION("the report waits for the last copy of the handle") {
    loop.run_until_complete(copied_handles(loop, log));
    REQUIRE(log.calls.load() == 0);
  }
}

TEST_CASE("a task with a move-only result", "[task]") {
  offload::event_loop loop;
  bool second_join_logic_error = false;
  REQUIRE(loop.run_until_complete(join_move_only(loop, second_join_logic_error)) == 99);
  // A move-only result is handed out once; a second join says so instead of inventing one.
  REQUIRE(second_join_logic_error);
}

TEST_CASE("a void task", "[task]") {
  offload::event_loop loop;
  std::vector<int> log;
  loop.run_until_complete(join_void(loop, log));
  REQUIRE(log == std::vector<int>{1, 2, 3});
}

TEST_CASE("a task created before the loop runs starts when it runs; join from elsewhere",
          "[task]") {
  offload::event_loop loop;
  bool started = false;
  auto flag_task = loop.create_task(set_flag(started));
  auto sum_task = loop.create_task(add_after_yield(4, 5));
  REQUIRE_FALSE(started);  // nothing runs until the loop does
  REQUIRE(loop.run_until_complete(sum_task.join()) == 9);
  REQUIRE(started);
  REQUIRE(sum_task.done());
  loop.run_until_complete(flag_task.join());
  REQUIRE(flag_task.done());
}

TEST_CASE("create_task on a closed loop throws loop_closed", "[task]") {
  offload::event_loop loop;
  loop.close();
  bool flag = false;
  const auto ec = offload_test::code_thrown_by([&] { (void)loop.create_task(set_flag(flag)); });
  REQUIRE(ec == offload::errc::loop_closed);
  REQUIRE_FALSE(flag);
}
