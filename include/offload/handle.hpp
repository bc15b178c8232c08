// offload: handle, what call_soon / call_later / call_at / call_soon_threadsafe return,
// and the callback states it cancels.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/config.hpp>
#include <offload/detail/loop_shared.hpp>
#include <offload/detail/op.hpp>

#include <atomic>
#include <exception>
#include <memory>
#include <utility>

namespace offload {

namespace detail {

enum class callback_status : int { pending, started, cancelled };

struct callback_state_base {
  std::atomic<callback_status> status{callback_status::pending};
  virtual ~callback_state_base() = default;
  virtual void on_cancel(const std::shared_ptr<callback_state_base>&) {}
};

template <typename F>
struct callback_state final : callback_state_base {
  explicit callback_state(F f) : fn(std::move(f)) {}
  F fn;
};

template <typename F>
struct timer_callback_state final : callback_state_base {
  timer_callback_state(F f, std::shared_ptr<loop_shared> s)
      : fn(std::move(f)), shared(std::move(s)) {}
  void on_cancel(const std::shared_ptr<callback_state_base>&) override {
    // The timer belongs to the loop (and is owned by its wait): cancel it there, so the wait
    // ends now rather than at expiry.
    shared->post_to_loop([t = timer]() {
      if (auto live = t.lock()) live->cancel();
    });
  }
  F fn;
  std::shared_ptr<loop_shared> shared;
  std::weak_ptr<net::steady_timer> timer;
};

template <typename State, typename F>
void run_callback(loop_shared& shared, State& state, F& fn) {
  auto expected = callback_status::pending;
  if (!state.status.compare_exchange_strong(expected, callback_status::started,
                                            std::memory_order_acq_rel)) {
    return;  // cancelled
  }
  try {
    fn();
  } catch (...) {
    shared.report({"an exception escaped a callback", std::current_exception()});
  }
}

/// A call_soon_threadsafe callback: its own node in the loop's thread-safe queue, and the
/// state its handle cancels. It keeps itself alive until the queue is done with it.
template <typename F>
struct threadsafe_callback final : op_base, callback_state_base {
  threadsafe_callback(F f, std::shared_ptr<loop_shared> s)
      : fn(std::move(f)), shared(std::move(s)) {
    op_base::fn = &threadsafe_callback::act;
  }
  static bool act(op_base* base, action a, std::exception_ptr*) {
    auto* self = static_cast<threadsafe_callback*>(base);
    std::shared_ptr<threadsafe_callback> keep = std::move(self->self);
    if (a == action::complete) run_callback(*self->shared, *self, self->fn);
    return true;
  }
  F fn;
  std::shared_ptr<loop_shared> shared;
  std::shared_ptr<threadsafe_callback> self;
};

}  // namespace detail

/// Returned by call_soon / call_later / call_at (and call_soon_threadsafe): `cancel()`
/// returning true means the callback never runs. Thread-safe.
class handle {
 public:
  handle() = default;
  bool cancel() noexcept {
    if (!state_) return false;
    auto expected = detail::callback_status::pending;
    if (!state_->status.compare_exchange_strong(expected, detail::callback_status::cancelled,
                                                std::memory_order_acq_rel)) {
      return false;
    }
    try {
      state_->on_cancel(state_);
    } catch (...) {
      // The callback is already disarmed; failing to end its timer early only delays freeing.
    }
    return true;
  }
  bool cancelled() const noexcept {
    return state_ &&
           state_->status.load(std::memory_order_acquire) == detail::callback_status::cancelled;
  }

 private:
  friend class event_loop;
  explicit handle(std::shared_ptr<detail::callback_state_base> s) : state_(std::move(s)) {}
  std::shared_ptr<detail::callback_state_base> state_;
};

}  // namespace offload
