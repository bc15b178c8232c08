// offload's benchmark: each workload runs offload and the hand-written Asio code a competent
// user would write for the same job, alternating, in the same process; it reports medians over
// repeats and the ratio offload / Asio. Timings are never asserted.
//
//   offload_bench [--quick] [--json] [--repeats N] [--no-pinned] [--only W1,W3,...]
//
// W1/W2 also run pinned to CPU 0 (a child process with its affinity set before any thread
// starts), since whether two threads share a vCPU swings hop latency on a VM; W1 co-located
// (every thread on CPU 0 while the process sees all CPUs, as the scheduler may place them);
// W1/W2 loaded (one busy-looping process per CPU beside them).

#include <offload/offload.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <latch>
#include <map>
#include <new>
#include <ranges>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

namespace net = offload::net;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

// ---- allocation counting (W7) ---------------------------------------------------------------

static std::atomic<bool> g_count_allocs{false};
static std::atomic<std::uint64_t> g_allocs{0};
static std::atomic<std::uint64_t> g_alloc_bytes{0};

void* operator new(std::size_t n) {
  if (g_count_allocs.load(std::memory_order_relaxed)) {
    g_allocs.fetch_add(1, std::memory_order_relaxed);
    g_alloc_bytes.fetch_add(n, std::memory_order_relaxed);
  }
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

// Asio allocates its operations with std::aligned_alloc when the standard library has it
// (which it decides from the headers included before its own), not with operator new: count
// those too, or its column would read zero.
// (glibc only, and not under a sanitizer, which intercepts it itself.)
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define OFFLOAD_BENCH_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define OFFLOAD_BENCH_SANITIZED 1
#endif
#if defined(__GLIBC__) && !defined(OFFLOAD_BENCH_SANITIZED)
extern "C" void* __libc_memalign(std::size_t alignment, std::size_t size);
extern "C" void* aligned_alloc(std::size_t alignment, std::size_t size) noexcept {
  if (g_count_allocs.load(std::memory_order_relaxed)) {
    g_allocs.fetch_add(1, std::memory_order_relaxed);
    g_alloc_bytes.fetch_add(size, std::memory_order_relaxed);
  }
  return __libc_memalign(alignment, size);
}
#endif

// ---- helpers --------------------------------------------------------------------------------

static std::atomic<long> g_sink{0};
static int trivial() { return 1; }

static double us_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::micro>(clock_type::now() - t0).count();
}

static double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1));
  return v[i];
}

static double median(std::vector<double> v) { return percentile(std::move(v), 0.5); }

static double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

static std::size_t pool_size() { return offload::detail::default_max_workers(); }

struct row {
  std::string workload;
  std::string metric;
  double offload = 0;
  double asio = 0;
  std::string target;
  bool higher_is_better = false;
};

struct options {
  bool quick = false;
  bool json = false;
  bool pinned_child = false;
  bool run_pinned = true;
  int repeats = 5;
  std::string only;  // comma-separated workloads ("W1,W3"); empty: all

  bool wants(const char* workload) const {
    if (only.empty()) return true;
    std::istringstream list(only);
    for (std::string w; std::getline(list, w, ',');)
      if (w == workload) return true;
    return false;
  }
};

// Runs `offload_fn` and `asio_fn` alternately `repeats` times; each returns a vector of figures
// (one per metric); the result is the per-metric median.
template <typename A, typename B>
static std::pair<std::vector<double>, std::vector<double>> alternate(int repeats, A offload_fn,
                                                                     B asio_fn) {
  std::vector<std::vector<double>> off, as;
  for (int r = 0; r < repeats; ++r) {
    off.push_back(offload_fn());
    as.push_back(asio_fn());
  }
  auto med = [](const std::vector<std::vector<double>>& runs) {
    std::vector<double> out;
    for (std::size_t m = 0; m < runs.front().size(); ++m) {
      std::vector<double> col;
      for (const auto& run : runs) col.push_back(run[m]);
      out.push_back(median(col));
    }
    return out;
  };
  return {med(off), med(as)};
}

// ---- W1: sequential round trip --------------------------------------------------------------

static offload::awaitable<void> w1_offload_coro(int n, std::vector<double>* lat) {
  for (int i = 0; i < n; ++i) {
    const auto t0 = clock_type::now();
    g_sink += co_await offload::to_thread(trivial);
    lat->push_back(us_since(t0));
  }
}

// W1's figures: p50 and p99 of the round trip, and the process's CPU time per call (every
// thread's: what the spinning costs), all in microseconds.
static std::vector<double> w1_figures(const std::vector<double>& lat, double cpu_seconds) {
  return {percentile(lat, 0.5), percentile(lat, 0.99),
          cpu_seconds * 1e6 / static_cast<double>(lat.size())};
}

static std::vector<double> w1_offload(int n) {
  std::vector<double> lat;
  lat.reserve(static_cast<std::size_t>(n));
  offload::event_loop loop;
  loop.run_until_complete(w1_offload_coro(n / 10, &lat));  // warm up: threads, caches
  lat.clear();
  const double cpu0 = process_cpu_seconds();
  loop.run_until_complete(w1_offload_coro(n, &lat));
  return w1_figures(lat, process_cpu_seconds() - cpu0);
}

