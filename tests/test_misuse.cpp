// Misuse: every code of offload::errc reached through the public API, from each
// place that reports it: the code, the category (offload::error_category(), or Asio's for
// cancellation), where it happened, and the cure the message gives (every message says
// what to do").
//
// Distributed under the Boost Software License, Version 1.0.
#include "catch.hpp"
#include "loop_helpers.hpp"
#include "probes.hpp"

#include <offload/concurrent_future.hpp>
#include <offload/errors.hpp>
#include <offload/event_loop.hpp>
#include <offload/loop_thread.hpp>
#include <offload/thread_pool.hpp>
#include <offload/threadsafe.hpp>
#include <offload/timeout.hpp>
#include <offload/to_thread.hpp>

#include <atomic>
#include <chrono>
#include <exception>
#include <functional>
#include <future>
#include <initializer_list>
#include <latch>
#include <memory>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace net = offload::net;
using namespace std::chrono_literals;
using offload_test::contains;
using offload_test::eventually;
using offload_test::wait_until;

/// What a system_error carried (thrown = false: nothing was thrown). offload's errors are
/// std::system_error (`code`); cancellation is the backend's system_error (`net_code`: with
/// Boost.Asio a boost::system::system_error, which is not a std::system_error).
struct caught {
  bool thrown = false;
  std::error_code code;
  offload::net_error_code net_code;
  std::string what;
};

/// What `e` carried. Any exception that is neither kind of system_error is rethrown.
caught from_exception(const std::exception_ptr& e) {
  caught c;
  if (!e) return c;
  c.net_code = offload_test::net_code_of(e);  // the backend's system_error, if it is one
  try {
    std::rethrow_exception(e);
  } catch (const std::system_error& se) {
    c.code = se.code();
    c.what = se.what();
  } catch (const std::exception& other) {
    if (!c.net_code) throw;  // not the backend's system_error either
    c.what = other.what();
  }
  c.thrown = true;
  return c;
}

template <typename F>
caught catch_error(F&& f) {
  try {
    std::forward<F>(f)();
  } catch (...) {
    return from_exception(std::current_exception());
  }
  return {};
}

/// The cure each code's message gives, as the category words it.
const char* cure_of(offload::errc e) {
  switch (e) {
    case offload::errc::loop_closed:
      return "submit work while it is open";
    case offload::errc::no_running_loop:
      return "call this from a coroutine running on an event loop";
    case offload::errc::executor_shutdown:
      return "create a new pool, or set_default_executor() to replace the default one";
    case offload::errc::would_deadlock:
      return "co_await instead of blocking, or make the call from another thread";
    case offload::errc::timeout:
      return "allow more time";
    case offload::errc::queue_full:
      return "submit from a coroutine (which waits for room) or raise max_queue";
    case offload::errc::broken_promise:
      return "keep its executor or io_context alive";
    case offload::errc::invalid_state:
      return "check done(), or co_await get()";
  }
  return "?";
}

/// An offload error: its code, offload's category, the place (`where`), and the cure.
void check_offload_error(const caught& c, offload::errc expected,
                         std::initializer_list<const char*> where) {
  INFO("what(): " << c.what);
  REQUIRE(c.thrown);
  CHECK(c.code == expected);
  CHECK(&c.code.category() == &offload::error_category());
  CHECK(std::string(c.code.category().name()) == "offload");
  CHECK_THAT(c.what, contains(cure_of(expected)));
  for (const char* w : where) CHECK_THAT(c.what, contains(w));
}

/// Cancellation: Asio's operation_aborted, in Asio's category, with the place in what().
void check_cancelled(const caught& c, std::initializer_list<const char*> where) {
  INFO("what(): " << c.what);
  REQUIRE(c.thrown);
  CHECK(c.net_code == net::error::operation_aborted);
  CHECK(c.net_code.category() == net::error::get_system_category());
  CHECK(offload_test::is_operation_aborted(c.net_code));
  CHECK(c.code.category() != offload::error_category());
  for (const char* w : where) CHECK_THAT(c.what, contains(w));
}

