// The backend's cancellation, as the tests check it. Asio reports cancellation as its own
// system_error carrying operation_aborted: with standalone Asio a std::system_error /
// std::error_code, with Boost.Asio a boost::system::system_error / boost::system::error_code,
// which `catch (const std::system_error&)` does not catch and std::error_code does not compare
// with. Tests that look for cancellation use these, written with offload's names for the
// backend's types (offload::net_system_error, offload::net_error_code), so one spelling works
// with both backends. (Included by loop_helpers.hpp and probes.hpp.)
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/config.hpp>

#include <exception>
#include <system_error>
#include <type_traits>
#include <utility>

namespace offload_test {

/// True if `ec` is the backend's operation_aborted, in the backend's system category.
inline bool is_operation_aborted(const offload::net_error_code& ec) noexcept {
  return ec == offload::net::error::operation_aborted &&
         ec.category() == offload::net::error::get_system_category();
}

/// The code of the `SystemError` inside `e`; empty if `e` is empty or holds another exception.
template <typename SystemError>
auto code_inside(std::exception_ptr e)
    -> std::remove_cvref_t<decltype(std::declval<const SystemError&>().code())> {
  try {
    if (e) std::rethrow_exception(e);
  } catch (const SystemError& se) {
    return se.code();
  } catch (...) {
  }
  return {};
}

/// The code of the backend's system_error inside `e` (offload::net_system_error). (With
/// standalone Asio that is any std::system_error.)
inline offload::net_error_code net_code_of(std::exception_ptr e) {
  return code_inside<offload::net_system_error>(e);
}

/// The code of the std::system_error inside `e`: offload's own errors (offload::errc).
inline std::error_code code_of(std::exception_ptr e) { return code_inside<std::system_error>(e); }

/// True if `e` holds the backend's cancellation: its system_error with operation_aborted.
inline bool is_cancelled(std::exception_ptr e) { return is_operation_aborted(net_code_of(e)); }

}  // namespace offload_test
