// offload: fixed-size, lock-free latency histograms, with a recent window beside the
// lifetime counts (for thread_pool::stats).
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/call_stats.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace offload::detail {

inline std::int64_t steady_now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// Nanoseconds from `since` to `now`, both steady_now_ns() readings (never negative: two
/// threads' readings may be a few ns apart the wrong way).
inline std::uint64_t elapsed_ns(std::int64_t since, std::int64_t now) noexcept {
  return static_cast<std::uint64_t>(std::max<std::int64_t>(0, now - since));
}

/// Adds to a counter only one thread writes (or only under a lock): a plain load and store,
/// no read-modify-write.
inline void owned_add(std::atomic<std::uint64_t>& counter, std::uint64_t by = 1) noexcept {
  counter.store(counter.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
}

/// What a histogram held when read: plain numbers, to merge and to query.
struct histogram_snapshot;

/// Nanoseconds in log-linear buckets, as HdrHistogram lays them out: exact below 16 ns, then
/// eight buckets per power of two, so each bucket's middle is within 1/16 of any value in it.
/// Recording is a few instructions and never allocates; reading merges into a snapshot.
class latency_histogram {
 public:
  static constexpr unsigned sub_bits = 3;  // eight buckets per power of two
  static constexpr unsigned sub_buckets = 1u << sub_bits;
  // 2^43 ns is about 2.4 hours: longer durations share the last bucket (max stays exact).
  static constexpr unsigned top_exponent = 42;
  static constexpr std::size_t bucket_count = (top_exponent - sub_bits + 2) * sub_buckets;

  static constexpr std::size_t bucket_of(std::uint64_t ns) noexcept {
    if (ns < sub_buckets) return static_cast<std::size_t>(ns);
    const unsigned exponent = static_cast<unsigned>(std::bit_width(ns)) - 1;
    if (exponent > top_exponent) return bucket_count - 1;
    const unsigned shift = exponent - sub_bits;
    return shift * sub_buckets + static_cast<std::size_t>(ns >> shift);
  }

  /// The middle of bucket i's range: what a percentile falling in it reports.
  static constexpr std::uint64_t bucket_middle(std::size_t i) noexcept {
    if (i < 2 * sub_buckets) return i;
    const unsigned shift = static_cast<unsigned>(i / sub_buckets) - 1;
    const std::uint64_t lower = (i % sub_buckets + sub_buckets) << shift;
    return lower + ((std::uint64_t{1} << shift) >> 1);
  }

  /// For a histogram only one thread writes: plain loads and stores, no read-modify-write.
  void add_owned(std::uint64_t ns) noexcept {
    owned_add(buckets_[bucket_of(ns)], 1);
    owned_add(count_, 1);
    owned_add(sum_, ns);
    if (ns > max_.load(std::memory_order_relaxed)) max_.store(ns, std::memory_order_relaxed);
  }

  /// For a histogram several threads write.
  void add_shared(std::uint64_t ns) noexcept {
    buckets_[bucket_of(ns)].fetch_add(1, std::memory_order_relaxed);
    count_.fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(ns, std::memory_order_relaxed);
    std::uint64_t seen = max_.load(std::memory_order_relaxed);
    while (ns > seen && !max_.compare_exchange_weak(seen, ns, std::memory_order_relaxed)) {
    }
  }

  /// Only by its writer (or under whatever lock keeps writers out).
  void clear() noexcept {
    for (auto& b : buckets_) b.store(0, std::memory_order_relaxed);
    count_.store(0, std::memory_order_relaxed);
    sum_.store(0, std::memory_order_relaxed);
    max_.store(0, std::memory_order_relaxed);
  }

  /// Adds what this histogram holds into another one, by a single writer.
  void add_into_owned(latency_histogram& to) const noexcept {
    for (std::size_t i = 0; i < bucket_count; ++i) {
      owned_add(to.buckets_[i], buckets_[i].load(std::memory_order_relaxed));
    }
    owned_add(to.count_, count_.load(std::memory_order_relaxed));
    owned_add(to.sum_, sum_.load(std::memory_order_relaxed));
    const std::uint64_t max = max_.load(std::memory_order_relaxed);
    if (max > to.max_.load(std::memory_order_relaxed))
      to.max_.store(max, std::memory_order_relaxed);
  }

  inline void add_into(histogram_snapshot& to) const noexcept;

 private:
  std::array<std::atomic<std::uint64_t>, bucket_count> buckets_{};
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::uint64_t> sum_{0};
  std::atomic<std::uint64_t> max_{0};
};

struct histogram_snapshot {
  std::array<std::uint64_t, latency_histogram::bucket_count> buckets{};
  std::uint64_t count = 0;
  std::uint64_t sum = 0;
  std::uint64_t max = 0;

  /// The smallest recorded value at or above a fraction q of the values (a bucket's middle,
  /// never above the exact max); 0 when empty.
  std::uint64_t percentile(double q) const noexcept {
    if (count == 0) return 0;
    // Rank of the value wanted, 1-based: the ceiling of q * count, at least the first.
    const auto wanted = std::max<std::uint64_t>(
        1, static_cast<std::uint64_t>(q * static_cast<double>(count) + 0.999999));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < buckets.size(); ++i) {
      seen += buckets[i];
      if (seen >= wanted) return std::min(latency_histogram::bucket_middle(i), max);
    }
    return max;
  }

  latency_summary summary() const noexcept {
    using ns = std::chrono::nanoseconds;
    latency_summary s;
    s.count = count;
    s.sum = ns(static_cast<ns::rep>(sum));
    s.p50 = ns(static_cast<ns::rep>(percentile(0.50)));
    s.p90 = ns(static_cast<ns::rep>(percentile(0.90)));
    s.p99 = ns(static_cast<ns::rep>(percentile(0.99)));
    s.max = ns(static_cast<ns::rep>(max));
    return s;
  }
};

inline void latency_histogram::add_into(histogram_snapshot& to) const noexcept {
  for (std::size_t i = 0; i < bucket_count; ++i) {
    to.buckets[i] += buckets_[i].load(std::memory_order_relaxed);
  }
  to.count += count_.load(std::memory_order_relaxed);
  to.sum += sum_.load(std::memory_order_relaxed);
  to.max = std::max(to.max, max_.load(std::memory_order_relaxed));
}

/// A histogram over the whole life, and two over consecutive windows of fixed length (epoch
/// = time / length): the recent figures merge the current window and the one before, so they
/// cover between one and two window lengths. A window slot is cleared by the first value of a
/// new epoch; a reader skips slots older than the previous epoch.
class windowed_histogram {
 public:
  void add_owned(std::uint64_t ns, std::int64_t epoch) noexcept {
    life_.add_owned(ns);
    const std::size_t slot = slot_of(epoch);
    if (epochs_[slot].load(std::memory_order_relaxed) != epoch) {
      windows_[slot].clear();
      epochs_[slot].store(epoch, std::memory_order_release);
    }
    windows_[slot].add_owned(ns);
  }

  /// Several writers: the one that moves a slot to a new epoch clears it; a value another
  /// writer adds to that slot meanwhile may be cleared with it (the window is approximate,
  /// the lifetime figures are not).
  void add_shared(std::uint64_t ns, std::int64_t epoch) noexcept {
    life_.add_shared(ns);
    const std::size_t slot = slot_of(epoch);
    std::int64_t seen = epochs_[slot].load(std::memory_order_acquire);
    if (seen != epoch && seen < epoch &&
        epochs_[slot].compare_exchange_strong(seen, epoch, std::memory_order_acq_rel)) {
      windows_[slot].clear();
    }
    windows_[slot].add_shared(ns);
  }

  /// Folds this histogram into another with one writer (a retiring worker's into the pool's).
  void add_into_owned(windowed_histogram& to) const noexcept {
    life_.add_into_owned(to.life_);
    for (std::size_t slot = 0; slot < 2; ++slot) {
      const std::int64_t epoch = epochs_[slot].load(std::memory_order_acquire);
      std::atomic<std::int64_t>& to_epoch = to.epochs_[slot_of(epoch)];
      if (epoch < to_epoch.load(std::memory_order_relaxed)) continue;  // older than theirs
      if (epoch != to_epoch.load(std::memory_order_relaxed)) {
        to.windows_[slot_of(epoch)].clear();
        to_epoch.store(epoch, std::memory_order_release);
      }
      windows_[slot].add_into_owned(to.windows_[slot_of(epoch)]);
    }
  }

  void read(histogram_snapshot& life, histogram_snapshot& recent,
            std::int64_t epoch) const noexcept {
    life_.add_into(life);
    for (std::size_t slot = 0; slot < 2; ++slot) {
      const std::int64_t e = epochs_[slot].load(std::memory_order_acquire);
      if (e == epoch || e == epoch - 1) windows_[slot].add_into(recent);
    }
  }

 private:
  static std::size_t slot_of(std::int64_t epoch) noexcept {
    return static_cast<std::size_t>(epoch) & 1;
  }

  latency_histogram life_;
  std::array<latency_histogram, 2> windows_{};
  std::array<std::atomic<std::int64_t>, 2> epochs_{std::atomic<std::int64_t>{-2},
                                                   std::atomic<std::int64_t>{-2}};
};

}  // namespace offload::detail
