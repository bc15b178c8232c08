// offload: call<T> — an offloaded call made but not yet started, as to_thread and
// run_in_executor return it.
//
// A call<T> is an awaitable<T>: co_await it, store it as one, hand it to anything that takes
// one. Kept as a call<T> (auto, std::vector<offload::call<T>>), it also lets gather,
// as_completed, wait_for and wait_until start it directly, as an asynchronous operation with
// its result written in place, instead of running a coroutine around it.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/config.hpp>
#include <offload/detail/child_group.hpp>
#include <offload/outcome.hpp>

#include <cstddef>
#include <exception>
#include <memory>
#include <type_traits>
#include <utility>

namespace offload {

namespace detail {

/// Starts a call as a child of a group, without a coroutine. It lives in the frame of the
/// call's awaitable, so it is reachable only while that awaitable is.
template <typename T>
class call_launcher {
 public:
  /// Starts the call once; its outcome, or whatever kept it from starting, goes to
  /// `completion` on `ex`.
  virtual void launch(child_completion<T> completion, const net::any_io_executor& ex) noexcept = 0;

 protected:
  ~call_launcher() = default;
};

struct call_access;

}  // namespace detail

/// An offloaded call not yet started (see the header's comment). Moving it moves the call;
/// converting it to awaitable<T> keeps the call but not the direct start.
template <typename T>
class call : public awaitable<T> {
 public:
  using value_type = T;

  /// An empty call, as a default-constructed awaitable is: not to be awaited.
  call() noexcept = default;
  call(call&& other) noexcept
      : awaitable<T>(std::move(other)), launcher_(std::exchange(other.launcher_, nullptr)) {}
  call& operator=(call&&) = delete;

 private:
  friend struct detail::call_access;

  call(awaitable<T> aw, detail::call_launcher<T>* launcher) noexcept
      : awaitable<T>(std::move(aw)), launcher_(launcher) {}

  detail::call_launcher<T>* launcher_ = nullptr;  // owned by the awaitable's frame
};

namespace detail {

struct call_access {
  template <typename T>
  static call<T> make(awaitable<T> aw, call_launcher<T>* launcher) noexcept {
    return call<T>(std::move(aw), launcher);
  }
  /// The call's launcher, or null once its awaitable has been moved out (converted to a plain
  /// awaitable<T>) or when it cannot be started directly.
  template <typename T>
  static call_launcher<T>* launcher(const call<T>& c) noexcept {
    return c.valid() ? c.launcher_ : nullptr;
  }
};

template <typename A>
struct is_call : std::false_type {};
template <typename T>
struct is_call<call<T>> : std::true_type {};

/// Starts child `index` of `group` from `aw` (a call<T> or an awaitable<T>) on `ex`: a call
/// directly, anything else in a coroutine. Whatever keeps it from starting becomes its outcome.
template <typename T, typename A>
void start_child(const std::shared_ptr<child_group>& group, const net::any_io_executor& ex,
                 std::size_t index, outcome<T>* out, A&& aw) {
  if constexpr (is_call<std::remove_cvref_t<A>>::value) {
    if (call_launcher<T>* launcher = call_access::launcher(aw)) {
      launcher->launch(child_completion<T>(group, out, index), ex);
      return;
    }
  }
  try {
    group->spawn(ex, index, run_child<T>(group, out, index, awaitable<T>(std::move(aw))));
  } catch (...) {
    out->set_error(std::current_exception());
    group->child_finished(index, true);
  }
}

}  // namespace detail

}  // namespace offload
