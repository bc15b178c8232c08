// compile_fail: Python's `loop.run_in_executor(None, f)` translated as `nullptr`. Expected
// diagnostic: one static_assert naming offload::default_executor.
#include <offload/event_loop.hpp>

offload::awaitable<void> misuse(offload::event_loop& loop) {
  auto f = [] { return 1; };
  (void)co_await loop.run_in_executor(nullptr, f);
}

int main() { return 0; }
