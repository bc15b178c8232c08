// offload: the intrusive node every offloaded call lives in.
//
// One allocation per call holds the callable, its arguments, the result and the completion
// handler. The node travels through the pool's queue and the loop's completion queue by its
// `next` link, so neither queue allocates.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>

namespace offload::detail {

class completion_queue;
class offload_service;

enum class op_state : std::uint8_t {
  pending,    // submitted, not started
  running,    // a worker claimed it
  done,       // has its outcome, on its way back
  cancelled,  // cancelled before it started: its awaiter has been answered; only the node is
              // left, for whoever holds it (a pool's queue) to free
};

struct op_base {
  enum class action : std::uint8_t {
    run,       // worker: invoke the callable, then hand back
    complete,  // handler's executor: deliver the outcome and free the node
    destroy,   // free the node without delivering (its context is going away)
    fail,      // give the node an error outcome, then hand back
    cancel,    // the awaiter was cancelled (on its executor); true: the node is no longer ours
  };
  using fn_type = bool (*)(op_base*, action, std::exception_ptr*);

  op_base* next = nullptr;
  fn_type fn = nullptr;
  completion_queue* queue = nullptr;  // batched hand-back; null: post to the handler's executor
  offload_service* home = nullptr;    // the service that counts this call in flight
  const char* callable_name = "";
  std::atomic<op_state> state{op_state::pending};
  std::atomic<bool> cancel_requested{false};  // the awaiter was cancelled while f ran
  bool immediate = false;  // failed inside its initiation: must not complete inline

  void run() { fn(this, action::run, nullptr); }
  void complete() { fn(this, action::complete, nullptr); }
  void destroy() noexcept { fn(this, action::destroy, nullptr); }
  void fail(std::exception_ptr e) noexcept { fn(this, action::fail, &e); }
  bool cancel() { return fn(this, action::cancel, nullptr); }
};

/// The call this worker thread is running now (for from_thread::check_cancelled), or null.
inline thread_local op_base* tl_current_op = nullptr;

/// Reverses a LIFO chain (as taken from a Treiber stack) that ends at `end` into FIFO order.
inline op_base* reverse_chain(op_base* head, const op_base* end) noexcept {
  op_base* fifo = nullptr;
  while (head != end && head != nullptr) {
    op_base* next = head->next;
    head->next = fifo;
    fifo = head;
    head = next;
  }
  return fifo;
}

}  // namespace offload::detail
