// capacity_limiter: a cap on how many offloaded calls that share it run at once. Calls wait for
// a token without blocking a thread, take it before f starts and give it back when f returns.
#include "catch.hpp"
#include "loop_helpers.hpp"

#include <offload/limiter.hpp>
#include <offload/offload.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <latch>
#include <stdexcept>
#include <thread>
#include <vector>

namespace net = offload::net;
using namespace std::chrono_literals;

namespace {

struct concurrency_probe {
  std::atomic<int> now{0};
  std::atomic<int> peak{0};
  void enter() {
    const int n = now.fetch_add(1) + 1;
    int p = peak.load();
    while (n > p && !peak.compare_exchange_weak(p, n)) {
    }
  }
  void leave() { now.fetch_sub(1); }
};

using offload_test::is_cancelled;

}  // namespace

TEST_CASE("limiter(3) with 10 concurrent calls: peak concurrency is exactly 3", "[limiter]") {
  offload::thread_pool pool(10);
  offload::capacity_limiter limiter(3);
  concurrency_probe probe;
  std::atomic<int> done{0};
  auto body = [&]() -> offload::awaitable<void> {
    std::vector<offload::awaitable<int>> calls;
    for (int i = 0; i < 10; ++i) {
      auto f = [&probe, &limiter, i] {
        probe.enter();
        // Hold the token until the limiter is saturated (or a guard passes), so the peak is
        // reached whatever the scheduling.
        offload_test::eventually([&] { return limiter.borrowed_tokens() == 3; }, 2s);
        std::this_thread::sleep_for(2ms);
        probe.leave();
        return i;
      };
      calls.push_back(offload::run_in_executor(pool, {.limiter = &limiter}, std::move(f)));
    }
    auto results = co_await offload::gather(std::move(calls));
    for (int i = 0; i < 10; ++i) CHECK(results[static_cast<std::size_t>(i)] == i);
    done = 10;
  };
  offload::run(body());
  CHECK(done.load() == 10);
  CHECK(probe.peak.load() == 3);
  CHECK(limiter.borrowed_tokens() == 0);
  CHECK(limiter.stats().waiting == 0);
}

namespace {
void ignore_abandoned(std::exception_ptr) {}

offload::awaitable<void> abandoned_then_next(offload::capacity_limiter& limiter,
                                             std::latch& release_first,
                                             std::atomic<bool>& first_returned,
                                             std::atomic<bool>& second_saw_first_returned,
                                             std::exception_ptr& first_error) {
  auto first = [&] {
    release_first.wait();
    std::this_thread::sleep_for(10ms);
    first_returned = true;
  };
  // The deadline passes; under abandon the awaiter resumes while `first` still holds the token.
  try {
    co_await offload::wait_for(offload::to_thread({.policy = offload::cancel_policy::abandon,
                                                   .limiter = &limiter,
                                                   .on_abandoned = ignore_abandoned},
                                                  std::move(first)),
                               20ms);
  } catch (...) {
    first_error = std::current_exception();
  }
  CHECK(limiter.borrowed_tokens() == 1);
  CHECK_FALSE(first_returned.load());
  release_first.count_down();
  auto second = [&] { second_saw_first_returned = first_returned.load(); };
  co_await offload::to_thread({.limiter = &limiter}, std::move(second));
}
}  // namespace

TEST_CASE("limiter(1): the next call waits until an abandoned call's f has really returned",
          "[limiter][abandon]") {
  offload::capacity_limiter limiter(1);
  std::latch release_first(1);
  std::atomic<bool> first_returned{false}, second_saw_first_returned{false};
  std::exception_ptr first_error;
  offload::run(abandoned_then_next(limiter, release_first, first_returned,
                                   second_saw_first_returned, first_error));
  CHECK(offload_test::code_of(first_error) == offload::errc::timeout);
  CHECK(second_saw_first_returned.load());
  CHECK(limiter.borrowed_tokens() == 0);
}

TEST_CASE("a call cancelled while it waits for a token never runs and takes no token",
          "[limiter][cancellation]") {
  offload::event_loop loop;
  offload::capacity_limiter limiter(1);
  std::latch release(1);
  std::atomic<bool> second_ran{false};
  std::exception_ptr first_error, second_error;
  bool first_done = false, second_done = false;
  auto first = [](offload::capacity_limiter& l, std::latch& r) -> offload::awaitable<void> {
    auto f = [&r] { r.wait(); };
    co_await offload::to_thread({.limiter = &l}, std::move(f));
  };
  auto second = [](offload::capacity_limiter& l,
                   std::atomic<bool>& ran) -> offload::awaitable<void> {
    auto f = [&ran] { ran = true; };
    co_await offload::to_thread({.limiter = &l}, std::move(f));
  };
  net::co_spawn(loop.get_executor(), first(limiter, release), [&](std::exception_ptr e) {
    first_error = e;
    first_done = true;
  });
  net::cancellation_signal signal;
  net::co_spawn(loop.get_executor(), second(limiter, second_ran),
                net::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr e) {
                  second_error = e;
                  second_done = true;
                }));
  loop.run_until_complete(offload_test::wait_until([&] { return limiter.stats().waiting == 1; }));
  CHECK(limiter.borrowed_tokens() == 1);
  signal.emit(net::cancellation_type::terminal);
  loop.run_until_complete(offload_test::wait_until([&] { return second_done; }));
  CHECK(is_cancelled(second_error));
  release.count_down();
  loop.run_until_complete(offload_test::wait_until([&] { return first_done; }));
  CHECK_FALSE(first_error);
  CHECK_FALSE(second_ran.load());
  CHECK(limiter.borrowed_tokens() == 0);
  CHECK(limiter.stats().waiting == 0);  // the cancelled node was reclaimed on release
}