offload::awaitable<void> wait_an_hour() {
  net::steady_timer timer(co_await net::this_coro::executor, std::chrono::hours(1));
  co_await timer.async_wait(net::use_awaitable);
}

offload::awaitable<int> value_of(int v) { co_return v; }

/// Suspends once before it returns: never done at once, even when started on its own loop.
offload::awaitable<int> value_later(int v) {
  co_await offload_test::yield_once();
  co_return v;
}

/// Sets its flag when destroyed: shows that a refused coroutine's frame was destroyed.
struct frame_probe {
  std::shared_ptr<std::atomic<bool>> destroyed;
  explicit frame_probe(std::shared_ptr<std::atomic<bool>> d) : destroyed(std::move(d)) {}
  frame_probe(frame_probe&& other) noexcept : destroyed(std::move(other.destroyed)) {}
  ~frame_probe() {
    if (destroyed) destroyed->store(true);
  }
};

offload::awaitable<int> holding(frame_probe probe) {
  (void)probe;
  co_return 1;
}

}  // namespace

// == loop_closed ===============================================================================

TEST_CASE("loop_closed: every way into a closed loop refuses with it", "[misuse][loop_closed]") {
  // Over an io_context of the test's own: the strand copy taken below stays valid after close()
  // (a strand must not outlive its io_context, and a loop that owns its context destroys it).
  net::io_context ctx;
  offload::event_loop loop(ctx);
  const auto strand = loop.get_executor();  // taken while open
  loop.close();
  REQUIRE(loop.is_closed());

  SECTION("call_soon / call_later / create_task on the loop's thread") {
    check_offload_error(catch_error([&] { loop.call_soon([] {}); }), offload::errc::loop_closed,
                        {"event_loop::call_soon"});
    check_offload_error(catch_error([&] { loop.call_later(1ms, [] {}); }),
                        offload::errc::loop_closed, {"event_loop::call_at"});
    check_offload_error(catch_error([&] { (void)loop.create_task(value_of(1)); }),
                        offload::errc::loop_closed, {"event_loop::create_task"});
  }
  SECTION("running it again") {
    check_offload_error(catch_error([&] { (void)loop.run_until_complete(value_of(1)); }),
                        offload::errc::loop_closed, {"event_loop::run_until_complete"});
    check_offload_error(catch_error([&] { loop.run_forever(); }), offload::errc::loop_closed,
                        {"event_loop::run_forever"});
  }
  SECTION("get_executor()") {
    check_offload_error(catch_error([&] { (void)loop.get_executor(); }), offload::errc::loop_closed,
                        {"event_loop::get_executor"});
  }
  SECTION("call_soon_threadsafe from another thread") {
    std::atomic<bool> ran{false};
    caught c;
    std::thread([&] {
      c = catch_error([&] { loop.call_soon_threadsafe([&] { ran = true; }); });
    }).join();
    check_offload_error(c, offload::errc::loop_closed, {"event_loop::call_soon_threadsafe"});
    CHECK_FALSE(ran.load());
  }
  SECTION("run_coroutine_threadsafe, by loop and by its old executor: the coroutine is destroyed") {
    auto destroyed = std::make_shared<std::atomic<bool>>(false);
    caught by_loop;
    std::thread([&] {
      by_loop = catch_error(
          [&] { (void)offload::run_coroutine_threadsafe(holding(frame_probe(destroyed)), loop); });
    }).join();
    check_offload_error(by_loop, offload::errc::loop_closed, {"offload::run_coroutine_threadsafe"});
    CHECK(destroyed->load());

    const caught by_executor =
        catch_error([&] { (void)offload::run_coroutine_threadsafe(value_of(2), strand); });
    check_offload_error(by_executor, offload::errc::loop_closed,
                        {"no open event_loop runs on this executor"});
  }
}

TEST_CASE(
    "loop_closed: a cross-thread future still pending when its loop closes completes "
    "with it",
    "[misuse][loop_closed]") {
  offload::event_loop loop;
  // Submitted while open; the loop never runs it.
  auto fut = offload::run_coroutine_threadsafe(value_of(3), loop);
  CHECK_FALSE(fut.done());
  loop.close();
  REQUIRE(fut.done());
  check_offload_error(catch_error([&] { (void)fut.result(); }), offload::errc::loop_closed,
                      {"the loop closed before the coroutine finished"});
  CHECK_FALSE(fut.cancelled());
}

