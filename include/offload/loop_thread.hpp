// offload: loop_thread, an event loop on a thread of its own (asyncio's "start a loop in
// another thread and submit coroutines to it", made safe).
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/config.hpp>
#include <offload/event_loop.hpp>
#include <offload/threadsafe.hpp>

#include <future>
#include <memory>
#include <thread>
#include <utility>

namespace offload {

class loop_thread {
 public:
  /// Starts the thread and runs the loop on it until destruction.
  loop_thread() : loop_(std::make_unique<event_loop>()) {
    std::promise<void> started;
    auto running = started.get_future();
    thread_ = std::thread([this, &started] {
      loop_->call_soon([&started] { started.set_value(); });
      loop_->run_forever();
      // Stopped (by the destructor, or by anyone through loop()): this loop never runs again,
      // so close it here: pending work completes with loop_closed, new work is refused.
      loop_->close();
    });
    running.wait();  // call() may block on the loop from now on
  }

  loop_thread(const loop_thread&) = delete;
  loop_thread& operator=(const loop_thread&) = delete;

  /// Stops the loop and joins the thread, which closes the loop: work still pending from
  /// other threads completes with loop_closed.
  ~loop_thread() {
    loop_->stop();
    if (thread_.joinable()) thread_.join();
  }

  event_loop& loop() noexcept { return *loop_; }

  /// Runs `coro` on the loop and blocks this thread for its result (a blocking portal).
  /// From the loop's own thread that would never return: it throws would_deadlock.
  template <typename T>
  T call(awaitable<T> coro) {
    if (loop_->in_loop_thread()) {
      throw_error(errc::would_deadlock, "loop_thread::call from the loop's own thread");
    }
    return run_coroutine_threadsafe(std::move(coro), *loop_).result();
  }

  /// Runs `f()` on the loop soon (call_soon_threadsafe).
  template <typename F>
  handle call_soon(F&& f) {
    return loop_->call_soon_threadsafe(std::forward<F>(f));
  }

 private:
  std::unique_ptr<event_loop> loop_;
  std::thread thread_;
};

}  // namespace offload
