// offload: what the calling thread is doing, kept in one place (as Asio's scheduler_thread_info
// keeps a scheduler thread's private queue and work count): the loop whose steps it runs, what
// the running step holds back, the offloaded call it runs, the pool it works for.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <cstddef>

namespace offload {
class event_loop;
class thread_pool;
}  // namespace offload

namespace offload::detail {

class offload_service;
struct op_base;

/// Calls a loop step holds back for one pool: the step's first call goes out at once (a lone
/// call starts as soon as possible); the calls after it are queued in groups, one CAS and one
/// wake-up check per group, and whatever is left when the step ends. A burst then costs the
/// workers one cache-line transfer per group, not one per call (detail/loop_step.hpp).
struct held_calls {
  static constexpr unsigned limit = 64;
  thread_pool* pool = nullptr;
  op_base* oldest = nullptr;  // linked by next, in submission order
  op_base* newest = nullptr;
  unsigned count = 0;
  bool step_sent_one = false;  // this step's first call already went out at once
};

/// In-flight counts a loop step took ahead, in one update, for the calls it goes on to make
/// (offload_service::call_started); what it did not use goes back when the step ends.
struct started_credit {
  offload_service* home = nullptr;  // the service they were taken from
  std::size_t left = 0;
  bool counted_one = false;  // this step counted a call already: the next takes a block
};

struct thread_context {
  // While this thread runs an event_loop's steps (its run functions): the loop, its service,
  // and what the current step holds back. Settled when each step ends (loop_step.hpp).
  event_loop* loop = nullptr;
  offload_service* loop_service = nullptr;
  held_calls held;
  started_credit credit;
  // Set with `loop`: settles the step early. It lives with the loop side, which knows pools
  // and services; the code that calls it (a pool's shutdown, a blocking wait) sits below them.
  void (*settle_step)(thread_context&) noexcept = nullptr;

  // The offloaded call this thread runs now (from_thread reads it), or null.
  op_base* current_op = nullptr;
  // The pool whose worker this thread is, for its whole life, or null.
  thread_pool* worker_of = nullptr;
};

inline thread_local thread_context tl_thread_context;

inline thread_context& this_thread() noexcept { return tl_thread_context; }

/// Ends what this thread's loop step holds back, now: its calls go out and the counts it took
/// ahead go back. Before a thread blocks, so what it waits for never waits for its step to end.
inline void settle_current_step() noexcept {
  thread_context& context = this_thread();
  if (context.settle_step != nullptr) context.settle_step(context);
}

}  // namespace offload::detail
