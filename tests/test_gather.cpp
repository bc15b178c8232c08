// gather (variadic → tuple, range → vector; the first failure cancels the rest; the
// return_exceptions form) and as_completed (results streamed in completion order).
#include "catch.hpp"
#include "loop_helpers.hpp"

#include <offload/gather.hpp>
#include <offload/offload.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <latch>
#include <numeric>
#include <stop_token>
#include <string>
#include <thread>
#include <variant>
#include <vector>

namespace net = offload::net;
using namespace std::chrono_literals;

namespace {

using offload_test::is_cancelled;

offload::awaitable<int> sleepy(int ms) {
  auto f = [ms] {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return ms;
  };
  co_return co_await offload::to_thread(std::move(f));
}

// Returns only once `n` of its kind run at the same time: proves they run concurrently.
offload::awaitable<int> meet(std::latch* all, int value) {
  auto f = [all, value] {
    all->arrive_and_wait();
    return value;
  };
  co_return co_await offload::to_thread(std::move(f));
}

// Blocks until stopped; records that it was stopped and that it returned.
offload::awaitable<int> until_stopped(std::atomic<bool>* stopped, std::atomic<bool>* returned) {
  auto f = [stopped, returned](std::stop_token stop) {
    const auto guard = std::chrono::steady_clock::now() + 10s;
    while (!stop.stop_requested() && std::chrono::steady_clock::now() < guard) {
      std::this_thread::sleep_for(1ms);
    }
    stopped->store(stop.stop_requested());
    std::this_thread::sleep_for(5ms);
    returned->store(true);
    return 0;
  };
  co_return co_await offload::to_thread(std::move(f));
}

/// Runs `body` on the loop, cancels it (terminal) once `running` calls run on the loop's
/// default executor, and returns the exception it completed with.
std::exception_ptr cancelled_once_running(offload::event_loop& loop, offload::awaitable<void> body,
                                          std::size_t running) {
  std::exception_ptr error;
  bool done = false;
  net::cancellation_signal signal;
  net::co_spawn(loop.get_executor(), std::move(body),
                net::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr e) {
                  error = e;
                  done = true;
                }));
  loop.run_until_complete(offload_test::wait_until(
      [&] { return loop.default_executor_pool().stats().running == running; }));
  signal.emit(net::cancellation_type::terminal);
  loop.run_until_complete(offload_test::wait_until([&] { return done; }));
  return error;
}

offload::awaitable<int> fails_after(std::chrono::milliseconds d, int code) {
  auto f = [d, code]() -> int {
    std::this_thread::sleep_for(d);
    throw offload_test::my_error(code);
  };
  co_return co_await offload::to_thread(std::move(f));
}

struct no_default {
  explicit no_default(int v) : value(v) {}
  int value;
};

}  // namespace

TEST_CASE("gather runs its arguments concurrently and yields their results in argument order",
          "[gather]") {
  std::latch all(3);
  auto body = [&]() -> offload::awaitable<std::tuple<int, int, int>> {
    co_return co_await offload::gather(meet(&all, 1), meet(&all, 2), meet(&all, 3));
  };
  CHECK(offload::run(body()) == std::make_tuple(1, 2, 3));
}

TEST_CASE("gather: void gives std::monostate, and results need no default constructor",
          "[gather]") {
  auto body = []() -> offload::awaitable<int> {
    auto nothing = [] {};
    auto make = [] { return no_default(5); };
    auto [v, n, s] = co_await offload::gather(offload::to_thread(std::move(nothing)),
                                              offload::to_thread(std::move(make)), sleepy(1));
    static_assert(std::is_same_v<decltype(v), std::monostate>);
    co_return n.value + s;
  };
  CHECK(offload::run(body()) == 6);
}

