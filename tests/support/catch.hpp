// Catch2 v2/v3 (installed or amalgamated) compatibility for offload's tests: `#include "catch.hpp"`
// and nothing else.
//
// Distributed under the Boost Software License, Version 1.0.
//
//   REQUIRE_THROWS_WITH(expr, offload_test::contains("loop is closed"));
//   REQUIRE_THAT(text, offload_test::contains("done"));
#pragma once

// OFFLOAD_CATCH2_AMALGAMATED (v3's single catch_amalgamated.hpp) and OFFLOAD_CATCH2_V3 come
// from tests/CMakeLists.txt; without them, the installed Catch2's layout tells.
#if !defined(OFFLOAD_CATCH2_AMALGAMATED)
#define OFFLOAD_CATCH2_AMALGAMATED 0
#endif
#if !defined(OFFLOAD_CATCH2_V3)
#if OFFLOAD_CATCH2_AMALGAMATED || __has_include(<catch2/catch_test_macros.hpp>)
#define OFFLOAD_CATCH2_V3 1
#else
#define OFFLOAD_CATCH2_V3 0
#endif
#endif

#if OFFLOAD_CATCH2_AMALGAMATED
#include <catch_amalgamated.hpp>
#elif OFFLOAD_CATCH2_V3
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#if __has_include(<catch2/matchers/catch_matchers_exception.hpp>)
#include <catch2/matchers/catch_matchers_exception.hpp>
#endif
#else
#include <catch2/catch.hpp>
#endif

#include <string>

namespace offload_test {

#if OFFLOAD_CATCH2_V3
using case_sensitive = Catch::CaseSensitive;

/// A string matcher: "contains `needle`" (Catch2 v3's ContainsSubstring).
inline auto contains(const std::string& needle, case_sensitive cs = case_sensitive::Yes) {
  return Catch::Matchers::ContainsSubstring(needle, cs);
}
#else
using case_sensitive = Catch::CaseSensitive::Choice;

/// A string matcher: "contains `needle`" (Catch2 v2's Contains).
inline auto contains(const std::string& needle, case_sensitive cs = Catch::CaseSensitive::Yes) {
  return Catch::Matchers::Contains(needle, cs);
}
#endif

}  // namespace offload_test