static net::awaitable<void> w1_asio_coro(net::thread_pool::executor_type pool_ex, int n,
                                         std::vector<double>* lat) {
  auto io_ex = co_await net::this_coro::executor;
  for (int i = 0; i < n; ++i) {
    const auto t0 = clock_type::now();
    co_await net::post(net::bind_executor(pool_ex, net::use_awaitable));
    const int r = trivial();  // runs on the pool
    co_await net::post(io_ex, net::use_awaitable);
    g_sink += r;
    lat->push_back(us_since(t0));
  }
}

static std::vector<double> w1_asio(int n) {
  std::vector<double> lat;
  lat.reserve(static_cast<std::size_t>(n));
  net::io_context io(1);
  net::thread_pool pool(pool_size());
  net::co_spawn(io, w1_asio_coro(pool.get_executor(), n / 10, &lat), net::detached);
  io.run();
  lat.clear();
  io.restart();
  const double cpu0 = process_cpu_seconds();
  net::co_spawn(io, w1_asio_coro(pool.get_executor(), n, &lat), net::detached);
  io.run();
  const double cpu = process_cpu_seconds() - cpu0;
  pool.join();
  return w1_figures(lat, cpu);
}

static double spin_floor_us(int rounds) {
  std::atomic<int> flag{0};
  std::thread peer([&] {
    for (int i = 0; i < rounds; ++i) {
      while (flag.load(std::memory_order_acquire) != 1) offload::detail::cpu_relax();
      flag.store(2, std::memory_order_release);
    }
  });
  const auto t0 = clock_type::now();
  for (int i = 0; i < rounds; ++i) {
    flag.store(1, std::memory_order_release);
    while (flag.load(std::memory_order_acquire) != 2) offload::detail::cpu_relax();
  }
  const double us = us_since(t0) / rounds;
  peer.join();
  return us;
}

// ---- W2: burst ------------------------------------------------------------------------------

// Where the callbacks run: on the io_context, as the Asio baseline posts them, or on the loop's
// strand (each bind_executor copy of a strand costs an atomic reference-count round trip).
enum class w2_delivery { io_context, strand };

template <typename Executor>
static double w2_offload_on(offload::event_loop& loop, const Executor& ex, std::size_t n,
                            offload::thread_pool_options options = {.max_workers = pool_size(),
                                                                    .min_workers = pool_size()}) {
  offload::thread_pool pool(std::move(options));
  std::size_t done = 0;
  auto on_done = [&](std::exception_ptr, int r) {
    g_sink += r;
    if (++done == n) loop.stop();
  };
  clock_type::time_point t0;
  loop.call_soon([&] {
    t0 = clock_type::now();
    for (std::size_t i = 0; i < n; ++i) {
      offload::async_run(pool, trivial, net::bind_executor(ex, on_done));
    }
  });
  loop.run_forever();
  return static_cast<double>(n) / (us_since(t0) * 1e-6);
}

static std::vector<double> w2_offload(std::size_t n, w2_delivery delivery) {
  offload::event_loop loop;
  if (delivery == w2_delivery::strand) return {w2_offload_on(loop, loop.get_executor(), n)};
  return {w2_offload_on(loop, loop.context().get_executor(), n)};
}

static std::vector<double> w2_asio(std::size_t n) {
  net::io_context io(1);
  net::thread_pool pool(pool_size());
  auto work = net::make_work_guard(io);
  std::size_t done = 0;
  clock_type::time_point t0;
  net::post(io, [&] {
    t0 = clock_type::now();
    for (std::size_t i = 0; i < n; ++i) {
      net::post(pool, [&] {
        const int r = trivial();
        net::post(io, [&, r] {
          g_sink += r;
          if (++done == n) work.reset();
        });
      });
    }
  });
  io.run();
  const double per_sec = static_cast<double>(n) / (us_since(t0) * 1e-6);
  pool.join();
  return {per_sec};
}

// ---- W3: call_soon_threadsafe throughput, W4: run_coroutine_threadsafe round trip ----------

static std::vector<double> w3_offload(int producers, int per_producer) {
  offload::loop_thread bg;
  std::atomic<long> ran{0};
  std::latch go(1);
  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&] {
      go.wait();
      for (int i = 0; i < per_producer; ++i) {
        bg.call_soon([&ran] { ran.fetch_add(1, std::memory_order_relaxed); });
      }
    });
  }
  const long total = static_cast<long>(producers) * per_producer;
  const auto t0 = clock_type::now();
  go.count_down();
  for (auto& t : threads) t.join();
  while (ran.load() != total) std::this_thread::yield();
  return {static_cast<double>(total) / (us_since(t0) * 1e-6)};
}

static std::vector<double> w3_asio(int producers, int per_producer) {
  net::io_context io(1);
  auto work = net::make_work_guard(io);
  std::thread runner([&] { io.run(); });
  std::atomic<long> ran{0};
  std::latch go(1);
  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&] {
      go.wait();
      for (int i = 0; i < per_producer; ++i) {
        net::post(io, [&ran] { ran.fetch_add(1, std::memory_order_relaxed); });
      }
    });
  }
  const long total = static_cast<long>(producers) * per_producer;
  const auto t0 = clock_type::now();
  go.count_down();
  for (auto& t : threads) t.join();
  while (ran.load() != total) std::this_thread::yield();
  const double per_sec = static_cast<double>(total) / (us_since(t0) * 1e-6);
  work.reset();
  runner.join();
  return {per_sec};
}

