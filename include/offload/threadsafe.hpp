// offload: entering a loop from other threads — run_coroutine_threadsafe, and from_thread for
// code running inside a to_thread call. (call_soon_threadsafe is a member of event_loop.)
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/concurrent_future.hpp>
#include <offload/config.hpp>
#include <offload/detail/thread_context.hpp>
#include <offload/errors.hpp>
#include <offload/event_loop.hpp>

#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

namespace offload {

namespace detail {

template <typename T>
struct coroutine_future_state final : future_state<T> {
  net::cancellation_signal signal;  // emitted on the loop's strand only
};

// Completes the future when the coroutine finishes; if Asio destroys it unrun (its io_context
// went away), the future completes with loop_closed instead of waiting forever.
template <typename T>
struct coroutine_done {
  std::shared_ptr<coroutine_future_state<T>> state;
  std::shared_ptr<loop_shared> shared;
  std::uint64_t id = 0;

  coroutine_done(std::shared_ptr<coroutine_future_state<T>> s, std::shared_ptr<loop_shared> l,
                 std::uint64_t i)
      : state(std::move(s)), shared(std::move(l)), id(i) {}
  coroutine_done(coroutine_done&&) noexcept = default;
  coroutine_done& operator=(coroutine_done&&) = delete;
  ~coroutine_done() {
    if (state) {
      state->set_exception(std::make_exception_ptr(
          make_error(errc::loop_closed, "the loop went away before the coroutine finished")));
      shared->remove_pending(id);
    }
  }

