// offload: concurrent_future, the thread-safe result of run_coroutine_threadsafe, and
// wrap_future to await one from a coroutine without blocking.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/config.hpp>
#include <offload/detail/result.hpp>
#include <offload/detail/spin.hpp>
#include <offload/detail/thread_context.hpp>
#include <offload/detail/unique_function.hpp>
#include <offload/errors.hpp>
#include <offload/thread_pool.hpp>
#include <offload/to_thread.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

namespace offload {

template <typename T>
class concurrent_future;
template <typename T>
awaitable<T> wrap_future(concurrent_future<T> future);

namespace detail {

/// What a concurrent_future shares with the coroutine that fills it.
template <typename T>
class future_state : public std::enable_shared_from_this<future_state<T>> {
 public:
  using callback = std::function<void(concurrent_future<T>)>;

  /// Set by the submitter: is the calling thread the one running the target loop?
  std::function<bool()> on_loop_thread;
  /// Set by the submitter: asks the coroutine to stop (runs the request on its loop).
  std::function<void()> request_cancel;

  bool done() const { return ready_.load(std::memory_order_acquire); }

  bool cancelled() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return cancelled_;
  }

  /// First completion wins; later ones (a coroutine finishing after its loop closed) are
  /// ignored. Returns whether this one won.
  template <typename... A>
  bool set_value(A&&... a) {
    return finish([&] { outcome_.set_value(std::forward<A>(a)...); });
  }
  bool set_exception(std::exception_ptr e, bool cancelled = false) {
    return finish([&] {
      outcome_.set_error(std::move(e));
      cancelled_ = cancelled;
    });
  }

  // Every blocking wait refuses the loop's own thread, done or not: whether the same line
  // works must not depend on how fast the coroutine was.
  void wait() {
    check_deadlock("concurrent_future: a blocking wait on the thread that runs its loop");
    if (done()) return;
    // A loop thread blocking here must not hold back calls its step made for the awaited work.
    detail::settle_current_step();
    // A short bounded spin first: a quick coroutine is back sooner than a park and wake-up.
    detail::adaptive_spin spinner(detail::default_spin());
    if (spinner.spin([this] { return done(); })) return;
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [this] { return done_; });
  }

  template <typename Rep, typename Period>
  bool wait_for(std::chrono::duration<Rep, Period> d) {
    check_deadlock("concurrent_future: a blocking wait on the thread that runs its loop");
    if (done()) return true;
    detail::settle_current_step();
    std::unique_lock<std::mutex> lock(mutex_);
    return cv_.wait_for(lock, d, [this] { return done_; });
  }

  std::exception_ptr exception() {
    wait();
    std::lock_guard<std::mutex> lock(mutex_);
    return outcome_.error();
  }

  /// The value (copied when T is copyable, so result() can be asked again; moved once when not).
  T take() {
    std::lock_guard<std::mutex> lock(mutex_);
    return outcome_.take("offload::concurrent_future::result");
  }

  void add_callback(callback cb, concurrent_future<T> self) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!done_) {
        callbacks_.push_back(std::move(cb));
        return;
      }
    }
    run_callback(cb, std::move(self));
  }

  // Inside this future's own done-callback it is done for certain, so reading it never
  // waits, on any thread: only there may the loop thread call the blocking readers.
  void check_deadlock(const char* where) const {
    if (running_callbacks_of == this) return;
    if (on_loop_thread && on_loop_thread()) throw_error(errc::would_deadlock, where);
  }

 private:
  template <typename Set>
  bool finish(Set&& set) {
    std::vector<callback> callbacks;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (done_) return false;
      set();
      done_ = true;
      ready_.store(true, std::memory_order_release);
      callbacks.swap(callbacks_);
    }
    cv_.notify_all();
    if (!callbacks.empty()) {
      concurrent_future<T> self(this->shared_from_this());
      for (auto& cb : callbacks) run_callback(cb, self);
    }
    return true;
  }

  void run_callback(callback& cb, concurrent_future<T> self) noexcept {
    const future_state* const outer = std::exchange(running_callbacks_of, this);
    struct restore {
      const future_state* outer;
      ~restore() { running_callbacks_of = outer; }
    } restore_on_exit{outer};
    try {
      cb(std::move(self));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "offload: a concurrent_future done-callback threw: %s\n", e.what());
    } catch (...) {
      std::fprintf(stderr, "offload: a concurrent_future done-callback threw\n");
    }
  }

  static inline thread_local const future_state* running_callbacks_of = nullptr;

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::atomic<bool> ready_{false};  // done_, readable without the lock
  bool cancelled_ = false;
  result<T> outcome_;
  std::vector<callback> callbacks_;
};

}  // namespace detail