static offload::awaitable<int> w4_coro() { co_return 1; }

static std::vector<double> w4_offload(int n) {
  offload::loop_thread bg;
  std::vector<double> lat;
  for (int i = 0; i < n; ++i) {
    const auto t0 = clock_type::now();
    g_sink += offload::run_coroutine_threadsafe(w4_coro(), bg.loop()).result();
    lat.push_back(us_since(t0));
  }
  return {percentile(lat, 0.5), percentile(lat, 0.99)};
}

static std::vector<double> w4_asio(int n) {
  net::io_context io(1);
  auto work = net::make_work_guard(io);
  std::thread runner([&] { io.run(); });
  std::vector<double> lat;
  for (int i = 0; i < n; ++i) {
    const auto t0 = clock_type::now();
    g_sink += net::co_spawn(io, w4_coro(), net::use_future).get();
    lat.push_back(us_since(t0));
  }
  work.reset();
  runner.join();
  return {percentile(lat, 0.5), percentile(lat, 0.99)};
}

// ---- W5: loop responsiveness ----------------------------------------------------------------

static void block_10ms() { std::this_thread::sleep_for(10ms); }

static offload::awaitable<void> w5_ticker(int ticks, std::vector<double>* lag) {
  net::steady_timer timer(co_await net::this_coro::executor);
  auto next = clock_type::now();
  for (int i = 0; i < ticks; ++i) {
    next += 1ms;
    timer.expires_at(next);
    co_await timer.async_wait(net::use_awaitable);
    lag->push_back(us_since(next));
  }
}

static offload::awaitable<void> w5_blocker() { co_await offload::to_thread(block_10ms); }

static offload::awaitable<void> w5_offload_main(int ticks, std::vector<double>* lag) {
  auto& loop = offload::get_running_loop();
  std::vector<offload::task<void>> blockers;
  for (int i = 0; i < 100; ++i) blockers.push_back(loop.create_task(w5_blocker()));
  co_await w5_ticker(ticks, lag);
  for (auto& t : blockers) co_await t.join();
}

static std::vector<double> w5_offload(int ticks) {
  std::vector<double> lag;
  offload::event_loop loop;
  loop.run_until_complete(w5_offload_main(ticks, &lag));
  return {percentile(lag, 0.5), percentile(lag, 0.99)};
}

static std::vector<double> w5_asio(int ticks) {
  std::vector<double> lag;
  net::io_context io(1);
  net::thread_pool pool(pool_size());
  int finished = 0;
  net::post(io, [&] {
    for (int i = 0; i < 100; ++i) {
      net::post(pool, [&] {
        block_10ms();
        net::post(io, [&] { ++finished; });
      });
    }
  });
  net::co_spawn(io, w5_ticker(ticks, &lag), net::detached);
  io.run();
  pool.join();
  return {percentile(lag, 0.5), percentile(lag, 0.99)};
}

// ---- W6: CPU-bound scaling ------------------------------------------------------------------

static std::uint64_t cpu_work(std::uint64_t iterations) {
  std::uint64_t x = 88172645463325252ull;
  for (std::uint64_t i = 0; i < iterations; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
  }
  return x;
}

static offload::awaitable<std::uint64_t> w6_one(offload::thread_pool* pool, std::uint64_t iters) {
  co_return co_await offload::run_in_executor(*pool, cpu_work, iters);
}

static offload::awaitable<void> w6_main(offload::thread_pool* pool, int calls,
                                        std::uint64_t iters) {
  auto& loop = offload::get_running_loop();
  std::vector<offload::task<std::uint64_t>> tasks;
  for (int i = 0; i < calls; ++i) tasks.push_back(loop.create_task(w6_one(pool, iters)));
  for (auto& t : tasks) g_sink += static_cast<long>(co_await t.join() & 1);
}

static std::vector<double> w6(int calls, std::uint64_t iters) {
  const auto t_inline = clock_type::now();
  for (int i = 0; i < calls; ++i) g_sink += static_cast<long>(cpu_work(iters) & 1);
  const double inline_us = us_since(t_inline);
  const unsigned cores = offload::detail::usable_cpus();
  offload::thread_pool pool(offload::thread_pool_options{.max_workers = cores});
  offload::event_loop loop;
  const auto t_pool = clock_type::now();
  loop.run_until_complete(w6_main(&pool, calls, iters));
  const double pool_us = us_since(t_pool);
  return {inline_us / pool_us};
}

// ---- W7: allocations per call, bytes per queued call ----------------------------------------

static offload::awaitable<void> w7_seq(int n) {
  for (int i = 0; i < n; ++i) g_sink += co_await offload::to_thread(trivial);
}

