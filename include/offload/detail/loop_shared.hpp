// offload: what a loop shares with the handles, tasks and futures that may outlive it.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/config.hpp>
#include <offload/detail/service.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

namespace offload {

/// What reaches the exception handler: what happened, and the exception if there was one.
struct exception_context {
  std::string message;
  std::exception_ptr exception;
};

/// What reaches the slow-callback handler.
struct slow_callback_report {
  std::chrono::nanoseconds took{};
  std::chrono::nanoseconds threshold{};
};

namespace detail {

/// The part of a loop that outlives it where callbacks and tasks need it.
struct loop_shared {
  std::mutex mutex;
  std::function<void(const exception_context&)> exception_handler;
  std::function<void(const slow_callback_report&)> slow_handler;
  // Cross-thread futures not yet done: close() fails each with loop_closed.
  std::unordered_map<std::uint64_t, std::function<void()>> pending_futures;
  std::uint64_t next_future_id = 0;

  // Handles, tasks and futures may outlive the loop, but a strand must not outlive its
  // io_context: they reach the loop through here, and close() clears it first.
  std::mutex strand_mutex;
  std::optional<loop_strand_type> strand;

  template <typename F>
  bool post_to_loop(F&& f) {
    std::lock_guard<std::mutex> lock(strand_mutex);
    if (!strand) return false;
    net::post(*strand, std::forward<F>(f));
    return true;
  }
  bool in_loop_strand() {
    std::lock_guard<std::mutex> lock(strand_mutex);
    return strand && strand->running_in_this_thread();
  }
  void forget_strand() {
    std::lock_guard<std::mutex> lock(strand_mutex);
    strand.reset();
  }

  std::uint64_t add_pending(std::function<void()> fail) {
    std::lock_guard<std::mutex> lock(mutex);
    pending_futures.emplace(++next_future_id, std::move(fail));
    return next_future_id;
  }
  void remove_pending(std::uint64_t id) {
    std::lock_guard<std::mutex> lock(mutex);
    pending_futures.erase(id);
  }
  void fail_pending() {
    std::unordered_map<std::uint64_t, std::function<void()>> pending;
    {
      std::lock_guard<std::mutex> lock(mutex);
      pending.swap(pending_futures);
    }
    for (auto& entry : pending) entry.second();
  }

  static void default_report(const exception_context& ctx) noexcept {
    std::string what;
    if (ctx.exception) {
      try {
        std::rethrow_exception(ctx.exception);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
        what = "a non-std exception";
      }
    }
    std::fprintf(stderr, "offload: %s%s%s\n", ctx.message.c_str(), what.empty() ? "" : ": ",
                 what.c_str());
  }

  void report(const exception_context& ctx) noexcept {
    std::function<void(const exception_context&)> handler;
    {
      std::lock_guard<std::mutex> lock(mutex);
      handler = exception_handler;
    }
    if (!handler) return default_report(ctx);
    try {
      handler(ctx);
    } catch (...) {
      default_report({"the exception handler threw", std::current_exception()});
      default_report(ctx);
    }
  }

  void report_slow(const slow_callback_report& r) noexcept {
    std::function<void(const slow_callback_report&)> handler;
    {
      std::lock_guard<std::mutex> lock(mutex);
      handler = slow_handler;
    }
    if (handler) {
      try {
        handler(r);
        return;
      } catch (...) {
        default_report({"the slow-callback handler threw", std::current_exception()});
      }
    }
    std::fprintf(stderr,
                 "offload: a loop step took %.3f ms (threshold %.3f ms): something blocked the "
                 "loop; move blocking calls to offload::to_thread\n",
                 std::chrono::duration<double, std::milli>(r.took).count(),
                 std::chrono::duration<double, std::milli>(r.threshold).count());
  }
};

}  // namespace detail

}  // namespace offload
