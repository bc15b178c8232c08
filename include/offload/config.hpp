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

// Asio's configuration macros (ASIO_HAS_CO_AWAIT...) are never defined here: a header that
// defined them would configure Asio one way in a translation unit that includes offload first
// and another way where Asio comes first, an ODR violation. The build defines them for every
// translation unit where Asio needs them (offload::offload's compile definitions, pkg-config's
// Cflags); this header only checks, before the first coroutine-related error from Asio.
#if defined(OFFLOAD_USE_BOOST_ASIO)

#include <boost/version.hpp>
#if BOOST_VERSION < 107900
#error "offload needs Boost.Asio from Boost 1.79 or later"
#endif
#include <boost/asio/detail/config.hpp>
#if defined(__cpp_impl_coroutine) && __has_include(<coroutine>) && \
    !defined(BOOST_ASIO_HAS_CO_AWAIT) && !defined(BOOST_ASIO_DISABLE_CO_AWAIT)
#error \
    "offload: this Boost.Asio does not detect the compiler's coroutines: define BOOST_ASIO_HAS_CO_AWAIT=1 and BOOST_ASIO_HAS_STD_INVOKE_RESULT=1 for every translation unit, e.g. link offload::offload / use pkg-config"
#endif
#include <boost/asio.hpp>
#define OFFLOAD_ASIO_VERSION BOOST_ASIO_VERSION

namespace offload {
namespace net = ::boost::asio;
using net_error_code = ::boost::system::error_code;
using net_system_error = ::boost::system::system_error;
}  // namespace offload

#else

#include <asio/version.hpp>
#if ASIO_VERSION < 102200
#error "offload needs Asio 1.22 or later"
#endif
// Asio < 1.26 detects Clang's coroutines only through <experimental/coroutine>, which libstdc++
// does not ship.
#include <asio/detail/config.hpp>
#if defined(__cpp_impl_coroutine) && __has_include(<coroutine>) && !defined(ASIO_HAS_CO_AWAIT) && \
    !defined(ASIO_DISABLE_CO_AWAIT)
#error \
    "offload: this Asio does not detect the compiler's coroutines: define ASIO_HAS_CO_AWAIT=1 and ASIO_HAS_STD_INVOKE_RESULT=1 for every translation unit, e.g. link offload::offload / use pkg-config"
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
