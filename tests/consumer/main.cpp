// Uses offload through its installed CMake package (see CMakeLists.txt beside this file).
//
// Distributed under the Boost Software License, Version 1.0.
#include <offload/offload.hpp>

#include <iostream>
#include <thread>

static int answer_on_a_worker(std::thread::id loop_thread) {
  return std::this_thread::get_id() != loop_thread ? 42 : -1;
}

static offload::awaitable<int> consumer_main() {
  co_return co_await offload::to_thread(answer_on_a_worker, std::this_thread::get_id());
}

int main() {
  const int value = offload::run(consumer_main());
  std::cout << "offload consumer: " << value << '\n';
  return value == 42 ? 0 : 1;
}
