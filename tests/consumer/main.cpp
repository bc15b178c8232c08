// Uses offload through its installed CMake package (see CMakeLists.txt beside this file).
//
// Distributed under the Boost Software License, Version 1.0.
#include <offload/errors.hpp>

#include <iostream>

int main() {
  std::cout << offload::make_error_code(offload::errc::timeout).message() << '\n';
  return 0;
}
