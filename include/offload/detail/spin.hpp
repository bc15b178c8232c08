// offload: bounded, adaptive spinning before a thread parks.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

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
/// On a single usable CPU (`taskset -c 0`) the thread being waited for cannot run while we
/// spin, so the spin yields the CPU instead: the waker then hands its work over without the
/// futex wake-up and wait a park costs each side.
class adaptive_spin {
 public:
  explicit adaptive_spin(std::chrono::nanoseconds max) noexcept
      : max_ns_(max.count() > 0 ? max.count() : 0),
        budget_ns_(max_ns_),
        yield_(single_usable_cpu()) {}

  /// Spins until `ready()` or the budget runs out; true when `ready()` was seen.
  template <typename Ready>
  bool spin(Ready&& ready) noexcept {
    if (budget_ns_ == 0) {
      if (max_ns_ != 0 && ++parked_since_reset_ >= recover_after) reset();
      return ready();
    }
    using clock = std::chrono::steady_clock;
    const auto deadline = clock::now() + std::chrono::nanoseconds(budget_ns_);
    for (;;) {
      for (int i = 0; i < (yield_ ? 1 : 64); ++i) {
        if (ready()) {
          reset();
          return true;
        }
        if (yield_) {
          std::this_thread::yield();
        } else {
          cpu_relax();
        }
      }
      if (clock::now() >= deadline) break;
    }
    if (++misses_ >= misses_before_shrink) {
      misses_ = 0;
      budget_ns_ /= 2;
      if (budget_ns_ < min_useful_ns) budget_ns_ = 0;
    }
    return ready();
  }

 private:
  static constexpr int misses_before_shrink = 8;
  static constexpr int recover_after = 64;
  static constexpr std::int64_t min_useful_ns = 1000;

  void reset() noexcept {
    budget_ns_ = max_ns_;
    misses_ = 0;
    parked_since_reset_ = 0;
  }

  std::int64_t max_ns_;
  std::int64_t budget_ns_;
  bool yield_;
  int misses_ = 0;
  int parked_since_reset_ = 0;
};

}  // namespace offload::detail
