// The one Catch2 main shared by every offload test executable (compiled once).
//
// Distributed under the Boost Software License, Version 1.0.

#if !defined(OFFLOAD_CATCH2_AMALGAMATED)
#define OFFLOAD_CATCH2_AMALGAMATED 0
#endif
#if !defined(OFFLOAD_CATCH2_V3)
#if OFFLOAD_CATCH2_AMALGAMATED || __has_include(<catch2/catch_session.hpp>)
#define OFFLOAD_CATCH2_V3 1
#else
#define OFFLOAD_CATCH2_V3 0
#endif
#endif

#if OFFLOAD_CATCH2_V3

#if OFFLOAD_CATCH2_AMALGAMATED
#include <catch_amalgamated.hpp>
#else
#include <catch2/catch_session.hpp>
#endif

int main(int argc, char* argv[]) { return Catch::Session().run(argc, argv); }

#else

#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#endif