TEST_CASE("gather(range) yields a vector in range order; empty and void ranges work", "[gather]") {
  auto body = []() -> offload::awaitable<std::vector<int>> {
    std::vector<offload::awaitable<int>> calls;
    for (int ms : {30, 10, 20}) calls.push_back(sleepy(ms));
    auto values = co_await offload::gather(std::move(calls));

    std::vector<offload::awaitable<int>> none;
    auto nothing = co_await offload::gather(std::move(none));
    CHECK(nothing.empty());

    std::atomic<int> ran{0};
    std::vector<offload::awaitable<void>> voids;
    for (int i = 0; i < 5; ++i) {
      auto f = [&ran] { ran.fetch_add(1); };
      voids.push_back(offload::to_thread(std::move(f)));
    }
    co_await offload::gather(std::move(voids));
    CHECK(ran.load() == 5);
    co_return values;
  };
  CHECK(offload::run(body()) == std::vector<int>{30, 10, 20});
}

TEST_CASE(
    "gather: the first exception cancels the siblings, waits for them, then is rethrown with "
    "its type",
    "[gather][cancellation]") {
  std::atomic<bool> stopped1{false}, returned1{false}, stopped2{false}, returned2{false};
  std::atomic<bool> returned_at_catch{false};
  int code = 0;
  auto body = [&]() -> offload::awaitable<void> {
    try {
      co_await offload::gather(until_stopped(&stopped1, &returned1), fails_after(5ms, 13),
                               until_stopped(&stopped2, &returned2));
    } catch (const offload_test::my_error& e) {
      code = e.code;
      returned_at_catch = returned1.load() && returned2.load();
    }
  };
  offload::run(body());
  CHECK(code == 13);
  CHECK(stopped1.load());
  CHECK(stopped2.load());
  CHECK(returned_at_catch.load());
}

TEST_CASE("gather(range): the first exception cancels the rest too", "[gather][cancellation]") {
  std::atomic<bool> stopped{false}, returned{false};
  int code = 0;
  auto body = [&]() -> offload::awaitable<void> {
    std::vector<offload::awaitable<int>> calls;
    calls.push_back(until_stopped(&stopped, &returned));
    calls.push_back(fails_after(5ms, 21));
    try {
      co_await offload::gather(std::move(calls));
    } catch (const offload_test::my_error& e) {
      code = e.code;
    }
  };
  offload::run(body());
  CHECK(code == 21);
  CHECK(stopped.load());
  CHECK(returned.load());
}

TEST_CASE("gather(return_exceptions, ...) runs everything to the end: one outcome per slot",
          "[gather]") {
  auto body = []() -> offload::awaitable<void> {
    auto [a, b, c] = co_await offload::gather(offload::return_exceptions, sleepy(30),
                                              fails_after(1ms, 3), sleepy(1));
    CHECK(a.has_value());
    CHECK(a.value() == 30);  // not cancelled by b's failure
    CHECK(b.has_error());
    CHECK_THROWS_AS(b.value(), offload_test::my_error);
    CHECK(c.value() == 1);

    std::vector<offload::awaitable<int>> calls;
    calls.push_back(fails_after(1ms, 4));
    calls.push_back(sleepy(10));
    auto outcomes = co_await offload::gather(offload::return_exceptions, std::move(calls));
    REQUIRE(outcomes.size() == 2);
    CHECK_FALSE(outcomes[0]);
    CHECK(outcomes[1].value() == 10);
  };
  offload::run(body());
}

TEST_CASE("cancelling the awaiter of gather cancels every call and reports cancellation",
          "[gather][cancellation]") {
  offload::event_loop loop;
  std::atomic<bool> stopped1{false}, returned1{false}, stopped2{false}, returned2{false};
  auto body = [](std::atomic<bool>* s1, std::atomic<bool>* r1, std::atomic<bool>* s2,
                 std::atomic<bool>* r2) -> offload::awaitable<void> {
    co_await offload::gather(until_stopped(s1, r1), until_stopped(s2, r2));
  };
  CHECK(is_cancelled(
      cancelled_once_running(loop, body(&stopped1, &returned1, &stopped2, &returned2), 2)));
  CHECK(stopped1.load());
  CHECK(stopped2.load());
  CHECK(returned1.load());  // awaited before gather reported
  CHECK(returned2.load());
}

