// The backend, its minimum version, its configuration, and the names offload gives it.

// Asio's configuration as a translation unit sees it before any offload header, to compare with
// what it is after them: offload's headers must not change it (a header that defined Asio's
// macros would configure Asio differently where Asio is included first: an ODR violation).
#if defined(OFFLOAD_USE_BOOST_ASIO)
#include <boost/asio/detail/config.hpp>
#else
#include <asio/detail/config.hpp>
#endif
#if defined(ASIO_HAS_CO_AWAIT) || defined(BOOST_ASIO_HAS_CO_AWAIT)
static constexpr bool co_await_before_offload = true;
#else
static constexpr bool co_await_before_offload = false;
#endif
#if defined(ASIO_HAS_STD_INVOKE_RESULT) || defined(BOOST_ASIO_HAS_STD_INVOKE_RESULT)
static constexpr bool invoke_result_before_offload = true;
#else
static constexpr bool invoke_result_before_offload = false;
#endif

#include "catch.hpp"

#include <offload/config.hpp>
#include <offload/errors.hpp>
#include <offload/event_loop.hpp>
#include <offload/offload.hpp>
#include <offload/thread_pool.hpp>
#include <offload/to_thread.hpp>

#include <string>
#include <system_error>
#include <type_traits>

#if !defined(OFFLOAD_USE_BOOST_ASIO)

TEST_CASE("offload::net names standalone ::asio by default", "[config]") {
  STATIC_REQUIRE(std::is_same_v<offload::net::io_context, ::asio::io_context>);
  STATIC_REQUIRE(std::is_same_v<offload::net::steady_timer, ::asio::steady_timer>);
  STATIC_REQUIRE(std::is_same_v<offload::net_error_code, ::asio::error_code>);
  STATIC_REQUIRE(std::is_same_v<offload::net_system_error, ::asio::system_error>);
  // Standalone Asio's error types are the standard ones, so offload's errors and
  // Asio's cancellation are both caught as std::system_error.
  STATIC_REQUIRE(std::is_same_v<::asio::error_code, std::error_code>);
  STATIC_REQUIRE(std::is_base_of_v<std::system_error, offload::net_system_error>);
  // The alias really is the namespace, not a look-alike: its error enum is Asio's.
  REQUIRE(std::error_code(offload::net::error::operation_aborted) ==
          std::error_code(::asio::error::operation_aborted));
}

TEST_CASE("OFFLOAD_ASIO_VERSION is at least 1.22 and is the backend's version", "[config]") {
  STATIC_REQUIRE(OFFLOAD_ASIO_VERSION >= 102200);
  STATIC_REQUIRE(OFFLOAD_ASIO_VERSION == ASIO_VERSION);
}

TEST_CASE("offload::awaitable<T> is the backend's awaitable<T>", "[config]") {
  STATIC_REQUIRE(std::is_same_v<offload::awaitable<int>, ::asio::awaitable<int>>);
  STATIC_REQUIRE(std::is_same_v<offload::awaitable<void>, ::asio::awaitable<void>>);
  STATIC_REQUIRE(std::is_same_v<offload::awaitable<std::string>, ::asio::awaitable<std::string>>);
}

TEST_CASE("the loop's executor is a strand over the io_context's executor", "[config]") {
  STATIC_REQUIRE(std::is_same_v<offload::event_loop::executor_type,
                                ::asio::strand<::asio::io_context::executor_type>>);
  STATIC_REQUIRE(std::is_same_v<decltype(std::declval<offload::event_loop&>().get_executor()),
                                ::asio::strand<::asio::io_context::executor_type>>);
}

#else

TEST_CASE("offload::net names ::boost::asio under OFFLOAD_USE_BOOST_ASIO", "[config]") {
  STATIC_REQUIRE(std::is_same_v<offload::net::io_context, ::boost::asio::io_context>);
  STATIC_REQUIRE(std::is_same_v<offload::awaitable<int>, ::boost::asio::awaitable<int>>);
  STATIC_REQUIRE(OFFLOAD_ASIO_VERSION >= 102200);
}

#endif

TEST_CASE("offload is compiled as C++20 with coroutine support in the backend", "[config]") {
  STATIC_REQUIRE(__cplusplus >= 202002L);
#if defined(OFFLOAD_USE_BOOST_ASIO)
  STATIC_REQUIRE(BOOST_ASIO_HAS_CO_AWAIT);
#else
  STATIC_REQUIRE(ASIO_HAS_CO_AWAIT);
#endif
}

TEST_CASE("Asio's configuration is the same before and after offload's headers", "[config]") {
  // co_await was on before any offload header: what Asio needs comes from the build, for every
  // translation unit (offload::offload's compile definitions), not from a header.
  STATIC_REQUIRE(co_await_before_offload);
#if defined(ASIO_HAS_STD_INVOKE_RESULT) || defined(BOOST_ASIO_HAS_STD_INVOKE_RESULT)
  STATIC_REQUIRE(invoke_result_before_offload);
#else
  STATIC_REQUIRE_FALSE(invoke_result_before_offload);
#endif
}

TEST_CASE("the version macros are 0.1.0", "[config]") {
  STATIC_REQUIRE(OFFLOAD_VERSION_MAJOR == 0);
  STATIC_REQUIRE(OFFLOAD_VERSION_MINOR == 1);
  STATIC_REQUIRE(OFFLOAD_VERSION_PATCH == 0);
}

TEST_CASE("public names live in namespace offload", "[config]") {
  // Each of these names must resolve in offload:: (internals stay in offload::detail).
  STATIC_REQUIRE(std::is_class_v<offload::event_loop>);
  STATIC_REQUIRE(std::is_class_v<offload::thread_pool>);
  STATIC_REQUIRE(std::is_class_v<offload::thread_pool_options>);
  STATIC_REQUIRE(std::is_class_v<offload::handle>);
  STATIC_REQUIRE(std::is_class_v<offload::task<int>>);
  STATIC_REQUIRE(std::is_enum_v<offload::errc>);
  STATIC_REQUIRE(std::is_same_v<decltype(offload::error_category()), const std::error_category&>);
  STATIC_REQUIRE(std::is_same_v<decltype(offload::get_running_loop()), offload::event_loop&>);
}
