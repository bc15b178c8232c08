// offload: thread_pool, the pluggable pool built for hand-offs (asyncio's ThreadPoolExecutor,
// and more).
//
// Submitting is one CAS on a lock-free FIFO; workers take from it under a mutex that only they
// take. An idle worker spins a bounded, adaptive while before it parks, and at most
// one worker spins at a time, so a burst wakes nobody and an idle pool burns nothing.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/call_observer.hpp>
#include <offload/call_stats.hpp>
#include <offload/config.hpp>
#include <offload/detail/op.hpp>
#include <offload/detail/op_queue.hpp>
#include <offload/detail/pool_metrics.hpp>
#include <offload/detail/spin.hpp>
#include <offload/detail/thread_context.hpp>
#include <offload/detail/thread_name.hpp>
#include <offload/errors.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <fcntl.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#endif

namespace offload {

/// Growth past max_workers when every thread is blocked in a call (see
/// thread_pool_options::grow_when_blocked).
struct blocked_growth {
  /// The hard cap on threads while growing; 0 means four times the pool's max_workers (at or
  /// below max_workers the pool never grows).
  std::size_t max_workers = 0;
  /// How long calls may wait, with no call started meanwhile and every thread inside a call,
  /// before the pool grows (once per period at most). Must be positive.
  std::chrono::nanoseconds after = std::chrono::milliseconds(20);
};

struct thread_pool_options {
  /// Most threads at once; 0 means min(32, cores + 4), as asyncio's default executor.
  std::size_t max_workers = 0;
  /// Threads kept alive even when idle past keep_alive.
  std::size_t min_workers = 0;
  /// An idle thread above min_workers exits after this long.
  std::chrono::nanoseconds keep_alive = std::chrono::seconds(10);
  /// Threads are named "<prefix>-<n>" (Linux shows the last 15 characters).
  std::string thread_name_prefix = "offload";
  /// Runs once at the start of each new thread, before it takes work.
  std::function<void()> initializer;
  /// Most calls waiting to start; 0 means unbounded. When full, a coroutine that submits
  /// waits for room (its thread does not block); a submitter with no loop gets queue_full.
  std::size_t max_queue = 0;
  /// How long an idle worker spins before it parks; unset: 50 us. On a single usable CPU it
  /// yields the CPU for that long instead of spinning. A worker whose spins keep losing their
  /// CPU (it shares one with the thread that would give it work) parks at once, and tries a
  /// spin again now and then.
  std::optional<std::chrono::nanoseconds> spin;
  /// Unset (the default): never more than max_workers threads. Set: when calls have waited
  /// `after` while every thread is inside a call, the pool starts more threads, up to the
  /// growth's max_workers: while every running call is blocked, as many as are running (the
  /// pool doubles each period); once some compute, one per CPU they leave free; none when they
  /// fill the CPUs (on Linux a call computes if its thread is runnable or used a tenth of a CPU
  /// over the period; one blocked in I/O, a lock or a sleep does not). Threads above
  /// max_workers exit after keep_alive idle.
  std::optional<blocked_growth> grow_when_blocked{};
  /// How long each call queued, ran and took to hand back, in stats(). Off by default: four
  /// clock reads and a few atomic updates per call, which a burst of trivial calls feels (see
  /// the benchmark's W12). The counts in stats() are kept either way.
  bool timings = false;
  /// stats().recent covers the last one to two of these.
  std::chrono::nanoseconds stats_window = std::chrono::seconds(30);
  /// Told of every call the pool is given (see call_observer). Null: nothing is called, nothing
  /// is allocated per call.
  std::shared_ptr<call_observer> observer;
  /// Set: a call still running this long after it started is reported once, with its thread's
  /// name (the observer's on_long_call, by default a line on stderr), by a thread the pool
  /// starts for it, which looks a few times per threshold (at most every second, at least
  /// every millisecond). It reads the coarse clock running_calls() uses, so a call is reported
  /// once it has run the threshold plus two ticks of that clock (1-10 ms, by the kernel's HZ)
  /// and up to a quarter threshold more; one that ends sooner is not.
  std::optional<std::chrono::nanoseconds> report_calls_longer_than;
};

struct thread_pool_stats {
  std::size_t workers = 0;       // threads alive
  std::size_t idle = 0;          // alive and waiting for work
  std::size_t queued = 0;        // submitted, not started
  std::size_t running = 0;       // running a call now
  std::uint64_t completed = 0;   // calls the threads took since construction (calls.completed:
                                 // those whose f returned)
  std::size_t peak_workers = 0;  // most threads alive at once
  std::uint64_t grown = 0;       // threads started past max_workers by grow_when_blocked
  call_counts calls;             // how the calls ended
  call_timings timings;          // over the pool's life (empty without options.timings)
  call_timings recent;           // over the last one to two options.stats_window
};

class thread_pool;

namespace detail {
inline std::size_t default_max_workers() noexcept {
  const std::size_t cores = std::max(1u, std::thread::hardware_concurrency());
  return std::min<std::size_t>(32, cores + 4);
}

enum class submit_status { accepted, shut_down, full };

struct pool_access;
}  // namespace detail

// Aligned so that no neighbouring object shares the lines its atomics are on.
class alignas(detail::cache_line) thread_pool {
 public:
  /// A cheap handle that names the pool as a run_in_executor target.
  class executor_type {
   public:
    thread_pool& context() const noexcept { return *pool_; }
    friend bool operator==(const executor_type& a, const executor_type& b) noexcept {
      return a.pool_ == b.pool_;
    }
    friend bool operator!=(const executor_type& a, const executor_type& b) noexcept {
      return a.pool_ != b.pool_;
    }

