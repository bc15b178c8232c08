// thread_pool_options::grow_when_blocked: a pool whose threads are all blocked in calls, with
// calls waiting, starts more threads up to the growth's cap; one whose calls compute does not
// grow past the CPUs; without the option it never passes max_workers; the extra threads go
// when idle.
#include "catch.hpp"

#include <offload/offload.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <time.h>
#endif

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

offload::thread_pool_options growing(std::size_t max_workers, std::size_t growth_max) {
  offload::thread_pool_options o;
  o.max_workers = max_workers;
  o.grow_when_blocked = offload::blocked_growth{.max_workers = growth_max, .after = 5ms};
  return o;
}

// Spins until this thread has used `cpu` of CPU time: computing, however loaded the machine.
void compute_for(std::chrono::milliseconds cpu) {
#if defined(__linux__)
  const auto used = [] {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
  };
  const auto start = used();
  while (used() - start < cpu) {
  }
#else
  const auto until = std::chrono::steady_clock::now() + cpu;
  while (std::chrono::steady_clock::now() < until) {
  }
#endif
}

}  // namespace

TEST_CASE("calls blocked waiting for each other: the pool grows until all of them run",
          "[thread_pool][growth]") {
  constexpr std::size_t calls = 8;
  offload::thread_pool pool(growing(1, calls));
  rendezvous all_in(calls);  // needs every call running at once: 8 threads on a 1-thread pool
  std::vector<std::future<bool>> met;
  for (std::size_t i = 0; i < calls; ++i) {
    met.push_back(offload::async_run(
        pool, [&] { return all_in.arrive_and_wait(30s); }, offload::net::use_future));
  }
  for (auto& m : met) REQUIRE(m.get());
  const offload::thread_pool_stats s = pool.stats();
  REQUIRE(s.peak_workers == calls);
  REQUIRE(s.grown == calls - 1);
  REQUIRE(pool.max_workers() == 1);  // max_workers stays what was asked for
}

TEST_CASE("growth stops at its own cap", "[thread_pool][growth]") {
  offload::thread_pool pool(growing(1, 3));
  rendezvous never(100);  // nobody meets: the calls wait until released
  std::vector<std::future<bool>> waiting;
  for (int i = 0; i < 6; ++i) {
    waiting.push_back(offload::async_run(
        pool, [&] { return never.arrive_and_wait(30s); }, offload::net::use_future));
  }
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
  std::vector<std::future<bool>> waiting;
  for (int i = 0; i < 4; ++i) {
    waiting.push_back(offload::async_run(
        pool, [&] { return never.arrive_and_wait(30s); }, offload::net::use_future));
  }
  std::this_thread::sleep_for(100ms);  // the chance to grow, which it must not take
  const offload::thread_pool_stats s = pool.stats();
  never.release();
  for (auto& w : waiting) (void)w.get();
  REQUIRE(s.peak_workers == 1);
  REQUIRE(s.grown == 0);
}

TEST_CASE("calls that compute do not make the pool grow past the CPUs", "[thread_pool][growth]") {
  const std::size_t cpus = offload::detail::usable_cpus();
  const std::size_t calls = cpus + 3;
  offload::thread_pool pool(growing(1, calls));
  std::vector<std::future<void>> done;
  for (std::size_t i = 0; i < calls; ++i) {
    done.push_back(offload::async_run(
        pool, [] { compute_for(60ms); }, offload::net::use_future));
  }
  for (auto& d : done) d.get();
  const offload::thread_pool_stats s = pool.stats();
#if defined(__linux__)  // elsewhere there is no per-thread CPU clock to tell computing from blocked
  REQUIRE(s.peak_workers <= std::max<std::size_t>(cpus, 1));
#endif
}

TEST_CASE("threads started by growth exit after keep_alive idle", "[thread_pool][growth]") {
  constexpr std::size_t calls = 4;
  offload::thread_pool_options o = growing(1, calls);
  o.keep_alive = 20ms;
  offload::thread_pool pool(o);
  rendezvous all_in(calls);
  std::vector<std::future<bool>> met;
  for (std::size_t i = 0; i < calls; ++i) {
    met.push_back(offload::async_run(
        pool, [&] { return all_in.arrive_and_wait(30s); }, offload::net::use_future));
  }
  for (auto& m : met) REQUIRE(m.get());
  REQUIRE(pool.stats().peak_workers == calls);
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (pool.stats().workers != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  REQUIRE(pool.stats().workers == 0);
  // And the pool still works, from zero threads.
  auto f = offload::async_run(pool, [] { return 3; }, offload::net::use_future);
  REQUIRE(f.get() == 3);
}