static std::vector<double> w7_offload_on_this_thread(int n, std::size_t queued) {
  offload::event_loop loop;
  loop.run_until_complete(w7_seq(n));  // warm up
  g_allocs = 0;
  g_count_allocs = true;
  loop.run_until_complete(w7_seq(n));
  g_count_allocs = false;
  const double per_call = static_cast<double>(g_allocs.load()) / n;

  offload::thread_pool pool(offload::thread_pool_options{.max_workers = 1});
  std::latch release(1);
  auto ex = loop.get_executor();
  std::size_t done = 0;
  auto on_done = [&](std::exception_ptr, int r) {
    g_sink += r;
    if (++done == queued + 1) loop.stop();
  };
  auto blocker = [&release] {
    release.wait();
    return 0;
  };
  double bytes_per = 0;
  loop.call_soon([&] {
    offload::async_run(pool, blocker, net::bind_executor(ex, on_done));
    g_alloc_bytes = 0;
    g_count_allocs = true;
    for (std::size_t i = 0; i < queued; ++i) {
      offload::async_run(pool, trivial, net::bind_executor(ex, on_done));
    }
    g_count_allocs = false;
    bytes_per = static_cast<double>(g_alloc_bytes.load()) / static_cast<double>(queued);
    release.count_down();
  });
  loop.run_forever();
  return {per_call, bytes_per};
}

static std::vector<double> w7_offload(int n, std::size_t queued) {
  std::vector<double> figures;
  // A fresh thread: its node cache starts empty, so every queued call's node is counted.
  std::thread([&] { figures = w7_offload_on_this_thread(n, queued); }).join();
  return figures;
}

static net::awaitable<void> w7_asio_seq(net::thread_pool::executor_type pool_ex, int n) {
  auto io_ex = co_await net::this_coro::executor;
  for (int i = 0; i < n; ++i) {
    co_await net::post(net::bind_executor(pool_ex, net::use_awaitable));
    const int r = trivial();
    co_await net::post(io_ex, net::use_awaitable);
    g_sink += r;
  }
}

static std::vector<double> w7_asio(int n, std::size_t queued) {
  net::io_context io(1);
  net::thread_pool pool(pool_size());
  net::co_spawn(io, w7_asio_seq(pool.get_executor(), n), net::detached);
  io.run();
  io.restart();
  g_allocs = 0;
  g_count_allocs = true;
  net::co_spawn(io, w7_asio_seq(pool.get_executor(), n), net::detached);
  io.run();
  g_count_allocs = false;
  const double per_call = static_cast<double>(g_allocs.load()) / n;

  net::thread_pool one(1);
  std::latch release(1);
  net::post(one, [&release] { release.wait(); });
  g_alloc_bytes = 0;
  g_count_allocs = true;
  for (std::size_t i = 0; i < queued; ++i) {
    net::post(one, [&io] {
      const int r = trivial();
      net::post(io, [r] { g_sink += r; });
    });
  }
  g_count_allocs = false;
  const double bytes_per = static_cast<double>(g_alloc_bytes.load()) / static_cast<double>(queued);
  io.restart();
  auto work = net::make_work_guard(io);
  release.count_down();
  one.join();
  work.reset();
  io.run();
  pool.join();
  return {per_call, bytes_per};
}

// ---- W8: idle cost, W9: wake after idle -----------------------------------------------------

static offload::awaitable<void> w89_offload_coro(std::chrono::milliseconds idle, double* cpu,
                                                 double* wake_us) {
  for (int i = 0; i < 2000; ++i) g_sink += co_await offload::to_thread(trivial);  // the burst
  net::steady_timer timer(co_await net::this_coro::executor);
  timer.expires_after(100ms);
  co_await timer.async_wait(net::use_awaitable);
  const double c0 = process_cpu_seconds();
  timer.expires_after(idle);
  co_await timer.async_wait(net::use_awaitable);
  *cpu = (process_cpu_seconds() - c0) / (static_cast<double>(idle.count()) / 1000.0) * 100.0;
  const auto t0 = clock_type::now();
  g_sink += co_await offload::to_thread(trivial);
  *wake_us = us_since(t0);
}

static std::vector<double> w89_offload(std::chrono::milliseconds idle) {
  double cpu = 0, wake = 0;
  offload::event_loop loop;
  loop.run_until_complete(w89_offload_coro(idle, &cpu, &wake));
  return {cpu, wake};
}

static net::awaitable<void> w89_asio_coro(net::thread_pool::executor_type pool_ex,
                                          std::chrono::milliseconds idle, double* cpu,
                                          double* wake_us) {
  auto io_ex = co_await net::this_coro::executor;
  for (int i = 0; i < 2000; ++i) {
    co_await net::post(net::bind_executor(pool_ex, net::use_awaitable));
    const int r = trivial();
    co_await net::post(io_ex, net::use_awaitable);
    g_sink += r;
  }
  net::steady_timer timer(io_ex);
  timer.expires_after(100ms);
  co_await timer.async_wait(net::use_awaitable);
  const double c0 = process_cpu_seconds();
  timer.expires_after(idle);
  co_await timer.async_wait(net::use_awaitable);
  *cpu = (process_cpu_seconds() - c0) / (static_cast<double>(idle.count()) / 1000.0) * 100.0;
  const auto t0 = clock_type::now();
  co_await net::post(net::bind_executor(pool_ex, net::use_awaitable));
  const int r = trivial();
  co_await net::post(io_ex, net::use_awaitable);
  g_sink += r;
  *wake_us = us_since(t0);
}

static std::vector<double> w89_asio(std::chrono::milliseconds idle) {
  double cpu = 0, wake = 0;
  net::io_context io(1);
  net::thread_pool pool(pool_size());
  net::co_spawn(io, w89_asio_coro(pool.get_executor(), idle, &cpu, &wake), net::detached);
  io.run();
  pool.join();
  return {cpu, wake};
}

