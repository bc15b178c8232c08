// offload: capacity_limiter — caps how many offloaded calls that share it run at once
// (Trio's CapacityLimiter).
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/call_options.hpp>
#include <offload/call_stats.hpp>
#include <offload/detail/histogram.hpp>
#include <offload/detail/op.hpp>
#include <offload/errors.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>

namespace offload {

namespace detail {

/// The limiter's tokens and queue, shared with the calls holding or awaiting a token, so a
/// call that ends after its limiter is gone still finds them.
class limiter_state {
 public:
  explicit limiter_state(std::size_t total) : total_(total) {}

  bool try_acquire() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (head_ != nullptr || borrowed_ >= total_ || closed_) return false;
    ++borrowed_;
    waited_.add_owned(0, epoch_of(steady_now_ns()));
    return true;
  }

  /// True: the token is taken. False: `op` is queued and will be submitted (action::submit)
  /// when a token is granted to it, or failed if the limiter goes first.
  bool acquire_or_enqueue(op_base* op) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!closed_) {
        const std::int64_t now = steady_now_ns();
        if (head_ == nullptr && borrowed_ < total_) {
          ++borrowed_;
          waited_.add_owned(0, epoch_of(now));
          return true;
        }
        op->stamp_ns.store(now, std::memory_order_relaxed);  // no pool has the call yet
        op->next = nullptr;
        (tail_ != nullptr ? tail_->next : head_) = op;
        tail_ = op;
        ++waiting_;
        return false;
      }
    }
    throw_error(errc::executor_shutdown, "offload: the call's capacity_limiter was destroyed");
  }

  /// Gives back a token taken at `taken_ns` (steady_now_ns).
  void release(std::int64_t taken_ns) noexcept {
    const std::int64_t now = steady_now_ns();
    std::unique_lock<std::mutex> lock(mutex_);
    --borrowed_;
    held_.add_owned(elapsed_ns(taken_ns, now), epoch_of(now));
    grant_locked(lock);
  }

  void set_total(std::size_t total) {
    std::unique_lock<std::mutex> lock(mutex_);
    total_ = total;
    grant_locked(lock);
  }

  /// The limiter is gone: calls still waiting fail; tokens in use are still given back here.
  void close() noexcept {
    op_base* chain = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      closed_ = true;
      chain = head_;
      head_ = tail_ = nullptr;
      waiting_ = 0;
    }
    while (chain != nullptr) {
      op_base* next = chain->next;
      chain->next = nullptr;
      if (chain->state.load(std::memory_order_acquire) == op_state::pending) {
        chain->fail(std::make_exception_ptr(make_error(
            errc::executor_shutdown,
            "offload: the capacity_limiter was destroyed while the call waited for a token "
            "(keep it alive until the calls made with it are done)")));
      } else {
        chain->run();  // cancelled while it waited: reclaims the node
      }
      chain = next;
    }
  }

  std::size_t total() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return total_;
  }
  std::size_t borrowed() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return borrowed_;
  }
  /// {total, borrowed, waiting}, read together.
  std::array<std::size_t, 3> snapshot() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return {total_, borrowed_, waiting_};
  }

  /// How long calls waited for a token and held it: {waited, held, recent waited, recent held}.
  std::array<latency_summary, 4> timings() const {
    auto r = std::make_unique<std::array<histogram_snapshot, 4>>();  // a few tens of KB
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const std::int64_t epoch = epoch_of(steady_now_ns());
      waited_.read((*r)[0], (*r)[2], epoch);
      held_.read((*r)[1], (*r)[3], epoch);
    }
    return {(*r)[0].summary(), (*r)[1].summary(), (*r)[2].summary(), (*r)[3].summary()};
  }

 private:
  // One thread grants at a time; a release that happens meanwhile (a granted call failing at
  // once, say) only frees its token, and the granting loop hands it on: no recursion.
  void grant_locked(std::unique_lock<std::mutex>& lock) noexcept {
    if (granting_) return;
    granting_ = true;
    while (head_ != nullptr && borrowed_ < total_) {
      op_base* op = head_;
      head_ = op->next;
      if (head_ == nullptr) tail_ = nullptr;
      op->next = nullptr;
      --waiting_;
      const bool live = op->state.load(std::memory_order_acquire) == op_state::pending;
      if (live) {
        ++borrowed_;
        const std::int64_t now = steady_now_ns();
        waited_.add_owned(elapsed_ns(op->stamp_ns.load(std::memory_order_relaxed), now),
                          epoch_of(now));
      }
      lock.unlock();
      if (live) {
        op->submit();  // with the token; a call cancelled from now on gives it back
      } else {
        op->run();  // cancelled while it waited: reclaims the node
      }
      lock.lock();
    }
    granting_ = false;
  }

  // The recent figures cover the last one to two of these.
  static constexpr std::int64_t window_ns = 30'000'000'000;
  static std::int64_t epoch_of(std::int64_t now) noexcept { return now / window_ns; }

  mutable std::mutex mutex_;
  // Written under mutex_ (one writer at a time).
  windowed_histogram waited_;
  windowed_histogram held_;
  std::size_t total_;
  std::size_t borrowed_ = 0;
  std::size_t waiting_ = 0;
  bool granting_ = false;
  bool closed_ = false;
  op_base* head_ = nullptr;
  op_base* tail_ = nullptr;
};

