// offload: deadlines on the steady clock, counted from now without overflowing.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <chrono>

namespace offload::detail {

/// now + after, or the clock's last time point when that would overflow: duration::max() is
/// the usual way to say "no limit".
inline std::chrono::steady_clock::time_point deadline_after(
    std::chrono::steady_clock::duration after) noexcept {
  using clock = std::chrono::steady_clock;
  const clock::time_point now = clock::now();
  return after >= clock::time_point::max() - now ? clock::time_point::max() : now + after;
}

}  // namespace offload::detail
