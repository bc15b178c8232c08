// compile_fail: f takes a non-const lvalue reference; arguments are decay-copied and passed as
// rvalues (as std::thread does), so std::ref is needed. Expected diagnostic (static_assert):
//   "offload: f cannot be called with these arguments ... wrap an argument in std::ref to pass a
//    reference"
#include <offload/to_thread.hpp>

offload::awaitable<void> misuse() {
  int counter = 0;
  auto bump = [](int& c) { ++c; };
  co_await offload::to_thread(bump, counter);  // needs std::ref(counter)
}

int main() { return 0; }
