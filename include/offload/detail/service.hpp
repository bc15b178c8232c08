// offload: what offload keeps per execution context: its default executor, the queues that
// hand finished calls back to it, and the count of calls still out on other threads.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/config.hpp>
#include <offload/detail/completion_queue.hpp>
#include <offload/detail/deadline.hpp>
#include <offload/detail/thread_context.hpp>
#include <offload/errors.hpp>
#include <offload/thread_pool.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <typeinfo>
#include <vector>

namespace offload::detail {

using loop_strand_type = net::strand<net::io_context::executor_type>;

/// The executor of type T inside `ex`, or null. Asio 1.22 does not check the type in
/// any_io_executor::target<T>() (it casts whatever is inside), so the type is compared here;
/// without RTTI nothing is recognised and callers take their general path. An executor that
/// carries a deadline (wait_for's operation runs on one) is looked through.
template <typename T>
const T* executor_target(const net::any_io_executor& ex) noexcept {
#if defined(ASIO_NO_TYPEID) || defined(BOOST_ASIO_NO_TYPEID)
  (void)ex;
  return nullptr;
#else
  if (ex.target_type() == typeid(T)) return ex.template target<T>();
  const deadline_carrier* carrier = carrier_of(ex);
  return carrier != nullptr ? executor_target<T>(carrier->inner()) : nullptr;
#endif
}

class offload_service final : public net::execution_context::service {
 public:
  static inline net::execution_context::id id;

  explicit offload_service(net::execution_context& ctx) : net::execution_context::service(ctx) {}

  ~offload_service() override { epoch().fetch_add(1, std::memory_order_acq_rel); }

  /// Bumped whenever a service goes away, so per-thread lookup caches never see a stale one.
  static std::atomic<std::uint64_t>& epoch() noexcept {
    static std::atomic<std::uint64_t> value{1};
    return value;
  }

  // In-flight accounting: the context's destruction waits for calls still out on threads,
  // and while any is out the io_context counts one unit of work for all of them (a work guard
  // per call would copy the executor twice and bump the scheduler's counter twice per call).
  // Both transitions happen inside running handlers, which Asio counts as work themselves.
  //
  // A loop step making more than one call for its own loop counts the rest ahead, a block at
  // a time, and gives back what it did not use when it ends: a burst then costs no atomic
  // update per call. (The count stays above zero for the step, which holds its own context's
  // work anyway; another context's count must reach zero when its calls end, whatever the
  // step goes on to do, so its calls are counted one by one.)
  void call_started() noexcept {
    thread_context& context = this_thread();
    started_credit& credit = context.credit;
    if (credit.home == this && credit.left != 0) {
      --credit.left;
      return;
    }
    std::size_t take = 1;
    if (context.loop_service == this) {
      if (credit.counted_one) {
        give_back_credit(credit);
        credit.home = this;
        credit.left = credit_block - 1;
        take = credit_block;
      }
      credit.counted_one = true;
    }
    if (in_flight_.fetch_add(take, std::memory_order_acq_rel) == 0) reconcile_work();
  }
  /// What a loop step took ahead and did not use goes back (see call_started).
  static void give_back_credit(started_credit& credit) noexcept {
    credit.counted_one = false;
    if (credit.left == 0) return;
    const std::size_t left = std::exchange(credit.left, 0);
    std::exchange(credit.home, nullptr)->calls_ended(left);
  }
  void calls_ended(std::size_t count = 1) noexcept {
    std::size_t now = in_flight_.load(std::memory_order_relaxed);
    while (now != count) {
      if (in_flight_.compare_exchange_weak(now, now - count, std::memory_order_acq_rel,
                                           std::memory_order_relaxed)) {
        return;
      }
    }
    // The last one: a shutdown that sees the count at zero may destroy this service at once,
    // so it is told to wait until we are done with it.
    hand_back_started();
    if (in_flight_.fetch_sub(count, std::memory_order_acq_rel) == count) {
      reconcile_work();
      if (closing_.load(std::memory_order_acquire)) {
        std::lock_guard<std::mutex> lock(mutex_);
        cv_.notify_all();
      }
    }
    hand_back_finished();
  }
  std::size_t in_flight() const noexcept { return in_flight_.load(std::memory_order_acquire); }
  // Something still using this service after the count of its calls may have reached zero:
  // a hand-back by post (no completion queue), or the update that reached it.
  void hand_back_started() noexcept { handing_back_.fetch_add(1, std::memory_order_seq_cst); }
  void hand_back_finished() noexcept { handing_back_.fetch_sub(1, std::memory_order_seq_cst); }
  bool closing() const noexcept { return closing_.load(std::memory_order_acquire); }

