// offload: event_loop, asyncio's loop as a facade over asio::io_context.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/config.hpp>
#include <offload/detail/completion_queue.hpp>
#include <offload/detail/loop_shared.hpp>
#include <offload/detail/loop_step.hpp>
#include <offload/detail/service.hpp>
#include <offload/detail/spin.hpp>
#include <offload/detail/unique_function.hpp>
#include <offload/errors.hpp>
#include <offload/future.hpp>
#include <offload/handle.hpp>
#include <offload/task.hpp>
#include <offload/thread_pool.hpp>
#include <offload/to_thread.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace offload {

class event_loop;
template <typename T>
class concurrent_future;
template <typename T>
concurrent_future<T> run_coroutine_threadsafe(awaitable<T> coro, event_loop& loop);

/// What shutdown_default_executor returns: whether the pool finished in time, and if not,
/// the calls still running.
struct shutdown_report {
  bool completed = true;
  std::vector<running_call> stragglers;
};

namespace detail {

template <typename T>
struct main_state {
  std::atomic<bool> done{false};
  result<T> outcome;  // written on the loop's thread before done
};

}  // namespace detail

class event_loop {
 public:
  using executor_type = detail::loop_strand_type;

  /// A loop with an io_context of its own.
  event_loop() : owned_(std::make_unique<net::io_context>(1)), ctx_(owned_.get()) { attach(); }

  /// A loop over an io_context you own (and may run from several threads).
  explicit event_loop(net::io_context& ctx) : ctx_(&ctx) { attach(); }

  event_loop(const event_loop&) = delete;
  event_loop& operator=(const event_loop&) = delete;

  ~event_loop() {
    if (!closed_.load()) close();
  }

  /// The loop's strand: all loop-side code runs on it, one step at a time.
  executor_type get_executor() const {
    if (!strand_) throw_error(errc::loop_closed, "event_loop::get_executor");
    return *strand_;
  }
  net::io_context& context() noexcept { return *ctx_; }

  bool is_running() const noexcept { return running_.load(std::memory_order_acquire); }
  bool is_closed() const noexcept { return closed_.load(std::memory_order_acquire); }
  /// True on a thread running this loop (inside run_until_complete / run_forever, or inside
  /// one of its steps).
  bool in_loop_thread() const noexcept {
    return detail::this_thread().loop == this || (strand_ && strand_->running_in_this_thread());
  }

  /// Runs the loop on this thread until `main` finishes; returns its result or rethrows.
  template <typename T>
  T run_until_complete(awaitable<T> main) {
    check_runnable("event_loop::run_until_complete");
    auto state = std::make_shared<detail::main_state<T>>();
    net::co_spawn(*strand_, run_main(std::move(main), state), main_done<T>{state});
    run_steps([&] { return state->done.load(std::memory_order_acquire); });
    if (!state->done.load(std::memory_order_acquire)) {
      throw std::runtime_error(
          "offload::event_loop::run_until_complete: the loop was stopped before the coroutine "
          "finished (it is still pending: run the loop again to go on)");
    }
    auto& value = state->outcome.value("offload::event_loop::run_until_complete");
    if constexpr (!std::is_void_v<T>) return std::move(value);
  }

  /// Runs the loop on this thread until stop().
  void run_forever() {
    check_runnable("event_loop::run_forever");
    run_steps([] { return false; });
  }

  /// Thread-safe: the running loop returns after the step it is in. If the loop is not
  /// running, the next run returns after one pass over what is ready.
  void stop() {
    stop_requested_.store(true, std::memory_order_release);
    std::lock_guard<std::mutex> lock(threadsafe_mutex_);  // close() may be destroying ctx_
    if (!is_closed()) net::post(*ctx_, [] {});            // wakes a parked loop
  }

  /// Shuts the default executor down (waiting for running calls), then lets go of the
  /// io_context (destroying it, and what is still queued on it, if the loop owns it).
  /// Closing twice does nothing; closing a running loop is an error.
  void close() {
    if (is_running()) {
      throw_error(errc::would_deadlock,
                  "event_loop::close: the loop is running; stop() it and let it return first");
    }
    {
      std::lock_guard<std::mutex> lock(threadsafe_mutex_);
      if (closed_.exchange(true)) return;
    }
    unregister_loop();
    // What other threads handed in before the close is processed, never dropped: accepted
    // callbacks run here, and coroutines still pending complete with loop_closed.
    threadsafe_queue_->close();
    for (detail::op_base* op = threadsafe_queue_->take_all(); op != nullptr;) {
      detail::op_base* next = op->next;
      op->complete();
      op = next;
    }
    shared_->fail_pending();
    shared_->forget_strand();
    if (auto pool = service_->default_pool_if_any()) {
      pool->shutdown(detail::this_thread().worker_of != pool.get());
    }
    service_->detach_loop(this);
    strand_.reset();
    if (owned_) {
      service_ = nullptr;
      owned_.reset();
    }
  }

