// compile_fail: the target is not something offload can run calls on. Expected diagnostic:
// run_in_executor's constraint `offload::detail::runs_calls<...>` is not satisfied.
#include <offload/to_thread.hpp>

#include <string>

offload::awaitable<void> misuse() {
  std::string not_an_executor = "pool";
  auto f = [] { return 1; };
  (void)co_await offload::run_in_executor(not_an_executor, f);
}

int main() { return 0; }
