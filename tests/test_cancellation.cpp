// Cancelling an offloaded call through Asio's per-operation cancellation slots: a call that has
// not started never runs; a running one is asked to stop (std::stop_token, check_cancelled) and,
// under the default wait policy, its awaiter resumes only once f has returned.
#include "catch.hpp"
#include "loop_helpers.hpp"

#include <offload/offload.hpp>

#if defined(OFFLOAD_USE_BOOST_ASIO)
#include <boost/asio/experimental/awaitable_operators.hpp>
#else
#include <asio/experimental/awaitable_operators.hpp>
#endif

#include <atomic>
#include <chrono>
#include <latch>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>

namespace net = offload::net;
using namespace std::chrono_literals;

namespace {

struct outcome {
  std::exception_ptr error;
  bool done = false;
};

using offload_test::is_cancelled;

// Runs the loop until `pred` holds (or a generous deadline passes, so a bug fails, not hangs).
template <typename Pred>
bool run_until(offload::event_loop& loop, Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!pred() && std::chrono::steady_clock::now() < deadline) {
    loop.run_until_complete([]() -> offload::awaitable<void> {
      net::steady_timer t(co_await net::this_coro::executor, 1ms);
      co_await t.async_wait(net::use_awaitable);
    }());
  }
  return pred();
}

void run_for(offload::event_loop& loop, std::chrono::milliseconds d) {
  const auto until = std::chrono::steady_clock::now() + d;
  run_until(loop, [until] { return std::chrono::steady_clock::now() >= until; });
}

offload::awaitable<void> call_on(offload::thread_pool& pool, std::atomic<bool>* ran) {
  auto f = [ran] { ran->store(true); };
  co_await offload::run_in_executor(pool, f);
}

offload::awaitable<void> block_on(offload::thread_pool& pool, std::latch* release) {
  auto f = [release] { release->wait(); };
  co_await offload::run_in_executor(pool, f);
}

}  // namespace

TEST_CASE(
    "a queued call cancelled behind a busy pool never runs, and its awaiter is answered "
    "at once",
    "[cancellation]") {
  offload::thread_pool pool(1);
  offload::event_loop loop;
  std::latch release(1);
  std::atomic<bool> ran{false};
  outcome blocker, queued;
  net::co_spawn(loop.get_executor(), block_on(pool, &release), [&](std::exception_ptr e) {
    blocker = {e, true};
  });
  net::cancellation_signal signal;
  net::co_spawn(loop.get_executor(), call_on(pool, &ran),
                net::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr e) {
                  queued = {e, true};
                }));
  REQUIRE(run_until(loop, [&] { return pool.stats().running == 1; }));
  signal.emit(net::cancellation_type::terminal);
  REQUIRE(run_until(loop, [&] { return queued.done; }));
  CHECK(is_cancelled(queued.error));
  CHECK(offload::outcome_of_cancellation(queued.error) ==
        offload::cancellation_outcome::never_started);
  CHECK_FALSE(blocker.done);  // answered while the only worker was still blocked
  release.count_down();
  REQUIRE(run_until(loop, [&] { return blocker.done; }));
  pool.shutdown();
  CHECK_FALSE(ran.load());
  CHECK_FALSE(blocker.error);
}

namespace {
offload::awaitable<void> wait_for_latch(std::latch* release, std::atomic<bool>* returned,
                                        std::atomic<bool>* returned_before_resume) {
  auto f = [release, returned] {
    release->wait();
    std::this_thread::sleep_for(20ms);
    returned->store(true);
  };
  try {
    co_await offload::to_thread(f);
  } catch (...) {
    returned_before_resume->store(returned->load());
    throw;
  }
}
}  // namespace