  // -- callbacks -----------------------------------------------------------------------------

  /// From any thread: runs `f` on the loop, in FIFO order per calling thread. The handle's
  /// cancel() returning true means `f` never runs. On a closed loop throws loop_closed; a call
  /// that returns is processed, even if the loop closes first (close() runs it).
  template <typename F>
  handle call_soon_threadsafe(F&& f) {
    using node_type = detail::threadsafe_callback<std::decay_t<F>>;
    auto node = std::make_shared<node_type>(std::forward<F>(f), shared_);
    node->self = node;
    {
      std::lock_guard<std::mutex> lock(threadsafe_mutex_);
      if (is_closed()) {
        node->self.reset();
        throw_error(errc::loop_closed, "event_loop::call_soon_threadsafe");
      }
      threadsafe_queue_->push(node.get());
    }
    return handle(std::move(node));
  }

  /// Runs `f` on the loop soon, in FIFO order with other call_soon callbacks.
  template <typename F>
  handle call_soon(F&& f) {
    check_open("event_loop::call_soon");
    auto state = std::make_shared<detail::callback_state<std::decay_t<F>>>(std::forward<F>(f));
    // The callback holds what it needs, not the loop: a wrapped io_context may outlive it.
    net::post(*strand_, [shared = shared_, state]() { run_callback(*shared, *state, state->fn); });
    return handle(std::move(state));
  }

  template <typename Rep, typename Period, typename F>
  handle call_later(std::chrono::duration<Rep, Period> delay, F&& f) {
    return call_at(std::chrono::steady_clock::now() +
                       std::chrono::duration_cast<std::chrono::steady_clock::duration>(delay),
                   std::forward<F>(f));
  }

  template <typename F>
  handle call_at(std::chrono::steady_clock::time_point when, F&& f) {
    check_open("event_loop::call_at");
    auto state = std::make_shared<detail::timer_callback_state<std::decay_t<F>>>(std::forward<F>(f),
                                                                                 shared_);
    auto timer = std::make_shared<net::steady_timer>(*strand_, when);
    state->timer = timer;
    timer->async_wait([shared = shared_, state, timer](const net_error_code&) {
      run_callback(*shared, *state, state->fn);
    });
    return handle(std::move(state));
  }

  /// Schedules `coro` on the loop (asyncio's create_task): its body starts on a later loop
  /// step, once the caller is back in the loop, and tasks start in the order they were created.
  /// From any thread.
  template <typename T>
  task<T> create_task(awaitable<T> coro) {
    check_open("event_loop::create_task");
    auto state = std::make_shared<detail::task_state<T>>(shared_);
    auto slot = state->signal.slot();
    detail::spawn_later(*strand_, task_body(std::move(coro), state),
                        net::bind_cancellation_slot(slot, task_done<T>(state)));
    return task<T>(std::move(state));
  }

  /// asyncio's loop.create_future(): a pending future<T> bound to this loop, for a result that
  /// something else (another thread, a C library's callback) will set. If the loop closes
  /// first, its awaiters get loop_closed.
  template <typename T = void>
  future<T> create_future() {
    check_open("event_loop::create_future");
    return detail::make_loop_future<T>(shared_);
  }

  // -- errors and diagnostics ----------------------------------------------------------------

  /// Receives exceptions escaping callbacks and unawaited tasks; empty restores the default
  /// (print to stderr and go on).
  void set_exception_handler(std::function<void(const exception_context&)> handler) {
    std::lock_guard<std::mutex> lock(shared_->mutex);
    shared_->exception_handler = std::move(handler);
  }
  void call_exception_handler(const exception_context& ctx) { shared_->report(ctx); }

