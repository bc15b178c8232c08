// Shared by the stress tests: which sanitizer the build has, the scale and seed from the
// environment, and a watchdog that turns a hang into a fast failure with the test's state.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>

#if defined(__SANITIZE_ADDRESS__)
#define OFFLOAD_STRESS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define OFFLOAD_STRESS_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define OFFLOAD_STRESS_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define OFFLOAD_STRESS_TSAN 1
#endif
#endif

namespace offload_test {

#if defined(OFFLOAD_STRESS_TSAN)
inline constexpr const char* stress_build_kind = "TSan";
#elif defined(OFFLOAD_STRESS_ASAN)
inline constexpr const char* stress_build_kind = "ASan+UBSan";
#else
inline constexpr const char* stress_build_kind = "plain";
#endif

/// OFFLOAD_STRESS_SCALE, or 1.
inline double stress_scale() {
  const char* text = std::getenv("OFFLOAD_STRESS_SCALE");
  if (text == nullptr || *text == '\0') return 1.0;
  const double scale = std::strtod(text, nullptr);
  return scale > 0 ? scale : 1.0;
}

/// OFFLOAD_STRESS_SEED, or a random seed (the test prints it, so a run can be replayed).
inline std::uint64_t stress_seed() {
  if (const char* text = std::getenv("OFFLOAD_STRESS_SEED"); text != nullptr && *text != '\0') {
    return std::strtoull(text, nullptr, 0);
  }
  return (std::uint64_t{std::random_device{}()} << 32) ^ std::random_device{}();
}

/// Aborts the process with a message (and the test's own status line) if the test has not
/// finished within `limit`, or has made no progress for `stall`: a hang fails fast, with its
/// state, instead of waiting for ctest's timeout.
class watchdog {
 public:
  watchdog(std::string what, std::chrono::seconds limit, std::chrono::seconds stall,
           std::function<std::uint64_t()> progress, std::function<std::string()> status)
      : what_(std::move(what)),
        progress_(std::move(progress)),
        status_(std::move(status)),
        thread_([this, limit, stall] { watch(limit, stall); }) {}
  watchdog(const watchdog&) = delete;
  watchdog& operator=(const watchdog&) = delete;
  ~watchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  void watch(std::chrono::seconds limit, std::chrono::seconds stall) {
    const auto start = std::chrono::steady_clock::now();
    auto last_change = start;
    std::uint64_t last = progress_();
    std::unique_lock<std::mutex> lock(mutex_);
    while (!cv_.wait_for(lock, std::chrono::seconds(1), [this] { return done_; })) {
      const auto now = std::chrono::steady_clock::now();
      const std::uint64_t p = progress_();
      if (p != last) {
        last = p;
        last_change = now;
      }
      const bool too_long = now - start > limit;
      if (too_long || now - last_change > stall) {
        std::fprintf(stderr, "\nwatchdog: %s: %s (%s); aborting\n", what_.c_str(),
                     too_long ? "not finished in time" : "no progress", status_().c_str());
        std::fflush(stderr);
        std::abort();
      }
    }
  }

  std::string what_;
  std::function<std::uint64_t()> progress_;
  std::function<std::string()> status_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace offload_test