TEST_CASE(
    "wait policy: a cancelled awaiter resumes only after f has returned, then sees "
    "operation_aborted",
    "[cancellation]") {
  offload::event_loop loop;
  std::latch release(1);
  std::atomic<bool> returned{false}, returned_before_resume{false};
  outcome result;
  net::cancellation_signal signal;
  net::co_spawn(loop.get_executor(), wait_for_latch(&release, &returned, &returned_before_resume),
                net::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr e) {
                  result = {e, true};
                }));
  REQUIRE(run_until(loop, [&] { return loop.default_executor_pool().stats().running == 1; }));
  signal.emit(net::cancellation_type::terminal);
  run_for(loop, 50ms);
  CHECK_FALSE(result.done);  // still waiting for f
  release.count_down();
  REQUIRE(run_until(loop, [&] { return result.done; }));
  CHECK(is_cancelled(result.error));
  CHECK(offload::outcome_of_cancellation(result.error) == offload::cancellation_outcome::ran_to_end);
  CHECK(returned_before_resume.load());
}

namespace {
offload::awaitable<int> stoppable_call(std::atomic<bool>* saw_stop) {
  auto f = [saw_stop](std::stop_token stop) {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!stop.stop_requested() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(1ms);
    }
    saw_stop->store(stop.stop_requested());
    return 7;
  };
  co_return co_await offload::to_thread(f);
}

offload::awaitable<std::size_t> race_with_timer(std::atomic<bool>* saw_stop) {
  using namespace net::experimental::awaitable_operators;
  net::steady_timer timer(co_await net::this_coro::executor, 30ms);
  auto winner = co_await (stoppable_call(saw_stop) || timer.async_wait(net::use_awaitable));
  co_return winner.index();
}
}  // namespace

TEST_CASE("an f taking a std::stop_token is asked to stop when its awaiter is cancelled",
          "[cancellation][stop_token]") {
  offload::event_loop loop;
  std::atomic<bool> saw_stop{false};
  outcome result;
  net::cancellation_signal signal;
  net::co_spawn(loop.get_executor(), stoppable_call(&saw_stop),
                net::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr e, int) {
                  result = {e, true};
                }));
  REQUIRE(run_until(loop, [&] { return loop.default_executor_pool().stats().running == 1; }));
  signal.emit(net::cancellation_type::terminal);
  REQUIRE(run_until(loop, [&] { return result.done; }));
  CHECK(saw_stop.load());
  CHECK(is_cancelled(result.error));
}

TEST_CASE("`||` with a timer cancels an offloaded call the same way", "[cancellation][operators]") {
  std::atomic<bool> saw_stop{false};
  const std::size_t winner = offload::run(race_with_timer(&saw_stop));
  CHECK(winner == 1);  // the timer
  CHECK(saw_stop.load());
}

namespace {
offload::awaitable<void> polls_check_cancelled(std::atomic<int>* polls) {
  auto f = [polls] {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      offload::from_thread::check_cancelled();  // throws once the awaiter is cancelled
      polls->fetch_add(1);
      std::this_thread::sleep_for(1ms);
    }
  };
  co_await offload::to_thread(f);
}
}  // namespace

TEST_CASE("from_thread::check_cancelled throws operation_aborted once the awaiter is cancelled",
          "[cancellation][from_thread]") {
  offload::event_loop loop;
  std::atomic<int> polls{0};
  outcome result;
  auto task = loop.create_task(polls_check_cancelled(&polls));
  REQUIRE(run_until(loop, [&] { return polls.load() > 0; }));
  CHECK(task.cancel());
  try {
    loop.run_until_complete(task.join());
    FAIL("join() should have thrown");
  } catch (const offload::net_system_error& e) {
    CHECK(offload_test::is_operation_aborted(e.code()));
  }
  CHECK(task.done());
}

TEST_CASE("from_thread::check_cancelled outside an offloaded call says where it belongs",
          "[cancellation][from_thread]") {
  try {
    offload::from_thread::check_cancelled();
    FAIL("should have thrown");
  } catch (const std::system_error& e) {
    CHECK(e.code() == offload::errc::no_running_loop);
    CHECK_THAT(std::string(e.what()), offload_test::contains("to_thread"));
  }
}

