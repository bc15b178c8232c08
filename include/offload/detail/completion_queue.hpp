// offload: the batched hand-back from worker threads to a loop.
//
// Workers push finished calls onto a lock-free stack. Only the push that finds the queue idle
// posts a drain to the loop's executor; while a drain is scheduled or running, pushes cost one
// CAS and no wake-up. The drain takes the whole stack, restores submission order and resumes
// each awaiter inline: it already runs on the executor those awaiters belong to.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/config.hpp>
#include <offload/detail/op.hpp>
#include <offload/detail/op_allocator.hpp>
#include <offload/detail/spin.hpp>

#include <atomic>
#include <utility>

namespace offload::detail {

class completion_queue {
 public:
  completion_queue() = default;
  completion_queue(const completion_queue&) = delete;
  completion_queue& operator=(const completion_queue&) = delete;
  virtual ~completion_queue() = default;

  /// Any thread.
  void push(op_base* op) noexcept {
    op_base* old = head_.load(std::memory_order_relaxed);
    do {
      op->next = old;
    } while (!head_.compare_exchange_weak(old, op, std::memory_order_seq_cst,
                                          std::memory_order_relaxed));
    if (old != nullptr) return;                           // a drain is already on its way
    if (closed_.load(std::memory_order_seq_cst)) return;  // the owner collects it
    // A loop spinning on this queue takes the drain duty over: no cross-thread post.
    if (consumer_spinning_.exchange(false, std::memory_order_acq_rel)) return;
    schedule_drain();
  }

  /// Something was pushed and not yet drained.
  bool has_pending() const noexcept {
    op_base* h = head_.load(std::memory_order_acquire);
    return h != nullptr && h != mark();
  }

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

  /// After close(): takes everything queued, in FIFO order.
  op_base* take_all() noexcept {
    op_base* fifo = reverse_chain(head_.exchange(nullptr), mark());
    if (backlog_ == nullptr) return fifo;
    op_base* tail = backlog_;
    while (tail->next != nullptr) tail = tail->next;
    tail->next = fifo;
    return std::exchange(backlog_, nullptr);
  }

 protected:
  virtual void schedule_drain() = 0;

  /// Runs on the queue's executor. Drains are serialized: one is scheduled only by the push
  /// that finds the queue idle, or by the drain itself as it yields.
  void drain() {
    const bool one = one_per_drain_.load(std::memory_order_relaxed);
    unsigned completed = 0;
    for (;;) {
      if (backlog_ == nullptr) {
        backlog_ = reverse_chain(head_.exchange(mark(), std::memory_order_acq_rel), mark());
        if (backlog_ == nullptr) {
          op_base* expected = mark();
          if (head_.compare_exchange_strong(expected, nullptr, std::memory_order_acq_rel)) {
            return;  // idle again: the next push schedules the next drain
          }
          continue;
        }
      }
      if (completed == (one ? 1u : max_per_drain)) {
        schedule_drain();  // let the rest of the loop run, then go on
        return;
      }
      op_base* op = backlog_;
      backlog_ = op->next;
      ++completed;
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
  static constexpr unsigned max_per_drain = 4096;

  static op_base* mark() noexcept {
    static op_base sentinel;
    return &sentinel;
  }

  // Workers push onto head_ per call: nothing else may share its line.
  alignas(cache_line) std::atomic<op_base*> head_{nullptr};
  alignas(cache_line) std::atomic<bool> consumer_spinning_{false};
  std::atomic<bool> one_per_drain_{false};
  std::atomic<bool> closed_{false};
  op_base* backlog_ = nullptr;  // taken, in FIFO order, not yet completed; drain-only
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