   private:
    friend class thread_pool;
    explicit executor_type(thread_pool* pool) noexcept : pool_(pool) {}
    thread_pool* pool_;
  };

  thread_pool() : thread_pool(thread_pool_options{}) {}
  explicit thread_pool(std::size_t max_workers) : thread_pool(with_max(max_workers)) {}
  explicit thread_pool(thread_pool_options options)
      : options_(std::move(options)),
        max_workers_(options_.max_workers ? options_.max_workers : detail::default_max_workers()),
        spin_(options_.spin ? *options_.spin : detail::default_spin()),
        metrics_(detail::pool_metrics::create(options_.timings, options_.stats_window,
                                              options_.observer)) {
    if (options_.min_workers > max_workers_) options_.min_workers = max_workers_;
    if (options_.stats_window <= std::chrono::nanoseconds::zero()) {
      throw std::invalid_argument("offload::thread_pool: stats_window must be positive");
    }
    if (options_.report_calls_longer_than &&
        *options_.report_calls_longer_than <= std::chrono::nanoseconds::zero()) {
      throw std::invalid_argument(
          "offload::thread_pool: report_calls_longer_than must be positive");
    }
    try {
      std::lock_guard<std::mutex> lock(mutex_);
      if (options_.report_calls_longer_than) {
        watchdog_thread_ = std::thread([this] { watchdog_thread_main(); });
      }
      for (std::size_t i = 0; i < options_.min_workers; ++i) spawn_locked();
      if (options_.grow_when_blocked) {
        if (options_.grow_when_blocked->after <= std::chrono::nanoseconds::zero()) {
          throw std::invalid_argument(
              "offload::thread_pool: grow_when_blocked.after must be positive");
        }
        growth_max_ = options_.grow_when_blocked->max_workers != 0
                          ? options_.grow_when_blocked->max_workers
                          : 4 * max_workers_;
        // A cap at or below max_workers leaves nothing to grow into: no watcher.
        if (growth_max_ > max_workers_) growth_thread_ = std::thread([this] { growth_main(); });
      }
    } catch (...) {
      shutdown(true, true);  // the threads already started must not outlive the pool
      throw;
    }
  }

  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  /// shutdown(wait = true): queued calls still run, then the threads are joined.
  ~thread_pool() { shutdown(true, false); }

  executor_type get_executor() noexcept { return executor_type(this); }
  const thread_pool_options& options() const noexcept { return options_; }
  std::size_t max_workers() const noexcept { return max_workers_; }

  /// Refuses new work from now on (executor_shutdown). With cancel_pending, calls that have not
  /// started never run and their awaiters get operation_aborted. With wait, returns once every
  /// thread has finished; from one of the pool's own threads that would never happen, so it
  /// throws would_deadlock instead.
  void shutdown(bool wait = true, bool cancel_pending = false) {
    if (wait && detail::this_thread().worker_of == this) {
      throw_error(errc::would_deadlock,
                  "thread_pool::shutdown(wait=true) called from one of the pool's own threads; "
                  "call shutdown(false) there, or shut down from another thread");
    }
    detail::settle_current_step();  // a chain this thread holds for us must not be waited for
    inject_.set_flag();
    // Chains other threads opened before now are queued when their loop steps end (a few
    // microseconds on a loop that does not block): wait for them, so their calls run (or are
    // cancelled) like the calls queued before.
    open_chains_.fetch_or(chains_awaited, std::memory_order_seq_cst);
    {
      std::unique_lock<std::mutex> lock(mutex_);
      shutdown_cv_.wait(lock, [this] {
        return (open_chains_.load(std::memory_order_seq_cst) & ~chains_awaited) == 0;
      });
    }
    detail::op_base* cancelled = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      closed_ = true;
      if (cancel_pending) cancelled = take_all_locked();
      cv_.notify_all();
      growth_cv_.notify_all();
      watchdog_cv_.notify_all();
    }
    fail_chain(cancelled, [] {
      return make_cancelled(
          "thread_pool::shutdown(cancel_pending=true) cancelled the call before it started",
          cancellation_outcome::never_started);
    });
    if (wait) join_all();
  }

  bool is_shutdown() const noexcept { return inject_.flagged(); }

  thread_pool_stats stats() const {
    detail::settle_current_step();  // calls this thread holds back are counted as queued
    std::lock_guard<std::mutex> lock(mutex_);
    thread_pool_stats s;
    s.workers = live_;
    // A worker going from spinning to parked is counted in both for a moment.
    s.idle = std::min<std::size_t>(sleeping_.load() + spinning_.load(), live_);
    // inject_'s size is a walk only its consumer may make (inject_size takes the role).
    s.queued = fifo_count_.load(std::memory_order_relaxed) + overflow_size_ + inject_size();
    s.completed = completed_by_exited_;
    for (const worker& w : workers_) {
      if (w.busy_since.load(std::memory_order_relaxed) != 0) ++s.running;
      s.completed += w.completed.load(std::memory_order_relaxed);
    }
    s.peak_workers = peak_workers_;
    s.grown = grown_;
    auto reading = std::make_unique<detail::metrics_reading>();  // a few tens of KB
    for (const worker& w : workers_) metrics_->read_worker(w.record, *reading);
    metrics_->finish_reading(*reading, s.calls, s.timings, s.recent);
    return s;
  }

