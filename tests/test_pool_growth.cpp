// thread_pool_options::grow_when_blocked: a pool whose threads are all blocked in calls, with
// calls waiting, starts more threads up to the growth's cap; calls computing on every CPU keep
// it from growing, and a CPU they leave free lets it grow; without the option it never passes
// max_workers; the extra threads go when idle.
#include "catch.hpp"

#include <offload/offload.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <future>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

// A meeting point for `expected` calls that fails instead of hanging: a call that waits longer
// than `patience` for the others gives up and says so.
class rendezvous {
 public:
  explicit rendezvous(std::size_t expected) : expected_(expected) {}

  bool arrive_and_wait(std::chrono::seconds patience) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (++arrived_ == expected_) cv_.notify_all();
    return cv_.wait_for(lock, patience, [this] { return arrived_ >= expected_ || released_; });
  }
  void release() {
    std::lock_guard<std::mutex> lock(mutex_);
    released_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  const std::size_t expected_;
  std::size_t arrived_ = 0;
  bool released_ = false;
};

// Submits `n` calls that each wait at `meeting`: for the others, or until it is released.
std::vector<std::future<bool>> wait_at(offload::thread_pool& pool, rendezvous& meeting,
                                       std::size_t n) {
  std::vector<std::future<bool>> waiting;
  for (std::size_t i = 0; i < n; ++i) {
    waiting.push_back(offload::async_run(
        pool, [&meeting] { return meeting.arrive_and_wait(30s); }, offload::net::use_future));
  }
  return waiting;
}

offload::thread_pool_options growing(std::size_t max_workers, std::size_t growth_max) {
  offload::thread_pool_options o;
  o.max_workers = max_workers;
  o.grow_when_blocked = offload::blocked_growth{.max_workers = growth_max, .after = 5ms};
  return o;
}

}  // namespace

TEST_CASE("calls blocked waiting for each other: the pool grows until all of them run",
          "[thread_pool][growth]") {
  constexpr std::size_t calls = 8;
  offload::thread_pool pool(growing(1, calls));
  rendezvous all_in(calls);  // needs every call running at once: 8 threads on a 1-thread pool
  std::vector<std::future<bool>> met = wait_at(pool, all_in, calls);
  for (auto& m : met) REQUIRE(m.get());
  const offload::thread_pool_stats s = pool.stats();
  REQUIRE(s.peak_workers == calls);
  REQUIRE(s.grown == calls - 1);
  REQUIRE(pool.max_workers() == 1);  // max_workers stays what was asked for
}

TEST_CASE("growth stops at its own cap", "[thread_pool][growth]") {
  offload::thread_pool pool(growing(1, 3));
  rendezvous never(100);  // nobody meets: the calls wait until released
  std::vector<std::future<bool>> waiting = wait_at(pool, never, 6);
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (pool.stats().workers < 3 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  std::this_thread::sleep_for(100ms);  // twenty periods: the chance to grow past the cap
  const offload::thread_pool_stats s = pool.stats();
  never.release();
  for (auto& w : waiting) (void)w.get();
  REQUIRE(s.workers == 3);
  REQUIRE(s.peak_workers == 3);
  REQUIRE(s.queued == 3);
}

TEST_CASE("without grow_when_blocked a pool never passes max_workers", "[thread_pool][growth]") {
  offload::thread_pool pool(1);
  rendezvous never(100);
  std::vector<std::future<bool>> waiting = wait_at(pool, never, 4);
  std::this_thread::sleep_for(100ms);  // the chance to grow, which it must not take
  const offload::thread_pool_stats s = pool.stats();
  never.release();
  for (auto& w : waiting) (void)w.get();
  REQUIRE(s.peak_workers == 1);
  REQUIRE(s.grown == 0);
}

// Calls that spin until told to stop: computing for as long as the test needs.
struct spinners {
  std::atomic<bool> stop{false};
  std::vector<std::future<void>> done;

  void start(offload::thread_pool& pool, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      done.push_back(offload::async_run(
          pool,
          [this] {
            while (!stop.load(std::memory_order_relaxed)) {
            }
          },
          offload::net::use_future));
    }
  }
  ~spinners() {
    stop = true;
    for (auto& d : done) d.wait();
  }
};

TEST_CASE("calls that compute on every CPU keep blocked calls waiting: no growth",
          "[thread_pool][growth]") {
  const std::size_t cpus = offload::detail::usable_cpus();
  offload::thread_pool pool(growing(cpus, 4 * cpus + 4));
  rendezvous never(1000);
  std::vector<std::future<bool>> blocked;
  {
    spinners computing;
    computing.start(pool, cpus);  // first: they take every thread
    blocked = wait_at(pool, never, 3);
    std::this_thread::sleep_for(100ms);  // twenty periods: the chance to grow, not to be taken
    const offload::thread_pool_stats s = pool.stats();
    REQUIRE(s.grown == 0);
    REQUIRE(s.peak_workers == cpus);
    REQUIRE(s.queued == 3);
  }  // the spinners stop; the blocked calls get their threads
  never.release();
  for (auto& b : blocked) (void)b.get();
}

TEST_CASE("with a CPU left free by the computing calls, the pool grows for the blocked ones",
          "[thread_pool][growth]") {
  const std::size_t cpus = offload::detail::usable_cpus();
  offload::thread_pool pool(growing(cpus, 4 * cpus + 4));
  rendezvous never(1000);
  std::vector<std::future<bool>> blocked;
  spinners computing;
  computing.start(pool, cpus - 1);  // one thread is left for a blocked call
  blocked = wait_at(pool, never, 4);
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (pool.stats().grown == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  const offload::thread_pool_stats s = pool.stats();
  never.release();
  for (auto& b : blocked) (void)b.get();
  REQUIRE(s.grown >= 1);
  REQUIRE(s.peak_workers > cpus);
}

TEST_CASE("a growth period that is not positive is refused", "[thread_pool][growth]") {
  offload::thread_pool_options o;
  o.grow_when_blocked = offload::blocked_growth{.max_workers = 4, .after = 0ms};
  REQUIRE_THROWS_AS(offload::thread_pool(o), std::invalid_argument);
}

TEST_CASE("threads started by growth exit after keep_alive idle", "[thread_pool][growth]") {
  constexpr std::size_t calls = 4;
  offload::thread_pool_options o = growing(1, calls);
  o.keep_alive = 20ms;
  offload::thread_pool pool(o);
  rendezvous all_in(calls);
  std::vector<std::future<bool>> met = wait_at(pool, all_in, calls);
  for (auto& m : met) REQUIRE(m.get());
  REQUIRE(pool.stats().peak_workers == calls);
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (pool.stats().workers != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  REQUIRE(pool.stats().workers == 0);
  // And the pool still works, from zero threads.
  auto f = offload::async_run(
      pool, [] { return 3; }, offload::net::use_future);
  REQUIRE(f.get() == 3);
}
