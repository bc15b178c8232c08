// Uses offload as a user's project would (see CMakeLists.txt beside this file; CI also builds
// these two files with pkg-config's flags).
//
// Distributed under the Boost Software License, Version 1.0.
#include <offload/offload.hpp>

#include <iostream>
#include <thread>

offload::awaitable<int> doubled_on_a_worker(int value);  // asio_first.cpp

static int answer_on_a_worker(std::thread::id loop_thread) {
  return std::this_thread::get_id() != loop_thread ? 21 : -1;
}

static offload::awaitable<int> consumer_main() {
  const int half = co_await offload::to_thread(answer_on_a_worker, std::this_thread::get_id());
  co_return co_await doubled_on_a_worker(half);
}

int main() {
  const int value = offload::run(consumer_main());
  std::cout << "offload consumer: " << value << '\n';
  return value == 42 ? 0 : 1;
}