// ---- W10: a coroutine-shaped burst: gather over n offloaded calls -----------------------------

// What users write: a vector of calls, gathered. offload starts each call directly (no
// coroutine per call); the Asio baseline runs one coroutine per call (co_spawn, a hop to the
// pool and back), the floor of that shape in plain Asio.
static std::vector<double> w10_offload(std::size_t n) {
  offload::thread_pool pool(
      offload::thread_pool_options{.max_workers = pool_size(), .min_workers = pool_size()});
  offload::event_loop loop;
  double per_sec = 0;
  auto body = [&]() -> offload::awaitable<void> {
    const auto t0 = clock_type::now();
    std::vector<offload::call<int>> calls;
    calls.reserve(n);
    for (std::size_t i = 0; i < n; ++i) calls.push_back(offload::run_in_executor(pool, trivial));
    const std::vector<int> results = co_await offload::gather(std::move(calls));
    per_sec = static_cast<double>(n) / (us_since(t0) * 1e-6);
    for (int r : results) g_sink += r;
  };
  loop.run_until_complete(body());
  return {per_sec};
}

// The same burst as one offload::map over the indices: no call<T> (and no frame) per call.
static std::vector<double> w10_map(std::size_t n) {
  offload::thread_pool pool(
      offload::thread_pool_options{.max_workers = pool_size(), .min_workers = pool_size()});
  offload::event_loop loop;
  double per_sec = 0;
  auto one = [](std::size_t) { return trivial(); };
  auto body = [&]() -> offload::awaitable<void> {
    const auto t0 = clock_type::now();
    const std::vector<int> results =
        co_await offload::map(pool, one, std::views::iota(std::size_t{0}, n));
    per_sec = static_cast<double>(n) / (us_since(t0) * 1e-6);
    for (int r : results) g_sink += r;
  };
  loop.run_until_complete(body());
  return {per_sec};
}

static net::awaitable<void> w10_asio_call(net::thread_pool::executor_type pool_ex,
                                          std::size_t* done, std::size_t n,
                                          clock_type::time_point t0, double* per_sec) {
  auto io_ex = co_await net::this_coro::executor;
  co_await net::post(net::bind_executor(pool_ex, net::use_awaitable));
  const int r = trivial();  // runs on the pool
  co_await net::post(io_ex, net::use_awaitable);
  g_sink += r;
  if (++*done == n) *per_sec = static_cast<double>(n) / (us_since(t0) * 1e-6);
}

static std::vector<double> w10_asio(std::size_t n) {
  net::io_context io(1);
  net::thread_pool pool(pool_size());
  std::size_t done = 0;
  double per_sec = 0;
  net::post(io, [&] {
    const auto t0 = clock_type::now();
    for (std::size_t i = 0; i < n; ++i) {
      net::co_spawn(io, w10_asio_call(pool.get_executor(), &done, n, t0, &per_sec), net::detached);
    }
  });
  io.run();
  pool.join();
  return {per_sec};
}

// ---- W12: what thread_pool_options::timings costs ------------------------------------------

static offload::thread_pool_options w12_options(bool timings) {
  offload::thread_pool_options o;
  o.max_workers = pool_size();
  o.min_workers = pool_size();
  o.timings = timings;
  return o;
}

static offload::awaitable<void> w12_round_trips(offload::thread_pool& pool, int n,
                                                std::vector<double>* lat) {
  for (int i = 0; i < n; ++i) {
    const auto t0 = clock_type::now();
    g_sink += co_await offload::run_in_executor(pool, trivial);
    lat->push_back(us_since(t0));
  }
}

// W1's round trip on a pool of its own: p50 us.
static std::vector<double> w12_round_trip(bool timings, int n) {
  offload::thread_pool pool(w12_options(timings));
  std::vector<double> lat;
  lat.reserve(static_cast<std::size_t>(n));
  offload::event_loop loop;
  loop.run_until_complete(w12_round_trips(pool, n / 10, &lat));  // warm up: threads, caches
  lat.clear();
  loop.run_until_complete(w12_round_trips(pool, n, &lat));
  return {percentile(lat, 0.5)};
}

// W2's burst, callbacks on the io_context: calls/s.
static std::vector<double> w12_burst(bool timings, std::size_t n) {
  offload::event_loop loop;
  return {w2_offload_on(loop, loop.context().get_executor(), n, w12_options(timings))};
}

// ---- W11: growth when every thread is blocked -----------------------------------------------

// `calls` calls that each sleep `nap` on a 2-thread pool: with grow_when_blocked the pool
// doubles its threads every 5 ms while they all wait, so the batch takes about one nap plus a
// few periods; without it, calls / 2 naps.
static double w11_sleeping_ms(bool grow, int calls, std::chrono::milliseconds nap) {
  offload::thread_pool_options o;
  o.max_workers = 2;
  if (grow) {
    o.grow_when_blocked =
        offload::blocked_growth{.max_workers = static_cast<std::size_t>(calls), .after = 5ms};
  }
  offload::thread_pool pool(o);
  const auto t0 = clock_type::now();
  std::vector<std::future<void>> done;
  for (int i = 0; i < calls; ++i) {
    done.push_back(offload::async_run(
        pool, [nap] { std::this_thread::sleep_for(nap); }, net::use_future));
  }
  for (auto& d : done) d.get();
  return us_since(t0) / 1000.0;
}

