// Shared helpers for offload's to_thread / executor / thread_pool tests: copy- and
// move-counting probes, a gate workers can block on (with a deadline, so a failing test never
// hangs), polling with a generous deadline, thread names, and a loop running on its own thread.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/detail/thread_name.hpp>
#include <offload/event_loop.hpp>
#include <offload/to_thread.hpp>

#include "net_errors.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>

#if defined(__linux__)
#include <pthread.h>
#endif

namespace offload_test {

using namespace std::chrono_literals;

/// Counts copies and moves of every object of this type (per Tag), across threads. With
/// DefaultConstructible = false it has no default constructor (offload then completes with
/// std::optional<T> inside).
template <typename Tag, bool DefaultConstructible = true>
struct counted {
  static inline std::atomic<int> copies{0};
  static inline std::atomic<int> moves{0};
  static void reset() noexcept {
    copies = 0;
    moves = 0;
  }

  int value = 0;

  counted() noexcept requires DefaultConstructible {}
  explicit counted(int v) noexcept : value(v) {}
  counted(const counted& other) noexcept : value(other.value) { ++copies; }
  counted(counted&& other) noexcept : value(other.value) { ++moves; }
  counted& operator=(const counted& other) noexcept {
    value = other.value;
    ++copies;
    return *this;
  }
  counted& operator=(counted&& other) noexcept {
    value = other.value;
    ++moves;
    return *this;
  }
  ~counted() = default;
};

/// A one-shot gate: workers wait on it, the test opens it. Waits end after `max` so that a
/// test that fails before opening the gate does not hang its pool's destructor.
class gate {
 public:
  void open() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      open_ = true;
    }
    cv_.notify_all();
  }
  /// True if the gate was opened, false if `max` passed first.
  bool wait(std::chrono::milliseconds max = 10s) {
    std::unique_lock<std::mutex> lock(mutex_);
    return cv_.wait_for(lock, max, [this] { return open_; });
  }
  bool is_open() {
    std::lock_guard<std::mutex> lock(mutex_);
    return open_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool open_ = false;
};

/// A rendezvous for `n` threads: each arrives and waits until all have (or `max` passes).
class rendezvous {
 public:
  explicit rendezvous(int n) : remaining_(n) {}
  /// True if all `n` arrived before `max` passed.
  bool arrive_and_wait(std::chrono::milliseconds max = 10s) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (--remaining_ <= 0) {
      cv_.notify_all();
      return true;
    }
    return cv_.wait_for(lock, max, [this] { return remaining_ <= 0; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int remaining_;
};

/// Polls `pred` every millisecond until it holds or `max` passes; returns the last result.
/// Only to wait for something to happen: never an upper bound on how fast it happens (a
/// coroutine polls with wait_until, loop_helpers.hpp).
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds max = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + max;
  for (;;) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return pred();
    std::this_thread::sleep_for(1ms);
  }
}

/// The calling thread's name as the OS shows it.
inline std::string this_thread_name() { return offload::detail::current_thread_name(); }

inline void set_this_thread_name(const char* name) {
#if defined(__linux__)
  pthread_setname_np(pthread_self(), name);
#else
  (void)name;
#endif
}

/// Loop-side countdown: coroutines on one loop call done(); wait() resumes once all have.
/// Use from the loop's executor only.
class countdown {
 public:
  template <typename Executor>
  countdown(const Executor& ex, int n)
      : timer_(ex, std::chrono::steady_clock::time_point::max()), remaining_(n) {}
  void done() {
    if (--remaining_ == 0) timer_.cancel();
  }
  int remaining() const noexcept { return remaining_; }
  offload::awaitable<void> wait() {
    while (remaining_ > 0) {
      offload::net_error_code ec;
      co_await timer_.async_wait(offload::net::redirect_error(offload::net::use_awaitable, ec));
    }
  }

 private:
  offload::net::steady_timer timer_;
  int remaining_;
};

/// Submits f to `target` as a thread with no loop would: with a plain callback (no executor of
/// its own), and returns a future for the result. Errors in the submission itself throw here.
template <typename Target, typename F>
auto submit_plain(Target& target, F f) {
  using R = std::invoke_result_t<F&>;
  auto p = std::make_shared<std::promise<R>>();
  auto fut = p->get_future();
  if constexpr (std::is_void_v<R>) {
    offload::async_run(target, std::move(f), [p](std::exception_ptr e) {
      if (e) {
        p->set_exception(e);
      } else {
        p->set_value();
      }
    });
  } else {
    offload::async_run(target, std::move(f), [p](std::exception_ptr e, R v) {
      if (e) {
        p->set_exception(e);
      } else {
        p->set_value(std::move(v));
      }
    });
  }
  return fut;
}

/// An event_loop running run_forever() on a std::thread of its own; stopped and joined on
/// destruction (also when a REQUIRE fails in between).
class loop_on_thread {
 public:
  loop_on_thread() {
    std::promise<std::thread::id> started;
    auto id = started.get_future();
    thread_ = std::thread([this, &started] {
      started.set_value(std::this_thread::get_id());
      loop.run_forever();
    });
    thread_id = id.get();
    // run_forever() must have begun before stop() can end it: wait until the loop runs.
    eventually([this] { return loop.is_running(); }, 10s);
  }
  ~loop_on_thread() {
    loop.stop();
    if (thread_.joinable()) thread_.join();
  }
  loop_on_thread(const loop_on_thread&) = delete;
  loop_on_thread& operator=(const loop_on_thread&) = delete;

  offload::event_loop loop;
  std::thread::id thread_id;

 private:
  std::thread thread_;
};

}  // namespace offload_test