/// The result of a coroutine running on a loop, for threads that are not on that loop
/// (asyncio's concurrent.futures.Future from run_coroutine_threadsafe). Copies share the state.
template <typename T>
class concurrent_future {
 public:
  concurrent_future() = default;
  explicit concurrent_future(std::shared_ptr<detail::future_state<T>> state)
      : state_(std::move(state)) {}

  bool valid() const noexcept { return state_ != nullptr; }
  bool done() const { return state_->done(); }
  bool cancelled() const { return state_->cancelled(); }

  /// Blocks until done; returns the value or rethrows. On the thread running the target loop
  /// a wait could never end: every blocking call here (result, exception, wait, wait_for)
  /// throws would_deadlock there, even when the future is already done, except inside one of
  /// its own done-callbacks (where it is done by definition).
  T result() {
    state_->wait();
    return state_->take();
  }

  /// As result(), but throws timeout after `d`; the future stays pending.
  template <typename Rep, typename Period>
  T result(std::chrono::duration<Rep, Period> d) {
    if (!state_->wait_for(d)) {
      throw_error(errc::timeout, "concurrent_future::result(timeout)");
    }
    return state_->take();
  }

  /// Blocks until done; the exception it finished with, or null.
  std::exception_ptr exception() { return state_->exception(); }

  void wait() { state_->wait(); }
  template <typename Rep, typename Period>
  bool wait_for(std::chrono::duration<Rep, Period> d) {
    return state_->wait_for(d);
  }

  /// Cancels the coroutine on its loop (thread-safe). done() and the callbacks follow only
  /// once it has unwound. False if it had already finished.
  bool cancel() {
    if (state_->done()) return false;
    if (state_->request_cancel) state_->request_cancel();
    return true;
  }

  /// `cb(future)` runs exactly once when the future is done: at once on this thread if it
  /// already is, else on the thread that completes it. A throwing callback is reported and
  /// does not stop the others.
  void add_done_callback(std::function<void(concurrent_future<T>)> cb) {
    state_->add_callback(std::move(cb), *this);
  }

 private:
  template <typename U>
  friend awaitable<U> wrap_future(concurrent_future<U> future);

  std::shared_ptr<detail::future_state<T>> state_;
};

namespace detail {
// Runs offload's work item when the future completes: the future is the "pool" the result is
// read on, so the hand-back to the awaiting loop is counted and safe like any offloaded call.
template <typename T>
struct when_done {
  concurrent_future<T> future;
  void submit(work_item item) {
    future.add_done_callback([item](const concurrent_future<T>&) { item(); });
  }
};
}  // namespace detail

/// Awaits a concurrent_future from a coroutine (on any loop) without blocking its thread
/// (asyncio's wrap_future).
template <typename T>
awaitable<T> wrap_future(concurrent_future<T> future) {
  detail::when_done<T> on_done{future};
  // Runs once the future is done, possibly on the loop's own thread: a read, never a wait.
  auto read = [future]() mutable -> T { return future.state_->take(); };
  co_return co_await run_in_executor(on_done, std::move(read));
}

}  // namespace offload
