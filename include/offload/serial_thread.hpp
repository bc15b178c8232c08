// offload: serial_thread, one thread of its own for a resource that must always be called from
// the same thread (an SQLite connection in its default threading mode, an ODBC handle, many
// vendor SDKs).
//
// Calls made through it run one at a time, in the order they reach it, always on the thread it
// started when it was constructed. It is a thread_pool of exactly one worker that is never
// replaced: cancellation of queued calls, capacity limiters, bounded queues, stats and shutdown
// behave as on any offload pool.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/call_observer.hpp>
#include <offload/config.hpp>
#include <offload/thread_pool.hpp>

#include <chrono>
#include <cstddef>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace offload {

struct serial_thread_options {
  /// The thread's name (Linux shows the last 15 characters).
  std::string thread_name = "offload-serial";
  /// Runs first on the thread, before any call: open the resource the thread is for. If it
  /// throws, the constructor throws that exception and no thread is left behind.
  std::function<void()> initializer;
  /// Most calls waiting to start; 0 means unbounded (as thread_pool_options::max_queue).
  std::size_t max_queue = 0;
  /// How long the idle thread spins before it parks; unset: thread_pool's default.
  std::optional<std::chrono::nanoseconds> spin;
  /// As the thread_pool_options of the same names.
  bool timings = false;
  std::chrono::nanoseconds stats_window = std::chrono::seconds(30);
  std::shared_ptr<call_observer> observer;
  std::optional<std::chrono::nanoseconds> report_calls_longer_than;
};

class serial_thread {
 public:
  serial_thread() : serial_thread(serial_thread_options{}) {}
  explicit serial_thread(serial_thread_options options)
      : pool_(pool_options(options, started_)), thread_id_(wait_started()) {}

  serial_thread(const serial_thread&) = delete;
  serial_thread& operator=(const serial_thread&) = delete;

  /// shutdown(wait = true): queued calls still run, then the thread is joined.
  ~serial_thread() = default;

  /// The target to pass to run_in_executor / async_run (the serial_thread itself works too).
  thread_pool::executor_type get_executor() noexcept { return pool_.get_executor(); }

  /// The one thread every call runs on, for the whole life of the object.
  std::thread::id thread_id() const noexcept { return thread_id_; }

  /// As thread_pool::shutdown: new calls get executor_shutdown; queued calls still run (or,
  /// with cancel_pending, never run and their awaiters get operation_aborted); with wait,
  /// returns once the thread has exited (from the thread itself: would_deadlock).
  void shutdown(bool wait = true, bool cancel_pending = false) {
    pool_.shutdown(wait, cancel_pending);
  }
  bool is_shutdown() const noexcept { return pool_.is_shutdown(); }
  /// Blocks until the thread has exited after shutdown (or returns at once without one).
  void join() { pool_.join(); }

  /// queued, running (0 or 1), completed; workers is 1 until shutdown lets the thread exit.
  thread_pool_stats stats() const { return pool_.stats(); }
  /// The call running now, if any, with how long it has run.
  std::vector<running_call> running_calls() const { return pool_.running_calls(); }

 private:
  // The initializer's outcome and the thread's identity, handed from the new thread to the
  // constructor.
  struct start_signal {
    std::promise<std::thread::id> promise;
  };

  static thread_pool_options pool_options(serial_thread_options& options, start_signal& started) {
    thread_pool_options o;
    o.max_workers = 1;
    o.min_workers = 1;  // started at once, never reaped: the thread is the same for every call
    o.thread_name_prefix = std::move(options.thread_name);
    o.max_queue = options.max_queue;
    o.spin = options.spin;
    o.timings = options.timings;
    o.stats_window = options.stats_window;
    o.observer = std::move(options.observer);
    o.report_calls_longer_than = options.report_calls_longer_than;
    o.initializer = [init = std::move(options.initializer), &started] {
      try {
        if (init) init();
      } catch (...) {
        started.promise.set_exception(std::current_exception());
        throw;  // the pool's worker exits; the constructor rethrows
      }
      started.promise.set_value(std::this_thread::get_id());
    };
    return o;
  }

  std::thread::id wait_started() {
    try {
      return started_.promise.get_future().get();
    } catch (...) {
      pool_.shutdown(true, true);  // the thread has exited: join it before the object is gone
      throw;
    }
  }

  start_signal started_;  // before pool_: the pool's thread writes it during construction
  thread_pool pool_;
  const std::thread::id thread_id_;
};

}  // namespace offload