// == no_running_loop ===========================================================================

TEST_CASE(
    "no_running_loop: asking for the loop, or for the default executor, from a thread "
    "with no running loop",
    "[misuse][no_running_loop]") {
  SECTION("get_running_loop() on a plain thread") {
    check_offload_error(catch_error([] { (void)offload::get_running_loop(); }),
                        offload::errc::no_running_loop, {"offload::get_running_loop"});
  }
  SECTION("get_running_loop() on a loop's thread, but outside its run") {
    offload::event_loop loop;
    check_offload_error(catch_error([] { (void)offload::get_running_loop(); }),
                        offload::errc::no_running_loop, {"offload::get_running_loop"});
  }
  SECTION("async_run(default_executor) with a handler bound to no executor") {
    std::atomic<bool> ran{false};
    auto f = [&ran] {
      ran = true;
      return 1;
    };
    check_offload_error(catch_error([&] {
                          (void)offload::async_run(offload::default_executor, f, net::use_future);
                        }),
                        offload::errc::no_running_loop, {"asio::bind_executor"});
    CHECK_FALSE(ran.load());
  }
  SECTION("from_thread::run_sync / run / check_cancelled outside an offloaded call") {
    check_offload_error(catch_error([] { offload::from_thread::run_sync([] {}); }),
                        offload::errc::no_running_loop,
                        {"only inside a call started by to_thread / run_in_executor"});
    check_offload_error(catch_error([] { (void)offload::from_thread::run(value_of(1)); }),
                        offload::errc::no_running_loop, {"offload::from_thread::run"});
    check_offload_error(catch_error([] { offload::from_thread::check_cancelled(); }),
                        offload::errc::no_running_loop, {"offload::from_thread::check_cancelled"});
  }
}

// == executor_shutdown =========================================================================

namespace {

struct refused_call {
  caught error;
  bool ran = false;
};

offload::awaitable<void> to_thread_after_shutdown(refused_call& out) {
  auto& loop = offload::get_running_loop();
  const offload::shutdown_report report = co_await loop.shutdown_default_executor();
  CHECK(report.completed);
  auto f = [&out] {
    out.ran = true;
    return 1;
  };
  try {
    (void)co_await offload::to_thread(f);
  } catch (...) {
    out.error = from_exception(std::current_exception());
  }
}

template <typename Pool>
offload::awaitable<void> call_refused_by(Pool& pool, refused_call& out) {
  auto f = [&out] {
    out.ran = true;
    return 1;
  };
  try {
    (void)co_await offload::run_in_executor(pool, f);
  } catch (...) {
    out.error = from_exception(std::current_exception());
  }
}

/// A foreign pool that destroys the call without running it.
struct dropping_pool {
  void submit(std::function<void()> item) { (void)item; }
};

}  // namespace

TEST_CASE("executor_shutdown: a call to an executor that was shut down",
          "[misuse][executor_shutdown]") {
  refused_call out;
  SECTION("to_thread after shutdown_default_executor()") {
    offload::event_loop loop;
    loop.run_until_complete(to_thread_after_shutdown(out));
    check_offload_error(out.error, offload::errc::executor_shutdown, {"submitting a call"});
  }
  SECTION("run_in_executor(pool) after pool.shutdown()") {
    offload::thread_pool pool(1);
    pool.shutdown();
    offload::event_loop loop;
    loop.run_until_complete(call_refused_by(pool, out));
    check_offload_error(out.error, offload::errc::executor_shutdown, {"submitting a call"});
  }
  SECTION("async_run(pool, use_future) from a plain thread after pool.shutdown(false)") {
    offload::thread_pool pool(1);
    pool.shutdown(false);
    auto f = [&out] {
      out.ran = true;
      return 1;
    };
    out.error = catch_error([&] { (void)offload::async_run(pool, f, net::use_future); });
    check_offload_error(out.error, offload::errc::executor_shutdown, {"submitting a call"});
  }
  CHECK_FALSE(out.ran);
}

