// offload: wait_for / wait_until — an awaitable's result, or `timeout` once a duration has
// passed or a deadline is reached.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/call.hpp>
#include <offload/config.hpp>
#include <offload/detail/child_group.hpp>
#include <offload/detail/deadline.hpp>
#include <offload/errors.hpp>
#include <offload/outcome.hpp>

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

namespace offload {

namespace detail {

template <typename T>
class deadline_group final : public child_group {
 public:
  deadline_group() : child_group(1, wake_on::all_finished, on_failure::let_run) {}

  /// The timer fired: if the operation is still running it is cancelled and the outcome is
  /// the timeout (even if it then finishes anyway).
  void deadline_passed() {
    if (all_finished()) return;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      timed_out_ = true;
    }
    cancel_children();
  }
  bool timed_out() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return timed_out_;
  }

  outcome<T> result;

 private:
  mutable std::mutex mutex_;
  bool timed_out_ = false;
};

}  // namespace detail

namespace detail {

/// When an awaitable must be done: at a time point, or a duration after it is awaited.
struct deadline_spec {
  std::optional<std::chrono::steady_clock::time_point> at{};
  std::chrono::steady_clock::duration after{};
};

/// How each entry point that waits against a deadline names itself in its errors.
struct deadline_messages {
  const char* timed_out;
  const char* cancelled;
  const char* not_started;  // a duration that is not positive
};

/// aw's result, or errc::timeout once the deadline passes; the clock is read when awaited.
/// A call<T> is started directly, anything else in a coroutine.
template <typename T, typename A>
awaitable<T> await_with_deadline(A aw, deadline_spec deadline, const deadline_messages& says) {
  if (!deadline.at && deadline.after <= std::chrono::steady_clock::duration::zero()) {
    std::rethrow_exception(make_timed_out(says.not_started, cancellation_outcome::never_started));
  }
  const auto when = deadline.at ? *deadline.at : deadline_after(deadline.after);
  auto ex = co_await net::this_coro::executor;
  auto group = std::make_shared<deadline_group<T>>();
  // aw runs under the deadline: the calls it makes can read it (from_thread::deadline).
  const open_deadline_scope scope(ex, when);
  start_child<T>(group, scope.executor(), 0, &group->result, std::move(aw));
  group->all_started();

  net::steady_timer timer(ex, when);
  timer.async_wait([group](const net_error_code& ec) {
    if (!ec) group->deadline_passed();
  });
  auto running = [](deadline_group<T>& g) { return !g.all_finished(); };
  group = co_await park_while(std::move(group), running);
  timer.cancel();

  if (group->parent_cancelled()) std::rethrow_exception(make_cancelled(says.cancelled));
  if (group->timed_out()) {
    // What aw did: an offloaded call's cancellation says; one that finished anyway ran to its
    // end.
    const auto outcome = group->result.has_error() ? outcome_of_cancellation(group->result.error())
                                                   : cancellation_outcome::ran_to_end;
    std::rethrow_exception(make_timed_out(says.timed_out, outcome));
  }
  co_return std::move(group->result).value();
}

/// d in steady_clock ticks: a positive d too small for the clock still waits one tick rather
/// than none; zero for a d that is not positive.
template <typename Rep, typename Period>
std::chrono::steady_clock::duration positive_ticks(std::chrono::duration<Rep, Period> d) {
  return d > std::chrono::duration<Rep, Period>::zero()
             ? std::chrono::ceil<std::chrono::steady_clock::duration>(d)
             : std::chrono::steady_clock::duration::zero();
}

inline constexpr deadline_messages wait_for_messages{
    "offload::wait_for (the operation was cancelled)",
    "offload::wait_for: the awaiter was cancelled",
    "offload::wait_for (the duration is not positive: not started)"};
inline constexpr deadline_messages wait_until_messages{
    "offload::wait_until (the operation was cancelled)",
    "offload::wait_until: the awaiter was cancelled", ""};

}  // namespace detail

/// `co_await wait_until(aw, when)`: aw's result, or an `errc::timeout` error once the steady
/// clock reaches `when`. On the deadline `aw` is cancelled through its cancellation slot and
/// awaited (an offloaded call follows its cancel_policy: `wait` returns once f has, `abandon` at
/// once). A cancellation of the awaiter itself, even one racing the deadline, is reported as
/// cancellation (operation_aborted), never as timeout. `aw` runs on the awaiting coroutine's
/// executor; a deadline already past still starts it, and cancels it at once.
/// The deadline travels with `aw`'s executor: each offloaded call `aw` makes while the wait
/// lasts, in itself, in the coroutines it awaits and in those it starts on
/// `co_await this_coro::executor` (gather's children), is under it, and reads it with
/// from_thread::deadline(); of nested deadlines (a wait_for inside, a call's own) the earliest
/// holds. Not under it: tasks of the loop (create_task), as asyncio's timeout does not reach
/// them; coroutines started on another executor (a new strand); calls made once the wait is
/// over by a coroutine `aw` left running. Inside `aw`, `this_coro::executor` is an executor
/// that wraps the awaiting coroutine's and runs everything there: it does not compare equal to
/// it, and its `target<T>()` is not the strand (Asio 1.22's does not check the type: do not ask).
template <typename T>
awaitable<T> wait_until(awaitable<T> aw, std::chrono::steady_clock::time_point when) {
  return detail::await_with_deadline<T>(std::move(aw), {.at = when}, detail::wait_until_messages);
}
/// wait_until for an offloaded call: started directly, without a coroutine around it.
template <typename T>
awaitable<T> wait_until(call<T> c, std::chrono::steady_clock::time_point when) {
  return detail::await_with_deadline<T>(std::move(c), {.at = when}, detail::wait_until_messages);
}

/// `co_await wait_for(aw, d)`: wait_until(aw, now + d), the clock read when it is awaited.
/// `d <= 0`: timeout at once, `aw` is never started.
template <typename T, typename Rep, typename Period>
awaitable<T> wait_for(awaitable<T> aw, std::chrono::duration<Rep, Period> d) {
  return detail::await_with_deadline<T>(std::move(aw), {.after = detail::positive_ticks(d)},
                                        detail::wait_for_messages);
}
/// wait_for for an offloaded call: started directly, without a coroutine around it.
template <typename T, typename Rep, typename Period>
awaitable<T> wait_for(call<T> c, std::chrono::duration<Rep, Period> d) {
  return detail::await_with_deadline<T>(std::move(c), {.after = detail::positive_ticks(d)},
                                        detail::wait_for_messages);
}

}  // namespace offload
