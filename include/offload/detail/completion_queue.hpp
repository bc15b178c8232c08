// offload: the batched hand-back from worker threads to a loop.
//
// Workers append finished calls to a lock-free FIFO. Only the push that finds the queue idle
// posts a drain to the loop's executor; while a drain is scheduled or running, pushes cost one
// CAS and no wake-up. The drain resumes each awaiter inline, in the order the calls finished:
// it already runs on the executor those awaiters belong to.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/config.hpp>
#include <offload/detail/op.hpp>
#include <offload/detail/op_allocator.hpp>
#include <offload/detail/op_queue.hpp>
#include <offload/detail/spin.hpp>

#include <atomic>
#include <cassert>
#include <thread>
#include <utility>

namespace offload::detail {

class completion_queue {
 public:
  completion_queue() = default;
  completion_queue(const completion_queue&) = delete;
  completion_queue& operator=(const completion_queue&) = delete;
  virtual ~completion_queue() = default;

  /// Any thread. Once `op` is linked the owner may deliver it and, shutting down, destroy
  /// this queue: a push that must still touch the queue afterwards is counted in `busy()`.
  void push(op_base* op) noexcept {
    const op_queue::swung pushed = queue_.swing(op, op, op_queue::on_flag::clear);
    // The queue's flag says no drain is on its way: only the push that clears it schedules one.
    if (pushed.outcome != op_queue::pushed::cleared_flag) {
      op_queue::link(pushed);
      return;
    }
    scheduling_.fetch_add(1, std::memory_order_seq_cst);  // before the link, so before the take
    op_queue::link(pushed);
    // A closed queue's owner collects what arrives; a loop spinning on this queue takes the
    // drain duty over (no cross-thread post).
    if (!closed_.load(std::memory_order_seq_cst) &&
        !consumer_spinning_.exchange(false, std::memory_order_acq_rel)) {
      schedule_drain();
    }
    scheduling_.fetch_sub(1, std::memory_order_seq_cst);
  }

  /// A push is still scheduling a drain: the queue must outlive it.
  bool busy() const noexcept { return scheduling_.load(std::memory_order_seq_cst) != 0; }

  /// After close(), on the owner's thread: something was pushed and not yet taken.
  bool has_pending() const noexcept { return !queue_.empty(); }

  /// The loop thread is about to spin waiting for completions; see `end_spin`.
  void begin_spin() noexcept { consumer_spinning_.store(true, std::memory_order_seq_cst); }
  /// A producer handed over the drain duty while we spun.
  bool handed_over() const noexcept { return !consumer_spinning_.load(std::memory_order_acquire); }
  /// Ends a spin; if a producer handed the drain over, schedules it from this thread.
  void end_spin() {
    if (!consumer_spinning_.exchange(false, std::memory_order_acq_rel)) schedule_drain();
  }

  /// Debug mode resumes one awaiter per drain so each loop step can be timed on its own.
  void set_one_per_drain(bool on) noexcept { one_per_drain_.store(on, std::memory_order_relaxed); }

  /// Stops scheduling drains: the owner is shutting down and collects what arrives itself.
  void close() noexcept { closed_.store(true, std::memory_order_seq_cst); }

  /// After close(), on the owner's thread: takes everything queued, in FIFO order.
  op_base* take_all() noexcept { return queue_.take_all(); }

 protected:
  virtual void schedule_drain() = 0;

  /// Runs on the queue's executor. Drains are serialized: one is scheduled only by the push
  /// that finds the queue idle, or by the drain itself as it yields.
  void drain() {
    const unsigned limit = one_per_drain_.load(std::memory_order_relaxed) ? 1u : max_per_drain;
    // Offloaded calls count in flight in the service that made their queue (other nodes,
    // such as a loop's thread-safe callbacks, have no home): one update per drain, made even if
    // a handler throws.
    struct delivered_count {
      offload_service* home = nullptr;
      unsigned count = 0;
      ~delivered_count() {
        if (count != 0) calls_ended(home, count);
      }
    } delivered;
    unsigned completed = 0;
    unsigned stalls = 0;
    for (;;) {
      if (completed == limit) {
        schedule_drain();  // let the rest of the loop run, then go on
        return;
      }
      op_base* op = queue_.pop();
      if (op == nullptr) {
        if (queue_.flag_if_empty()) return;  // idle again: the next push schedules a drain
        // A push came in, or a worker is between its two steps (swing and link).
        if (++stalls > max_stalls) {
          schedule_drain();
          return;
        }
        if (stalls > 1) std::this_thread::yield();  // it may have been preempted there
        continue;
      }
      ++completed;
      if (op->home != nullptr) {
        assert(delivered.home == nullptr || delivered.home == op->home);  // the queue's owner
        delivered.home = op->home;
        ++delivered.count;
      }
      try {
        op->complete();
      } catch (...) {
        // A handler threw out of the loop (Asio lets that escape run()); the rest stays queued.
        schedule_drain();
        throw;
      }
    }
  }

 private:
  // A drain yields to the rest of the loop after this many awaiters, so a flood of completions
  // cannot starve timers and other handlers; large enough that the re-post is rare.
  static constexpr unsigned max_per_drain = 4096;
  // Looks at a queue a producer is halfway through pushing to before the drain re-posts itself
  // rather than wait on: the producer finishes in a few instructions unless it was preempted.
  static constexpr unsigned max_stalls = 8;

  op_queue queue_{true};  // starts idle
  alignas(cache_line) std::atomic<bool> consumer_spinning_{false};
  std::atomic<int> scheduling_{0};
  std::atomic<bool> one_per_drain_{false};
  std::atomic<bool> closed_{false};
};

/// A completion queue whose drain runs on `Executor` (the loop's strand, or an io_context's
/// plain executor for coroutines spawned without an event_loop).
template <typename Executor>
class basic_completion_queue final : public completion_queue {
 public:
  explicit basic_completion_queue(Executor ex) : ex_(std::move(ex)) {}
  const Executor& executor() const noexcept { return ex_; }

 private:
  struct drain_invoker {
    basic_completion_queue* queue;
    using allocator_type = reusable_block_allocator<void>;
    allocator_type get_allocator() const noexcept { return allocator_type(&queue->block_); }
    void operator()() const { queue->drain(); }
  };
  void schedule_drain() override { net::post(ex_, drain_invoker{this}); }

  alignas(cache_line) Executor ex_;
  reusable_block block_;
};

}  // namespace offload::detail