  /// The calls running right now, with their threads and how long each has run; safe to call
  /// at any time, from any thread.
  std::vector<running_call> running_calls() const {
    std::vector<running_call> calls;
    const auto now = clock_ns();
    std::lock_guard<std::mutex> lock(mutex_);
    for (const worker& w : workers_) {
      const std::int64_t since = w.busy_since.load(std::memory_order_acquire);
      if (since == 0) continue;
      calls.push_back(describe(w, now - since));
    }
    return calls;
  }

  /// Blocks until every worker has exited after shutdown (or returns at once without one).
  void join() { join_all(); }

  /// Calls `done` once every worker has exited after shutdown: at once, on this thread, if that
  /// has happened; otherwise on the last worker to exit.
  void when_stopped(std::function<void()> done) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!(closed_ && live_ == 0)) {
        stopped_callbacks_.push_back(std::move(done));
        return;
      }
    }
    done();
  }

 private:
  friend struct detail::pool_access;

  // One call. `may_wait` says whether the submitter can wait for room in a bounded queue (a
  // coroutine can; a bare thread cannot).
  detail::submit_status submit(detail::op_base* op, bool may_wait) {
    metrics_->submitted(*op);
    detail::submit_status status = detail::submit_status::accepted;
    if (options_.max_queue != 0) {
      status = submit_bounded(op, may_wait);
    } else if (!push_one(op)) {
      status = detail::submit_status::shut_down;
    }
    if (status != detail::submit_status::accepted) metrics_->refused(*op);  // op is still ours
    return status;
  }

  // False when the pool is shut down (inject_'s flag).
  bool push_one(detail::op_base* op) noexcept {
    if (inject_.push(op, op, detail::op_queue::on_flag::refuse) ==
        detail::op_queue::pushed::refused) {
      return false;
    }
    after_push();
    return true;
  }

  // A chain: calls accepted one by one (accept) and queued together (queue_chain), for
  // submitters that collect calls before they publish them (a loop step, loop_step.hpp).
  // False when the pool is shut down (unbounded pools only).
  bool open_chain() noexcept {
    // Counted before the closed bit is read again: shutdown() sets the bit, then waits for
    // this count, so either we see the bit or it waits for our chain.
    open_chains_.fetch_add(1, std::memory_order_seq_cst);
    if (!inject_.flagged()) return true;
    close_chain();
    return false;
  }

  // A call for a chain: the pool hears of it (its observer may re-enter), then it joins a
  // chain or, when the pool is shut down, is refused.
  void accept(detail::op_base& op) noexcept { metrics_->submitted(op); }
  void refuse(detail::op_base& op) noexcept { metrics_->refused(op); }

  // The chain's calls were accepted before any shutdown could finish (it waits for open
  // chains before its workers may exit), so they are queued even past the closed bit: they
  // run, or are cancelled with cancel_pending, like any call queued before the shutdown.
  void queue_chain(detail::op_base* oldest, detail::op_base* newest) noexcept {
    inject_.push(oldest, newest, detail::op_queue::on_flag::keep);
    after_push();
    close_chain();
  }

  void close_chain() noexcept {
    std::uint32_t open = open_chains_.load(std::memory_order_relaxed);
    while ((open & chains_awaited) == 0) {
      if (open_chains_.compare_exchange_weak(open, open - 1, std::memory_order_seq_cst,
                                             std::memory_order_relaxed)) {
        return;
      }
    }
    // A shutdown waits for this count: once it reads zero it may destroy the pool, so the
    // count goes down under the lock it reads it under, and nothing here touches the pool
    // after the lock is released.
    std::lock_guard<std::mutex> lock(mutex_);
    open_chains_.fetch_sub(1, std::memory_order_seq_cst);
    shutdown_cv_.notify_all();
  }

  static thread_pool_options with_max(std::size_t max_workers) {
    thread_pool_options options;
    options.max_workers = max_workers;
    return options;
  }

  static constexpr int max_spinning = 1;

  // Its worker writes the atomics per call: aligned, so no neighbouring allocation shares them.
  struct alignas(detail::cache_line) worker {
    std::atomic<std::int64_t> busy_since{0};
    std::atomic<const char*> callable{""};
    std::atomic<std::uint64_t> completed{0};
    std::uint64_t reported_call = 0;  // completed + 1 of the call last reported as long
    detail::worker_record record;
    std::thread thread;
    std::thread::id id;
    std::string name;
#if defined(__linux__)
    clockid_t cpu_clock{};
    bool has_cpu_clock = false;
    std::atomic<int> tid{0};  // the kernel's id of the thread, for its state in /proc
#endif
  };
  using worker_list = std::list<worker>;

  static running_call describe(const worker& w, std::int64_t running_ns) {
    return running_call{w.id, w.name, w.callable.load(std::memory_order_acquire),
                        std::chrono::nanoseconds(running_ns)};
  }

  // When a call started, for running_calls(): a coarse clock is plenty and costs a few ns.
  static std::int64_t clock_ns() noexcept {
#if defined(__linux__)
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec + 1;
#else
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
               .count() +
           1;
#endif
  }

  detail::submit_status submit_bounded(detail::op_base* op, bool may_wait) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (closed_) return detail::submit_status::shut_down;
      if (fifo_count_.load(std::memory_order_relaxed) >= options_.max_queue) {
        if (!may_wait) return detail::submit_status::full;
        op->next = nullptr;
        (overflow_tail_ ? overflow_tail_->next : overflow_head_) = op;
        overflow_tail_ = op;
        ++overflow_size_;
        return detail::submit_status::accepted;
      }
      append_fifo_locked(op);
      fifo_count_.store(fifo_count_.load(std::memory_order_relaxed) + 1, std::memory_order_seq_cst);
    }
    after_push();
    return detail::submit_status::accepted;
  }

  // The producer touches only the inject queue and, when it must, the wake and spawn paths:
  // counters that workers also write would bounce a cache line per call.
  void after_push() {
    // spinning_ first: a worker that spins out counts itself asleep before it stops counting
    // as spinning, so reading them in this order never misses it.
    const int spinning = spinning_.load(std::memory_order_seq_cst);
    const int sleeping = sleeping_.load(std::memory_order_seq_cst);
    // Work already taken (by a worker that counted as idle when it saw it) needs no thread.
    if (spinning + sleeping == 0 && work_pending()) ensure_capacity();
    if (sleeping_.load(std::memory_order_seq_cst) > 0 &&
        spinning_.load(std::memory_order_seq_cst) == 0) {
      wake_one();
    }
  }

  // One wake in flight at a time: a burst costs one notify, and each woken worker wakes the
  // next while work remains (wake_another_if_needed), so the pool still fans out.
  void wake_one() {
    if (wake_pending_.load(std::memory_order_seq_cst) ||
        wake_pending_.exchange(true, std::memory_order_seq_cst)) {
      return;
    }
    std::unique_lock<std::mutex> lock(mutex_);
    // A sleeper seen here is waiting and gets this notify, or has yet to look at the queue
    // under this lock: then it takes the call, or parks and clears the flag. With none, clear
    // it ourselves.
    if (sleeping_.load(std::memory_order_relaxed) == 0) {
      wake_pending_.store(false, std::memory_order_release);
      return;
    }
    // Notify after unlocking: on a busy CPU the woken worker would otherwise preempt us only
    // to block on the mutex we still hold.
    lock.unlock();
    cv_.notify_one();
  }

  // One more thread, up to max_workers, for work no idle thread will take. Bursts fan out by
  // chain: each worker that takes a call and sees more waiting asks for the next thread.
  void ensure_capacity() {
    const std::size_t live = live_hint_.load(std::memory_order_seq_cst);
    if (live >= max_workers_) {
      // Only while growth can still add a thread: at its cap, waking the watcher would cost
      // every submit a lock and a context switch for nothing.
      if (live < growth_max_ && growth_parked_.load(std::memory_order_seq_cst)) {
        wake_growth_watcher();
      }
      return;
    }
    std::exception_ptr failed;
    detail::op_base* orphans = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (live_ >= max_workers_ || closed_) return;
      try {
        spawn_locked();
      } catch (...) {
        // No thread could be made: if none is left to run the queue, its awaiters hear why.
        if (live_ == 0) {
          failed = std::current_exception();
          orphans = take_all_locked();
        }
      }
    }
    fail_chain(orphans, failed);
  }

  void append_fifo_locked(detail::op_base* op) noexcept {
    op->next = nullptr;
    (fifo_tail_ ? fifo_tail_->next : fifo_head_) = op;
    fifo_tail_ = op;
  }

  bool inject_nonempty() const noexcept { return !inject_.empty(); }

  bool work_pending() const noexcept {
    return fifo_count_.load(std::memory_order_relaxed) != 0 || inject_nonempty();
  }

  bool queue_empty_locked() const noexcept {
    return fifo_head_ == nullptr && overflow_head_ == nullptr && !inject_nonempty();
  }

  // A bounded pool queues in fifo_ (counted, with its overflow); an unbounded one in inject_.
  detail::op_base* pop_locked() noexcept {
    detail::op_base* op = fifo_head_;
    if (op == nullptr) return pop_inject();
    fifo_head_ = op->next;
    if (fifo_head_ == nullptr) fifo_tail_ = nullptr;
    op->next = nullptr;
    if (overflow_head_ != nullptr) {
      // A call waiting for room takes the slot this one frees.
      detail::op_base* waiting = overflow_head_;
      overflow_head_ = waiting->next;
      if (overflow_head_ == nullptr) overflow_tail_ = nullptr;
      --overflow_size_;
      append_fifo_locked(waiting);
    } else {
      fifo_count_.store(fifo_count_.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
    }
    return op;
  }

  detail::op_base* take_all_locked() noexcept {
    detail::op_base* all = nullptr;
    detail::op_base** tail = &all;
    while (fifo_head_ != nullptr) {
      detail::op_base* op = pop_locked();
      *tail = op;
      tail = &op->next;
    }
    std::lock_guard<detail::short_lock> consumer(inject_consumer_);
    *tail = inject_.take_all();
    return all;
  }

  // inject_ has one consumer at a time: whichever thread holds inject_consumer_, with or
  // without mutex_ (taken first when both are).
  detail::op_base* pop_inject() noexcept {
    std::lock_guard<detail::short_lock> consumer(inject_consumer_);
    return inject_.pop();
  }
  std::size_t inject_size(std::size_t limit = static_cast<std::size_t>(-1)) const noexcept {
    std::lock_guard<detail::short_lock> consumer(inject_consumer_);
    return inject_.size(limit);
  }

  static void fail_chain(detail::op_base* chain, const std::exception_ptr& error) noexcept {
    while (chain != nullptr) {
      detail::op_base* next = chain->next;
      chain->fail(error);
      chain = next;
    }
  }
  // One exception object per call: awaiters on other threads then share nothing (libstdc++'s
  // exception_ptr count is invisible to ThreadSanitizer).
  template <typename MakeError>
  static void fail_chain(detail::op_base* chain, MakeError make_error_for_each) noexcept {
    while (chain != nullptr) {
      detail::op_base* next = chain->next;
      chain->fail(make_error_for_each());
      chain = next;
    }
  }

  void spawn_locked() {
    workers_.emplace_back();
    auto self = std::prev(workers_.end());
    self->name = options_.thread_name_prefix + "-" + std::to_string(++spawned_);
    try {
      self->thread = std::thread([this, self] { worker_main(self); });
    } catch (...) {
      workers_.pop_back();
      throw;
    }
    self->id = self->thread.get_id();
#if defined(__linux__)
    self->has_cpu_clock =
        pthread_getcpuclockid(self->thread.native_handle(), &self->cpu_clock) == 0;
#endif
    ++live_;
    live_hint_.store(live_, std::memory_order_relaxed);
    peak_workers_ = std::max(peak_workers_, live_);
  }

  // Called with the lock held by the exiting worker itself.
  void exit_locked(worker_list::iterator self) {
    completed_by_exited_ += self->completed.load(std::memory_order_relaxed);
    metrics_->retire(self->record);
    exited_.splice(exited_.end(), workers_, self);
    --live_;
    live_hint_.store(live_, std::memory_order_relaxed);
    if (live_ == 0) {
      shutdown_cv_.notify_all();
      watchdog_cv_.notify_all();
    }
  }

  void run_stopped_callbacks_if_last(std::unique_lock<std::mutex>& lock) {
    if (!(closed_ && live_ == 0) || stopped_callbacks_.empty()) return;
    auto callbacks = std::move(stopped_callbacks_);
    stopped_callbacks_.clear();
    lock.unlock();
    for (auto& cb : callbacks) cb();
  }

  void worker_main(worker_list::iterator self) {
    detail::set_current_thread_name(self->name);
#if defined(__linux__)
    self->tid.store(static_cast<int>(::syscall(SYS_gettid)), std::memory_order_relaxed);
#endif
    detail::this_thread().worker_of = this;
    metrics_->bind_worker(self->record);
    if (options_.initializer) {
      try {
        options_.initializer();
      } catch (...) {
        initializer_failed(self, std::current_exception());
        return;
      }
    }
    detail::adaptive_spin spinner(spin_);
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      detail::op_base* op = pop_locked();
      if (op == nullptr) {
        if (closed_ && queue_empty_locked()) break;
        lock.unlock();
        const spin_outcome spun = try_spin(spinner);
        lock.lock();
        if (spun == spin_outcome::found) {
          op = pop_while_idle_locked(lock);
          spinning_.fetch_sub(1, std::memory_order_seq_cst);
          if (op == nullptr) continue;
        } else {
          // Counted asleep before the last look: pairs with after_push, which pushes, then
          // looks for a sleeper. Either it sees us and wakes us, or we see its call.
          if (spun == spin_outcome::not_spun) sleeping_.fetch_add(1, std::memory_order_seq_cst);
          op = pop_while_idle_locked(lock);
          if (op == nullptr && !(closed_ && queue_empty_locked())) {
            if (park_locked(lock)) break;  // reaped
            continue;
          }
          stay_awake_locked();
          if (op == nullptr) break;
        }
      }
      lock.unlock();
      wake_another_if_needed();
      execute(*self, op);
      // Back to back, an unbounded pool's worker takes the next call without mutex_: only
      // running out of work, or a bounded queue's bookkeeping, needs it.
      if (options_.max_queue == 0) {
        while ((op = pop_inject()) != nullptr) {
          wake_another_if_needed();
          execute(*self, op);
        }
      }
      lock.lock();
    }
    exit_locked(self);
    run_stopped_callbacks_if_last(lock);
  }

  enum class spin_outcome { found, going_to_park, not_spun };

  spin_outcome try_spin(detail::adaptive_spin& spinner) {
    if (spinning_.load(std::memory_order_relaxed) >= max_spinning || !spinner.should_spin()) {
      return spin_outcome::not_spun;
    }
    spinning_.fetch_add(1, std::memory_order_seq_cst);
    const bool found = spinner.spin([this] {
      return fifo_count_.load(std::memory_order_relaxed) != 0 || inject_nonempty() ||
             inject_.flagged();
    });
    if (found) return spin_outcome::found;  // the caller stops counting once it holds the call
    // A worker that spun out counts itself asleep before it stops counting as spinning: in
    // between, a submitter would see no idle thread and start a new one.
    sleeping_.fetch_add(1, std::memory_order_seq_cst);
    spinning_.fetch_sub(1, std::memory_order_seq_cst);
    return spin_outcome::going_to_park;
  }

  // Pops for a worker still counted idle (spinning or asleep), waiting out a submitter that is
  // still linking the call it saw: it stops counting only once it holds the call, so a
  // submitter looking meanwhile sees an idle thread, not a reason to start another one.
  detail::op_base* pop_while_idle_locked(std::unique_lock<std::mutex>& lock) {
    detail::op_base* op = pop_locked();
    while (op == nullptr && inject_nonempty()) {
      lock.unlock();
      std::this_thread::yield();
      lock.lock();
      op = pop_locked();
    }
    return op;
  }

  // A worker counted asleep takes work instead. A wake_one that saw it counted may have
  // notified nobody: the wake in flight is over either way.
  void stay_awake_locked() noexcept {
    sleeping_.fetch_sub(1, std::memory_order_seq_cst);
    wake_pending_.store(false, std::memory_order_release);
  }

  // Parks a worker counted asleep that found the queue empty under this lock, until woken or
  // keep_alive passes; true when it should exit (reaped).
  bool park_locked(std::unique_lock<std::mutex>& lock) {
    // A wake_one that saw this worker counted may have notified while it looked at the queue
    // with the lock released, for a call another worker took: no wake is in flight for it now,
    // and a flag left set would swallow the next push's notify. Clear it, then look again
    // (pairs with after_push: push, then read the flag; so it notifies, or we see its call).
    wake_pending_.store(false, std::memory_order_seq_cst);
    if (!queue_empty_locked()) {
      stay_awake_locked();
      return false;
    }
    const bool timed_out = cv_.wait_for(lock, options_.keep_alive) == std::cv_status::timeout;
    sleeping_.fetch_sub(1, std::memory_order_seq_cst);
    wake_pending_.store(false, std::memory_order_release);
    if (!timed_out || closed_ || live_ <= options_.min_workers) return false;
    // Leave only if no push raced with our going: after_push reads live_hint_ after pushing.
    live_hint_.store(live_ - 1, std::memory_order_seq_cst);
    if (!queue_empty_locked()) {
      live_hint_.store(live_, std::memory_order_relaxed);
      return false;
    }
    return true;
  }

  // Called by a worker that just took a call: if more wait and nobody spins for them, wake or
  // start another thread rather than leave them behind a call that may block for long.
  void wake_another_if_needed() {
    if (!work_pending() || spinning_.load(std::memory_order_relaxed) != 0) return;
    if (sleeping_.load(std::memory_order_relaxed) != 0) {
      wake_one();
      return;
    }
    ensure_capacity();
  }

  void execute(worker& self, detail::op_base* op) {
    self.callable.store(op->callable_name, std::memory_order_relaxed);
    self.busy_since.store(clock_ns(), std::memory_order_release);
    op->run();  // never throws: the call's exception travels in its outcome
    self.completed.store(self.completed.load(std::memory_order_relaxed) + 1,
                         std::memory_order_relaxed);  // one writer: no RMW needed
    self.busy_since.store(0, std::memory_order_release);
  }

  // -- reporting long calls (report_calls_longer_than) ----------------------------------------

  // How far clock_ns can lag the true time: a call is reported only once the coarse clock says
  // it ran the threshold plus this, so it really ran at least the threshold.
  static std::int64_t clock_ns_resolution() noexcept {
#if defined(__linux__)
    timespec res;
    if (clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0) {
      return static_cast<std::int64_t>(res.tv_sec) * 1000000000 + res.tv_nsec;
    }
#endif
    return 0;
  }

  void watchdog_main() {
    using namespace std::chrono_literals;
    detail::set_current_thread_name(options_.thread_name_prefix + "-watch");
    const std::chrono::nanoseconds threshold = *options_.report_calls_longer_than;
    // A few looks per threshold: a call is reported at most a quarter threshold late.
    const auto period = std::clamp<std::chrono::nanoseconds>(threshold / 4, 1ms, 1s);
    const std::int64_t report_after = threshold.count() + 2 * clock_ns_resolution();
    std::vector<running_call> late;
    std::unique_lock<std::mutex> lock(mutex_);
    while (!(closed_ && live_ == 0)) {
      watchdog_cv_.wait_for(lock, period);
      const std::int64_t now = clock_ns();
      for (worker& w : workers_) {
        // The call's number is read on both sides of its start time: equal, they belong together.
        const std::uint64_t done_before = w.completed.load(std::memory_order_acquire);
        const std::int64_t since = w.busy_since.load(std::memory_order_acquire);
        if (since == 0 || now - since < report_after) continue;
        if (w.completed.load(std::memory_order_acquire) != done_before) continue;
        if (w.reported_call == done_before + 1) continue;
        w.reported_call = done_before + 1;
        late.push_back(describe(w, now - since));
      }
      if (late.empty()) continue;
      lock.unlock();
      for (const running_call& call : late) report_long_call(call);
      late.clear();
      lock.lock();
    }
  }

  // The watchdog's thread: a failure to describe a call (out of memory) ends the reports, not
  // the process.
  void watchdog_thread_main() noexcept {
    try {
      watchdog_main();
    } catch (...) {
      detail::report_stray_exception("thread_pool's long-call watchdog");
    }
  }

  void report_long_call(const running_call& call) noexcept {
    try {
      if (call_observer* observer = metrics_->observer()) {
        observer->on_long_call(call);
      } else {
        call_observer().on_long_call(call);  // the default: a line on stderr
      }
    } catch (...) {
      detail::report_stray_exception("a call_observer");
    }
  }

  // -- growth when every thread is blocked (grow_when_blocked) --------------------------------

  // A running call computes if its thread is runnable now (Linux reports it so even while it
  // waits for a CPU on a loaded machine), or if it used at least this share of a CPU over the
  // period: a call blocked in I/O, a lock or a sleep uses next to nothing.
  static constexpr int computing_share_divisor = 10;

  // What each thread was doing at the start of a growth period.
  struct progress_mark {
    const worker* w;
    std::uint64_t completed;
    std::int64_t busy_since;
    std::int64_t cpu_ns;
    int tid;
  };

  // True if the thread is running or waiting for a CPU ('R' in /proc/self/task/<tid>/stat).
  static bool runnable(int tid) noexcept {
#if defined(__linux__)
    if (tid == 0) return false;
    char path[64];
    std::snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    char stat[256];  // "tid (name) S ...": the name is at most 15 characters
    const ssize_t n = ::read(fd, stat, sizeof stat - 1);
    ::close(fd);
    if (n <= 0) return false;
    stat[n] = '\0';
    const char* name_end = std::strrchr(stat, ')');
    return name_end != nullptr && name_end[1] == ' ' && name_end[2] == 'R';
#else
    (void)tid;
    return false;
#endif
  }

  static std::int64_t cpu_ns_of(const worker& w) noexcept {
#if defined(__linux__)
    timespec ts;
    if (w.has_cpu_clock && clock_gettime(w.cpu_clock, &ts) == 0) {
      return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
    }
#else
    (void)w;
#endif
    return 0;  // no CPU clock: every call looks blocked, and only the hard cap limits growth
  }

  std::vector<progress_mark> progress_marks_locked() const {
    std::vector<progress_mark> marks;
    marks.reserve(live_);
    for (const worker& w : workers_) {
#if defined(__linux__)
      const int tid = w.tid.load(std::memory_order_relaxed);
#else
      const int tid = 0;
#endif
      marks.push_back({&w, w.completed.load(std::memory_order_relaxed),
                       w.busy_since.load(std::memory_order_relaxed), cpu_ns_of(w), tid});
    }
    return marks;
  }

  // Calls waited through the whole period since `before`: every thread was in the same call
  // then and now, and work is still queued.
  bool stalled_since_locked(const std::vector<progress_mark>& before,
                            const std::vector<progress_mark>& now) const noexcept {
    if (before.empty() || before.size() != now.size() || !work_pending()) return false;
    for (std::size_t i = 0; i < now.size(); ++i) {
      if (before[i].w != now[i].w || now[i].busy_since == 0 ||
          before[i].busy_since != now[i].busy_since || before[i].completed != now[i].completed) {
        return false;
      }
    }
    return true;
  }

  std::size_t computing_calls(const std::vector<progress_mark>& before,
                              const std::vector<progress_mark>& now,
                              std::chrono::nanoseconds period) const noexcept {
    const std::int64_t threshold = period.count() / computing_share_divisor;
    std::size_t computing = 0;
    for (std::size_t i = 0; i < now.size(); ++i) {
      if (now[i].cpu_ns - before[i].cpu_ns >= threshold || runnable(now[i].tid)) ++computing;
    }
    return computing;
  }

  // While every running call is blocked, the blocked set doubles each period (a batch of calls
  // that all block waits a few periods, not one per call); once some compute, only the CPUs
  // they leave free are filled, one thread per free CPU.
  static std::size_t threads_to_add(std::size_t running, std::size_t computing,
                                    std::size_t cpus) noexcept {
    if (computing >= cpus) return 0;
    if (computing == 0) return std::max<std::size_t>(running, 1);
    return std::min(running - computing, cpus - computing);
  }

  // How many calls wait to start, counting no further than `limit` (the walk of inject_ is
  // bounded so that a long queue costs the watcher nothing more).
  std::size_t queued_at_most_locked(std::size_t limit) const noexcept {
    const std::size_t counted = fifo_count_.load(std::memory_order_relaxed) + overflow_size_;
    return counted >= limit ? limit : counted + inject_size(limit - counted);
  }

  // Whether the watcher has anything to watch: calls queued with every allowed thread started.
  bool growth_may_help_locked() const noexcept {
    return !closed_ && live_ >= max_workers_ && live_ < growth_max_ && work_pending();
  }

  // The watcher: parked while the pool is below its cap or has nothing queued (an idle pool
  // costs no wake-ups); otherwise it looks once per period and starts a thread when the queue
  // stalled behind blocked calls.
  void growth_main() {
    detail::set_current_thread_name(options_.thread_name_prefix + "-grow");
    const std::chrono::nanoseconds period = options_.grow_when_blocked->after;
    const std::size_t cpus = detail::usable_cpus();
    std::vector<progress_mark> before;
    std::unique_lock<std::mutex> lock(mutex_);
    while (!closed_) {
      if (!growth_may_help_locked()) {
        // Counted parked before the last look: pairs with ensure_capacity, which queues, then
        // reads the flag. Either it sees us parked and wakes us, or we see its call.
        growth_parked_.store(true, std::memory_order_seq_cst);
        if (!growth_may_help_locked()) growth_cv_.wait(lock);
        growth_parked_.store(false, std::memory_order_relaxed);
        before.clear();
        continue;
      }
      if (before.empty()) before = progress_marks_locked();
      growth_cv_.wait_for(lock, period);
      if (closed_) break;
      std::vector<progress_mark> now = progress_marks_locked();
      if (!stalled_since_locked(before, now)) {
        before = std::move(now);
        continue;
      }
      lock.unlock();  // reading the threads' states takes a few system calls each
      const std::size_t computing = computing_calls(before, now, period);
      lock.lock();
      // No more threads than calls waiting: a thread for nothing would idle for keep_alive.
      std::size_t n = threads_to_add(now.size(), computing, cpus);
      n = std::min(n, queued_at_most_locked(n));
      for (; n > 0 && growth_may_help_locked(); --n) {
        try {
          spawn_locked();
          ++grown_;
        } catch (...) {
          break;  // no thread could be made now: the next period tries again
        }
      }
      before.clear();  // a new period, with fresh marks
    }
  }

  void wake_growth_watcher() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (growth_parked_.load(std::memory_order_relaxed)) growth_cv_.notify_one();
  }

  void initializer_failed(worker_list::iterator self, std::exception_ptr error) {
    detail::op_base* orphans = nullptr;
    std::unique_lock<std::mutex> lock(mutex_);
    exit_locked(self);
    if (live_ == 0) orphans = take_all_locked();  // nobody is left to run them: say why
    lock.unlock();
    fail_chain(orphans, error);
    lock.lock();
    run_stopped_callbacks_if_last(lock);
  }

  void join_all() {
    worker_list exited;
    detail::op_base* stranded = nullptr;
    std::thread growth;
    std::thread watchdog;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (closed_) {
        shutdown_cv_.wait(lock, [this] { return live_ == 0; });
        stranded = take_all_locked();  // only when no thread could ever be started for them
        growth.swap(growth_thread_);
        watchdog.swap(watchdog_thread_);
      }
      exited.swap(exited_);
    }
    if (growth.joinable()) growth.join();
    if (watchdog.joinable()) watchdog.join();
    for (worker& w : exited) w.thread.join();
    fail_chain(stranded, [] {
      return std::make_exception_ptr(make_error(
          errc::executor_shutdown, "thread_pool: shut down with calls no thread could run"));
    });
  }

  thread_pool_options options_;
  const std::size_t max_workers_;
  const std::chrono::nanoseconds spin_;

  // Producers push here lock-free, workers take under inject_consumer_; its flag says shut
  // down.
  detail::op_queue inject_;
  alignas(detail::cache_line) mutable detail::short_lock inject_consumer_;
  // Worker state, read by producers only to decide whether to wake or spawn a thread.
  alignas(detail::cache_line) std::atomic<int> spinning_{0};
  std::atomic<int> sleeping_{0};
  std::atomic<std::size_t> live_hint_{0};
  std::atomic<bool> wake_pending_{false};
  alignas(detail::cache_line) std::atomic<std::size_t> fifo_count_{0};  // written under mutex_
  // Chains opened and not queued yet (see open_chain), and the bit shutdown sets while it
  // waits for them.
  static constexpr std::uint32_t chains_awaited = std::uint32_t(1) << 31;
  std::atomic<std::uint32_t> open_chains_{0};

  mutable std::mutex mutex_;  // guards everything below
  std::condition_variable cv_;
  // join() waits here for the threads to exit, shutdown() for the open chains (one variable:
  // a second one moves the pool's layout, which costs the round trip measurably).
  std::condition_variable shutdown_cv_;
  detail::op_base* fifo_head_ = nullptr;
  detail::op_base* fifo_tail_ = nullptr;
  detail::op_base* overflow_head_ = nullptr;
  detail::op_base* overflow_tail_ = nullptr;
  std::size_t overflow_size_ = 0;
  worker_list workers_;
  worker_list exited_;
  std::size_t live_ = 0;
  std::size_t peak_workers_ = 0;
  std::size_t spawned_ = 0;
  std::uint64_t completed_by_exited_ = 0;
  bool closed_ = false;
  std::vector<std::function<void()>> stopped_callbacks_;
  // grow_when_blocked: the watcher thread, its hard cap and what it started.
  std::condition_variable growth_cv_;
  std::thread growth_thread_;
  std::size_t growth_max_ = 0;
  std::uint64_t grown_ = 0;
  std::atomic<bool> growth_parked_{false};
  // report_calls_longer_than: the thread that looks for long calls.
  std::condition_variable watchdog_cv_;
  std::thread watchdog_thread_;
  // Let go after the destructor's body joined every thread; calls handed back keep it alive
  // until they are delivered.
  struct release_metrics {
    void operator()(detail::pool_metrics* m) const noexcept { m->release_pool(); }
  };
  std::unique_ptr<detail::pool_metrics, release_metrics> metrics_;
};

namespace detail {
/// offload's own way in to a pool's calls (loop_step.hpp, to_thread.hpp): not for users.
struct pool_access {
  static submit_status submit(thread_pool& pool, op_base* op, bool may_wait) {
    return pool.submit(op, may_wait);
  }
  /// A bounded pool takes calls one at a time: each waits for room or is refused.
  static bool takes_chains(const thread_pool& pool) noexcept {
    return pool.options_.max_queue == 0;
  }
  static bool open_chain(thread_pool& pool) noexcept { return pool.open_chain(); }
  static void accept(thread_pool& pool, op_base& op) noexcept { pool.accept(op); }
  static void refuse(thread_pool& pool, op_base& op) noexcept { pool.refuse(op); }
  static void queue_chain(thread_pool& pool, op_base* oldest, op_base* newest) noexcept {
    pool.queue_chain(oldest, newest);
  }
};
}  // namespace detail

}  // namespace offload