TEST_CASE("as_completed yields results in completion order", "[as_completed]") {
  // The consumer lets the calls finish one at a time, in the order 1, 2, 0 (a gate gives way
  // after 10 s: a stream that waited for call 0 first would fail, not hang).
  offload_test::gate finish[3];
  auto body = [&]() -> offload::awaitable<void> {
    std::vector<offload::awaitable<int>> calls;
    for (int i = 0; i < 3; ++i) {
      auto f = [&finish, i] {
        finish[i].wait();
        return 10 * i;
      };
      calls.push_back(offload::to_thread(std::move(f)));
    }
    auto stream = offload::as_completed(std::move(calls));
    CHECK(stream.size() == 3);
    std::vector<int> values;
    std::vector<std::size_t> indices;
    const std::array<std::size_t, 3> order{1, 2, 0};
    for (std::size_t next : order) {
      finish[next].open();
      values.push_back(co_await stream.next());
      indices.push_back(stream.last_index());
    }
    CHECK(stream.done());
    CHECK(values == std::vector<int>{10, 20, 0});
    CHECK(indices == std::vector<std::size_t>{1, 2, 0});
    CHECK(stream.remaining() == 0);
  };
  offload::run(body());
}

TEST_CASE("as_completed streams: a result is available before the others have finished",
          "[as_completed]") {
  std::latch release(1);
  auto body = [&]() -> offload::awaitable<void> {
    std::vector<offload::awaitable<int>> calls;
    auto blocked = [&release] {
      release.wait();  // only the consumer, after its first result, lets this one finish
      return 2;
    };
    calls.push_back(offload::to_thread(std::move(blocked)));
    calls.push_back(sleepy(1));
    auto stream = offload::as_completed(std::move(calls));
    const int first = co_await stream.next();
    release.count_down();
    const int second = co_await stream.next();
    CHECK(first == 1);
    CHECK(second == 2);
  };
  offload::run(body());
}

TEST_CASE("as_completed takes any number of calls and rethrows each failure in its turn",
          "[as_completed]") {
  auto body = []() -> offload::awaitable<void> {
    std::vector<offload::awaitable<int>> calls;
    for (int i = 0; i < 2000; ++i) {
      auto f = [i]() -> int {
        if (i == 777) throw offload_test::my_error(i);
        return i;
      };
      calls.push_back(offload::to_thread(std::move(f)));
    }
    auto stream = offload::as_completed(std::move(calls));
    long sum = 0;
    int failures = 0;
    while (!stream.done()) {
      try {
        sum += co_await stream.next();
      } catch (const offload_test::my_error& e) {
        CHECK(e.code == 777);
        CHECK(stream.last_index() == 777);
        ++failures;
      }
    }
    CHECK(failures == 1);
    CHECK(sum == 1999L * 2000 / 2 - 777);
    bool out_of_range = false;
    try {
      (void)co_await stream.next();
    } catch (const std::out_of_range&) {
      out_of_range = true;
    }
    CHECK(out_of_range);
  };
  offload::run(body());
}

TEST_CASE("an as_completed stream dropped early cancels the calls still running",
          "[as_completed][cancellation]") {
  std::atomic<bool> stopped{false}, returned{false};
  auto body = [&]() -> offload::awaitable<int> {
    std::vector<offload::awaitable<int>> calls;
    calls.push_back(until_stopped(&stopped, &returned));
    calls.push_back(sleepy(1));
    int first = 0;
    {
      auto stream = offload::as_completed(std::move(calls));
      first = co_await stream.next();
    }
    co_return first;
  };
  CHECK(offload::run(body()) == 1);
  CHECK(offload_test::eventually([&] { return stopped.load() && returned.load(); }));
}

TEST_CASE("an as_completed stream never awaited starts nothing", "[as_completed]") {
  offload::thread_pool pool(1);
  std::atomic<bool> ran{false};
  auto body = [&]() -> offload::awaitable<void> {
    std::vector<offload::awaitable<void>> calls;
    auto f = [&ran] { ran = true; };
    calls.push_back(offload::run_in_executor(pool, std::move(f)));
    auto stream = offload::as_completed(std::move(calls));
    CHECK(stream.remaining() == 1);
    co_return;
  };
  offload::run(body());
  pool.shutdown();
  CHECK_FALSE(ran.load());
}

