// offload: future<T>, asyncio's Future — a one-shot result bound to a loop, set from anywhere
// (typically a C library's callback thread) and awaited by any number of coroutines.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/config.hpp>
#include <offload/detail/awaitable_initiation.hpp>
#include <offload/detail/loop_shared.hpp>
#include <offload/detail/result.hpp>
#include <offload/detail/shared_handle.hpp>
#include <offload/errors.hpp>

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

namespace offload {

template <typename T>
class future;

namespace detail {

struct loop_shared;
template <typename T>
future<T> make_loop_future(const std::shared_ptr<loop_shared>& loop);

/// One suspended `co_await fut.get()`: resumed once, on its own executor.
struct future_waiter {
  explicit future_waiter(std::uint64_t i) : id(i) {}
  virtual ~future_waiter() = default;
  virtual void resume(std::exception_ptr error) = 0;
  std::uint64_t id;
};

template <typename Handler>
struct future_waiter_for final : future_waiter {
  future_waiter_for(std::uint64_t i, Handler h) : future_waiter(i), handler(std::move(h)) {}
  void resume(std::exception_ptr error) override {
    auto ex = net::get_associated_executor(handler);
    net::post(ex, [h = std::move(handler), error]() mutable { std::move(h)(error); });
  }
  Handler handler;
};

/// What the copies of a future share. Every member is guarded by `mutex`: the setters, the
/// awaiters and the loop's close may be on different threads.
template <typename T>
struct loop_future_state {
  using callback = std::function<void(future<T>)>;

  explicit loop_future_state(std::shared_ptr<loop_shared> l) : loop(std::move(l)) {}

  std::shared_ptr<loop_shared> loop;
  std::uint64_t pending_id = 0;  // its entry in the loop's list of what close() must fail
  std::mutex mutex;
  bool done = false;
  bool cancelled = false;
  int handles = 0;    // copies of future<T>; none left while pending breaks the promise
  result<T> outcome;  // empty until done
  std::uint64_t next_waiter = 0;
  std::vector<std::unique_ptr<future_waiter>> waiters;
  std::vector<callback> callbacks;

  enum class callbacks_run { on_loop, here };

  /// The first completion wins; false if the future was already done.
  template <typename Set>
  bool finish(Set&& set, callbacks_run where = callbacks_run::on_loop) {
    std::vector<std::unique_ptr<future_waiter>> to_resume;
    std::vector<callback> to_call;
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (done) return false;
      set();
      done = true;
      to_resume.swap(waiters);
      to_call.swap(callbacks);
    }
    loop->remove_pending(pending_id);
    for (auto& w : to_resume) w->resume(nullptr);
    for (auto& cb : to_call) schedule(std::move(cb), where);
    return true;
  }

  bool fail(errc code, const char* why, callbacks_run where = callbacks_run::on_loop) {
    return finish([&] { outcome.set_error(std::make_exception_ptr(make_error(code, why))); },
                  where);
  }

  /// asyncio runs done-callbacks with call_soon: on the loop, never inside the setter. A
  /// closed loop runs nothing, so there (and when the loop is closing) they run here.
  void schedule(callback cb, callbacks_run where) {
    auto self_state = shared_from_state();
    auto run = [cb = std::move(cb), self_state]() mutable {
      try {
        cb(future<T>(self_state));
      } catch (...) {
        self_state->loop->report(
            {"an exception escaped a future's done-callback", std::current_exception()});
      }
    };
    if (where == callbacks_run::here || !loop->post_to_loop(std::move(run))) run();
  }

  /// The value for a reader: copied when T is copyable (every awaiter gets it), else moved out
  /// once. Rethrows the future's exception.
  T take() {
    std::lock_guard<std::mutex> lock(mutex);
    if (!done) {
      throw_error(errc::invalid_state, "offload::future::result: the future is not done yet");
    }
    return outcome.take("offload::future::result");
  }

  /// The last copy of the future went away (shared_handle): nobody can complete it any more,
  /// so a pending one answers its awaiters now. Callbacks run here, since this may be the
  /// loop's close destroying the last copy.
  void last_handle_released(std::unique_lock<std::mutex>& lock) noexcept {
    if (done) return;
    lock.unlock();
    fail(errc::broken_promise, "offload::future: every copy was destroyed before a result was set",
         callbacks_run::here);
  }

  std::weak_ptr<loop_future_state> weak_self;
  std::shared_ptr<loop_future_state> shared_from_state() { return weak_self.lock(); }
};

/// Detaches one awaiter when its coroutine is cancelled; the future itself stays pending
/// (several coroutines may await it, and one giving up says nothing about the others).
template <typename T>
struct future_waiter_canceller {
  std::weak_ptr<loop_future_state<T>> state;
  std::uint64_t id;
  void operator()(net::cancellation_type) const {
    auto st = state.lock();
    if (!st) return;
    std::unique_ptr<future_waiter> detached;
    {
      std::lock_guard<std::mutex> lock(st->mutex);
      for (auto it = st->waiters.begin(); it != st->waiters.end(); ++it) {
        if ((*it)->id == id) {
          detached = std::move(*it);
          st->waiters.erase(it);
          break;
        }
      }
    }
    if (detached)
      detached->resume(make_cancelled("offload::future::get: the awaiter was cancelled"));
  }
};

template <typename T>
struct future_get_initiation {
  std::shared_ptr<loop_future_state<T>> state;
  template <typename Handler>
  void operator()(Handler&& handler) const {
    using waiter_type = future_waiter_for<std::decay_t<Handler>>;
    auto slot = net::get_associated_cancellation_slot(handler);
    std::unique_lock<std::mutex> lock(state->mutex);
    if (state->done) {
      lock.unlock();
      waiter_type(0, std::forward<Handler>(handler)).resume(nullptr);
      return;
    }
    const std::uint64_t id = ++state->next_waiter;
    state->waiters.push_back(std::make_unique<waiter_type>(id, std::forward<Handler>(handler)));
    if (slot.is_connected()) {
      slot.template emplace<future_waiter_canceller<T>>(
          future_waiter_canceller<T>{std::weak_ptr<loop_future_state<T>>(state), id});
    }
  }
};

}  // namespace detail

