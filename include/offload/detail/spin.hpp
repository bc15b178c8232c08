// offload: bounded, adaptive spinning before a thread parks.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <thread>

#if defined(__linux__)
#include <sched.h>
#endif

namespace offload::detail {

/// Keeps atomics written by different threads on different cache lines (a constant rather than
/// std::hardware_destructive_interference_size, whose value GCC warns may differ between builds).
inline constexpr std::size_t cache_line = 64;

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  asm volatile("yield" ::: "memory");
#else
  std::atomic_signal_fence(std::memory_order_seq_cst);
#endif
}

/// CPUs this process may run on (its affinity mask, not the machine's core count): under
/// `taskset -c 0` a spinning thread would only steal the CPU from the thread it waits for.
inline unsigned usable_cpus() noexcept {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return static_cast<unsigned>(n);
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n ? n : 1;
}

/// Whether this process may run on one CPU only (read once: it is asked per wait).
inline bool single_usable_cpu() noexcept {
  static const bool single = usable_cpus() == 1;
  return single;
}

/// A lock held for a few instructions at a time (one queue pop): an exchange takes it and a
/// plain store gives it back, where a mutex costs two read-modify-writes. A waiter spins
/// briefly, then yields: the holder may have been preempted.
class short_lock {
 public:
  void lock() noexcept {
    unsigned spins = 0;
    while (held_.exchange(true, std::memory_order_acquire)) {
      while (held_.load(std::memory_order_relaxed)) {
        if (++spins < 64) {
          cpu_relax();
        } else {
          std::this_thread::yield();
        }
      }
    }
  }
  void unlock() noexcept { held_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> held_{false};
};

/// The spin budget used when the user did not set one.
inline std::chrono::nanoseconds default_spin() noexcept { return std::chrono::microseconds(50); }

/// Per-thread spin budget: full after a spin that found work, halved after a run of spins
/// that found none, so a thread that keeps spinning in vain soon parks at once.
///
/// A parked thread probes again now and then: one spin with the full budget after
/// `probe_after_` waits. A probe that wins brings spinning back; one that loses doubles the
/// waits before the next. So a thread that cannot win (calls that block for longer than the
/// budget, or a waker that shares this thread's CPU and cannot run while it spins) pays one
/// lost spin per thousands of waits, not a climb back through every budget.
///
/// A spin that lost its CPU meanwhile (a gap between two looks at the clock far longer than a
/// turn of the loop) did not win even if the work is there when it looks again: the thread it
/// waits for shares that CPU (the scheduler put them together, or the machine is loaded), and
/// spinning only kept it from running. Two such spins in a row (one can be an interrupt) and
/// the thread parks at once, as plain Asio's threads do.
///
/// On a single usable CPU (`taskset -c 0`) the thread being waited for cannot run while we
/// spin, so the spin yields the CPU instead: the waker then hands its work over without the
/// futex wake-up and wait a park costs each side.
class adaptive_spin {
 public:
  explicit adaptive_spin(std::chrono::nanoseconds max) noexcept
      : max_ns_(max.count() > 0 ? max.count() : 0),
        budget_ns_(max_ns_),
        yield_(single_usable_cpu()) {}

  /// Whether this wait should spin: false while the thread parks at once (each such wait
  /// brings the next probe closer), so that a caller can skip what it does only to spin.
  bool should_spin() noexcept {
    if (budget_ns_ != 0) return true;
    if (max_ns_ == 0 || ++parked_ < probe_after_) return false;
    parked_ = 0;
    probing_ = true;
    budget_ns_ = max_ns_;
    return true;
  }

  /// Spins until `ready()` or the budget runs out; true when `ready()` was seen.
  template <typename Ready>
  bool spin(Ready&& ready) noexcept {
    if (!should_spin()) return ready();
    using clock = std::chrono::steady_clock;
    auto last_look = clock::now();
    const auto deadline = last_look + std::chrono::nanoseconds(budget_ns_);
    for (;;) {
      for (int i = 0; i < (yield_ ? 1 : 64); ++i) {
        if (ready()) {
          // Yielding gives the CPU away on purpose: only a spin's gap says it lost the CPU.
          if (!yield_ && clock::now() - last_look > off_cpu_gap) {
            lost_cpu();
          } else {
            won();
          }
          return true;
        }
        if (yield_) {
          std::this_thread::yield();
        } else {
          cpu_relax();
        }
      }
      const auto now = clock::now();
      if (!yield_ && now - last_look > off_cpu_gap) {
        lost_cpu();
        return ready();
      }
      if (now >= deadline) break;
      last_look = now;
    }
    missed();
    return ready();
  }

 private:
  static constexpr int misses_before_shrink = 8;
  static constexpr int gaps_before_parking = 2;
  static constexpr int first_probe_after = 64;
  static constexpr int last_probe_after = 64 * 1024;  // a lost probe per 64k waits costs nothing
  static constexpr std::int64_t min_useful_ns = 1000;
  // A turn of the loop (64 pauses and a clock read) takes 1-5 us on x86 (a pause is 10-140
  // cycles); a gap of 20 us between two looks is the thread having been off its CPU (a
  // scheduler time slice is milliseconds).
  static constexpr std::chrono::microseconds off_cpu_gap{20};

  void won() noexcept {
    budget_ns_ = max_ns_;
    misses_ = 0;
    gaps_ = 0;
    probing_ = false;
    probe_after_ = first_probe_after;
  }
  void missed() noexcept {
    gaps_ = 0;  // this spin kept its CPU: an earlier gap was not the start of a run
    if (probing_) {
      park();
    } else if (++misses_ >= misses_before_shrink) {
      misses_ = 0;
      budget_ns_ /= 2;
      if (budget_ns_ < min_useful_ns) park();
    }
  }
  void lost_cpu() noexcept {
    if (probing_ || ++gaps_ >= gaps_before_parking) park();
  }
  // Waits park at once until the next probe; a lost probe puts that further off.
  void park() noexcept {
    if (probing_) probe_after_ = std::min(probe_after_ * 2, last_probe_after);
    budget_ns_ = 0;
    parked_ = 0;
    misses_ = 0;
    gaps_ = 0;
    probing_ = false;
  }

  std::int64_t max_ns_;
  std::int64_t budget_ns_;
  bool yield_;
  bool probing_ = false;
  int misses_ = 0;
  int gaps_ = 0;
  int parked_ = 0;
  int probe_after_ = first_probe_after;
};

}  // namespace offload::detail
