// offload: per-call options — what cancellation means for a running call, and a capacity
// limiter to share.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <chrono>
#include <exception>
#include <optional>
#include <type_traits>

namespace offload {

class capacity_limiter;

/// What the awaiter of a running call does when it is cancelled (a thread cannot be stopped;
/// f is asked to stop through its std::stop_token either way).
enum class cancel_policy : unsigned char {
  /// Resume only once f has returned, then see the cancellation (Trio, AnyIO): a lambda that
  /// captured locals by reference never outlives them.
  wait,
  /// Resume at once with the cancellation (asyncio); f runs on, and its outcome goes to
  /// `call_options::on_abandoned` or is dropped. Everything f uses must be owned by f.
  abandon,
};

/// Options for one offloaded call:
/// `co_await offload::to_thread({.policy = offload::cancel_policy::abandon}, f, args...)`.
struct call_options {
  cancel_policy policy = cancel_policy::wait;
  /// Caps how many calls that share it run at once; must outlive the calls made with it.
  capacity_limiter* limiter = nullptr;
  /// Gets the outcome of an abandoned call on the worker thread once f returns: null when f
  /// returned (its result is dropped), else f's exception. Its own exceptions are reported on
  /// stderr and dropped: nothing is rethrown on a worker. (A plain function, so that options
  /// written in place inside `co_await` stay trivially destructible: GCC 12 destroys such
  /// temporaries twice.)
  void (*on_abandoned)(std::exception_ptr) = nullptr;
  /// When the call must be over. Still queued then, it never starts and its awaiter gets
  /// errc::timeout at the deadline; running, f's std::stop_token is signalled and the awaiter
  /// gets errc::timeout as `policy` says (wait: once f returns; abandon: at once). f reads it
  /// with from_thread::deadline(), to bound its own blocking I/O. Already past when the call is
  /// awaited: errc::timeout at once, nothing submitted. For the awaitable forms (to_thread,
  /// run_in_executor); async_run refuses it.
  std::optional<std::chrono::steady_clock::time_point> deadline{};
  /// The same, counted from when the call is awaited; zero: none. With `deadline` too, the
  /// earlier of the two wins.
  std::chrono::steady_clock::duration timeout{};
};

static_assert(std::is_trivially_destructible_v<call_options>,
              "call_options is written inside co_await expressions");

}  // namespace offload
