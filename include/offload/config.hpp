// offload: configuration and the Asio backend.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#if __cplusplus < 202002L && !(defined(_MSVC_LANG) && _MSVC_LANG >= 202002L)
#error "offload needs C++20 (coroutines): compile with -std=c++20 or later"
#endif

#define OFFLOAD_VERSION_MAJOR 0
#define OFFLOAD_VERSION_MINOR 1
#define OFFLOAD_VERSION_PATCH 0

#if defined(OFFLOAD_USE_BOOST_ASIO)

#include <boost/version.hpp>
#if BOOST_VERSION < 107900
#error "offload needs Boost.Asio from Boost 1.79 or later"
#endif
#include <boost/asio.hpp>
#define OFFLOAD_ASIO_VERSION BOOST_ASIO_VERSION

namespace offload {
namespace net = ::boost::asio;
using net_error_code = ::boost::system::error_code;
using net_system_error = ::boost::system::system_error;
}  // namespace offload

#else

// Asio 1.22 only detects Clang's coroutines through <experimental/coroutine>, which libstdc++
// does not ship; Clang 14+ in C++20 mode has the standard ones, so say so before Asio looks.
#if defined(__clang__) && !defined(ASIO_HAS_CO_AWAIT) && !defined(ASIO_DISABLE_CO_AWAIT)
#if defined(__cpp_impl_coroutine) && __has_include(<coroutine>)
#define ASIO_HAS_CO_AWAIT 1
#endif
#endif
#if defined(__clang__) && !defined(ASIO_HAS_STD_INVOKE_RESULT)
#define ASIO_HAS_STD_INVOKE_RESULT 1
#endif

#include <asio/version.hpp>
#if ASIO_VERSION < 102200
#error "offload needs Asio 1.22 or later"
#endif
#include <asio.hpp>
#define OFFLOAD_ASIO_VERSION ASIO_VERSION

namespace offload {
namespace net = ::asio;
using net_error_code = ::asio::error_code;
using net_system_error = ::asio::system_error;
}  // namespace offload

#endif

#if !defined(ASIO_HAS_CO_AWAIT) && !defined(BOOST_ASIO_HAS_CO_AWAIT)
#error "offload needs Asio with coroutine support (ASIO_HAS_CO_AWAIT)"
#endif

namespace offload {
template <typename T>
using awaitable = net::awaitable<T>;
}  // namespace offload
