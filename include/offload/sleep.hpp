// offload: sleep and sleep_until, asyncio.sleep for Asio coroutines.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/config.hpp>

#include <chrono>

namespace offload {

/// `co_await offload::sleep_until(tp);` suspends the calling coroutine, not its thread, until
/// `tp`, on the coroutine's own executor. Cancelling the coroutine ends the sleep with
/// operation_aborted. A time point already past still yields once, as sleep(0) does.
inline awaitable<void> sleep_until(std::chrono::steady_clock::time_point tp) {
  auto ex = co_await net::this_coro::executor;
  if (tp <= std::chrono::steady_clock::now()) {
    // asyncio.sleep(0): let the other ready coroutines and callbacks run first.
    co_await net::post(ex, net::use_awaitable);
    co_return;
  }
  net::steady_timer timer(ex, tp);
  co_await timer.async_wait(net::use_awaitable);
}

/// `co_await offload::sleep(std::chrono::milliseconds(10));` is asyncio.sleep(0.01);
/// `sleep(0)` yields to the other ready work once.
template <typename Rep, typename Period>
awaitable<void> sleep(std::chrono::duration<Rep, Period> d) {
  return sleep_until(std::chrono::steady_clock::now() +
                     std::chrono::ceil<std::chrono::steady_clock::duration>(d));
}

}  // namespace offload
