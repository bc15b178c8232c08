# Findasio.cmake: find standalone (non-Boost) Asio, a header-only library.
#
# Distributed under the Boost Software License, Version 1.0.
#
# Result variables:
#   asio_FOUND         true if asio.hpp was found
#   asio_INCLUDE_DIR   the directory holding asio.hpp (cache)
#   asio_INCLUDE_DIRS  the same, for the usual plural spelling
#   asio_VERSION       e.g. 1.22.1, read from asio/version.hpp
#
# Imported target:
#   asio::asio         INTERFACE: the include directory, plus Threads::Threads
#
# Hints: asio_ROOT (CMake or environment variable) pointing at a prefix with include/asio.hpp.
# OFFLOAD_ASIO_HINTS (set by offloadConfig.cmake) lists extra directories to look in first.

find_path(asio_INCLUDE_DIR
  NAMES asio.hpp
  HINTS ${OFFLOAD_ASIO_HINTS}
  PATH_SUFFIXES include asio/include
  DOC "Directory containing the standalone Asio header asio.hpp")
mark_as_advanced(asio_INCLUDE_DIR)

unset(asio_VERSION)
if(asio_INCLUDE_DIR AND EXISTS "${asio_INCLUDE_DIR}/asio/version.hpp")
  # #define ASIO_VERSION 102201 // 1.22.1  (major * 100000 + minor * 100 + patch)
  file(STRINGS "${asio_INCLUDE_DIR}/asio/version.hpp" _asio_version_line
    REGEX "^#[ \t]*define[ \t]+ASIO_VERSION[ \t]+[0-9]+")
  if(_asio_version_line MATCHES "ASIO_VERSION[ \t]+([0-9]+)")
    set(_asio_version_number "${CMAKE_MATCH_1}")
    math(EXPR _asio_version_major "${_asio_version_number} / 100000")
    math(EXPR _asio_version_minor "${_asio_version_number} / 100 % 1000")
    math(EXPR _asio_version_patch "${_asio_version_number} % 100")
    set(asio_VERSION "${_asio_version_major}.${_asio_version_minor}.${_asio_version_patch}")
  endif()
  unset(_asio_version_line)
  unset(_asio_version_number)
  unset(_asio_version_major)
  unset(_asio_version_minor)
  unset(_asio_version_patch)
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(asio
  REQUIRED_VARS asio_INCLUDE_DIR
  VERSION_VAR asio_VERSION)

if(asio_FOUND)
  set(asio_INCLUDE_DIRS "${asio_INCLUDE_DIR}")
  if(NOT TARGET asio::asio)
    if(NOT TARGET Threads::Threads)
      set(THREADS_PREFER_PTHREAD_FLAG ON)
      find_package(Threads QUIET)
    endif()
    add_library(asio::asio INTERFACE IMPORTED)
    set_target_properties(asio::asio PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${asio_INCLUDE_DIR}")
    if(TARGET Threads::Threads)
      set_property(TARGET asio::asio APPEND PROPERTY INTERFACE_LINK_LIBRARIES Threads::Threads)
    endif()
  endif()
endif()