  /// Reports every loop-side step that runs longer than `threshold` (zero turns it off). While
  /// on, the loop times each step on its own, and parks in short naps rather than in Asio.
  void set_slow_callback_threshold(std::chrono::nanoseconds threshold) {
    slow_threshold_ns_.store(threshold.count(), std::memory_order_release);
    if (auto* q = service_->loop_queue()) q->set_one_per_drain(threshold.count() > 0);
  }
  std::chrono::nanoseconds slow_callback_threshold() const noexcept {
    return std::chrono::nanoseconds(slow_threshold_ns_.load(std::memory_order_acquire));
  }
  void set_slow_callback_handler(std::function<void(const slow_callback_report&)> handler) {
    std::lock_guard<std::mutex> lock(shared_->mutex);
    shared_->slow_handler = std::move(handler);
  }

  /// How long the loop spins for a hand-back before it parks (0: never spin). A loop whose
  /// spins keep losing their CPU to the workers it waits for parks at once, and tries a spin
  /// again now and then.
  void set_spin(std::chrono::nanoseconds spin) noexcept { spin_ = spin; }

  // -- executors -----------------------------------------------------------------------------

  template <typename Target, detail::not_options F, typename... Args>
  auto run_in_executor(Target&& target, F&& f, Args&&... args) {
    return offload::run_in_executor(std::forward<Target>(target), std::forward<F>(f),
                                    std::forward<Args>(args)...);
  }
  template <typename Target, typename F, typename... Args>
  auto run_in_executor(Target&& target, call_options options, F&& f, Args&&... args) {
    return offload::run_in_executor(std::forward<Target>(target), std::move(options),
                                    std::forward<F>(f), std::forward<Args>(args)...);
  }

  /// The default executor (created on first use).
  thread_pool& default_executor_pool() { return service_->default_pool(); }

  /// Replaces the default executor; the old one keeps running what it has.
  void set_default_executor(std::shared_ptr<thread_pool> pool) {
    service_->set_default_pool(std::move(pool));
  }
  void set_default_executor(thread_pool_options options) {
    set_default_executor(std::make_shared<thread_pool>(std::move(options)));
  }

