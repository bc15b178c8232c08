// offload: what a pool's calls did and how long each phase took, as thread_pool::stats()
// reports it.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <chrono>
#include <cstdint>

namespace offload {

/// One duration over many calls. Percentiles come from log-scale buckets (eight per power of
/// two) and are within 7 % of the exact value; count, sum and max are exact.
struct latency_summary {
  std::uint64_t count = 0;
  std::chrono::nanoseconds sum{};
  std::chrono::nanoseconds p50{};
  std::chrono::nanoseconds p90{};
  std::chrono::nanoseconds p99{};
  std::chrono::nanoseconds max{};
};

/// The three phases of an offloaded call.
struct call_timings {
  /// Submitted to the pool until a worker starts it (a call waiting for a limiter token is
  /// submitted when it gets one).
  latency_summary queued;
  /// A worker started f until f returned or threw.
  latency_summary running;
  /// f returned until the awaiter (coroutine or handler) was resumed with the result.
  latency_summary handing_back;
};

/// How the pool's calls ended, counted since the pool was made. Each call is counted once in
/// completed, failed, cancelled_before_start or refused; cancelled_while_running, abandoned
/// and timed_out say more about some of those.
struct call_counts {
  std::uint64_t completed = 0;  // f returned
  /// f threw (or its context could not be installed), or the pool failed the call without
  /// running it (no thread could be started for it, or the thread initializer threw).
  std::uint64_t failed = 0;
  std::uint64_t cancelled_before_start = 0;  // cancelled while queued: f never ran
  /// The awaiter was cancelled while f ran, and f ran to its end (cancel_policy::wait): the
  /// awaiter got the cancellation, the result was discarded. Also in completed or failed. (A
  /// cancellation that comes after f returned, as its result is handed back, is not counted.)
  std::uint64_t cancelled_while_running = 0;
  /// The awaiter was answered while f ran on (cancel_policy::abandon). Also in completed or
  /// failed once f ends.
  std::uint64_t abandoned = 0;
  /// Cancellations (of the three kinds above) made by a deadline: the call's own
  /// (call_options::deadline / timeout) or that of the wait_for / wait_until it was made under.
  std::uint64_t timed_out = 0;
  /// The pool did not take the call: it was shut down, or its bounded queue was full for a
  /// submitter that cannot wait.
  std::uint64_t refused = 0;
};

}  // namespace offload
