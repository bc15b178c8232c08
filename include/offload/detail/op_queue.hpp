// offload: the intrusive multi-producer, single-consumer FIFO of call nodes.
//
// Dmitry Vyukov's node-based queue: a producer swings the tail to its node, then links the old
// tail to it; the consumer follows the links. The consumer reads each node once, in push order,
// which is the order it runs them in: a burst of calls whose nodes have gone cold costs one pass
// over them, where a lock-free stack costs two (reverse it, then run it). The tail word keeps
// one flag bit for the owner: the pool's "shut down", the completion queue's "no drain on its
// way".
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/detail/op.hpp>
#include <offload/detail/spin.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <thread>

namespace offload::detail {

class op_queue {
 public:
  static constexpr std::uintptr_t flag = 1;
  enum class on_flag {
    refuse,  // a set flag refuses the push
    keep,    // the push leaves the flag as it is
    clear,   // the push clears the flag
  };
  enum class pushed { refused, queued, cleared_flag };

  explicit op_queue(bool flagged = false) noexcept : tail_(word(&stub_) | (flagged ? flag : 0)) {}
  op_queue(const op_queue&) = delete;
  op_queue& operator=(const op_queue&) = delete;

  /// A push between its two steps: the tail is swung, the chain not yet linked.
  struct swung {
    op_base* previous;  // null when refused
    op_base* first;
    pushed outcome;
  };

  /// Any thread. Appends the chain `first`..`last`, linked by `next`.
  pushed push(op_base* first, op_base* last, on_flag mode) noexcept {
    const swung s = swing(first, last, mode);
    link(s);
    return s.outcome;
  }

  /// Any thread: the first step of a push. Until `link`, the consumer sees the queue end at
  /// the node before this chain: nothing from it on can be taken yet.
  swung swing(op_base* first, op_base* last, on_flag mode) noexcept {
    next_of(last).store(nullptr, std::memory_order_relaxed);
    std::uintptr_t old = tail_.load(std::memory_order_relaxed);
    std::uintptr_t desired = 0;
    do {
      if ((old & flag) != 0 && mode == on_flag::refuse) return {nullptr, first, pushed::refused};
      desired = word(last) | (mode == on_flag::keep ? old & flag : 0);
    } while (!tail_.compare_exchange_weak(old, desired, std::memory_order_seq_cst,
                                          std::memory_order_relaxed));
    const bool cleared = (old & flag) != 0 && mode == on_flag::clear;
    return {node(old), first, cleared ? pushed::cleared_flag : pushed::queued};
  }

  /// The second step: makes the chain visible to the consumer. The pusher's last touch of
  /// the queue, which the consumer may tear down once it has taken the chain.
  static void link(const swung& s) noexcept {
    if (s.previous != nullptr) next_of(s.previous).store(s.first, std::memory_order_release);
  }

  /// Any thread.
  void set_flag() noexcept { tail_.fetch_or(flag, std::memory_order_seq_cst); }
  bool flagged() const noexcept { return (tail_.load(std::memory_order_seq_cst) & flag) != 0; }

  /// Nothing is queued. Exact for the consumer; a hint for any other thread.
  bool empty() const noexcept {
    return node(tail_.load(std::memory_order_seq_cst)) == &stub_ &&
           head_.load(std::memory_order_relaxed) == &stub_ &&
           next_of(&stub_).load(std::memory_order_acquire) == nullptr;
  }

  /// Consumer only. The oldest node, or null: the queue is empty, or a producer has swung the
  /// tail but not yet linked its node (then `empty()` is false).
  op_base* pop() noexcept {
    op_base* head = head_.load(std::memory_order_relaxed);
    op_base* next = next_of(head).load(std::memory_order_acquire);
    if (head == &stub_) {
      if (next == nullptr) return nullptr;
      head = next;
      head_.store(head, std::memory_order_relaxed);
      next = next_of(head).load(std::memory_order_acquire);
    }
    if (next == nullptr) {
      if (head != node(tail_.load(std::memory_order_seq_cst))) return nullptr;
      // `head` is the last node: queue the stub behind it so it can leave.
      push(&stub_, &stub_, on_flag::keep);
      next = next_of(head).load(std::memory_order_acquire);
      if (next == nullptr) return nullptr;
    }
    head_.store(next, std::memory_order_relaxed);
    prefetch_for_write(next);  // the next pop's node: its miss overlaps this node's work
    return head;
  }

  /// Consumer only: sets the flag if the queue is empty; false when a push came first.
  bool flag_if_empty() noexcept {
    if (head_.load(std::memory_order_relaxed) != &stub_ ||
        next_of(&stub_).load(std::memory_order_acquire) != nullptr) {
      return false;
    }
    std::uintptr_t expected = word(&stub_);
    return tail_.compare_exchange_strong(expected, word(&stub_) | flag, std::memory_order_seq_cst);
  }

  /// Consumer only: everything queued, oldest first, linked by `next`. Waits out a producer
  /// between its two steps (a few instructions, unless it was preempted there).
  op_base* take_all() noexcept {
    op_base* all = nullptr;
    op_base** tail = &all;
    for (;;) {
      op_base* op = pop();
      if (op == nullptr) {
        if (empty()) break;
        std::this_thread::yield();
        continue;
      }
      *tail = op;
      tail = &op->next;
    }
    *tail = nullptr;
    return all;
  }

  /// Consumer only: how many nodes are queued and linked, counting no further than `limit`.
  std::size_t size(std::size_t limit = static_cast<std::size_t>(-1)) const noexcept {
    std::size_t n = 0;
    for (op_base* op = head_.load(std::memory_order_relaxed); op != nullptr && n < limit;
         op = next_of(op).load(std::memory_order_acquire)) {
      if (op != &stub_) ++n;
    }
    return n;
  }

 private:
  static std::atomic_ref<op_base*> next_of(const op_base* op) noexcept {
    return std::atomic_ref<op_base*>(const_cast<op_base*>(op)->next);
  }
  static std::uintptr_t word(const op_base* op) noexcept {
    return reinterpret_cast<std::uintptr_t>(op);
  }
  static op_base* node(std::uintptr_t w) noexcept { return reinterpret_cast<op_base*>(w & ~flag); }
  static void prefetch_for_write(const op_base* op) noexcept {
#if defined(__GNUC__)
    __builtin_prefetch(op, 1);
#else
    (void)op;
#endif
  }

  // Producers write the tail per push; the consumer's side lives on other lines.
  alignas(cache_line) std::atomic<std::uintptr_t> tail_;
  alignas(cache_line) std::atomic<op_base*> head_{&stub_};  // the consumer writes it
  op_base stub_;  // stands in for the last node, so the last real one can be taken
};

}  // namespace offload::detail
