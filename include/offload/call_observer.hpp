// offload: a hook told of each call a pool takes, for tracing and metrics exporters.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>

namespace offload {

/// Which call an event is about.
struct call_info {
  std::uint64_t id = 0;       // unique among the calls of one pool, in submission order
  const char* callable = "";  // the callable's type, as the compiler names it
};

/// How a call ended, as on_finish reports it.
enum class call_end {
  returned,                // f returned
  threw,                   // f threw (or its context could not be installed); or, with no
                           // on_start before it, the pool failed it without running it
  cancelled_before_start,  // cancelled or timed out while queued, or shut down with
                           // cancel_pending: f never ran
  refused,                 // the pool did not take it (shut down, or a full bounded queue)
};

/// How long the call spent in each phase up to its end (zero for a phase it never reached).
struct call_durations {
  std::chrono::nanoseconds queued{};
  std::chrono::nanoseconds running{};
};

/// A call still running past thread_pool_options::report_calls_longer_than (also what
/// thread_pool::running_calls lists).
struct running_call {
  std::thread::id thread;
  std::string thread_name;
  std::string callable;  // the callable's type, as the compiler names it
  std::chrono::nanoseconds running_for{};
};

/// Override what you need; every event runs on the thread where it happens, so keep it short
/// and do not throw (an exception is reported on stderr and dropped). Each call the pool is
/// given gets on_submit, then (if it starts) on_start, then on_finish, exactly once each;
/// on_abandon comes before on_finish, on the awaiter's thread (usually after on_start; a call
/// abandoned just as its worker takes it may hear on_abandon first).
class call_observer {
 public:
  virtual ~call_observer() = default;

  /// On the thread that submits the call, just before it is queued: the caller's thread, or
  /// for a call that waited for a capacity_limiter token, the thread that gave one back.
  virtual void on_submit(const call_info&) {}

  /// On the worker, just before f, with the caller's context (context_hook values) installed:
  /// a tracing span started here is a child of the caller's.
  virtual void on_start(const call_info&) {}

  /// Once per call. After f: on the worker, context still installed, once f's fate is
  /// settled (if it was abandoned, after on_abandon). Cancelled while queued: on the thread
  /// that cancelled it (the awaiter's, or the one calling shutdown), or on the worker that
  /// finds it cancelled, if it was cancelled as it was being submitted. Failed by the pool
  /// without running (call_end::threw): on the thread that gave up on it. Refused: on the
  /// submitting thread.
  virtual void on_finish(const call_info&, call_end, const call_durations&) {}

  /// On the awaiter's thread, when its awaiter is answered while f runs on
  /// (cancel_policy::abandon). Keep it short and never wait for the pool here: if f returns
  /// meanwhile, its worker waits for on_abandon to return (so that on_finish comes after).
  virtual void on_abandon(const call_info&) {}

  /// A call still running after thread_pool_options::report_calls_longer_than, reported once,
  /// from the pool's watchdog thread. Not overridden: a line on stderr.
  virtual void on_long_call(const running_call& call);
};

inline void call_observer::on_long_call(const running_call& call) {
  std::fprintf(stderr, "offload: a call has run for %lld ms on thread %s: %s\n",
               static_cast<long long>(
                   std::chrono::duration_cast<std::chrono::milliseconds>(call.running_for).count()),
               call.thread_name.c_str(), call.callable.c_str());
}

}  // namespace offload