  /// Refuses new default-executor work and waits, without blocking the loop, for the running
  /// calls to finish; after `timeout` returns the ones still running instead of hanging.
  awaitable<shutdown_report> shutdown_default_executor(
      std::chrono::nanoseconds timeout = std::chrono::seconds(300)) {
    auto pool = service_->default_pool_if_any();
    if (!pool) {
      // Nothing was ever offloaded: still refuse from now on.
      pool = std::make_shared<thread_pool>();
      service_->set_default_pool(pool);
    }
    if (detail::this_thread().worker_of == pool.get()) {
      throw_error(errc::would_deadlock,
                  "shutdown_default_executor called from one of the default executor's threads");
    }
    pool->shutdown(false);
    auto waiter = std::make_shared<stop_waiter>(*strand_);
    waiter->timer.expires_after(
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout));
    pool->when_stopped([waiter] {
      net::post(waiter->strand, [waiter] {
        waiter->stopped = true;
        waiter->timer.cancel();
      });
    });
    net_error_code ec;
    co_await waiter->timer.async_wait(net::redirect_error(net::use_awaitable, ec));
    if (waiter->stopped) {
      pool->join();
      co_return shutdown_report{};
    }
    co_return shutdown_report{false, pool->running_calls()};
  }

 private:
  struct stop_waiter {
    explicit stop_waiter(executor_type s) : timer(s), strand(std::move(s)) {}
    net::steady_timer timer;
    executor_type strand;
    bool stopped = false;
  };

  template <typename T>
  friend concurrent_future<T> run_coroutine_threadsafe(awaitable<T> coro, event_loop& loop);

  // Runs `submit` under the lock that close() takes, unless the loop is closed.
  template <typename Submit>
  void submit_threadsafe(const char* where, Submit&& submit) {
    std::lock_guard<std::mutex> lock(threadsafe_mutex_);
    if (is_closed()) throw_error(errc::loop_closed, where);
    submit();
  }

  template <typename T>
  struct main_done {
    std::shared_ptr<detail::main_state<T>> state;
    void operator()(std::exception_ptr e) const {
      if (e) state->outcome.set_error(std::move(e));
      state->done.store(true, std::memory_order_release);
    }
  };

  template <typename T>
  static awaitable<void> run_main(awaitable<T> main, std::shared_ptr<detail::main_state<T>> st) {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(main);
      st->outcome.set_value();
    } else {
      T value = co_await std::move(main);  // named: GCC 12 destroys a co_await temporary twice
      st->outcome.set_value(std::move(value));
    }
  }

  // Finishes the task when its coroutine ends; if Asio destroys it unrun (the io_context went
  // away before the task ended, or before it started), joiners get loop_closed, not a hang.
  template <typename T>
  struct task_done {
    std::shared_ptr<detail::task_state<T>> state;

    explicit task_done(std::shared_ptr<detail::task_state<T>> s) : state(std::move(s)) {}
    task_done(task_done&&) noexcept = default;
    task_done& operator=(task_done&&) = delete;
    ~task_done() {
      if (state) {
        finish(*state, std::make_exception_ptr(make_error(
                           errc::loop_closed, "the loop went away before the task finished")));
      }
    }

    void operator()(std::exception_ptr e) {
      auto s = std::move(state);
      finish(*s, std::move(e));
    }

    static void finish(detail::task_state<T>& st, std::exception_ptr e) {
      std::unique_lock<std::mutex> lock(st.mutex);
      st.done = true;
      if (e) st.outcome.set_error(std::move(e));
      auto waiters = std::move(st.waiters);
      st.waiters.clear();
      if (st.handles == 0) st.report_unretrieved_locked(lock);
      if (lock.owns_lock()) lock.unlock();
      for (auto& w : waiters) w();
    }
  };

  template <typename T>
  static awaitable<void> task_body(awaitable<T> coro, std::shared_ptr<detail::task_state<T>> st) {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(coro);
      std::lock_guard<std::mutex> lock(st->mutex);
      st->outcome.set_value();
    } else {
      auto value = co_await std::move(coro);
      std::lock_guard<std::mutex> lock(st->mutex);
      st->outcome.set_value(std::move(value));
    }
  }

  void attach() {
    strand_.emplace(net::make_strand(*ctx_));
    shared_->strand = *strand_;
    service_ = &net::use_service<detail::offload_service>(*ctx_);
    service_->attach_loop(this, *strand_);  // throws for a second loop: nothing to undo yet
    threadsafe_queue_ =
        service_->adopt(std::make_unique<detail::basic_completion_queue<executor_type>>(*strand_));
    register_loop();
  }

  // Live loops, so get_running_loop() also finds a loop whose io_context the application
  // runs itself (its steps run on the loop's strand, not inside run_until_complete).
  struct registry {
    std::mutex mutex;
    std::vector<event_loop*> loops;
  };
  static registry& loops() {
    static registry r;
    return r;
  }
  void register_loop() {
    std::lock_guard<std::mutex> lock(loops().mutex);
    loops().loops.push_back(this);
  }
  void unregister_loop() noexcept {
    std::lock_guard<std::mutex> lock(loops().mutex);
    auto& v = loops().loops;
    v.erase(std::remove(v.begin(), v.end(), this), v.end());
  }
  friend event_loop& get_running_loop();

 public:
  /// The open loop whose strand is `ex`, or null (for run_coroutine_threadsafe(coro, executor)).
  static event_loop* find(const executor_type& ex) {
    std::lock_guard<std::mutex> lock(loops().mutex);
    for (event_loop* candidate : loops().loops) {
      if (candidate->strand_ && *candidate->strand_ == ex) return candidate;
    }
    return nullptr;
  }

 private:
  void check_open(const char* where) const {
    if (is_closed()) throw_error(errc::loop_closed, where);
  }

  void check_runnable(const char* where) {
    check_open(where);
    if (running_.load(std::memory_order_acquire)) {
      throw_error(errc::would_deadlock,
                  in_loop_thread()
                      ? "the loop is already running on this thread: co_await the awaitable "
                        "instead of running the loop again"
                      : "the loop is already running on another thread: hand it work with "
                        "call_soon_threadsafe / run_coroutine_threadsafe instead");
    }
  }

  template <typename State, typename F>
  static void run_callback(detail::loop_shared& shared, State& state, F& fn) {
    detail::run_callback(shared, state, fn);
  }

  // The loop's own run: execute what is ready; when idle with calls in flight, spin a bounded
  // while for their hand-back; then park in Asio (or, when timing steps, nap briefly).
  template <typename Done>
  void run_steps(Done done) {
    running_.store(true, std::memory_order_release);
    struct not_running {
      std::atomic<bool>& running;
      ~not_running() { running.store(false, std::memory_order_release); }
    } clear_on_exit{running_};
    const detail::loop_thread_scope on_this_thread(this, service_);
    auto work = net::make_work_guard(*ctx_);

    net::io_context& ctx = *ctx_;
    detail::completion_queue* queue = service_->loop_queue();
    detail::adaptive_spin spinner(spin_);
    for (;;) {
      if (done()) return;
      if (ctx.stopped()) ctx.restart();
      const std::int64_t threshold = slow_threshold_ns_.load(std::memory_order_relaxed);
      std::size_t ran = 0;
      if (threshold > 0) {
        ran = step([&] { return timed_poll_one(ctx, threshold); });
      } else {
        // One handler at a time, so a stop() or a finished main is seen even while handlers
        // keep becoming ready (a coroutine that yields forever would keep poll() from returning).
        while (ran < max_batch && step([&] { return ctx.poll_one(); }) != 0) {
          ++ran;
          if (stop_requested_.load(std::memory_order_relaxed) || done()) break;
        }
      }
      if (stop_requested_.exchange(false, std::memory_order_acq_rel)) return;
      if (ran != 0 || done()) continue;
      if (spin_.count() > 0 && service_->in_flight() != 0 && spinner.should_spin()) {
        queue->begin_spin();
        spinner.spin([&] {
          return queue->handed_over() || stop_requested_.load(std::memory_order_relaxed);
        });
        queue->end_spin();
        const std::size_t polled =
            step([&] { return threshold > 0 ? timed_poll_one(ctx, threshold) : ctx.poll(); });
        if (polled != 0) continue;
      }
      if (threshold > 0) {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      } else {
        step([&] { return ctx.run_one(); });
      }
    }
  }

  // Runs handlers (one, or what poll() finds) as one loop step.
  template <typename Poll>
  static std::size_t step(Poll poll) {
    const detail::loop_step settled_at_end;
    return poll();
  }

  // Handlers run back to back before the loop reads its settings again (the slow-callback
  // threshold) and goes round its outer loop: that bookkeeping stays a small share of a busy
  // loop's time, and a threshold set meanwhile applies within this many handlers.
  static constexpr std::size_t max_batch = 256;

  std::size_t timed_poll_one(net::io_context& ctx, std::int64_t threshold) {
    const auto start = std::chrono::steady_clock::now();
    const std::size_t ran = ctx.poll_one();
    const auto took = std::chrono::steady_clock::now() - start;
    if (ran != 0 && took.count() > threshold) {
      shared_->report_slow({std::chrono::duration_cast<std::chrono::nanoseconds>(took),
                            std::chrono::nanoseconds(threshold)});
    }
    return ran;
  }

  std::unique_ptr<net::io_context> owned_;
  net::io_context* ctx_;
  std::optional<executor_type> strand_;
  detail::offload_service* service_ = nullptr;
  std::shared_ptr<detail::loop_shared> shared_ = std::make_shared<detail::loop_shared>();
  std::atomic<bool> running_{false};
  std::atomic<bool> closed_{false};
  std::atomic<bool> stop_requested_{false};
  std::mutex threadsafe_mutex_;  // makes "not closed" and "enqueued" one step
  detail::basic_completion_queue<executor_type>* threadsafe_queue_ = nullptr;  // the service's
  std::atomic<std::int64_t> slow_threshold_ns_{0};
  std::chrono::nanoseconds spin_ = detail::default_spin();
};

/// The loop running on this thread; throws no_running_loop elsewhere (asyncio's
/// "no running event loop").
inline event_loop& get_running_loop() {
  event_loop* loop = detail::this_thread().loop;
  if (loop == nullptr) {
    std::lock_guard<std::mutex> lock(event_loop::loops().mutex);
    for (event_loop* candidate : event_loop::loops().loops) {
      if (candidate->strand_ && candidate->strand_->running_in_this_thread()) return *candidate;
    }
  }
  if (loop == nullptr) {
    throw_error(errc::no_running_loop, "offload::get_running_loop");
  }
  return *loop;
}

/// asyncio.run: a new loop runs `main` to completion, shuts its default executor down and
/// closes.
template <typename T>
T run(awaitable<T> main) {
  event_loop loop;
  if constexpr (std::is_void_v<T>) {
    loop.run_until_complete(std::move(main));
    loop.run_until_complete(loop.shutdown_default_executor());
    loop.close();
  } else {
    T result = loop.run_until_complete(std::move(main));
    loop.run_until_complete(loop.shutdown_default_executor());
    loop.close();
    return result;
  }
}

}  // namespace offload