// -- calls started directly ------------------------------------------------------------------
// Kept as offload::call<T>, offloaded calls are started by gather, as_completed and wait_for
// without a coroutine each: the same rules must hold on that path.

namespace {

// Blocks until its stop_token is stopped (or 10 s pass); counts how many were stopped.
auto blocks_until_stopped(std::atomic<int>* stopped) {
  return [stopped](std::stop_token stop) {
    const auto guard = std::chrono::steady_clock::now() + 10s;
    while (!stop.stop_requested() && std::chrono::steady_clock::now() < guard) {
      std::this_thread::sleep_for(1ms);
    }
    if (stop.stop_requested()) stopped->fetch_add(1);
    return -1;
  };
}

// The calls of a gather whose first failure must cancel the rest: the first fails once the
// second is running (so that one must be stopped); two more wait behind a pool whose thread is
// held until finish() (so, cancelled, they never start).
struct failing_batch {
  offload::thread_pool failing{1}, running{1}, held{1};
  std::latch running_started{1}, release_held{1};
  std::atomic<int> stopped{0}, queued_ran{0};

  failing_batch() {
    offload::async_run(
        held, [this] { release_held.wait(); }, [](std::exception_ptr) {});
  }

  std::vector<offload::call<int>> calls() {
    std::vector<offload::call<int>> out;
    out.push_back(offload::run_in_executor(failing, [this]() -> int {
      running_started.wait();
      throw offload_test::my_error(9);
    }));
    auto blocker = blocks_until_stopped(&stopped);
    out.push_back(offload::run_in_executor(running, [this, blocker](std::stop_token stop) {
      running_started.count_down();
      return blocker(std::move(stop));
    }));
    for (int i = 0; i < 2; ++i) {
      out.push_back(offload::run_in_executor(held, [this] { return ++queued_ran; }));
    }
    return out;
  }

  void finish() {
    release_held.count_down();
    held.shutdown();
  }
};

}  // namespace

TEST_CASE("to_thread and run_in_executor make calls that start directly until made awaitables",
          "[gather][call]") {
  offload::thread_pool pool(1);
  auto body = [&]() -> offload::awaitable<void> {
    auto direct = offload::run_in_executor(pool, [] { return 1; });
    CHECK(offload::detail::call_access::launcher(direct) != nullptr);
    offload::awaitable<int> plain = std::move(direct);  // converted: the call moves along
    CHECK(offload::detail::call_access::launcher(direct) == nullptr);
    const int one = co_await std::move(plain);  // named: GCC 12's co_await temporaries
    CHECK(one == 1);

    auto with_deadline = offload::to_thread({.timeout = 10s}, [] { return 2; });
    CHECK(offload::detail::call_access::launcher(with_deadline) == nullptr);  // a coroutine
    const int two = co_await std::move(with_deadline);
    CHECK(two == 2);

    auto moved = offload::to_thread([] { return 3; });
    auto moved_to = std::move(moved);
    CHECK(offload::detail::call_access::launcher(moved) == nullptr);
    CHECK(offload::detail::call_access::launcher(moved_to) != nullptr);
    const int three = co_await std::move(moved_to);
    CHECK(three == 3);
  };
  offload::run(body());
}