// == broken_promise ============================================================================

TEST_CASE("broken_promise: a foreign pool destroys the call without running it",
          "[misuse][broken_promise]") {
  refused_call out;
  dropping_pool pool;
  offload::event_loop loop;
  loop.run_until_complete(call_refused_by(pool, out));
  check_offload_error(out.error, offload::errc::broken_promise, {"without running it"});
  CHECK_FALSE(out.ran);
}

// == would_deadlock ============================================================================

namespace {

offload::awaitable<caught> close_while_running() {
  auto& loop = offload::get_running_loop();
  co_return catch_error([&] { loop.close(); });
}

offload::awaitable<caught> run_inside_itself() {
  auto& loop = offload::get_running_loop();
  co_return catch_error([&] { (void)loop.run_until_complete(value_of(1)); });
}

offload::awaitable<caught> blocking_wait_on_own_loop() {
  auto& loop = offload::get_running_loop();
  auto fut = offload::run_coroutine_threadsafe(value_later(4), loop);
  REQUIRE_FALSE(fut.done());
  caught c = catch_error([&] { (void)fut.result(); });
  // Refused before it waited: the coroutine runs once this one lets the loop go on.
  const bool done = co_await wait_until([&] { return fut.done(); });
  CHECK(done);
  // Done now, and still refused: whether the line works must not depend on timing.
  CHECK(catch_error([&] { (void)fut.result(); }).code == offload::errc::would_deadlock);
  co_return c;
}

offload::awaitable<caught> from_thread_on_own_strand() {
  auto& loop = offload::get_running_loop();
  auto f = [] { return catch_error([] { (void)offload::from_thread::run(value_of(1)); }); };
  // "Offloaded" onto the loop's own strand: the call runs on the loop's thread.
  co_return co_await offload::run_in_executor(loop.get_executor(), f);
}

}  // namespace

TEST_CASE("would_deadlock: a wait for the very thread that would have to do the work",
          "[misuse][would_deadlock]") {
  SECTION("thread_pool::shutdown(wait=true) from one of the pool's own workers") {
    offload::thread_pool pool(1);
    auto f = [&pool] { return catch_error([&] { pool.shutdown(true); }); };
    const caught c = offload::async_run(pool, f, net::use_future).get();
    check_offload_error(c, offload::errc::would_deadlock,
                        {"thread_pool::shutdown(wait=true)", "call shutdown(false) there"});
    CHECK_FALSE(pool.is_shutdown());  // refused before doing anything
    auto g = [] { return 2; };
    CHECK(offload::async_run(pool, g, net::use_future).get() == 2);
  }
  SECTION("event_loop::close() while it runs") {
    offload::event_loop loop;
    check_offload_error(loop.run_until_complete(close_while_running()),
                        offload::errc::would_deadlock, {"stop() it and let it return first"});
    CHECK_FALSE(loop.is_closed());
  }
  SECTION("run_until_complete() inside the running loop") {
    offload::event_loop loop;
    check_offload_error(loop.run_until_complete(run_inside_itself()), offload::errc::would_deadlock,
                        {"co_await the awaitable instead of running the loop again"});
  }
  SECTION("run_until_complete() while another thread runs the loop") {
    offload_test::loop_on_thread lt;
    check_offload_error(catch_error([&] { (void)lt.loop.run_until_complete(value_of(1)); }),
                        offload::errc::would_deadlock, {"call_soon_threadsafe"});
  }
  SECTION("concurrent_future::result() on the thread that runs its loop") {
    offload::event_loop loop;
    check_offload_error(loop.run_until_complete(blocking_wait_on_own_loop()),
                        offload::errc::would_deadlock, {"concurrent_future"});
  }
  SECTION("loop_thread::call() from the loop_thread's own thread") {
    offload::loop_thread bg;
    std::promise<caught> p;
    bg.call_soon([&] { p.set_value(catch_error([&] { (void)bg.call(value_of(1)); })); });
    check_offload_error(p.get_future().get(), offload::errc::would_deadlock, {"loop_thread::call"});
  }
  SECTION("from_thread::run in a call that runs on the loop's own thread") {
    offload::event_loop loop;
    check_offload_error(loop.run_until_complete(from_thread_on_own_strand()),
                        offload::errc::would_deadlock, {"offload::from_thread"});
  }
}