TEST_CASE("growing total_tokens starts waiting calls at once", "[limiter]") {
  offload::capacity_limiter limiter(1);
  std::latch all_running(3);
  auto body = [&]() -> offload::awaitable<int> {
    std::vector<offload::awaitable<int>> calls;
    for (int i = 0; i < 3; ++i) {
      auto f = [&all_running] {
        all_running.arrive_and_wait();  // only returns once three run at the same time
        return 1;
      };
      calls.push_back(offload::to_thread({.limiter = &limiter}, std::move(f)));
    }
    auto grow = [&]() -> offload::awaitable<int> {
      const bool queued =
          co_await offload_test::wait_until([&] { return limiter.stats().waiting == 2; });
      CHECK(queued);
      limiter.set_total_tokens(3);
      co_return 0;
    };
    calls.push_back(grow());
    auto results = co_await offload::gather(std::move(calls));
    co_return results[0] + results[1] + results[2];
  };
  CHECK(offload::run(body()) == 3);
  CHECK(limiter.total_tokens() == 3);
  CHECK(limiter.available_tokens() == 3);
}

TEST_CASE("a token is given back when the call fails to be submitted", "[limiter]") {
  offload::thread_pool pool(1);
  pool.shutdown();
  offload::capacity_limiter limiter(1);
  auto body = [&]() -> offload::awaitable<std::error_code> {
    auto f = [] { return 1; };
    try {
      co_await offload::run_in_executor(pool, {.limiter = &limiter}, std::move(f));
    } catch (const std::system_error& e) {
      co_return e.code();
    }
    co_return std::error_code();
  };
  CHECK(offload::run(body()) == offload::errc::executor_shutdown);
  CHECK(limiter.borrowed_tokens() == 0);
}

TEST_CASE("a limiter shared by two pools caps them together", "[limiter]") {
  offload::thread_pool a(4), b(4);
  offload::capacity_limiter limiter(2);
  concurrency_probe probe;
  auto body = [&]() -> offload::awaitable<void> {
    std::vector<offload::awaitable<void>> calls;
    for (int i = 0; i < 8; ++i) {
      auto f = [&probe] {
        probe.enter();
        std::this_thread::sleep_for(3ms);
        probe.leave();
      };
      if (i % 2 == 0) {
        calls.push_back(offload::run_in_executor(a, {.limiter = &limiter}, std::move(f)));
      } else {
        calls.push_back(offload::run_in_executor(b, {.limiter = &limiter}, std::move(f)));
      }
    }
    co_await offload::gather(std::move(calls));
  };
  offload::run(body());
  CHECK(probe.peak.load() <= 2);
  CHECK(probe.peak.load() >= 1);
}

TEST_CASE(
    "calls still waiting when the limiter is destroyed fail with executor_shutdown; the "
    "running one finishes",
    "[limiter]") {
  offload::event_loop loop;
  auto limiter = std::make_unique<offload::capacity_limiter>(1);
  std::latch release(1);
  std::atomic<bool> waiting_ran{false};
  std::exception_ptr running_error, waiting_error;
  bool running_done = false, waiting_done = false;
  auto call = [](offload::capacity_limiter* l, std::latch* r) -> offload::awaitable<void> {
    auto f = [r] { r->wait(); };
    co_await offload::to_thread({.limiter = l}, std::move(f));
  };
  auto waiter = [](offload::capacity_limiter* l,
                   std::atomic<bool>* ran) -> offload::awaitable<void> {
    auto f = [ran] { ran->store(true); };
    co_await offload::to_thread({.limiter = l}, std::move(f));
  };
  net::co_spawn(loop.get_executor(), call(limiter.get(), &release), [&](std::exception_ptr e) {
    running_error = e;
    running_done = true;
  });
  net::co_spawn(loop.get_executor(), waiter(limiter.get(), &waiting_ran),
                [&](std::exception_ptr e) {
                  waiting_error = e;
                  waiting_done = true;
                });
  loop.run_until_complete(offload_test::wait_until([&] { return limiter->stats().waiting == 1; }));
  limiter.reset();  // misuse: calls still use it
  loop.run_until_complete(offload_test::wait_until([&] { return waiting_done; }));
  CHECK(offload_test::code_of(waiting_error) == offload::errc::executor_shutdown);
  release.count_down();  // the running call gives its token back to what the limiter left
  loop.run_until_complete(offload_test::wait_until([&] { return running_done; }));
  CHECK_FALSE(running_error);
  CHECK_FALSE(waiting_ran.load());
}

TEST_CASE("a limiter with no tokens is refused", "[limiter]") {
  CHECK_THROWS_AS(offload::capacity_limiter(0), std::invalid_argument);
  offload::capacity_limiter limiter(2);
  CHECK_THROWS_AS(limiter.set_total_tokens(0), std::invalid_argument);
  CHECK(limiter.total_tokens() == 2);
  CHECK(limiter.available_tokens() == 2);
}
