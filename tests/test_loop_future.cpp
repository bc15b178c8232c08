// offload::future<T> (asyncio.Future): set once from any thread, awaited by any number of
// coroutines, cancelled, and never a hang when its copies or its loop go away.
#include "catch.hpp"
#include "loop_helpers.hpp"

#include <offload/event_loop.hpp>
#include <offload/future.hpp>
#include <offload/sleep.hpp>
#include <offload/timeout.hpp>

#include <chrono>
#include <latch>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using offload_test::code_of;
using offload_test::is_cancelled;
using offload_test::code_thrown_by;
using offload_test::yield_once;

offload::awaitable<int> get_value(offload::future<int> fut) { co_return co_await fut.get(); }

// Awaits `fut`, keeping the exception it failed with (null if it gave a value). Cancellation is
// the backend's system_error, which with Boost.Asio is not a std::system_error.
offload::awaitable<void> await_error(offload::future<int> fut, std::exception_ptr& error) {
  try {
    (void)co_await fut.get();
  } catch (...) {
    error = std::current_exception();
  }
}

}  // namespace

TEST_CASE("a result set from another thread resumes the awaiter on the loop", "[loop_future]") {
  offload::event_loop loop;
  auto fut = loop.create_future<std::string>();
  std::thread::id resumed_on;
  std::thread setter;
  const std::string value = loop.run_until_complete(
      [](offload::future<std::string> fut, std::thread& setter,
         std::thread::id& resumed_on) -> offload::awaitable<std::string> {
        setter = std::thread([fut]() mutable { fut.set_result(std::string("from a C callback")); });
        std::string v = co_await fut.get();
        resumed_on = std::this_thread::get_id();
        co_return v;
      }(fut, setter, resumed_on));
  setter.join();
  REQUIRE(value == "from a C callback");
  REQUIRE(resumed_on == std::this_thread::get_id());
  REQUIRE(fut.done());
  REQUIRE(fut.result() == "from a C callback");
}

TEST_CASE("call_soon_threadsafe sets a future from another thread", "[loop_future]") {
  offload::event_loop loop;
  auto fut = loop.create_future<int>();
  std::thread setter([&loop, fut] { loop.call_soon_threadsafe([fut]() mutable { fut.set_result(7); }); });
  REQUIRE(loop.run_until_complete(get_value(fut)) == 7);
  setter.join();
}

TEST_CASE("any number of coroutines await one future and all get its value", "[loop_future]") {
  offload::event_loop loop;
  auto fut = loop.create_future<int>();
  std::vector<offload::task<int>> awaiters;
  for (int i = 0; i < 5; ++i) awaiters.push_back(loop.create_task(get_value(fut)));
  loop.run_until_complete(yield_once());  // every awaiter is suspended in get()
  REQUIRE_FALSE(fut.done());
  fut.set_result(11);
  for (auto& t : awaiters) REQUIRE(loop.run_until_complete(t.join()) == 11);
  // Awaiting a done future gives its value too.
  REQUIRE(loop.run_until_complete(get_value(fut)) == 11);
}

TEST_CASE("a void future and a move-only one", "[loop_future]") {
  offload::event_loop loop;
  auto done = loop.create_future();
  done.set_result();
  loop.run_until_complete(done.get());
  REQUIRE(done.done());

  auto owned = loop.create_future<std::unique_ptr<int>>();
  owned.set_result(std::make_unique<int>(5));
  auto p = loop.run_until_complete(owned.get());
  REQUIRE(*p == 5);
  REQUIRE_THROWS_AS(loop.run_until_complete(owned.get()), std::logic_error);
}

TEST_CASE("a second set throws invalid_state and changes nothing", "[loop_future]") {
  offload::event_loop loop;
  auto fut = loop.create_future<int>();
  fut.set_result(1);
  REQUIRE(code_thrown_by([&] { fut.set_result(2); }) == offload::errc::invalid_state);
  REQUIRE(code_thrown_by([&] { fut.set_exception(std::make_exception_ptr(std::runtime_error("x"))); }) ==
          offload::errc::invalid_state);
  REQUIRE_FALSE(fut.try_set_result(3));
  REQUIRE_FALSE(fut.cancel());
  REQUIRE(fut.result() == 1);
}

TEST_CASE("result() and exception() do not wait: invalid_state while pending", "[loop_future]") {
  offload::event_loop loop;
  auto fut = loop.create_future<int>();
  REQUIRE(code_thrown_by([&] { (void)fut.result(); }) == offload::errc::invalid_state);
  REQUIRE(code_thrown_by([&] { (void)fut.exception(); }) == offload::errc::invalid_state);
  fut.set_exception(std::make_exception_ptr(offload_test::my_error(3)));
  REQUIRE(fut.exception() != nullptr);
  REQUIRE_THROWS_AS(fut.result(), offload_test::my_error);
  // The awaiter gets the exception with its type.
  bool caught = false;
  loop.run_until_complete([](offload::future<int> fut, bool& caught) -> offload::awaitable<void> {
    try {
      (void)co_await fut.get();
    } catch (const offload_test::my_error& e) {
      caught = e.code == 3;
    }
  }(fut, caught));
  REQUIRE(caught);
}

