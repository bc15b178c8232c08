// offload: outcome<T> — a value or the exception that took its place (what gather's
// return_exceptions form yields per call).
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <exception>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <variant>

namespace offload {

template <typename T>
class outcome {
 public:
  using value_type = T;

  /// Empty until set (only visible to code that looks before the call finished).
  outcome() = default;

  bool has_value() const noexcept { return state_.index() == 1; }
  bool has_error() const noexcept { return state_.index() == 2; }
  explicit operator bool() const noexcept { return has_value(); }

  /// The value, or rethrows the exception in its place.
  T& value() & {
    check();
    return std::get<1>(state_);
  }
  const T& value() const& {
    check();
    return std::get<1>(state_);
  }
  T&& value() && {
    check();
    return std::get<1>(std::move(state_));
  }
  /// The exception, or null.
  std::exception_ptr error() const noexcept {
    return has_error() ? std::get<2>(state_) : std::exception_ptr();
  }

  template <typename... A>
  void set_value(A&&... a) {
    state_.template emplace<1>(std::forward<A>(a)...);
  }
  void set_error(std::exception_ptr e) noexcept { state_.template emplace<2>(std::move(e)); }

 private:
  void check() const {
    if (has_error()) std::rethrow_exception(std::get<2>(state_));
    if (!has_value()) throw std::logic_error("offload::outcome: no value yet");
  }

  std::variant<std::monostate, T, std::exception_ptr> state_;
};

template <>
class outcome<void> {
 public:
  using value_type = void;

  outcome() = default;

  bool has_value() const noexcept { return done_ && !error_; }
  bool has_error() const noexcept { return static_cast<bool>(error_); }
  explicit operator bool() const noexcept { return has_value(); }

  /// Returns if the call succeeded, or rethrows its exception.
  void value() const {
    if (error_) std::rethrow_exception(error_);
    if (!done_) throw std::logic_error("offload::outcome: no value yet");
  }
  std::exception_ptr error() const noexcept { return error_; }

  void set_value() noexcept {
    done_ = true;
    error_ = nullptr;
  }
  void set_error(std::exception_ptr e) noexcept {
    done_ = true;
    error_ = std::move(e);
  }

 private:
  bool done_ = false;
  std::exception_ptr error_;
};

}  // namespace offload