// The same growth with calls that compute: the pool must stop at the CPUs.
static double w11_computing_peak(int calls, std::uint64_t iters) {
  offload::thread_pool_options o;
  o.max_workers = 1;
  o.grow_when_blocked =
      offload::blocked_growth{.max_workers = static_cast<std::size_t>(calls), .after = 5ms};
  offload::thread_pool pool(o);
  std::vector<std::future<std::uint64_t>> done;
  for (int i = 0; i < calls; ++i) {
    done.push_back(offload::async_run(
        pool, [iters] { return cpu_work(iters); }, net::use_future));
  }
  for (auto& d : done) g_sink += static_cast<long>(d.get() & 1);
  return static_cast<double>(pool.stats().peak_workers);
}

// ---- driver ---------------------------------------------------------------------------------

static std::string machine_description() {
  std::string model = "unknown CPU";
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  std::ostringstream out;
  out << model << ", " << std::thread::hardware_concurrency() << " CPUs ("
      << offload::detail::usable_cpus() << " usable), "
#if defined(__clang__)
      << "clang " << __clang_major__ << "." << __clang_minor__
#else
      << "gcc " << __GNUC__ << "." << __GNUC_MINOR__
#endif
      << ", Asio " << OFFLOAD_ASIO_VERSION / 100000 << "." << OFFLOAD_ASIO_VERSION / 100 % 1000
      << "." << OFFLOAD_ASIO_VERSION % 100;
  return out.str();
}

static std::vector<row> run_w1_w2(const options& opt, const std::string& suffix) {
  std::vector<row> rows;
  const int n1 = opt.quick ? 2000 : 50000;
  if (opt.wants("W1")) {
    auto [o1, a1] = alternate(
        opt.repeats, [&] { return w1_offload(n1); }, [&] { return w1_asio(n1); });
    // Idle and free to spread, offload's spin wins by far; pinned, co-located or loaded it must
    // at least not lose (issue 17).
    const bool idle_unpinned = suffix.empty();
    rows.push_back({"W1 round trip" + suffix, "p50 us", o1[0], a1[0],
                    idle_unpinned ? "<= 0.06x" : "<= 1.0x", false});
    rows.push_back({"W1 round trip" + suffix, "p99 us", o1[1], a1[1], "", false});
    rows.push_back({"W1 round trip" + suffix, "cpu us/call", o1[2], a1[2],
                    idle_unpinned ? "" : "<= 1.0x", false});
  }
  if (!opt.wants("W2")) return rows;
  const auto burst = [&](std::size_t n, w2_delivery delivery) {
    auto [o2, a2] = alternate(
        opt.repeats, [&] { return w2_offload(n, delivery); }, [&] { return w2_asio(n); });
    const char* on = delivery == w2_delivery::strand ? " strand" : "";
    rows.push_back({"W2 burst " + std::to_string(n / 1000) + "k" + on + suffix, "calls/s", o2[0],
                    a2[0], suffix == " loaded" ? ">= 1.0x" : ">= 5x", true});
  };
  for (std::size_t n :
       opt.quick ? std::vector<std::size_t>{20000} : std::vector<std::size_t>{200000, 1000000}) {
    burst(n, w2_delivery::io_context);
  }
  burst(opt.quick ? 20000 : 200000, w2_delivery::strand);
  return rows;
}

static void print_rows(const std::vector<row>& rows, const options& opt, double floor_us) {
  if (opt.json) {
    std::cout << "{\n  \"machine\": \"" << machine_description()
              << "\",\n  \"spin_floor_us\": " << floor_us << ",\n  \"rows\": [\n";
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const auto& r = rows[i];
      std::cout << "    {\"workload\": \"" << r.workload << "\", \"metric\": \"" << r.metric
                << "\", \"offload\": " << r.offload << ", \"asio\": " << r.asio
                << ", \"ratio\": " << (r.asio != 0 ? r.offload / r.asio : 0) << ", \"target\": \""
                << r.target << "\"}" << (i + 1 < rows.size() ? "," : "") << "\n";
    }
    std::cout << "  ]\n}\n";
    return;
  }
  std::printf("machine: %s\n", machine_description().c_str());
  std::printf("spin ping-pong floor between two threads: %.3f us\n", floor_us);
  std::printf("repeats: %d (medians)%s\n\n", opt.repeats, opt.quick ? ", quick mode" : "");
  std::printf("%-28s %-10s %14s %14s %9s  %s\n", "workload", "metric", "offload", "asio", "ratio",
              "target");
  for (const auto& r : rows) {
    std::printf("%-28s %-10s %14.3f %14.3f %8.3fx  %s\n", r.workload.c_str(), r.metric.c_str(),
                r.offload, r.asio, r.asio != 0 ? r.offload / r.asio : 0.0, r.target.c_str());
  }
}

// The co-located pass: this thread, and so each thread the workloads start (a thread inherits
// its creator's affinity), runs on CPU 0 only, while the process still sees every CPU: offload
// read that before (main), so it spins as it would when the scheduler alone put the loop and
// a worker on one CPU.
class colocated_on_cpu0 {
 public:
  colocated_on_cpu0() {
    sched_getaffinity(0, sizeof(saved_), &saved_);
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    sched_setaffinity(0, sizeof(one), &one);
  }
  ~colocated_on_cpu0() { sched_setaffinity(0, sizeof(saved_), &saved_); }
  colocated_on_cpu0(const colocated_on_cpu0&) = delete;
  colocated_on_cpu0& operator=(const colocated_on_cpu0&) = delete;

