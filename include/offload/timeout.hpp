// offload: wait_for — an awaitable's result, or `timeout` once a duration has passed.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/config.hpp>
#include <offload/detail/child_group.hpp>
#include <offload/errors.hpp>
#include <offload/outcome.hpp>

#include <chrono>
#include <memory>
#include <mutex>
#include <utility>

namespace offload {

namespace detail {

template <typename T>
class deadline_group final : public child_group {
 public:
  deadline_group() : child_group(1) {}

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

/// `co_await wait_for(aw, d)`: aw's result, or an `errc::timeout` error once `d` has passed.
/// On the deadline `aw` is cancelled through its cancellation slot and awaited (an offloaded
/// call follows its cancel_policy: `wait` returns once f has, `abandon` at once). A
/// cancellation of the awaiter itself, even one racing the deadline, is reported as
/// cancellation (operation_aborted), never as timeout. `d <= 0`: timeout at once, `aw` is
/// never started. `aw` runs on the awaiting coroutine's executor.
template <typename T, typename Rep, typename Period>
awaitable<T> wait_for(awaitable<T> aw, std::chrono::duration<Rep, Period> d) {
  if (d <= std::chrono::duration<Rep, Period>::zero()) {
    throw_error(errc::timeout, "offload::wait_for (the duration is not positive: not started)");
  }
  auto ex = co_await net::this_coro::executor;
  auto group = std::make_shared<detail::deadline_group<T>>();
  group->spawn(ex, 0, detail::run_child<T>(group, &group->result, 0, std::move(aw)));

  net::steady_timer timer(ex, std::chrono::ceil<std::chrono::steady_clock::duration>(d));
  timer.async_wait([group](const net_error_code& ec) {
    if (!ec) group->deadline_passed();
  });
  auto running = [](detail::deadline_group<T>& g) { return !g.all_finished(); };
  group = co_await detail::park_while(std::move(group), running);
  timer.cancel();

  if (group->parent_cancelled()) {
    std::rethrow_exception(make_cancelled("offload::wait_for: the awaiter was cancelled"));
  }
  if (group->timed_out()) {
    throw_error(errc::timeout, "offload::wait_for (the operation was cancelled)");
  }
  co_return std::move(group->result).value();
}

}  // namespace offload