TEST_CASE("an uncancelled call still delivers its result with a cancellation slot bound",
          "[cancellation]") {
  offload::event_loop loop;
  std::atomic<bool> saw_stop{false};
  outcome result;
  int value = 0;
  net::cancellation_signal signal;
  auto f = [](std::stop_token) { return 5; };
  auto coro = [](decltype(f) g) -> offload::awaitable<int> {
    co_return co_await offload::to_thread(g);
  };
  net::co_spawn(loop.get_executor(), coro(f),
                net::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr e, int v) {
                  result = {e, true};
                  value = v;
                }));
  REQUIRE(run_until(loop, [&] { return result.done; }));
  CHECK_FALSE(result.error);
  CHECK(value == 5);
  CHECK_FALSE(saw_stop.load());
  signal.emit(net::cancellation_type::terminal);  // after completion: nothing left to cancel
}

// -- cancel_policy::abandon -----------------------------------------------------------------------

namespace {
// on_abandoned is a plain function: what it records lives here.
struct abandoned_log {
  std::atomic<int> calls{0};
  std::atomic<bool> had_error{false};
  std::atomic<bool> got_null{false};
  std::atomic<int> error_code{0};
  std::atomic<std::thread::id> thread{};
} g_abandoned;

void record_abandoned(std::exception_ptr e) {
  g_abandoned.thread.store(std::this_thread::get_id());
  g_abandoned.got_null.store(e == nullptr);
  try {
    if (e) std::rethrow_exception(e);
  } catch (const offload_test::my_error& err) {
    g_abandoned.had_error.store(true);
    g_abandoned.error_code.store(err.code);
  }
  g_abandoned.calls.fetch_add(1);
}

void reset_abandoned() {
  g_abandoned.calls = 0;
  g_abandoned.had_error = false;
  g_abandoned.got_null = false;
  g_abandoned.error_code = 0;
  g_abandoned.thread = std::thread::id{};
}

offload::awaitable<void> abandoning_call(std::latch* release, std::atomic<bool>* returned) {
  auto f = [release, returned] {
    release->wait();
    returned->store(true);
    throw offload_test::my_error(42);
  };
  co_await offload::to_thread(
      {.policy = offload::cancel_policy::abandon, .on_abandoned = record_abandoned}, std::move(f));
}
}  // namespace

TEST_CASE(
    "abandon policy: the awaiter resumes at once while f is still blocked; f's later exception "
    "reaches on_abandoned once, on the worker",
    "[cancellation][abandon]") {
  reset_abandoned();
  offload::event_loop loop;
  std::latch release(1);
  std::atomic<bool> returned{false};
  outcome result;
  net::cancellation_signal signal;
  net::co_spawn(loop.get_executor(), abandoning_call(&release, &returned),
                net::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr e) {
                  result = {e, true};
                }));
  REQUIRE(run_until(loop, [&] { return loop.default_executor_pool().stats().running == 1; }));
  const auto cancelled_at = std::chrono::steady_clock::now();
  signal.emit(net::cancellation_type::terminal);
  REQUIRE(run_until(loop, [&] { return result.done; }));
  const auto resumed_after = std::chrono::steady_clock::now() - cancelled_at;
  CHECK(is_cancelled(result.error));
  CHECK(offload::outcome_of_cancellation(result.error) == offload::cancellation_outcome::abandoned);
  CHECK_FALSE(returned.load());  // f is still blocked on the latch
  CHECK(resumed_after < 50ms);
  CHECK(g_abandoned.calls.load() == 0);

  release.count_down();
  REQUIRE(offload_test::eventually([&] { return g_abandoned.calls.load() == 1; }));
  CHECK(g_abandoned.had_error.load());
  CHECK(g_abandoned.error_code.load() == 42);
  CHECK(g_abandoned.thread.load() != std::this_thread::get_id());
  run_for(loop, 20ms);
  CHECK(g_abandoned.calls.load() == 1);
  CHECK(
      offload_test::eventually([&] { return loop.default_executor_pool().stats().running == 0; }));
}