 private:
  cpu_set_t saved_{};
};

// The loaded pass: one busy-looping process per usable CPU, as a loaded server has, for as long
// as this object lives.
class busy_competitors {
 public:
  busy_competitors() {
    for (unsigned i = 0; i < offload::detail::usable_cpus(); ++i) {
      const pid_t pid = fork();
      if (pid == 0) {
        static volatile int busy = 0;  // a volatile read per turn: the loop cannot be removed
        for (;;) (void)busy;
      }
      if (pid > 0) pids_.push_back(pid);
    }
  }
  ~busy_competitors() {
    for (pid_t pid : pids_) kill(pid, SIGKILL);
    for (pid_t pid : pids_) waitpid(pid, nullptr, 0);
  }
  busy_competitors(const busy_competitors&) = delete;
  busy_competitors& operator=(const busy_competitors&) = delete;

 private:
  std::vector<pid_t> pids_;
};

// The pinned pass: a child pinned to CPU 0 before any thread exists, printing rows as
// tab-separated lines on its stdout.
static std::vector<row> run_pinned_child(const char* self, const options& opt) {
  int fds[2];
  if (pipe(fds) != 0) return {};
  const pid_t pid = fork();
  if (pid == 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(0, &set);
    sched_setaffinity(0, sizeof(set), &set);
    dup2(fds[1], 1);
    close(fds[0]);
    std::vector<std::string> args = {self, "--pinned-child", "--repeats",
                                     std::to_string(opt.repeats)};
    if (opt.quick) args.push_back("--quick");
    if (!opt.only.empty()) {
      args.push_back("--only");
      args.push_back(opt.only);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(self, argv.data());
    _exit(127);
  }
  close(fds[1]);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;)
    out.append(buf, static_cast<std::size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  std::vector<row> rows;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream f(line);
    row r;
    std::string o, a, hib;
    if (std::getline(f, r.workload, '\t') && std::getline(f, r.metric, '\t') &&
        std::getline(f, o, '\t') && std::getline(f, a, '\t') && std::getline(f, r.target, '\t')) {
      r.offload = std::stod(o);
      r.asio = std::stod(a);
      rows.push_back(r);
    }
  }
  return rows;
}