  /// The batched hand-back queue for a handler running on `ex`, if offload has one for it: the
  /// attached event_loop's strand, or the io_context's own executor.
  template <typename Executor>
  completion_queue* queue_for(const Executor& ex) {  // may create the io_context's queue
    if constexpr (std::is_same_v<Executor, net::any_io_executor>) {
      if (const auto* strand = executor_target<loop_strand_type>(ex)) return loop_queue(*strand);
      if (const auto* io = executor_target<net::io_context::executor_type>(ex)) {
        return io_queue(io->context());
      }
      return nullptr;
    } else if constexpr (std::is_same_v<Executor, loop_strand_type>) {
      return loop_queue(ex);
    } else if constexpr (std::is_same_v<Executor, net::io_context::executor_type>) {
      return io_queue(ex.context());
    } else {
      return nullptr;
    }
  }

  completion_queue* loop_queue(const loop_strand_type& strand) noexcept {
    auto* q = loop_queue_.load(std::memory_order_acquire);
    return q != nullptr && q->executor() == strand ? q : nullptr;
  }
  completion_queue* loop_queue() noexcept { return loop_queue_.load(std::memory_order_acquire); }

 private:
  void reconcile_work() noexcept {
    std::lock_guard<std::mutex> lock(work_mutex_);
    const bool busy = in_flight_.load(std::memory_order_acquire) != 0;
    if (busy && !work_ && io_ != nullptr) {
      work_.emplace(io_->get_executor());
    } else if (!busy && work_) {
      work_.reset();
    }
  }

 public:
  /// The queue for coroutines that run on the io_context's own executor (no event_loop).
  completion_queue* io_queue(net::io_context& io) {
    if (static_cast<net::execution_context*>(&io) != &context()) return nullptr;
    if (auto* q = io_queue_.load(std::memory_order_acquire)) return q;
    std::lock_guard<std::mutex> lock(mutex_);
    set_io_locked(io);
    if (!io_queue_owner_) {
      io_queue_owner_ = std::make_unique<basic_completion_queue<net::io_context::executor_type>>(
          io.get_executor());
      io_queue_.store(io_queue_owner_.get(), std::memory_order_release);
    }
    return io_queue_owner_.get();
  }

  /// An event_loop makes its strand the context's hand-back target. One loop per context.
  void attach_loop(event_loop* loop, const loop_strand_type& strand) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (loop_.load(std::memory_order_relaxed) != nullptr) {
      throw std::logic_error(
          "offload::event_loop: this io_context already has an event_loop; use that one "
          "(get_running_loop() finds it from its coroutines)");
    }
    loop_.store(loop, std::memory_order_release);
    had_loop_.store(true, std::memory_order_relaxed);
    set_io_locked(strand.get_inner_executor().context());
    // Queues outlive their loop: calls in flight may still be handed back to the strand.
    loop_queues_.push_back(std::make_unique<basic_completion_queue<loop_strand_type>>(strand));
    loop_queue_.store(loop_queues_.back().get(), std::memory_order_release);
  }
  /// Keeps a loop's own queue as long as the context: a drain may be posted to it still.
  template <typename Queue>
  Queue* adopt(std::unique_ptr<Queue> queue) {
    Queue* raw = queue.get();
    std::lock_guard<std::mutex> lock(mutex_);
    adopted_.push_back(std::move(queue));
    return raw;
  }

  event_loop* attached_loop() const noexcept { return loop_.load(std::memory_order_acquire); }
  /// A loop was attached and has closed (from_thread then says loop_closed, not no loop).
  bool loop_closed() const noexcept {
    return had_loop_.load(std::memory_order_relaxed) && attached_loop() == nullptr;
  }