/// asyncio.Future: a result that something outside the loop will provide. Create it with
/// `loop.create_future<T>()`, hand a copy to whatever completes it, `co_await fut.get()` it.
/// Copies share the state; every member is safe to call from any thread. When the last copy
/// goes away while the future is pending, its awaiters get broken_promise; when its loop
/// closes first, loop_closed: an awaiter never hangs.
template <typename T>
class future : private detail::shared_handle<detail::loop_future_state<T>> {
  using handle = detail::shared_handle<detail::loop_future_state<T>>;
  using handle::state_;

 public:
  using value_type = T;

  future() = default;

  using handle::done;
  using handle::valid;

  bool cancelled() const {
    std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->cancelled;
  }

  // clang-format 14 breaks these requires-clauses apart.
  // clang-format off
  /// Completes the future; a second completion throws invalid_state (asyncio's
  /// InvalidStateError). From any thread.
  template <typename U = T>
  requires(!std::is_void_v<U>) void set_result(U&& value) {
    if (!try_set_result(std::forward<U>(value))) already_done("offload::future::set_result");
  }
  void set_result()
  requires std::is_void_v<T>
  {
    if (!try_set_result()) already_done("offload::future::set_result");
  }
  // clang-format on
  void set_exception(std::exception_ptr error) {
    if (!try_set_exception(std::move(error))) already_done("offload::future::set_exception");
  }

  // clang-format off
  /// As set_result / set_exception, but false instead of throwing when the future is already
  /// done (cancelled, or failed because its loop closed): for a C callback that may fire late.
  template <typename U = T>
  requires(!std::is_void_v<U>) bool try_set_result(U&& value) {
    return state_->finish([&] { state_->outcome.set_value(std::forward<U>(value)); });
  }
  bool try_set_result()
  requires std::is_void_v<T>
  {
    return state_->finish([&] { state_->outcome.set_value(); });
  }
  // clang-format on
  bool try_set_exception(std::exception_ptr error) {
    if (!error) throw std::invalid_argument("offload::future::set_exception: null exception_ptr");
    return state_->finish([&] { state_->outcome.set_error(std::move(error)); });
  }

  /// Cancels the future: awaiters see operation_aborted. False if it was already done.
  bool cancel() {
    return state_->finish([&] {
      state_->cancelled = true;
      state_->outcome.set_error(make_cancelled("offload::future: cancelled"));
    });
  }

  /// The result, without waiting: invalid_state while pending; rethrows the exception the
  /// future finished with (operation_aborted if cancelled).
  T result() { return state_->take(); }

  /// The exception the future finished with (operation_aborted if cancelled), or null;
  /// invalid_state while pending.
  std::exception_ptr exception() const {
    std::lock_guard<std::mutex> lock(state_->mutex);
    if (!state_->done) {
      throw_error(errc::invalid_state, "offload::future::exception: the future is not done yet");
    }
    return state_->outcome.error();
  }

  /// `cb(future)` runs once the future is done, scheduled on its loop (never inside the call
  /// that completes it). An exception from `cb` goes to the loop's exception handler.
  void add_done_callback(std::function<void(future<T>)> cb) {
    {
      std::lock_guard<std::mutex> lock(state_->mutex);
      if (!state_->done) {
        state_->callbacks.push_back(std::move(cb));
        return;
      }
    }
    state_->schedule(std::move(cb), detail::loop_future_state<T>::callbacks_run::on_loop);
  }

  /// `T value = co_await fut.get();` resumes on the awaiting coroutine's executor once the
  /// future is done. Any number of coroutines may await it; a copyable result is copied to
  /// each, a move-only one can be taken once. Cancelling the awaiting coroutine detaches it
  /// (operation_aborted) and leaves the future pending.
  awaitable<T> get() const { return get_from(state_); }

 private:
  template <typename>
  friend struct detail::loop_future_state;
  template <typename U>
  friend future<U> detail::make_loop_future(const std::shared_ptr<detail::loop_shared>& loop);

  explicit future(std::shared_ptr<detail::loop_future_state<T>> s) : handle(std::move(s)) {}

  static awaitable<T> get_from(std::shared_ptr<detail::loop_future_state<T>> state) {
    // Named, not a temporary in the co_await: GCC 12 destroys such temporaries twice.
    detail::future_get_initiation<T> initiation{state};
    co_await detail::async_initiate_awaitable<void(std::exception_ptr)>(std::move(initiation));
    if constexpr (std::is_void_v<T>) {
      state->take();
    } else {
      co_return state->take();
    }
  }

  [[noreturn]] static void already_done(const char* where) {
    throw_error(errc::invalid_state, where);
  }
};

namespace detail {

/// What event_loop::create_future does, given the loop's shared part.
template <typename T>
future<T> make_loop_future(const std::shared_ptr<loop_shared>& loop) {
  auto state = std::make_shared<loop_future_state<T>>(loop);
  state->weak_self = state;
  std::weak_ptr<loop_future_state<T>> weak = state;
  state->pending_id = loop->add_pending([weak] {
    if (auto s = weak.lock()) {
      s->fail(errc::loop_closed, "offload::future: the loop closed before a result was set",
              loop_future_state<T>::callbacks_run::here);
    }
  });
  return future<T>(std::move(state));
}

}  // namespace detail

}  // namespace offload
