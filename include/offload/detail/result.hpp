// offload: result<T>, what a finished piece of work left: nothing yet, its value, or the
// exception in its place. The one such type behind outcome<T>, tasks, futures and the loop's
// run functions.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <exception>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

namespace offload::detail {

template <typename T>
class result {
  struct void_value {};
  struct taken {};  // a move-only value a reader moved out
  using stored = std::conditional_t<std::is_void_v<T>, void_value, T>;

 public:
  bool empty() const noexcept { return state_.index() == 0; }
  bool has_value() const noexcept { return state_.index() == 1; }
  bool has_error() const noexcept { return state_.index() == 2; }

  template <typename... A>
  void set_value(A&&... a) {
    state_.template emplace<1>(std::forward<A>(a)...);
  }
  void set_error(std::exception_ptr e) noexcept { state_.template emplace<2>(std::move(e)); }

  /// The exception, or null.
  std::exception_ptr error() const noexcept {
    return has_error() ? std::get<2>(state_) : std::exception_ptr();
  }

  /// The value, or rethrows the exception in its place. `where` names the reader in the
  /// logic_error an empty (or already taken) result gives.
  stored& value(const char* where) & {
    check(where);
    return std::get<1>(state_);
  }
  const stored& value(const char* where) const& {
    check(where);
    return std::get<1>(state_);
  }

  /// For a result several readers may ask for (a future's result(), a task's join): a copy
  /// when T is copyable, so every reader gets it; else moved out to the first, and a later
  /// reader gets logic_error. Rethrows the exception.
  T take(const char* where) {
    check(where);
    if constexpr (std::is_void_v<T>) {
      return;
    } else if constexpr (std::is_copy_constructible_v<T>) {
      return std::get<1>(state_);
    } else {
      T out(std::move(std::get<1>(state_)));
      state_.template emplace<3>();
      return out;
    }
  }

 private:
  void check(const char* where) const {
    switch (state_.index()) {
      case 1:
        return;
      case 2:
        std::rethrow_exception(std::get<2>(state_));
      case 3:
        throw std::logic_error(std::string(where) + ": the move-only result was already taken");
      default:
        throw std::logic_error(std::string(where) + ": no result yet");
    }
  }

  std::variant<std::monostate, stored, std::exception_ptr, taken> state_;
};

}  // namespace offload::detail