struct limiter_access;  // capacity_limiter's state, for offload's call paths
}  // namespace detail

/// A call made with `{.limiter = &lim}` waits for one of `lim`'s tokens without blocking any
/// thread (it is queued, FIFO, and submitted by the thread that frees a token), takes it
/// before f starts and gives it back only when f has really returned — also when its awaiter
/// abandoned it. A call cancelled while it waits never runs and takes no token. Keep the
/// limiter alive while calls use it; if it goes first, calls still waiting fail with
/// executor_shutdown (running ones finish normally).
class capacity_limiter {
 public:
  struct stats_type {
    std::size_t total_tokens;
    std::size_t borrowed_tokens;
    std::size_t waiting;  // queued calls, including cancelled ones not yet reclaimed
    /// How long calls waited for a token (0 for one taken at once) and held it (from taking
    /// it until f returned, queueing in the pool included), over the limiter's life and over
    /// the last 30 to 60 seconds.
    latency_summary waited{};
    latency_summary held{};
    latency_summary recent_waited{};
    latency_summary recent_held{};
  };

  explicit capacity_limiter(std::size_t total_tokens)
      : state_(std::make_shared<detail::limiter_state>(checked(total_tokens))) {}
  capacity_limiter(const capacity_limiter&) = delete;
  capacity_limiter& operator=(const capacity_limiter&) = delete;
  ~capacity_limiter() { state_->close(); }

  std::size_t total_tokens() const { return state_->total(); }
  /// Growing the total starts waiting calls at once; shrinking it lets running calls finish.
  void set_total_tokens(std::size_t total_tokens) { state_->set_total(checked(total_tokens)); }
  std::size_t borrowed_tokens() const { return state_->borrowed(); }
  std::size_t available_tokens() const {
    const auto [total, borrowed, waiting] = state_->snapshot();
    return borrowed < total ? total - borrowed : 0;
  }
  /// One consistent snapshot. While a released token is being handed to a waiting call,
  /// `borrowed_tokens` can briefly read below `total_tokens` with calls still waiting.
  stats_type stats() const {
    const auto [total, borrowed, waiting] = state_->snapshot();
    const auto [waited, held, recent_waited, recent_held] = state_->timings();
    return {total, borrowed, waiting, waited, held, recent_waited, recent_held};
  }

 private:
  friend struct detail::limiter_access;

  static std::size_t checked(std::size_t total_tokens) {
    if (total_tokens == 0) {
      throw std::invalid_argument("offload::capacity_limiter: total_tokens must be at least 1");
    }
    return total_tokens;
  }

  std::shared_ptr<detail::limiter_state> state_;
};

namespace detail {
struct limiter_access {
  static std::shared_ptr<limiter_state> state(capacity_limiter& l) { return l.state_; }
};
}  // namespace detail

}  // namespace offload