int main(int argc, char** argv) {
  options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick")
      opt.quick = true;
    else if (a == "--json")
      opt.json = true;
    else if (a == "--pinned-child")
      opt.pinned_child = true;
    else if (a == "--no-pinned")
      opt.run_pinned = false;
    else if (a == "--repeats" && i + 1 < argc)
      opt.repeats = std::atoi(argv[++i]);
    else if (a == "--only" && i + 1 < argc)
      opt.only = argv[++i];
    else {
      std::fprintf(stderr,
                   "usage: %s [--quick] [--json] [--repeats N] [--no-pinned] [--only W1,W3,...]\n",
                   argv[0]);
      return 2;
    }
  }
  if (opt.quick && opt.repeats == 5) opt.repeats = 1;

  if (opt.pinned_child) {
    for (const auto& r : run_w1_w2(opt, " pinned")) {
      std::printf("%s\t%s\t%.6f\t%.6f\t%s\n", r.workload.c_str(), r.metric.c_str(), r.offload,
                  r.asio, r.target.c_str());
    }
    return 0;
  }

  (void)offload::detail::single_usable_cpu();  // read while every CPU is usable (colocated)
  const double floor_us = spin_floor_us(opt.quick ? 10000 : 200000);
  std::vector<row> rows = run_w1_w2(opt, "");
  if (opt.wants("W1")) {
    options w1_only = opt;
    w1_only.only = "W1";
    std::vector<row> more;
    {
      colocated_on_cpu0 colocated;
      more = run_w1_w2(w1_only, " colocated");
    }
    rows.insert(rows.end(), more.begin(), more.end());
  }
  if (opt.wants("W1") || opt.wants("W2")) {
    std::vector<row> more;
    {
      busy_competitors load;
      more = run_w1_w2(opt, " loaded");
    }
    rows.insert(rows.end(), more.begin(), more.end());
  }
  if (opt.run_pinned && (opt.wants("W1") || opt.wants("W2"))) {
    auto pinned = run_pinned_child(argv[0], opt);
    rows.insert(rows.end(), pinned.begin(), pinned.end());
  }

  const int per_producer = opt.quick ? 20000 : 500000;
  for (int producers : {1, 2}) {
    if (!opt.wants("W3")) break;
    auto [o3, a3] = alternate(
        opt.repeats, [&] { return w3_offload(producers, per_producer); },
        [&] { return w3_asio(producers, per_producer); });
    rows.push_back({"W3 call_soon_threadsafe x" + std::to_string(producers), "calls/s", o3[0],
                    a3[0], ">= 1.0x", true});
  }
  if (opt.wants("W4")) {
    const int n4 = opt.quick ? 2000 : 20000;
    auto [o4, a4] = alternate(
        opt.repeats, [&] { return w4_offload(n4); }, [&] { return w4_asio(n4); });
    rows.push_back({"W4 run_coroutine_threadsafe", "p50 us", o4[0], a4[0], "p50 < 5 us", false});
    rows.push_back({"W4 run_coroutine_threadsafe", "p99 us", o4[1], a4[1], "", false});
  }

  if (opt.wants("W5")) {
    const int ticks = opt.quick ? 50 : 200;
    auto [o5, a5] = alternate(
        opt.repeats, [&] { return w5_offload(ticks); }, [&] { return w5_asio(ticks); });
    rows.push_back({"W5 tick lag", "p50 us", o5[0], a5[0], "", false});
    rows.push_back({"W5 tick lag", "p99 us", o5[1], a5[1], "p99 < 200 us", false});
  }

  if (opt.wants("W6")) {
    const unsigned cores = offload::detail::usable_cpus();
    const int calls = static_cast<int>(cores) * 4;
    const std::uint64_t iters = opt.quick ? 2000000 : 20000000;
    std::vector<double> speedups;
    for (int r = 0; r < opt.repeats; ++r) speedups.push_back(w6(calls, iters)[0]);
    rows.push_back({"W6 CPU-bound speed-up", "x inline", median(speedups),
                    static_cast<double>(cores), ">= 0.9 x cores", true});
  }

  if (opt.wants("W7")) {
    const int n7 = opt.quick ? 2000 : 20000;
    const std::size_t q7 = opt.quick ? 100000 : 1000000;
    auto [o7, a7] = alternate(
        1, [&] { return w7_offload(n7, q7); }, [&] { return w7_asio(n7, q7); });
    rows.push_back({"W7 allocations per call", "allocs", o7[0], a7[0], "<= 1", false});
    rows.push_back({"W7 bytes per queued call", "bytes", o7[1], a7[1], "<= 256", false});
  }

  if (opt.wants("W8") || opt.wants("W9")) {
    const auto idle = opt.quick ? 200ms : 1000ms;
    auto [o8, a8] = alternate(
        opt.quick ? 1 : 3, [&] { return w89_offload(idle); }, [&] { return w89_asio(idle); });
    rows.push_back({"W8 idle CPU", "% core", o8[0], a8[0], "< 2%", false});
    rows.push_back({"W9 wake after idle", "us", o8[1], a8[1], "< 200 us", false});
  }

  if (opt.wants("W10")) {
    const std::size_t n = opt.quick ? 20000 : 200000;
    auto [o10, a10] = alternate(
        opt.repeats, [&] { return w10_offload(n); }, [&] { return w10_asio(n); });
    const std::string name = "W10 gather " + std::to_string(n / 1000) + "k";
    rows.push_back({name, "calls/s", o10[0], a10[0], ">= 5 M/s", true});
    // The same calls through async_run callbacks (W2's path), in the asio column.
    auto [g, cb] = alternate(
        opt.repeats, [&] { return w10_offload(n); },
        [&] { return w2_offload(n, w2_delivery::strand); });
    rows.push_back({name + " / callbacks", "calls/s", g[0], cb[0], ">= 0.5x", true});
    // offload::map of the same calls, against the callbacks again.
    auto [m, cb2] = alternate(
        opt.repeats, [&] { return w10_map(n); },
        [&] { return w2_offload(n, w2_delivery::strand); });
    rows.push_back({"W10 map " + std::to_string(n / 1000) + "k / callbacks", "calls/s", m[0],
                    cb2[0], ">= 0.5x", true});
  }
  if (opt.wants("W11")) {
    constexpr int calls = 16;
    constexpr auto nap = 50ms;
    std::vector<double> grown, fixed, peaks;
    for (int r = 0; r < opt.repeats; ++r) {
      grown.push_back(w11_sleeping_ms(true, calls, nap));
      fixed.push_back(w11_sleeping_ms(false, calls, nap));
      peaks.push_back(w11_computing_peak(calls, opt.quick ? 2000000 : 20000000));
    }
    // The "asio" column holds the comparison: the same pool without growth, and the CPUs.
    rows.push_back({"W11 16 naps, 2 thr, grown", "ms", median(grown), median(fixed),
                    "~1 nap (50 ms); fixed: 400", false});
    rows.push_back({"W11 computing, peak thr", "threads",
                    *std::max_element(peaks.begin(), peaks.end()),
                    static_cast<double>(offload::detail::usable_cpus()), "<= cores", false});
  }

  if (opt.wants("W12")) {
    // The "asio" column holds the same pool with timings off (the default).
    const int n1 = opt.quick ? 2000 : 50000;
    auto [on1, off1] = alternate(
        opt.repeats, [&] { return w12_round_trip(true, n1); },
        [&] { return w12_round_trip(false, n1); });
    rows.push_back({"W12 round trip, timings", "p50 us", on1[0], off1[0], "<= 1.05x", false});
    const std::size_t n2 = opt.quick ? 20000 : 200000;
    auto [on2, off2] = alternate(
        opt.repeats, [&] { return w12_burst(true, n2); }, [&] { return w12_burst(false, n2); });
    rows.push_back({"W12 burst " + std::to_string(n2 / 1000) + "k, timings", "calls/s", on2[0],
                    off2[0], ">= 0.95x", true});
  }

  print_rows(rows, opt, floor_us);
  return g_sink.load() == 0 ? 1 : 0;
}
