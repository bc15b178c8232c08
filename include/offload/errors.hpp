// offload: the error category and the errors offload throws.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/config.hpp>

#include <exception>
#include <string>
#include <system_error>
#include <utility>

namespace offload {

/// Every error offload reports, thrown as std::system_error. Cancellation is Asio's
/// operation_aborted, so code that handles Asio's cancellation handles offload's.
enum class errc {
  loop_closed = 1,
  no_running_loop,
  executor_shutdown,
  would_deadlock,
  timeout,
  queue_full,
  broken_promise,
  invalid_state,
};

namespace detail {
class offload_category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "offload"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::loop_closed:
        return "the event loop is closed: submit work while it is open, or to a running loop";
      case errc::no_running_loop:
        return "no running event loop in this thread: call this from a coroutine running on an "
               "event loop (or pass an executor or pool explicitly)";
      case errc::executor_shutdown:
        return "the executor was shut down and takes no new work: create a new pool, or "
               "set_default_executor() to replace the default one";
      case errc::would_deadlock:
        return "this call would wait for the thread it runs on: co_await instead of blocking, "
               "or make the call from another thread";
      case errc::timeout:
        return "the operation did not finish before its deadline: allow more time, or handle "
               "errc::timeout";
      case errc::queue_full:
        return "the pool's queue is full: submit from a coroutine (which waits for room) or "
               "raise max_queue";
      case errc::broken_promise:
        return "the operation was destroyed before it produced a result: keep its executor or "
               "io_context alive until its operations finish";
      case errc::invalid_state:
        return "the future is not in a state that allows this: a result can be set once, and "
               "read only once it is done (check done(), or co_await get())";
    }
    return "unknown offload error";
  }
};
}  // namespace detail

inline const std::error_category& error_category() noexcept {
  static const detail::offload_category category;
  return category;
}

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

/// Thrown by every offload API for the errc codes; `what()` says where and what to do.
inline std::system_error make_error(errc e, const char* where) {
  return std::system_error(make_error_code(e), where);
}

[[noreturn]] inline void throw_error(errc e, const char* where) { throw make_error(e, where); }

/// Cancellation, as the Asio backend itself reports it (operation_aborted in its system_error).
inline std::exception_ptr make_cancelled(const char* where) {
  return std::make_exception_ptr(net_system_error(net::error::operation_aborted, where));
}

/// What an offloaded call that was cancelled, or timed out, did: whether its side effects
/// happened. See outcome_of_cancellation().
enum class cancellation_outcome {
  unknown,        // not the cancellation or timeout of an offloaded call
  never_started,  // f never ran: nothing happened
  ran_to_end,     // f ran to its end (cancel_policy::wait): it had its effects, its result was
                  // discarded
  abandoned,      // f was running when its awaiter was answered (cancel_policy::abandon): it
                  // may still be running
};

namespace detail {

/// Carried, beside the error itself, by the exceptions of cancelled and timed-out calls.
class cancellation_record {
 public:
  explicit cancellation_record(cancellation_outcome outcome) noexcept : outcome_(outcome) {}
  virtual ~cancellation_record() = default;
  cancellation_outcome outcome() const noexcept { return outcome_; }

 private:
  cancellation_outcome outcome_;
};

/// An error (Base: a system_error) that says what the call it ended did.
template <typename Base>
class recorded_error final : public Base, public cancellation_record {
 public:
  template <typename... Args>
  explicit recorded_error(cancellation_outcome outcome, Args&&... args)
      : Base(std::forward<Args>(args)...), cancellation_record(outcome) {}
};

}  // namespace detail

/// The cancellation of an offloaded call, saying what the call did (the error is Asio's
/// operation_aborted, as for make_cancelled).
inline std::exception_ptr make_cancelled(const char* where, cancellation_outcome outcome) {
  return std::make_exception_ptr(detail::recorded_error<net_system_error>(
      outcome, net_error_code(net::error::operation_aborted), where));
}

/// errc::timeout for an offloaded call, saying what the call did.
inline std::exception_ptr make_timed_out(const char* where, cancellation_outcome outcome) {
  return std::make_exception_ptr(
      detail::recorded_error<std::system_error>(outcome, make_error_code(errc::timeout), where));
}

/// What the offloaded call behind `e` did, when `e` is the operation_aborted of a cancelled
/// call or the errc::timeout of one that timed out (directly, or rethrown unchanged by a
/// coroutine that awaited it): never started, ran to its end with the result discarded, or
/// abandoned while it ran. `unknown` for anything else.
inline cancellation_outcome outcome_of_cancellation(const std::exception& e) noexcept {
  const auto* record = dynamic_cast<const detail::cancellation_record*>(&e);
  return record != nullptr ? record->outcome() : cancellation_outcome::unknown;
}
inline cancellation_outcome outcome_of_cancellation(const std::exception_ptr& e) noexcept {
  if (!e) return cancellation_outcome::unknown;
  try {
    std::rethrow_exception(e);
  } catch (const detail::cancellation_record& record) {
    return record.outcome();
  } catch (...) {
    return cancellation_outcome::unknown;
  }
}

}  // namespace offload

template <>
struct std::is_error_code_enum<offload::errc> : std::true_type {};