// == timeout ===================================================================================

TEST_CASE("timeout: concurrent_future::result(d) on a coroutine that is not done",
          "[misuse][timeout]") {
  offload::loop_thread bg;
  auto fut = offload::run_coroutine_threadsafe(wait_an_hour(), bg.loop());
  check_offload_error(catch_error([&] { fut.result(1ms); }), offload::errc::timeout,
                      {"concurrent_future::result(timeout)"});
  CHECK_FALSE(fut.done());  // the future stays pending
  // Cancelled, it completes with Asio's operation_aborted.
  CHECK(fut.cancel());
  fut.wait();
  CHECK(fut.cancelled());
  check_cancelled(catch_error([&] { fut.result(); }), {});
}

namespace {
offload::awaitable<caught> wait_for_too_long() {
  try {
    co_await offload::wait_for(wait_an_hour(), 5ms);
  } catch (...) {
    co_return from_exception(std::current_exception());
  }
  co_return caught{};
}
}  // namespace

TEST_CASE("timeout: wait_for on an operation that does not finish in time", "[misuse][timeout]") {
  check_offload_error(offload::run(wait_for_too_long()), offload::errc::timeout,
                      {"offload::wait_for"});
}

namespace {
offload::awaitable<caught> wait_until_too_long() {
  try {
    co_await offload::wait_until(wait_an_hour(), std::chrono::steady_clock::now() + 5ms);
  } catch (...) {
    co_return from_exception(std::current_exception());
  }
  co_return caught{};
}

offload::awaitable<caught> call_past_its_deadline(std::chrono::milliseconds timeout) {
  auto stop_or_wait = [](std::stop_token stop) {
    while (!stop.stop_requested()) std::this_thread::sleep_for(1ms);
  };
  try {
    co_await offload::to_thread({.timeout = timeout}, stop_or_wait);
  } catch (...) {
    co_return from_exception(std::current_exception());
  }
  co_return caught{};
}
}  // namespace

TEST_CASE("timeout: wait_until, and a call's own deadline", "[misuse][timeout]") {
  check_offload_error(offload::run(wait_until_too_long()), offload::errc::timeout,
                      {"offload::wait_until"});
  check_offload_error(offload::run(call_past_its_deadline(5ms)), offload::errc::timeout,
                      {"offload::to_thread / run_in_executor: the call's deadline passed"});
  check_offload_error(offload::run(call_past_its_deadline(-5ms)), offload::errc::timeout,
                      {"deadline had passed when it was awaited"});
}

// == queue_full ================================================================================

TEST_CASE("queue_full: a thread with no loop submits to a bounded pool whose queue is full",
          "[misuse][queue_full]") {
  offload::thread_pool_options o;
  o.max_workers = 1;
  o.max_queue = 1;
  offload::thread_pool pool(std::move(o));
  std::latch release(1);
  auto blocker = [&release] {
    release.wait();
    return 0;
  };
  auto quick = [] { return 1; };
  auto running = offload::async_run(pool, blocker, net::use_future);
  REQUIRE(eventually([&] { return pool.stats().running == 1; }));
  auto queued = offload::async_run(pool, quick, net::use_future);
  REQUIRE(pool.stats().queued == 1);

  std::atomic<bool> ran{false};
  auto refused = [&ran] {
    ran = true;
    return 2;
  };
  check_offload_error(
      catch_error([&] { (void)offload::async_run(pool, refused, net::use_future); }),
      offload::errc::queue_full, {"from a thread with no loop"});
  release.count_down();
  CHECK(running.get() == 0);
  CHECK(queued.get() == 1);
  CHECK_FALSE(ran.load());
  CHECK(pool.stats().queued == 0);
}

// == cancellation: operation_aborted ===========================================================