TEST_CASE(
    "gather over calls: results in order, void and no-default results, mixed with "
    "awaitables",
    "[gather][call]") {
  std::latch all(3);
  auto body = [&]() -> offload::awaitable<void> {
    auto meets = [&all](int v) {
      return [&all, v] {
        all.arrive_and_wait();  // all three run at once
        return v;
      };
    };
    auto [a, b, c] = co_await offload::gather(offload::to_thread(meets(1)),
                                              offload::to_thread(meets(2)), meet(&all, 3));
    CHECK(std::make_tuple(a, b, c) == std::make_tuple(1, 2, 3));

    auto nothing = [] {};
    auto make = [] { return no_default(5); };
    auto [v, n] = co_await offload::gather(offload::to_thread(std::move(nothing)),
                                           offload::to_thread(std::move(make)));
    static_assert(std::is_same_v<decltype(v), std::monostate>);
    CHECK(n.value == 5);

    std::vector<offload::call<int>> calls;
    for (int i = 0; i < 1000; ++i) calls.push_back(offload::to_thread([i] { return i; }));
    calls.push_back(offload::to_thread({.timeout = 10s}, [] { return 1000; }));
    auto values = co_await offload::gather(std::move(calls));
    std::vector<int> expected(1001);
    std::iota(expected.begin(), expected.end(), 0);
    CHECK(values == expected);

    std::vector<offload::call<no_default>> objects;
    objects.push_back(offload::to_thread([] { return no_default(7); }));
    auto made = co_await offload::gather(std::move(objects));
    CHECK(made.at(0).value == 7);
  };
  offload::run(body());
}

TEST_CASE(
    "gather over calls: the first failure stops the running sibling and the queued ones "
    "never start",
    "[gather][call][cancellation]") {
  failing_batch batch;
  int code = 0;
  auto body = [&]() -> offload::awaitable<void> {
    try {
      co_await offload::gather(batch.calls());
    } catch (const offload_test::my_error& e) {
      code = e.code;
    }
  };
  offload::run(body());
  batch.finish();
  CHECK(code == 9);
  CHECK(batch.stopped.load() == 1);
  CHECK(batch.queued_ran.load() == 0);
}

TEST_CASE("gather(return_exceptions) over calls lets every call finish", "[gather][call]") {
  offload::thread_pool pool(1);
  auto body = [&]() -> offload::awaitable<void> {
    std::vector<offload::call<int>> calls;
    calls.push_back(
        offload::run_in_executor(pool, []() -> int { throw offload_test::my_error(4); }));
    calls.push_back(offload::run_in_executor(pool, [] { return 10; }));
    auto outcomes = co_await offload::gather(offload::return_exceptions, std::move(calls));
    REQUIRE(outcomes.size() == 2);
    CHECK(outcomes[0].has_error());
    CHECK(outcomes[1].value() == 10);
  };
  offload::run(body());
}

TEST_CASE("cancelling the awaiter of gather over calls stops them and reports cancellation",
          "[gather][call][cancellation]") {
  offload::event_loop loop;
  std::atomic<int> stopped{0};
  auto body = [](std::atomic<int>* s) -> offload::awaitable<void> {
    co_await offload::gather(offload::to_thread(blocks_until_stopped(s)),
                             offload::to_thread(blocks_until_stopped(s)));
  };
  CHECK(is_cancelled(cancelled_once_running(loop, body(&stopped), 2)));
  CHECK(stopped.load() == 2);  // both stopped, and returned before gather reported
}

TEST_CASE("as_completed over calls yields each result as it finishes", "[as_completed][call]") {
  offload::thread_pool pool(3);
  std::latch release_first(1), release_last(1);
  auto body = [&]() -> offload::awaitable<void> {
    std::vector<offload::call<int>> calls;
    calls.push_back(offload::run_in_executor(pool, [&] {
      release_last.wait();
      return 0;
    }));
    calls.push_back(offload::run_in_executor(pool, [] { return 1; }));
    calls.push_back(offload::run_in_executor(pool, [&] {
      release_first.wait();
      return 2;
    }));
    auto stream = offload::as_completed(std::move(calls));
    std::vector<int> order;
    order.push_back(co_await stream.next());
    release_first.count_down();
    order.push_back(co_await stream.next());
    release_last.count_down();
    order.push_back(co_await stream.next());
    CHECK(order == std::vector<int>{1, 2, 0});
    CHECK(stream.last_index() == 0);
  };
  offload::run(body());
}

