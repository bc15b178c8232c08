// Helpers for coroutines on a loop (yield, sleep, poll without blocking the loop) and for what
// a test checks afterwards (codes thrown, frames torn down). With probes.hpp, the tests' one
// vocabulary: each name exists once.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/config.hpp>
#include <offload/detail/thread_name.hpp>

#include "net_errors.hpp"
#include "probes.hpp"
#include "stderr_capture.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

#if defined(__linux__)
#include <pthread.h>
#include <unistd.h>
#endif

namespace offload_test {

/// Runs `f`; returns the code of the std::system_error it threw, or an empty code.
template <typename F>
std::error_code code_thrown_by(F&& f) {
  try {
    std::forward<F>(f)();
  } catch (const std::system_error& e) {
    return e.code();
  }
  return {};
}

/// Runs `f`; returns the what() of the std::system_error it threw, or nullopt.
template <typename F>
std::optional<std::string> what_thrown_by(F&& f) {
  try {
    std::forward<F>(f)();
  } catch (const std::system_error& e) {
    return std::string(e.what());
  }
  return std::nullopt;
}

/// Suspends the calling coroutine once: it resumes after what is already queued on its executor.
inline offload::awaitable<void> yield_once() {
  auto ex = co_await offload::net::this_coro::executor;
  co_await offload::net::post(ex, offload::net::use_awaitable);
}

/// A timer wait on the coroutine's executor.
inline offload::awaitable<void> sleep_for(std::chrono::steady_clock::duration d) {
  auto ex = co_await offload::net::this_coro::executor;
  offload::net::steady_timer timer(ex, d);
  co_await timer.async_wait(offload::net::use_awaitable);
}

/// Polls `pred` every millisecond (without blocking the loop) until it holds or `limit`
/// passes; returns whether it held. `limit` is only a guard against hangs.
template <typename Pred>
offload::awaitable<bool> wait_until(
    Pred pred, std::chrono::steady_clock::duration limit = std::chrono::seconds(20)) {
  const auto give_up = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > give_up) co_return false;
    co_await sleep_for(std::chrono::milliseconds(1));
  }
  co_return true;
}

inline bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

/// An exception type of the tests' own, carrying a value to check after a round trip.
struct my_error : std::runtime_error {
  explicit my_error(int c) : std::runtime_error("my_error"), code(c) {}
  int code;
};

using flag_ptr = std::shared_ptr<std::atomic<bool>>;
inline flag_ptr make_flag() { return std::make_shared<std::atomic<bool>>(false); }

/// Sets its flag when destroyed: shows whether (and when) a coroutine frame was torn down.
struct raii_flag {
  explicit raii_flag(flag_ptr f) : flag(std::move(f)) {}
  raii_flag(raii_flag&& other) noexcept : flag(std::move(other.flag)) {}
  raii_flag& operator=(raii_flag&&) = delete;
  ~raii_flag() {
    if (flag) flag->store(true);
  }
  flag_ptr flag;
};

// -- coroutines several tests run --------------------------------------------------------------

inline offload::awaitable<std::thread::id> current_thread_id() {
  co_return std::this_thread::get_id();
}

inline offload::awaitable<int> throw_my_error(int code) {
  co_await yield_once();
  throw my_error(code);
}

inline offload::awaitable<std::unique_ptr<int>> move_only_after_yield(int v) {
  co_await yield_once();
  co_return std::make_unique<int>(v);
}

/// The frame owns `param`; `local` dies when the body unwinds; waits an hour unless stopped.
inline offload::awaitable<int> guarded_wait([[maybe_unused]] raii_flag param, flag_ptr local_flag,
                                            std::atomic<bool>* started) {
  raii_flag local(std::move(local_flag));
  started->store(true);
  co_await sleep_for(std::chrono::hours(1));
  co_return 1;
}

}  // namespace offload_test