namespace {

offload::awaitable<void> call_on(offload::thread_pool& pool, std::atomic<bool>& ran) {
  auto f = [&ran] { ran = true; };
  co_await offload::run_in_executor(pool, f);
}

offload::awaitable<void> block_on(offload::thread_pool& pool, std::latch& release) {
  auto f = [&release] { release.wait(); };
  co_await offload::run_in_executor(pool, f);
}

offload::awaitable<caught> cancel_a_queued_call(offload::thread_pool& pool, std::latch& release,
                                                std::atomic<bool>& ran) {
  auto ex = co_await net::this_coro::executor;
  offload_test::countdown done(ex, 2);
  std::exception_ptr queued_error;
  net::co_spawn(ex, block_on(pool, release), [&](std::exception_ptr) { done.done(); });
  const bool running = co_await wait_until([&] { return pool.stats().running == 1; });
  REQUIRE(running);
  net::cancellation_signal signal;
  net::co_spawn(ex, call_on(pool, ran),
                net::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr e) {
                  queued_error = e;
                  done.done();
                }));
  const bool queued = co_await wait_until([&] { return pool.stats().queued == 1; });
  REQUIRE(queued);
  signal.emit(net::cancellation_type::terminal);
  const bool answered = co_await wait_until([&] { return done.remaining() == 1; });
  CHECK(answered);  // at once, while the only worker is still blocked
  release.count_down();
  co_await done.wait();
  co_return from_exception(queued_error);
}

offload::awaitable<int> await_value(offload::thread_pool& pool, int v) {
  auto f = [v] { return v; };
  co_return co_await offload::run_in_executor(pool, f);
}

offload::awaitable<caught> join_cancelled_task() {
  auto& loop = offload::get_running_loop();
  auto t = loop.create_task(wait_an_hour());
  co_await offload_test::yield_once();
  CHECK(t.cancel());
  caught c;
  try {
    co_await t.join();
  } catch (...) {
    c = from_exception(std::current_exception());
  }
  co_return c;
}

}  // namespace

TEST_CASE("cancellation: Asio's operation_aborted, from every place that cancels",
          "[misuse][cancellation]") {
  SECTION("a queued call whose awaiter is cancelled (cancellation slot): f never runs") {
    offload::thread_pool pool(1);
    std::latch release(1);
    std::atomic<bool> ran{false};
    offload::event_loop loop;
    check_cancelled(loop.run_until_complete(cancel_a_queued_call(pool, release, ran)),
                    {"the call was cancelled before it started"});
    CHECK_FALSE(ran.load());
  }
  SECTION("thread_pool::shutdown(true, cancel_pending = true) with calls queued") {
    offload::thread_pool pool(1);
    std::latch release(1);
    auto blocker = [&release] {
      release.wait();
      return 0;
    };
    offload_test::loop_on_thread lt;
    auto first = offload::async_run(pool, blocker, net::use_future);
    REQUIRE(eventually([&] { return pool.stats().running == 1; }));
    // Queued behind the blocker, awaited from a loop.
    auto queued = net::co_spawn(lt.loop.get_executor(), await_value(pool, 8), net::use_future);
    REQUIRE(eventually([&] { return pool.stats().queued == 1; }));
    std::thread releaser([&] {
      eventually([&] { return pool.stats().queued == 0; });
      release.count_down();
    });
    pool.shutdown(true, true);
    releaser.join();
    CHECK(first.get() == 0);
    check_cancelled(catch_error([&] { (void)queued.get(); }),
                    {"thread_pool::shutdown(cancel_pending=true)"});
  }
  SECTION("concurrent_future::cancel()") {
    offload::loop_thread bg;
    auto fut = offload::run_coroutine_threadsafe(wait_an_hour(), bg.loop());
    CHECK(fut.cancel());
    fut.wait();
    CHECK(fut.cancelled());
    check_cancelled(catch_error([&] { fut.result(); }), {});
  }
  SECTION("task::cancel()") {
    offload::event_loop loop;
    check_cancelled(loop.run_until_complete(join_cancelled_task()), {});
  }
}