TEST_CASE("abandon policy: a result nobody awaits any more is dropped (on_abandoned gets null)",
          "[cancellation][abandon]") {
  reset_abandoned();
  offload::event_loop loop;
  std::latch release(1);
  auto destroyed = offload_test::make_flag();
  outcome result;
  net::cancellation_signal signal;
  auto coro = [](std::latch* rel, offload_test::flag_ptr flag) -> offload::awaitable<void> {
    auto f = [rel, guard = std::make_shared<offload_test::raii_flag>(flag)] {
      rel->wait();
      return std::string(1000, 'x');
    };
    (void)co_await offload::to_thread(
        {.policy = offload::cancel_policy::abandon, .on_abandoned = record_abandoned},
        std::move(f));
  };
  net::co_spawn(loop.get_executor(), coro(&release, destroyed),
                net::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr e) {
                  result = {e, true};
                }));
  REQUIRE(run_until(loop, [&] { return loop.default_executor_pool().stats().running == 1; }));
  signal.emit(net::cancellation_type::terminal);
  REQUIRE(run_until(loop, [&] { return result.done; }));
  CHECK(is_cancelled(result.error));
  CHECK_FALSE(destroyed->load());  // f (and what it owns) is alive while it runs
  release.count_down();
  REQUIRE(offload_test::eventually([&] { return g_abandoned.calls.load() == 1; }));
  CHECK(g_abandoned.got_null.load());
  CHECK(offload_test::eventually([&] { return destroyed->load(); }));
}

TEST_CASE("abandon policy: a call cancelled before it started never runs",
          "[cancellation][abandon]") {
  reset_abandoned();
  offload::thread_pool pool(1);
  offload::event_loop loop;
  std::latch release(1);
  std::atomic<bool> ran{false};
  outcome blocker, queued;
  net::co_spawn(loop.get_executor(), block_on(pool, &release), [&](std::exception_ptr e) {
    blocker = {e, true};
  });
  auto coro = [](offload::thread_pool& p, std::atomic<bool>* r) -> offload::awaitable<void> {
    auto f = [r] { r->store(true); };
    co_await offload::run_in_executor(
        p, {.policy = offload::cancel_policy::abandon, .on_abandoned = record_abandoned},
        std::move(f));
  };
  net::cancellation_signal signal;
  net::co_spawn(loop.get_executor(), coro(pool, &ran),
                net::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr e) {
                  queued = {e, true};
                }));
  REQUIRE(run_until(loop, [&] { return pool.stats().running == 1; }));
  signal.emit(net::cancellation_type::terminal);
  REQUIRE(run_until(loop, [&] { return queued.done; }));
  CHECK(is_cancelled(queued.error));
  release.count_down();
  REQUIRE(run_until(loop, [&] { return blocker.done; }));
  pool.shutdown();
  CHECK_FALSE(ran.load());
  CHECK(g_abandoned.calls.load() == 0);  // nothing ran, so nothing was abandoned
}

TEST_CASE("an awaiter already cancelled when it calls never submits f", "[cancellation]") {
  offload::thread_pool pool(1);
  offload::event_loop loop;
  std::atomic<bool> ran{false};
  outcome result;
  net::cancellation_signal signal;
  auto coro = [](offload::thread_pool& p, std::atomic<bool>* r) -> offload::awaitable<void> {
    // Cancelled while it waits on a timer; it swallows that, then tries to offload.
    net::steady_timer timer(co_await net::this_coro::executor, 10s);
    try {
      co_await timer.async_wait(net::use_awaitable);
    } catch (const offload::net_system_error&) {
    }
    auto f = [r] { r->store(true); };
    co_await offload::run_in_executor(p, std::move(f));
  };
  net::co_spawn(loop.get_executor(), coro(pool, &ran),
                net::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr e) {
                  result = {e, true};
                }));
  run_for(loop, 5ms);
  signal.emit(net::cancellation_type::terminal);
  REQUIRE(run_until(loop, [&] { return result.done; }));
  CHECK(is_cancelled(result.error));
  pool.shutdown();
  CHECK_FALSE(ran.load());
  CHECK(pool.stats().completed == 0);
}