TEST_CASE("wait_for over a call: a queued call never starts, a running one is stopped",
          "[timeout][call]") {
  offload::thread_pool pool(1);
  std::latch started(1), release(1);
  std::atomic<int> stopped{0}, queued_ran{0};
  auto timeout_of = [](offload::awaitable<int> aw) -> offload::awaitable<std::error_code> {
    try {
      co_await std::move(aw);
    } catch (const std::system_error& e) {
      co_return e.code();
    }
    co_return std::error_code();
  };
  auto body = [&]() -> offload::awaitable<void> {
    auto blocker = [&] {
      started.count_down();
      release.wait();
    };
    offload::async_run(pool, std::move(blocker), [](std::exception_ptr) {});
    started.wait();
    auto queued = offload::run_in_executor(pool, [&queued_ran] { return ++queued_ran; });
    auto waited = offload::wait_for(std::move(queued), 20ms);
    const std::error_code queued_code = co_await timeout_of(std::move(waited));
    CHECK(queued_code == offload::errc::timeout);
    release.count_down();

    // Generous: the thread is free and warm, so the call is running well before its deadline.
    auto running = offload::run_in_executor(pool, blocks_until_stopped(&stopped));
    const auto deadline = std::chrono::steady_clock::now() + 300ms;
    auto waited_until = offload::wait_until(std::move(running), deadline);
    const std::error_code running_code = co_await timeout_of(std::move(waited_until));
    CHECK(running_code == offload::errc::timeout);
  };
  offload::run(body());
  pool.shutdown();
  CHECK(queued_ran.load() == 0);
  CHECK(stopped.load() == 1);
}

TEST_CASE("gather over calls from a coroutine on any executor: an io_context's, a thread pool's",
          "[gather][call][cancellation]") {
  offload::thread_pool pool(1);
  failing_batch batch;
  auto body = [&]() -> offload::awaitable<int> {
    std::vector<offload::call<int>> calls;
    for (int i = 1; i <= 3; ++i) calls.push_back(offload::run_in_executor(pool, [i] { return i; }));
    const std::vector<int> values = co_await offload::gather(std::move(calls));
    CHECK(values == std::vector<int>{1, 2, 3});
    // The first failure still reaches the siblings through their cancellation slots.
    int code = 0;
    try {
      co_await offload::gather(batch.calls());
    } catch (const offload_test::my_error& e) {
      code = e.code;
    }
    co_return code;
  };
  SECTION("an io_context's executor") {
    net::io_context io;
    auto done = net::co_spawn(io, body(), net::use_future);
    io.run();
    CHECK(done.get() == 9);
  }
  SECTION("an Asio thread pool's executor (neither a strand nor an io_context)") {
    net::thread_pool asio_pool(1);
    auto done = net::co_spawn(asio_pool.get_executor(), body(), net::use_future);
    CHECK(done.get() == 9);
    asio_pool.join();
  }
  batch.finish();
  CHECK(batch.stopped.load() == 1);
  CHECK(batch.queued_ran.load() == 0);
}

TEST_CASE("gather: a child that fails before its first suspension still cancels the ones after it",
          "[gather][cancellation]") {
  // A coroutine child runs inline up to its first suspension when it is started, so its failure
  // comes before the later children exist: they must be cancelled once started (queued, they
  // never run; running, they are stopped), not left to run to the end.
  std::atomic<int> ran_to_guard{0};
  int code = 0;
  auto fails_at_once = []() -> offload::awaitable<int> {
    throw offload_test::my_error(17);
    co_return 0;
  };
  auto blocker = [&ran_to_guard](std::stop_token stop) {
    const auto guard = std::chrono::steady_clock::now() + 10s;
    while (!stop.stop_requested() && std::chrono::steady_clock::now() < guard) {
      std::this_thread::sleep_for(1ms);
    }
    if (!stop.stop_requested()) ran_to_guard.fetch_add(1);
    return 0;
  };
  auto body = [&]() -> offload::awaitable<void> {
    try {
      co_await offload::gather(fails_at_once(), offload::to_thread(blocker));
    } catch (const offload_test::my_error& e) {
      code = e.code;
    }
    std::vector<offload::awaitable<int>> range;
    range.push_back(fails_at_once());
    range.push_back(offload::to_thread(blocker));
    try {
      co_await offload::gather(std::move(range));
    } catch (const offload_test::my_error&) {
    }
  };
  offload::run(body());
  CHECK(code == 17);
  CHECK(ran_to_guard.load() == 0);
}
