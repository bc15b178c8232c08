// offload: the loop side of submitting calls. A loop step holds back the calls it makes after
// its first for a pool and takes in-flight counts ahead in blocks (thread_context.hpp); one RAII
// guard per step settles both when the step ends, however it ends, as Asio's work_cleanup
// settles a scheduler thread's private queue after each handler.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/detail/op.hpp>
#include <offload/detail/op_allocator.hpp>
#include <offload/detail/service.hpp>
#include <offload/detail/thread_context.hpp>
#include <offload/thread_pool.hpp>

#include <utility>

namespace offload::detail {

/// Queues the chain this thread holds back, if any.
inline void queue_held_calls(thread_context& context) noexcept {
  held_calls& held = context.held;
  thread_pool* pool = std::exchange(held.pool, nullptr);
  if (pool == nullptr) return;
  op_base* oldest = std::exchange(held.oldest, nullptr);
  op_base* newest = std::exchange(held.newest, nullptr);
  held.count = 0;
  pool_access::queue_chain(*pool, oldest, newest);
}

/// What the step holds back goes out; it may go on making calls.
inline void settle_step(thread_context& context) noexcept {
  // A call failing as its chain is queued gives back its limiter token, which may submit the
  // next waiting call, and that call may be held again.
  while (context.held.pool != nullptr) queue_held_calls(context);
  offload_service::give_back_credit(context.credit);
}

inline void end_step(thread_context& context) noexcept {
  settle_step(context);
  context.held.step_sent_one = false;  // the next step's first call goes out at once again
}

inline submit_status hold_call(thread_context& context, thread_pool& pool, op_base* op) {
  // The pool hears of the call before anything is linked: its observer may re-enter (a stats()
  // there settles this step).
  pool_access::accept(pool, *op);
  held_calls& held = context.held;
  while (held.pool != &pool) {
    // Queueing another pool's chain can re-enter here (see settle_step), so this pool's chain
    // is opened only once no other is held.
    if (held.pool != nullptr) {
      queue_held_calls(context);
      continue;
    }
    if (!pool_access::open_chain(pool)) break;
    held.pool = &pool;
  }
  // Once the pool is shut down no call joins a chain, open or not (the chain's earlier calls
  // were accepted before the shutdown: it waits for them).
  if (held.pool != &pool || pool.is_shutdown()) {
    pool_access::refuse(pool, *op);
    return submit_status::shut_down;
  }
  (held.newest != nullptr ? held.newest->next : held.oldest) = op;
  held.newest = op;
  if (++held.count == held_calls::limit) queue_held_calls(context);
  return submit_status::accepted;
}

/// Submits one call to `pool` from this thread. `may_wait` says whether the submitter can wait
/// for room in a bounded queue (a coroutine can; a bare thread cannot); only such a call, made
/// in a loop step to a pool that takes chains, is held back.
inline submit_status submit_call(thread_pool& pool, op_base* op, bool may_wait) {
  thread_context& context = this_thread();
  held_calls& held = context.held;
  if (may_wait && context.loop != nullptr && pool_access::takes_chains(pool)) {
    if (held.step_sent_one) return hold_call(context, pool, op);
    held.step_sent_one = true;
  }
  // A call that is not held (no loop to resume, or the step's first) still starts after the
  // calls this thread held before it.
  if (held.pool == &pool) queue_held_calls(context);
  return pool_access::submit(pool, op, may_wait);
}

/// This thread runs `loop`'s steps while the scope lives. A loop run from inside another's
/// step starts with that step settled, and gives the thread back to it at the end.
class loop_thread_scope {
 public:
  loop_thread_scope(event_loop* loop, offload_service* service) noexcept
      : context_(this_thread()),
        saved_loop_(context_.loop),
        saved_service_(context_.loop_service),
        saved_settle_(context_.settle_step),
        saved_keep_full_(block_cache::local().keep_full(true)) {
    end_step(context_);
    context_.loop = loop;
    context_.loop_service = service;
    context_.settle_step = &settle_step;
  }
  ~loop_thread_scope() {
    end_step(context_);
    context_.loop = saved_loop_;
    context_.loop_service = saved_service_;
    context_.settle_step = saved_settle_;
    block_cache::local().keep_full(saved_keep_full_);
  }
  loop_thread_scope(const loop_thread_scope&) = delete;
  loop_thread_scope& operator=(const loop_thread_scope&) = delete;

 private:
  thread_context& context_;
  event_loop* saved_loop_;
  offload_service* saved_service_;
  void (*saved_settle_)(thread_context&) noexcept;
  bool saved_keep_full_;
};

/// One loop step: what it held back is settled when the guard goes, however the step ended.
class loop_step {
 public:
  loop_step() noexcept : context_(this_thread()) {}
  ~loop_step() { end_step(context_); }
  loop_step(const loop_step&) = delete;
  loop_step& operator=(const loop_step&) = delete;

 private:
  thread_context& context_;
};

}  // namespace offload::detail
