// CPU-bound work on a pool sized to the cores, with the speed-up over running it inline.
//
// In Python, CPU-bound work needs a ProcessPoolExecutor: threads take turns under the GIL.
// C++ threads run in parallel, so the counterpart is an offload::thread_pool with one thread per
// core, and the work is cut into chunks that run on it at the same time:
//
//     with ProcessPoolExecutor() as pool:
//         counts = await asyncio.gather(*(loop.run_in_executor(pool, count_primes, a, b)
//                                          for a, b in chunks))
//
// The work here is counting primes by trial division. The same chunks are first run inline, on
// one thread, to measure the speed-up; the figure depends on the machine and on what else runs
// on it, so it is printed, never checked.
#include <offload/offload.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <iomanip>
#include <iostream>
#include <thread>
#include <utility>
#include <vector>

constexpr std::uint32_t limit = 1'500'000;   // count the primes below this
constexpr std::uint32_t expected = 114'155;  // pi(1,500,000)

/// Pure computation: how many primes in [begin, end). Later chunks cost more (bigger divisors).
std::uint32_t count_primes(std::uint32_t begin, std::uint32_t end) {
  std::uint32_t count = 0;
  for (std::uint32_t n = std::max<std::uint32_t>(begin, 2); n < end; ++n) {
    bool prime = n == 2 || n % 2 != 0;
    for (std::uint32_t d = 3; prime && d * d <= n; d += 2) prime = n % d != 0;
    count += prime ? 1 : 0;
  }
  return count;
}

/// [0, limit) cut into `parts` chunks, more chunks than threads so that no thread idles at the end.
std::vector<std::pair<std::uint32_t, std::uint32_t>> chunks(std::uint32_t parts) {
  std::vector<std::pair<std::uint32_t, std::uint32_t>> out;
  const std::uint32_t step = limit / parts + 1;
  for (std::uint32_t begin = 0; begin < limit; begin += step) {
    out.emplace_back(begin, std::min(begin + step, limit));
  }
  return out;
}

using clock_type = std::chrono::steady_clock;

double ms_since(clock_type::time_point start) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - start).count();
}

offload::awaitable<std::uint32_t> count_on_pool(offload::thread_pool& cpu, std::uint32_t parts) {
  auto& loop = offload::get_running_loop();
  // Every chunk is started at once, as a task; then the results are collected.
  std::vector<offload::task<std::uint32_t>> running;
  for (auto [begin, end] : chunks(parts)) {
    running.push_back(loop.create_task(offload::run_in_executor(cpu, count_primes, begin, end)));
  }
  std::uint32_t total = 0;
  for (auto& t : running) total += co_await t.join();
  co_return total;
}

constexpr int runs = 3;  // each way is timed `runs` times and the best is kept: less noise

struct measured {
  std::uint32_t total = 0;
  double best_ms = 0;
};

offload::awaitable<measured> time_on_pool(offload::thread_pool& cpu, std::uint32_t parts) {
  measured m;
  for (int i = 0; i < runs; ++i) {
    const auto start = clock_type::now();
    m.total = co_await count_on_pool(cpu, parts);
    const double ms = ms_since(start);
    m.best_ms = i == 0 ? ms : std::min(m.best_ms, ms);
  }
  co_return m;
}

int main() {
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const std::uint32_t parts = 8 * cores;

  // Inline: the same chunks one after another on this thread (before any loop runs, so that
  // nothing waits for it).
  measured inline_run;
  for (int i = 0; i < runs; ++i) {
    const auto start = clock_type::now();
    std::uint32_t total = 0;
    for (auto [begin, end] : chunks(parts)) total += count_primes(begin, end);
    const double ms = ms_since(start);
    inline_run.total = total;
    inline_run.best_ms = i == 0 ? ms : std::min(inline_run.best_ms, ms);
  }

  // On a pool with one thread per core.
  offload::thread_pool_options options;
  options.max_workers = cores;
  options.thread_name_prefix = "cpu";
  offload::thread_pool cpu{options};
  const measured pool_run = offload::run(time_on_pool(cpu, parts));

  std::cout << "primes below " << limit << ": " << inline_run.total << " inline, " << pool_run.total
            << " on the pool\n";
  std::cout << std::fixed << std::setprecision(1) << "best of " << runs << ": inline "
            << inline_run.best_ms << " ms, pool of " << cores << " threads " << pool_run.best_ms
            << " ms: speed-up " << std::setprecision(2) << inline_run.best_ms / pool_run.best_ms
            << "x on " << cores << " cores\n";
  const bool ok = inline_run.total == expected && pool_run.total == expected;
  std::cout << (ok ? "done" : "unexpected result") << "\n";
  return ok ? 0 : 1;
}
