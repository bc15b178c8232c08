// offload: starting an operation that a coroutine awaits with use_awaitable.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/config.hpp>

#include <type_traits>
#include <utility>

#if defined(_MSC_VER) && !defined(__clang__)
#define OFFLOAD_DETAIL_NOINLINE __declspec(noinline)
#else
#define OFFLOAD_DETAIL_NOINLINE __attribute__((noinline))
#endif

namespace offload::detail {

/// Asio 1.22 (Debian 12's) runs a use_awaitable operation's initiation inside the awaiting
/// coroutine's await_suspend (1.26 and later run it once the coroutine has suspended). Once the
/// initiation has handed its handler on, another thread may complete it, resume the coroutine and
/// free the frame, before the initiation returns. Clang before 19 may keep the locals of code
/// inlined into await_suspend in that frame (LLVM issues 56301 and 65054): a use after free that
/// TSan reports as a race. So this layer is never inlined, and it moves the initiation off the
/// frame before running it: everything offload's initiation touches after its hand-off is on
/// this function's own stack. (Asio's do_init around it is Asio's part; Asio marks it noinline
/// for Apple Clang 13, for the same reason.)
template <typename Initiation>
struct off_frame_initiation {
  Initiation initiation;

  template <typename Handler, typename... Args>
  OFFLOAD_DETAIL_NOINLINE void operator()(Handler&& handler, Args&&... args) {
    Initiation mine(std::move(initiation));
    std::move(mine)(std::forward<Handler>(handler), std::forward<Args>(args)...);
  }
};

/// `co_await async_initiate_awaitable<Signature>(initiation, args...)`: Asio's
/// async_initiate with use_awaitable, through off_frame_initiation.
template <typename Signature, typename Initiation, typename... Args>
auto async_initiate_awaitable(Initiation&& initiation, Args&&... args) {
  return net::async_initiate<const net::use_awaitable_t<>&, Signature>(
      off_frame_initiation<std::decay_t<Initiation>>{std::forward<Initiation>(initiation)},
      net::use_awaitable, std::forward<Args>(args)...);
}

}  // namespace offload::detail
