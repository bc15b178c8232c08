// compile_fail: the arguments do not match f. Expected diagnostic (static_assert):
//   "offload: f cannot be called with these arguments (they are decay-copied and passed as
//    rvalues, as std::thread does; ...)"
#include <offload/to_thread.hpp>

#include <string>

offload::awaitable<void> misuse() {
  auto f = [](int count, const std::string& name) { return name.size() + count; };
  (void)co_await offload::to_thread(f, "three", 3);  // swapped
}

int main() { return 0; }
