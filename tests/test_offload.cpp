// The umbrella header brings every concept; each public header also compiles on its own
// (tests/CMakeLists.txt builds one translation unit per header).
#include "catch.hpp"

#include <offload/offload.hpp>

#include <type_traits>

TEST_CASE("offload.hpp brings the whole public API", "[offload]") {
  STATIC_REQUIRE(std::is_class_v<offload::event_loop>);
  STATIC_REQUIRE(std::is_class_v<offload::thread_pool>);
  STATIC_REQUIRE(std::is_class_v<offload::loop_thread>);
  STATIC_REQUIRE(std::is_class_v<offload::concurrent_future<int>>);
  STATIC_REQUIRE(std::is_class_v<offload::task<int>>);
  STATIC_REQUIRE(std::is_class_v<offload::work_item>);
  // A call<T> is an awaitable<T> that gather and wait_for can start without a coroutine.
  STATIC_REQUIRE(
      std::is_same_v<decltype(offload::to_thread([] { return 1; })), offload::call<int>>);
  STATIC_REQUIRE(std::is_base_of_v<offload::awaitable<int>, offload::call<int>>);
  STATIC_REQUIRE(
      std::is_same_v<decltype(offload::run_in_executor(offload::default_executor, [] {})),
                     offload::call<void>>);
  CHECK(offload::run([]() -> offload::awaitable<int> {
          co_return co_await offload::to_thread([] { return 6 * 7; });
        }()) == 42);
}