TEST_CASE("cancel() completes the awaiters with operation_aborted", "[loop_future][cancel]") {
  offload::event_loop loop;
  auto fut = loop.create_future<int>();
  std::exception_ptr error;
  auto t = loop.create_task(await_error(fut, error));
  loop.run_until_complete(yield_once());
  REQUIRE(fut.cancel());
  loop.run_until_complete(t.join());
  REQUIRE(is_cancelled(error));
  REQUIRE(fut.cancelled());
  REQUIRE(is_cancelled(fut.exception()));
  REQUIRE_FALSE(fut.try_set_result(1));
}

TEST_CASE("cancelling one awaiter leaves the future and the other awaiters pending",
          "[loop_future][cancel]") {
  offload::event_loop loop;
  auto fut = loop.create_future<int>();
  std::exception_ptr first;
  auto cancelled = loop.create_task(await_error(fut, first));
  auto other = loop.create_task(get_value(fut));
  loop.run_until_complete(yield_once());
  REQUIRE(cancelled.cancel());
  loop.run_until_complete(cancelled.join());
  REQUIRE(is_cancelled(first));
  REQUIRE_FALSE(fut.done());
  fut.set_result(9);
  REQUIRE(loop.run_until_complete(other.join()) == 9);
}

TEST_CASE("wait_for around get() times out without touching the future", "[loop_future][cancel]") {
  offload::event_loop loop;
  auto fut = loop.create_future<int>();
  const auto code = code_thrown_by([&] {
    loop.run_until_complete(offload::wait_for(get_value(fut), 10ms));
  });
  REQUIRE(code == offload::errc::timeout);
  REQUIRE_FALSE(fut.done());
}

TEST_CASE("done-callbacks run once, on the loop, after the setter returns", "[loop_future]") {
  offload::event_loop loop;
  auto fut = loop.create_future<int>();
  std::vector<std::string> log;
  fut.add_done_callback([&](offload::future<int> f) { log.push_back("cb " + std::to_string(f.result())); });
  loop.run_until_complete([](offload::future<int> fut,
                             std::vector<std::string>& log) -> offload::awaitable<void> {
    fut.set_result(4);
    log.push_back("set returned");
    co_await yield_once();
    // Added once done: still scheduled, not run inside add_done_callback.
    fut.add_done_callback([&log](offload::future<int>) { log.push_back("late cb"); });
    log.push_back("added late");
    co_await yield_once();
  }(fut, log));
  REQUIRE(log == std::vector<std::string>{"set returned", "cb 4", "added late", "late cb"});
}

TEST_CASE("a done-callback's exception goes to the loop's exception handler", "[loop_future]") {
  offload::event_loop loop;
  std::vector<std::string> reports;
  loop.set_exception_handler([&](const offload::exception_context& ctx) { reports.push_back(ctx.message); });
  auto fut = loop.create_future<int>();
  bool second_ran = false;
  fut.add_done_callback([](offload::future<int>) { throw std::runtime_error("boom"); });
  fut.add_done_callback([&](offload::future<int>) { second_ran = true; });
  fut.set_result(1);
  loop.run_until_complete(yield_once());
  REQUIRE(reports.size() == 1);
  REQUIRE(second_ran);
}

TEST_CASE("destroying every copy while awaited gives the awaiters broken_promise", "[loop_future]") {
  offload::event_loop loop;
  offload::task<int> t;
  {
    auto fut = loop.create_future<int>();
    t = loop.create_task(fut.get());  // an awaiter holds the state, not a copy of the future
    loop.run_until_complete(yield_once());
  }  // the last copy goes: nothing can set it any more
  REQUIRE(code_thrown_by([&] { (void)loop.run_until_complete(t.join()); }) ==
          offload::errc::broken_promise);
}

TEST_CASE("closing the loop while a future is awaited from another loop gives loop_closed",
          "[loop_future]") {
  offload::event_loop other;
  std::exception_ptr error;
  offload::future<int> keep;  // a copy outlives the loop: the result could still be set
  {
    offload::event_loop loop;
    keep = loop.create_future<int>();
    auto t = other.create_task(await_error(keep, error));
    other.run_until_complete(yield_once());
    loop.close();
    other.run_until_complete(t.join());
  }
  REQUIRE(code_of(error) == offload::errc::loop_closed);
  REQUIRE(keep.done());
  REQUIRE_FALSE(keep.try_set_result(1));  // a late C callback is told, not thrown at
}

TEST_CASE("create_future on a closed loop throws loop_closed", "[loop_future]") {
  offload::event_loop loop;
  loop.close();
  REQUIRE(code_thrown_by([&] { (void)loop.create_future<int>(); }) == offload::errc::loop_closed);
}

TEST_CASE("many threads race to set one future: exactly one wins", "[loop_future]") {
  offload::event_loop loop;
  auto fut = loop.create_future<int>();
  constexpr int n = 8;
  std::latch start(n);
  std::atomic<int> wins{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, fut, i]() mutable {
      start.arrive_and_wait();
      if (fut.try_set_result(i)) wins.fetch_add(1);
    });
  }
  const int value = loop.run_until_complete(get_value(fut));
  for (auto& th : threads) th.join();
  REQUIRE(wins.load() == 1);
  REQUIRE(value == fut.result());
}
