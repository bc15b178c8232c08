# offloadCompilerChecks.cmake: checks of the compiler and Asio that offload's build and its
# installed package (offloadConfig.cmake) both run, in the project that compiles offload's
# headers: they are about that project's compiler, not the one offload was installed with.
#
# Distributed under the Boost Software License, Version 1.0.

include_guard(GLOBAL)

# offload_asio_co_await_definitions(<out-var> <backend-target> <macro-prefix>)
#
# Sets <out-var> to the compile definitions every translation unit must see for Asio (reached
# through the imported target <backend-target>) to enable co_await with this compiler: empty
# when Asio detects coroutines by itself, else <prefix>HAS_CO_AWAIT=1 and
# <prefix>HAS_STD_INVOKE_RESULT=1 (Asio < 1.26 detects Clang's coroutines only through
# <experimental/coroutine>, which libstdc++ does not ship). <macro-prefix> is ASIO_ or
# BOOST_ASIO_. Two small try-compiles, cached per compiler, flags and Asio.
function(offload_asio_co_await_definitions out_var backend prefix)
  set(defines "${prefix}HAS_CO_AWAIT=1" "${prefix}HAS_STD_INVOKE_RESULT=1")

  # Asio's include directories: an imported target passes its usage requirements to
  # try_compile itself; a target of the enclosing project only by its include directories.
  get_target_property(aliased ${backend} ALIASED_TARGET)
  if(aliased)
    set(backend ${aliased})
  endif()
  get_target_property(imported ${backend} IMPORTED)
  set(link_args "")
  set(include_dirs "")
  if(imported)
    set(link_args LINK_LIBRARIES ${backend})
  else()
    get_target_property(include_dirs ${backend} INTERFACE_INCLUDE_DIRECTORIES)
    string(REGEX REPLACE "\\$<BUILD_INTERFACE:([^>]*)>" "\\1" include_dirs "${include_dirs}")
    list(FILTER include_dirs EXCLUDE REGEX "^\\$<")
  endif()

  get_target_property(backend_dirs ${backend} INTERFACE_INCLUDE_DIRECTORIES)
  set(key "${CMAKE_CXX_COMPILER};${CMAKE_CXX_COMPILER_VERSION};${CMAKE_CXX_FLAGS};${prefix};${backend_dirs};${include_dirs}")
  if(DEFINED CACHE{_OFFLOAD_CO_AWAIT_KEY} AND "$CACHE{_OFFLOAD_CO_AWAIT_KEY}" STREQUAL "${key}")
    set(${out_var} "$CACHE{_OFFLOAD_CO_AWAIT_DEFINITIONS}" PARENT_SCOPE)
    return()
  endif()

  if(prefix STREQUAL "BOOST_ASIO_")
    set(header "boost/asio")
    set(namespace "boost::asio")
  else()
    set(header "asio")
    set(namespace "asio")
  endif()
  set(dir "${CMAKE_BINARY_DIR}${CMAKE_FILES_DIRECTORY}/offload_co_await")
  file(WRITE "${dir}/co_await.cpp"
    "#include <${header}/awaitable.hpp>\n"
    "#if !defined(${prefix}HAS_CO_AWAIT)\n"
    "#error \"Asio's configuration has no co_await\"\n"
    "#endif\n"
    "${namespace}::awaitable<int> offload_check() { co_return 1; }\n")

  # Compile only: nothing here needs linking.
  set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
  set(result "")
  foreach(attempt IN ITEMS plain defined)
    if(attempt STREQUAL "plain")
      set(definitions "")
    else()
      list(TRANSFORM defines PREPEND "-D" OUTPUT_VARIABLE definitions)
    endif()
    # try_compile caches its result variable (CMake < 3.25 has no NO_CACHE): read it, drop it.
    try_compile(_offload_co_await_works "${dir}/${attempt}" "${dir}/co_await.cpp"
      CMAKE_FLAGS "-DINCLUDE_DIRECTORIES=${include_dirs}"
      COMPILE_DEFINITIONS ${definitions}
      ${link_args}
      CXX_STANDARD 20
      CXX_STANDARD_REQUIRED ON
      CXX_EXTENSIONS OFF
      OUTPUT_VARIABLE output)
    set(works ${_offload_co_await_works})
    unset(_offload_co_await_works CACHE)
    if(works)
      if(attempt STREQUAL "defined")
        set(result "${defines}")
      endif()
      break()
    endif()
  endforeach()

  set(message "Asio detects co_await by itself")
  if(NOT works)
    list(JOIN defines " " shown)
    set(message "no co_await with or without ${shown}: offload's headers will not compile")
    message(WARNING "offload: ${CMAKE_CXX_COMPILER_ID} ${CMAKE_CXX_COMPILER_VERSION} cannot "
      "compile Asio's coroutines (awaitable<T>) in C++20 mode. The compiler said:\n${output}")
  elseif(result)
    list(JOIN result " " shown)
    set(message "Asio needs ${shown} (added to offload::offload's compile definitions)")
  endif()
  message(STATUS "offload: ${CMAKE_CXX_COMPILER_ID} ${CMAKE_CXX_COMPILER_VERSION}: ${message}")

  if(works)  # a failure is checked (and reported) again at the next configure
    set(_OFFLOAD_CO_AWAIT_KEY "${key}" CACHE INTERNAL "what the co_await check ran on")
    set(_OFFLOAD_CO_AWAIT_DEFINITIONS "${result}" CACHE INTERNAL "the co_await check's result")
  endif()
  set(${out_var} "${result}" PARENT_SCOPE)
endfunction()

# offload_warn_gcc_coroutine_temporaries()
#
# A warning, printed once per configure, when the compiler is a GCC release that destroys some
# temporaries in co_await expressions twice (GCC bugs 100611 and 101367).
function(offload_warn_gcc_coroutine_temporaries)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "GNU" OR CMAKE_CXX_COMPILER_VERSION VERSION_GREATER_EQUAL 13)
    return()
  endif()
  get_property(warned GLOBAL PROPERTY _OFFLOAD_WARNED_GCC_TEMPORARIES)
  if(warned)
    return()
  endif()
  set_property(GLOBAL PROPERTY _OFFLOAD_WARNED_GCC_TEMPORARIES TRUE)
  message(WARNING
    "offload: GCC ${CMAKE_CXX_COMPILER_VERSION} miscompiles temporaries in co_await expressions "
    "(GCC bugs 100611, 101367; fixed in GCC 13): a temporary with a non-trivial destructor "
    "written inside a co_await expression (a lambda capturing a std::string, an aggregate with "
    "a std::string member, a std::bind result) can be destroyed twice. Name such a value first "
    "and move it in, or use GCC 13+ or Clang. See offload's README, section \"GCC 12 and "
    "temporaries in co_await\" (README.md#gcc-12-and-temporaries-in-co_await).")
endfunction()
