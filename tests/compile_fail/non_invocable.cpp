// compile_fail: f is not callable (an int). Expected diagnostic (static_assert):
//   "offload: f is not callable: pass a function, a lambda or a function object"
#include <offload/to_thread.hpp>

offload::awaitable<void> misuse() {
  int not_a_function = 42;
  co_await offload::to_thread(not_a_function);
}

int main() { return 0; }
