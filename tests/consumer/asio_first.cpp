// Includes Asio before offload, on purpose: Asio's configuration (co_await) must come from the
// build, the same in every translation unit, whichever header a file includes first.
//
// Distributed under the Boost Software License, Version 1.0.
#include <asio.hpp>

#include <offload/offload.hpp>

offload::awaitable<int> doubled_on_a_worker(int value) {
  co_return co_await offload::to_thread([value] { return 2 * value; });
}
