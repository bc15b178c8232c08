// offload: the intrusive node every offloaded call lives in.
//
// One allocation per call holds the callable, its arguments, the result and the completion
// handler. The node travels through the pool's queue and the loop's completion queue by its
// `next` link, so neither queue allocates.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/detail/spin.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <thread>

namespace offload::detail {

class completion_queue;
class offload_service;
class pool_metrics;

/// Ends the in-flight count of `count` calls of `home` (defined with offload_service, for the
/// queues and counters declared before it).
void calls_ended(offload_service* home, std::size_t count) noexcept;

enum class op_state : std::uint8_t {
  pending,     // submitted, not started
  running,     // a worker claimed it
  done,        // has its outcome, on its way back
  cancelling,  // pending → cancelled: the canceller is still answering the awaiter from the node
  cancelled,   // cancelled before it started: its awaiter has been answered; only the node is
               // left, for whoever holds it (a pool's or limiter's queue) to free
  abandoning,  // running → abandoned: the canceller is still answering the awaiter
  abandoned,   // its awaiter was answered while f ran (cancel_policy::abandon); the worker frees
               // the node when f returns
};

/// Whoever finds a node in a transient state waits for it to leave it: a few instructions,
/// or an observer's on_abandon (then the waiter gives its CPU away rather than spin).
inline op_state settled_state(const std::atomic<op_state>& state) noexcept {
  constexpr int spins_before_yield = 64;  // well past the few instructions of the usual case
  op_state s = state.load(std::memory_order_acquire);
  for (int spins = 0; s == op_state::cancelling || s == op_state::abandoning; ++spins) {
    if (spins < spins_before_yield) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
    s = state.load(std::memory_order_acquire);
  }
  return s;
}

struct op_base {
  enum class action : std::uint8_t {
    run,       // worker: invoke the callable, then hand back
    complete,  // handler's executor: deliver the outcome and free the node
    destroy,   // free the node without delivering (its context is going away)
    fail,      // give the node an error outcome, then hand back
    cancel,    // the awaiter was cancelled (on its executor); true: the node is no longer ours
    submit,    // a capacity_limiter granted the call a token: submit it to its executor
  };
  using fn_type = bool (*)(op_base*, action, std::exception_ptr*);

  op_base* next = nullptr;
  fn_type fn = nullptr;
  completion_queue* queue = nullptr;  // batched hand-back; null: post to the handler's executor
  offload_service* home = nullptr;    // the service that counts this call in flight
  const char* callable_name = "";
  // The earliest of the call's own deadline and the one its awaiter is under (wait_for):
  // set before the call is submitted, read by the worker (from_thread::deadline).
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  // Set by an offload pool when it is given the call, after on_submit (atomics: a call that
  // waited for a limiter token is submitted by another thread than the one that may cancel it).
  std::atomic<pool_metrics*> metrics{nullptr};
  std::atomic<std::int64_t> stamp_ns{0};  // submitted, then f returned (with timings or observer)
  std::atomic<std::uint64_t> call_id{0};  // for the pool's observer
  std::atomic<op_state> state{op_state::pending};
  std::atomic<bool> cancel_requested{false};       // the awaiter was cancelled while f ran
  std::atomic<bool> cancelled_by_deadline{false};  // that cancellation was a deadline's
  // Whoever counts a call cancelled while queued (its canceller, or the holder that finds it
  // cancelled) takes this first: once, whichever saw the pool's metrics.
  std::atomic<bool> cancel_counted{false};
  bool immediate = false;  // failed inside its initiation: must not complete inline
  // A canceller sits in the awaiter's slot: it may race the holder for `state`. Without one
  // the holder moves the state alone, with plain stores.
  bool cancellable = false;

  /// The holder moves the state on; false when a canceller got there first.
  bool advance(op_state from, op_state to) noexcept {
    if (!cancellable) {
      state.store(to, std::memory_order_relaxed);
      return true;
    }
    return state.compare_exchange_strong(from, to, std::memory_order_acq_rel);
  }

  void run() { fn(this, action::run, nullptr); }
  void complete() { fn(this, action::complete, nullptr); }
  void destroy() noexcept { fn(this, action::destroy, nullptr); }
  void fail(std::exception_ptr e) noexcept { fn(this, action::fail, &e); }
  bool cancel() { return fn(this, action::cancel, nullptr); }
  void submit() noexcept { fn(this, action::submit, nullptr); }

  /// The call is under `d` too: the earlier deadline holds.
  void limit_deadline(std::chrono::steady_clock::time_point d) noexcept {
    if (d < deadline) deadline = d;
  }
  bool past_deadline() const noexcept {
    return deadline != std::chrono::steady_clock::time_point::max() &&
           std::chrono::steady_clock::now() >= deadline;
  }
};

/// Says on stderr what threw where nothing may throw (a worker, a destructor): never rethrown.
inline void report_stray_exception(const char* where) noexcept {
  try {
    throw;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "offload: %s threw: %s\n", where, e.what());
  } catch (...) {
    std::fprintf(stderr, "offload: %s threw a non-std exception\n", where);
  }
}

}  // namespace offload::detail
