// compile_fail: a pool passed as an rvalue (a temporary that would die before its calls).
// Expected diagnostic (static_assert):
//   "offload: pass the pool by reference; it must outlive the calls made on it"
#include <offload/thread_pool.hpp>
#include <offload/to_thread.hpp>

offload::awaitable<void> misuse() {
  auto f = [] { return 1; };
  (void)co_await offload::run_in_executor(offload::thread_pool(2), f);
}

int main() { return 0; }
