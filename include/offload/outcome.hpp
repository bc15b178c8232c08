// offload: outcome<T> — a value or the exception that took its place (what gather's
// return_exceptions form yields per call).
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/detail/result.hpp>

#include <exception>
#include <stdexcept>
#include <utility>

namespace offload {

template <typename T>
class outcome {
 public:
  using value_type = T;

  /// Empty until set (only visible to code that looks before the call finished).
  outcome() = default;

  bool has_value() const noexcept { return result_.has_value(); }
  bool has_error() const noexcept { return result_.has_error(); }
  explicit operator bool() const noexcept { return has_value(); }

  /// The value, or rethrows the exception in its place.
  T& value() & { return result_.value(where); }
  const T& value() const& { return result_.value(where); }
  T&& value() && { return std::move(result_.value(where)); }
  /// The exception, or null.
  std::exception_ptr error() const noexcept { return result_.error(); }

  template <typename... A>
  void set_value(A&&... a) {
    result_.set_value(std::forward<A>(a)...);
  }
  /// `e` must not be null (invalid_argument).
  void set_error(std::exception_ptr e) {
    if (!e) throw std::invalid_argument("offload::outcome::set_error: null exception_ptr");
    result_.set_error(std::move(e));
  }

 private:
  static constexpr const char* where = "offload::outcome";
  detail::result<T> result_;
};

template <>
class outcome<void> {
 public:
  using value_type = void;

  outcome() = default;

  bool has_value() const noexcept { return result_.has_value(); }
  bool has_error() const noexcept { return result_.has_error(); }
  explicit operator bool() const noexcept { return has_value(); }

  /// Returns if the call succeeded, or rethrows its exception.
  void value() const { result_.value(where); }
  std::exception_ptr error() const noexcept { return result_.error(); }

  void set_value() noexcept { result_.set_value(); }
  /// `e` must not be null (invalid_argument).
  void set_error(std::exception_ptr e) {
    if (!e) throw std::invalid_argument("offload::outcome::set_error: null exception_ptr");
    result_.set_error(std::move(e));
  }

 private:
  static constexpr const char* where = "offload::outcome";
  detail::result<void> result_;
};

}  // namespace offload