  void operator()(std::exception_ptr e) {
    auto s = std::move(state);
    shared->remove_pending(id);
    if (e) {
      bool cancelled = false;
      try {
        std::rethrow_exception(e);
      } catch (const net_system_error& se) {
        cancelled = se.code() == net::error::operation_aborted;
      } catch (...) {
      }
      s->set_exception(std::move(e), cancelled);
    } else if constexpr (std::is_void_v<T>) {
      s->set_value();
    }
  }
};

template <typename T>
awaitable<void> run_into(awaitable<T> coro, std::shared_ptr<coroutine_future_state<T>> state) {
  if constexpr (std::is_void_v<T>) {
    co_await std::move(coro);
  } else {
    T value = co_await std::move(coro);  // named: GCC 12 destroys a co_await temporary twice
    state->set_value(std::move(value));
  }
}

}  // namespace detail

/// Schedules `coro` on `loop` from any thread (on the loop's own thread too, it starts on a
/// later step, as create_task does); the returned future gives its result. Throws loop_closed
/// (and destroys the coroutine) if the loop is closed.
template <typename T>
concurrent_future<T> run_coroutine_threadsafe(awaitable<T> coro, event_loop& loop) {
  auto state = std::make_shared<detail::coroutine_future_state<T>>();
  event_loop* const loop_id = &loop;
  auto shared = loop.shared_;
  state->on_loop_thread = [loop_id, shared] {
    return detail::this_thread().loop == loop_id || shared->in_loop_strand();
  };
  std::weak_ptr<detail::coroutine_future_state<T>> weak = state;
  state->request_cancel = [weak, shared] {
    shared->post_to_loop([weak] {
      if (auto s = weak.lock()) s->signal.emit(net::cancellation_type::all);
    });
  };
  loop.submit_threadsafe("offload::run_coroutine_threadsafe", [&] {
    auto strand = loop.get_executor();  // only once the loop is known to be open
    std::weak_ptr<detail::coroutine_future_state<T>> fail_weak = state;
    const std::uint64_t id = shared->add_pending([fail_weak] {
      if (auto s = fail_weak.lock()) {
        s->set_exception(std::make_exception_ptr(
            make_error(errc::loop_closed, "the loop closed before the coroutine finished")));
      }
    });
    auto slot = state->signal.slot();
    detail::spawn_later(
        strand, detail::run_into(std::move(coro), state),
        net::bind_cancellation_slot(slot, detail::coroutine_done<T>(state, shared, id)));
  });
  return concurrent_future<T>(std::move(state));
}

/// The same, naming the loop by its executor (`loop.get_executor()`).
template <typename T>
concurrent_future<T> run_coroutine_threadsafe(awaitable<T> coro,
                                              const event_loop::executor_type& ex) {
  event_loop* loop = event_loop::find(ex);
  if (loop == nullptr) {
    throw_error(errc::loop_closed,
                "offload::run_coroutine_threadsafe: no open event_loop runs on this executor");
  }
  return run_coroutine_threadsafe(std::move(coro), *loop);
}

namespace detail {
// The loop that started the calling thread's call, or an error saying why there is none.
inline event_loop& from_thread_origin(const char* where) {
  const op_base* op = this_thread().current_op;
  offload_service* home = op != nullptr ? op->home : nullptr;
  event_loop* loop = home != nullptr ? home->attached_loop() : nullptr;
  if (loop == nullptr) {
    // The call's context had a loop, closed since the call was made; or it never had one.
    throw_error(home != nullptr && home->loop_closed() ? errc::loop_closed : errc::no_running_loop,
                where);
  }
  // The call may run on the loop's own thread (offloaded onto the loop's strand): waiting for
  // the loop there would never end.
  if (loop->in_loop_thread()) {
    throw_error(errc::would_deadlock, "offload::from_thread: called on the loop's own thread");
  }
  return *loop;
}
}  // namespace detail

/// Calls back into the loop from inside a to_thread / run_in_executor call (Trio's
/// from_thread): the worker blocks until the loop has done it.
namespace from_thread {

/// Runs `coro` on the loop that started this call and returns its result.
template <typename T>
T run(awaitable<T> coro) {
  event_loop& loop = detail::from_thread_origin(
      "offload::from_thread::run: only inside a call started by to_thread / run_in_executor");
  return run_coroutine_threadsafe(std::move(coro), loop).result();
}

/// Runs `f()` on the loop that started this call and returns its result.
template <typename F>
auto run_sync(F&& f) -> std::invoke_result_t<std::decay_t<F>&> {
  using R = std::invoke_result_t<std::decay_t<F>&>;
  event_loop& loop = detail::from_thread_origin(
      "offload::from_thread::run_sync: only inside a call started by to_thread / "
      "run_in_executor");
  auto state = std::make_shared<detail::future_state<R>>();
  auto fn = std::make_shared<std::decay_t<F>>(std::forward<F>(f));
  loop.call_soon_threadsafe([state, fn] {
    try {
      if constexpr (std::is_void_v<R>) {
        (*fn)();
        state->set_value();
      } else {
        state->set_value((*fn)());
      }
    } catch (...) {
      state->set_exception(std::current_exception());
    }
  });
  state->wait();
  return state->take();
}

/// The deadline of the call running on this thread, to bound its own blocking I/O (a curl or
/// libpq timeout): the earlier of its own (call_options::deadline or timeout) and that of the
/// wait_for / wait_until its awaiter is under; nullopt when there is none or no offloaded call
/// runs here. At the deadline the call's std::stop_token is signalled too.
inline std::optional<std::chrono::steady_clock::time_point> deadline() noexcept {
  const detail::op_base* op = detail::this_thread().current_op;
  if (op == nullptr || op->deadline == std::chrono::steady_clock::time_point::max()) {
    return std::nullopt;
  }
  return op->deadline;
}

/// Throws operation_aborted if the awaiter of the call running on this thread was cancelled:
/// a long loop in f can poll it, as it would poll a std::stop_token.
inline void check_cancelled() {
  const detail::op_base* op = detail::this_thread().current_op;
  if (op == nullptr) {
    throw_error(errc::no_running_loop,
                "offload::from_thread::check_cancelled: only inside a call started by "
                "to_thread / run_in_executor");
  }
  if (op->cancel_requested.load(std::memory_order_acquire)) {
    throw net_system_error(net::error::operation_aborted,
                           "offload::from_thread::check_cancelled: the awaiter was cancelled");
  }
}

}  // namespace from_thread

}  // namespace offload