  void detach_loop(event_loop* loop) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    if (loop_.load(std::memory_order_relaxed) == loop)
      loop_.store(nullptr, std::memory_order_release);
  }

  /// The default executor: created on first use.
  thread_pool& default_pool() {
    if (thread_pool* pool = default_raw_.load(std::memory_order_acquire)) return *pool;
    std::lock_guard<std::mutex> lock(mutex_);
    if (!default_) {
      thread_pool_options options;
      options.thread_name_prefix = "offload";
      install_default_locked(std::make_shared<thread_pool>(std::move(options)));
    }
    return *default_;
  }

  /// The default executor if it was ever created (or set), else null; does not create it.
  std::shared_ptr<thread_pool> default_pool_if_any() {
    std::lock_guard<std::mutex> lock(mutex_);
    return default_;
  }

  void set_default_pool(std::shared_ptr<thread_pool> pool) {
    if (!pool) throw std::invalid_argument("set_default_executor: the pool is null");
    std::lock_guard<std::mutex> lock(mutex_);
    install_default_locked(std::move(pool));
  }

  void shutdown() override {
    // Counts this thread's step took ahead for us would keep the wait below from ending.
    if (this_thread().credit.home == this) give_back_credit(this_thread().credit);
    closing_.store(true, std::memory_order_release);
    std::vector<completion_queue*> queues;
    std::vector<std::shared_ptr<thread_pool>> pools;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (io_queue_owner_) queues.push_back(io_queue_owner_.get());
      for (auto& q : loop_queues_) queues.push_back(q.get());
      for (auto& q : adopted_) queues.push_back(q.get());
      if (default_) pools.push_back(default_);
      pools.insert(pools.end(), retired_.begin(), retired_.end());
    }
    for (completion_queue* q : queues) q->close();
    // Calls that never started need not run for a context that is going away; running ones
    // are waited for, so none hands back into freed memory.
    for (auto& pool : pools) pool->shutdown(this_thread().worker_of != pool.get(), true);
    // Nothing may still be on its way into a queue or an executor once this returns.
    const auto settled = [&] {
      if (in_flight() != 0 || handing_back_.load(std::memory_order_seq_cst) != 0) return false;
      for (completion_queue* q : queues)
        if (q->busy()) return false;
      return true;
    };
    for (;;) {
      for (completion_queue* q : queues) destroy_chain(q->take_all());
      if (settled()) break;
      std::unique_lock<std::mutex> lock(mutex_);
      // Pushes onto a closed queue do not signal; a short timed wait picks them up.
      cv_.wait_for(lock, std::chrono::milliseconds(1), [&] {
        if (settled()) return true;
        for (completion_queue* q : queues)
          if (q->has_pending()) return true;
        return false;
      });
    }
  }

 private:
  void set_io_locked(net::io_context& io) noexcept {
    std::lock_guard<std::mutex> lock(work_mutex_);
    io_ = &io;
  }

  static void destroy_chain(op_base* op) noexcept {
    while (op != nullptr) {
      op_base* next = op->next;
      op->destroy();
      op = next;
    }
  }

  void install_default_locked(std::shared_ptr<thread_pool> pool) {
    // A replaced pool keeps running what it has; it is shut down with the context.
    if (default_) retired_.push_back(std::move(default_));
    default_ = std::move(pool);
    default_raw_.store(default_.get(), std::memory_order_release);
  }

  static constexpr std::size_t credit_block = 64;

  // in_flight_ changes on the loop's thread, handing_back_ on workers: separate lines.
  alignas(cache_line) std::atomic<std::size_t> in_flight_{0};
  alignas(cache_line) std::atomic<std::size_t> handing_back_{0};
  alignas(cache_line) std::atomic<bool> closing_{false};
  std::atomic<thread_pool*> default_raw_{nullptr};
  std::atomic<basic_completion_queue<loop_strand_type>*> loop_queue_{nullptr};
  std::atomic<completion_queue*> io_queue_{nullptr};

  std::mutex work_mutex_;
  net::io_context* io_ = nullptr;  // the context, when it is an io_context with a queue
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work_;

  std::mutex mutex_;
  std::condition_variable cv_;
  std::shared_ptr<thread_pool> default_;
  std::vector<std::shared_ptr<thread_pool>> retired_;
  std::unique_ptr<basic_completion_queue<net::io_context::executor_type>> io_queue_owner_;
  std::vector<std::unique_ptr<basic_completion_queue<loop_strand_type>>> loop_queues_;
  std::vector<std::unique_ptr<completion_queue>> adopted_;
  std::atomic<event_loop*> loop_{nullptr};
  std::atomic<bool> had_loop_{false};
};

inline void calls_ended(offload_service* home, std::size_t count) noexcept {
  home->calls_ended(count);
}

template <typename Executor>
net::execution_context& context_of(const Executor& ex) noexcept {
  if constexpr (net::execution::is_executor<Executor>::value) {
    return net::query(ex, net::execution::context);
  } else {
    return ex.context();
  }
}

/// An executor that names no loop: Asio's system executor ("any thread", what a bare callback
/// reports) or one that cannot say its context (use_future's). Asked by type: touching
/// system_context would start its threads.
template <typename Executor>
struct is_system_executor
    : std::bool_constant<!net::can_query<const Executor&, net::execution::context_t>::value> {};
template <typename Blocking, typename Relationship, typename Allocator>
struct is_system_executor<net::basic_system_executor<Blocking, Relationship, Allocator>>
    : std::true_type {};
// use_future's: from Asio 1.26 it answers the context query with system_context's.
template <typename T, typename Blocking>
struct is_system_executor<net::detail::promise_executor<T, Blocking>> : std::true_type {};

/// use_service with a one-entry per-thread cache: the lookup locks the context's registry.
inline offload_service& service_of(net::execution_context& ctx) {
  struct entry {
    net::execution_context* ctx = nullptr;
    offload_service* service = nullptr;
    std::uint64_t epoch = 0;
  };
  thread_local entry cache;
  const std::uint64_t now = offload_service::epoch().load(std::memory_order_acquire);
  if (cache.ctx == &ctx && cache.epoch == now) return *cache.service;
  offload_service& svc = net::use_service<offload_service>(ctx);
  cache = entry{&ctx, &svc, now};
  return svc;
}

}  // namespace offload::detail