TEST_CASE(
    "a call cancelled before it started, awaited on a strand of the caller's own, lets its "
    "io_context be destroyed",
    "[cancellation][shutdown]") {
  offload::thread_pool pool(1);
  std::latch release(1);
  std::atomic<bool> ran{false};
  auto io = std::make_unique<net::io_context>();
  std::optional<net::strand<net::io_context::executor_type>> strand(net::make_strand(*io));
  outcome blocker, queued;
  net::co_spawn(*strand, block_on(pool, &release), [&](std::exception_ptr e) {
    blocker = {e, true};
  });
  net::cancellation_signal signal;
  net::co_spawn(*strand, call_on(pool, &ran),
                net::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr e) {
                  queued = {e, true};
                }));
  while (pool.stats().running != 1) io->run_for(1ms);
  net::post(*strand, [&] { signal.emit(net::cancellation_type::terminal); });
  while (!queued.done) io->run_for(1ms);
  CHECK(is_cancelled(queued.error));
  release.count_down();
  while (!blocker.done) io->run_for(1ms);
  // Every call has been answered: destroying the context must not wait for anything.
  strand.reset();  // a strand must not outlive its context
  std::atomic<bool> destroyed{false};
  std::thread destroyer([&] {
    io.reset();
    destroyed.store(true);
  });
  const bool in_time = offload_test::eventually([&] { return destroyed.load(); }, 10s);
  CHECK(in_time);
  if (!in_time) std::abort();  // a hang here is the bug; do not wait for ctest's timeout
  destroyer.join();
  CHECK_FALSE(ran.load());
}

TEST_CASE("a timeout says what the call did; other errors say unknown", "[cancellation][timeout]") {
  offload::thread_pool pool(1);
  std::latch started(1), release(1), blocker_done(1);
  std::atomic<bool> queued_ran{false};
  auto outcome_of = [](offload::awaitable<void> aw) -> offload::awaitable<std::exception_ptr> {
    try {
      co_await std::move(aw);
    } catch (...) {
      co_return std::current_exception();
    }
    co_return nullptr;
  };
  auto body = [&]() -> offload::awaitable<void> {
    auto blocker = [&] {
      started.count_down();
      release.wait();
    };
    offload::async_run(pool, std::move(blocker), [&blocker_done](std::exception_ptr) {
      blocker_done.count_down();
    });
    started.wait();
    // Queued behind the blocker at its deadline: never started.
    auto queued = offload::wait_for(
        offload::run_in_executor(pool, [&queued_ran] { queued_ran = true; }), 10ms);
    const std::exception_ptr e1 = co_await outcome_of(std::move(queued));
    CHECK(offload_test::code_of(e1) == offload::errc::timeout);
    CHECK(offload::outcome_of_cancellation(e1) == offload::cancellation_outcome::never_started);
    release.count_down();
    blocker_done.wait();

    // Running at its deadline (a warm thread, a generous deadline), under the wait policy: it
    // is stopped there and runs to its end.
    auto until_stopped = [](std::stop_token stop) {
      while (!stop.stop_requested()) std::this_thread::sleep_for(1ms);
    };
    auto running = offload::run_in_executor(pool, {.timeout = 200ms}, until_stopped);
    const std::exception_ptr e2 = co_await outcome_of(std::move(running));
    CHECK(offload_test::code_of(e2) == offload::errc::timeout);
    CHECK(offload::outcome_of_cancellation(e2) == offload::cancellation_outcome::ran_to_end);

    // A coroutine that rethrows its call's cancellation unchanged keeps the outcome.
    auto inner = [&pool, until_stopped]() -> offload::awaitable<void> {
      co_await offload::run_in_executor(pool, until_stopped);
    };
    auto waited = offload::wait_for(inner(), 200ms);  // named: GCC 12's co_await temporaries
    const std::exception_ptr e3 = co_await outcome_of(std::move(waited));
    CHECK(offload_test::code_of(e3) == offload::errc::timeout);
    CHECK(offload::outcome_of_cancellation(e3) == offload::cancellation_outcome::ran_to_end);

    // Not a call's cancellation or timeout.
    const std::exception_ptr e4 = std::make_exception_ptr(std::runtime_error("other"));
    CHECK(offload::outcome_of_cancellation(e4) == offload::cancellation_outcome::unknown);
    CHECK(offload::outcome_of_cancellation(nullptr) == offload::cancellation_outcome::unknown);
    CHECK(offload::outcome_of_cancellation(std::runtime_error("other")) ==
          offload::cancellation_outcome::unknown);
  };
  offload::run(body());
  pool.shutdown();
  CHECK_FALSE(queued_ran.load());
}
