// offload: task<T>, what event_loop::create_task returns: join, cancel, done.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/config.hpp>
#include <offload/detail/awaitable_initiation.hpp>
#include <offload/detail/loop_shared.hpp>
#include <offload/detail/result.hpp>
#include <offload/detail/shared_handle.hpp>
#include <offload/detail/unique_function.hpp>

#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

namespace offload {

class event_loop;

namespace detail {

template <typename T>
struct task_state {
  explicit task_state(std::shared_ptr<loop_shared> l) : loop(std::move(l)) {}

  std::shared_ptr<loop_shared> loop;
  net::cancellation_signal signal;  // used on the loop's strand only
  std::mutex mutex;
  bool done = false;
  bool retrieved = false;
  int handles = 0;
  result<T> outcome;  // set when done
  std::vector<unique_function> waiters;

  /// The last copy of the task went away (shared_handle).
  void last_handle_released(std::unique_lock<std::mutex>& lock) { report_unretrieved_locked(lock); }

  void report_unretrieved_locked(std::unique_lock<std::mutex>& lock) {
    if (!done || !outcome.has_error() || retrieved) return;
    retrieved = true;
    auto e = outcome.error();
    lock.unlock();
    loop->report({"an exception escaped a task nobody awaited", e});
  }
};

/// Starts `body` on `strand` from a later step, never inline: co_spawn onto a strand from
/// inside it would run the body up to its first suspension before returning. Posts keep the
/// strand's FIFO order, so coroutines scheduled one after another start in that order.
template <typename Strand, typename Handler>
void spawn_later(const Strand& strand, awaitable<void> body, Handler handler) {
  net::post(strand, [strand, body = std::move(body), handler = std::move(handler)]() mutable {
    net::co_spawn(strand, std::move(body), std::move(handler));
  });
}

}  // namespace detail

/// A coroutine scheduled by create_task (it starts on a later loop step): `co_await t.join()`
/// for its result, `cancel()` to stop it at its current suspension, `done()` to ask.
template <typename T>
class task : private detail::shared_handle<detail::task_state<T>> {
  using handle = detail::shared_handle<detail::task_state<T>>;
  using handle::state_;

 public:
  task() = default;

  using handle::done;
  using handle::valid;

  /// Asks the coroutine to stop: it sees operation_aborted at its current suspension. True if
  /// it had not finished yet.
  bool cancel() {
    {
      std::lock_guard<std::mutex> lock(state_->mutex);
      if (state_->done) return false;
    }
    return state_->loop->post_to_loop(
        [s = state_]() { s->signal.emit(net::cancellation_type::all); });
  }

  /// The task's result (or its exception), once it finishes. A copyable result can be joined
  /// any number of times; a move-only one once.
  awaitable<T> join() {
    auto state = state_;
    // Named, not a temporary in the co_await: GCC 12 destroys such temporaries twice.
    wait_initiation initiation{state};
    co_await detail::async_initiate_awaitable<void()>(std::move(initiation));
    if constexpr (std::is_void_v<T>) {
      take_result(*state);
    } else {
      co_return take_result(*state);
    }
  }

 private:
  friend class event_loop;

  static T take_result(detail::task_state<T>& state) {
    std::lock_guard<std::mutex> lock(state.mutex);
    state.retrieved = true;
    return state.outcome.take("offload::task::join");
  }

  struct wait_initiation {
    std::shared_ptr<detail::task_state<T>> state;
    template <typename Handler>
    void operator()(Handler&& handler) const {
      auto ex = net::get_associated_executor(handler);
      std::unique_lock<std::mutex> lock(state->mutex);
      if (state->done) {
        lock.unlock();
        net::post(ex, std::forward<Handler>(handler));
        return;
      }
      state->waiters.emplace_back(
          [ex, h = std::forward<Handler>(handler)]() mutable { net::post(ex, std::move(h)); });
    }
  };

  explicit task(std::shared_ptr<detail::task_state<T>> s) : handle(std::move(s)) {}
};

}  // namespace offload
