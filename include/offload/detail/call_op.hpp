// offload: the typed node of one offloaded call, and how its result travels back.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/call_options.hpp>
#include <offload/config.hpp>
#include <offload/context.hpp>
#include <offload/detail/deadline.hpp>
#include <offload/detail/op.hpp>
#include <offload/detail/op_allocator.hpp>
#include <offload/detail/pool_metrics.hpp>
#include <offload/detail/service.hpp>
#include <offload/detail/unique_function.hpp>
#include <offload/errors.hpp>
#include <offload/limiter.hpp>

#include <chrono>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <stop_token>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>

namespace offload::detail {

template <typename F, typename... Args>
inline constexpr bool takes_stop_token = std::is_invocable_v<F&&, std::stop_token, Args&&...>;

template <typename F>
struct unwrap_reference_wrapper {
  using type = F;
};
template <typename F>
struct unwrap_reference_wrapper<std::reference_wrapper<F>> {
  using type = std::remove_cv_t<F>;
};
template <typename F>
using unwrapped_type = typename unwrap_reference_wrapper<F>::type;

template <typename F, typename... Args>
struct invoke_result_of {
  using type = std::invoke_result_t<F&&, Args&&...>;
};
template <typename F, typename... Args>
requires takes_stop_token<F, Args...>
struct invoke_result_of<F, Args...> {
  using type = std::invoke_result_t<F&&, std::stop_token, Args&&...>;
};

/// f and its decay-copied arguments; invoked once, with everything passed as rvalues, as
/// std::thread does (std::ref passes a reference). An f whose first parameter is a
/// std::stop_token gets one, stopped when the awaiter is cancelled.
template <typename F, typename... Args>
class bound_call {
 public:
  static constexpr bool stoppable = takes_stop_token<F, Args...>;
  using invoke_result = typename invoke_result_of<F, Args...>::type;
  using value_type =
      std::conditional_t<std::is_void_v<invoke_result>, void, std::remove_cvref_t<invoke_result>>;

  template <typename F2, typename... A2>
  explicit bound_call(F2&& f, A2&&... args)
      : f_(std::forward<F2>(f)), args_(std::forward<A2>(args)...) {}

  invoke_result operator()(std::stop_token token) {
    return std::apply(
        [this, &token](Args&... args) -> invoke_result {
          if constexpr (stoppable) {
            return std::invoke(std::move(f_), std::move(token), std::move(args)...);
          } else {
            (void)token;
            return std::invoke(std::move(f_), std::move(args)...);
          }
        },
        args_);
  }

  /// The callable's type as the compiler names it (the referred-to type for a
  /// std::reference_wrapper, as offload::map makes).
  static const char* name() noexcept { return typeid(unwrapped_type<F>).name(); }

 private:
  F f_;
  [[no_unique_address]] std::tuple<Args...> args_;
};

/// The completion signature of a call returning R: Asio's (exception_ptr, value) shape, with
/// std::optional<R> for a result that cannot be default-constructed (an error carries none).
template <typename R>
struct completion_signature {
  using type = std::conditional_t<std::is_default_constructible_v<R>, void(std::exception_ptr, R),
                                  void(std::exception_ptr, std::optional<R>)>;
};
template <>
struct completion_signature<void> {
  using type = void(std::exception_ptr);
};
template <typename R>
using completion_signature_t = typename completion_signature<R>::type;

/// Room for a result, filled straight from the call's return value (no move on the way in).
/// A result on its way to the handler (or nothing, for void).
template <typename T>
struct result_holder {
  template <typename... A>
  explicit result_holder(A&&... a) : value(std::forward<A>(a)...) {}
  T value;
};
template <>
struct result_holder<void> {};

template <typename T>
class result_slot {
 public:
  result_slot() noexcept {}
  result_slot(const result_slot&) = delete;
  ~result_slot() {
    if (has_) value_.~T();
  }
  template <typename Invoke>
  void fill(Invoke&& invoke) {
    ::new (static_cast<void*>(std::addressof(value_))) T(invoke());
    has_ = true;
  }
  T&& get() noexcept { return std::move(value_); }

 private:
  union {
    T value_;
  };
  bool has_ = false;
};

template <>
class result_slot<void> {
 public:
  template <typename Invoke>
  void fill(Invoke&& invoke) {
    invoke();
  }
};

/// Completes `handler` with an outcome in the call's completion signature.
template <typename V, typename Handler>
void invoke_handler(Handler& handler, std::exception_ptr error,
                    std::optional<result_holder<V>> value) {
  if constexpr (std::is_void_v<V>) {
    std::move(handler)(std::move(error));
  } else if constexpr (std::is_default_constructible_v<V>) {
    if (value) {
      std::move(handler)(std::exception_ptr(), std::move(value->value));
    } else {
      std::move(handler)(std::move(error), V{});
    }
  } else {
    std::optional<V> out;
    if (value) out.emplace(std::move(value->value));
    std::move(handler)(std::move(error), std::move(out));
  }
}

/// A handler's executor, or Asio's system executor ("any thread") for a handler with none of its
/// own: what Asio 1.22 reports for it, where Asio 1.38 reports an inline executor, which cannot
/// post.
template <typename Handler>
auto completion_executor(const Handler& handler) noexcept {
  return net::get_associated_executor(handler, net::system_executor());
}

/// The call could not be set up (its node or its context could not be made): the handler,
/// still untouched, gets the error through its executor, never inside its own initiation.
template <typename V, typename Handler>
void fail_unstarted(Handler handler, std::exception_ptr error) {
  auto ex = completion_executor(handler);
  net::post(ex, [h = std::move(handler), error = std::move(error)]() mutable {
    invoke_handler<V>(h, std::move(error), std::nullopt);
  });
}

/// Runs on the handler's executor when there is no batched queue for it; destroying it unrun
/// (the executor went away) frees the node without delivering, as Asio does with handlers.
struct completion_runner {
  op_base* op;
  explicit completion_runner(op_base* o) noexcept : op(o) {}
  completion_runner(completion_runner&& other) noexcept : op(std::exchange(other.op, nullptr)) {}
  completion_runner& operator=(completion_runner&&) = delete;
  ~completion_runner() {
    if (op != nullptr) op->destroy();
  }
  void operator()() { std::exchange(op, nullptr)->complete(); }
};

/// A call made without call_options: nothing more to keep.
struct no_extras {
  static constexpr cancel_policy policy = cancel_policy::wait;
};

/// What a call made with call_options keeps beside the call itself.
struct call_extras {
  explicit call_extras(const call_options& options)
      : policy(options.policy),
        limiter(options.limiter != nullptr ? limiter_access::state(*options.limiter) : nullptr),
        on_abandoned(options.on_abandoned),
        deadline(options.deadline),
        timeout(options.timeout) {}

  bool has_deadline() const noexcept {
    return deadline.has_value() || timeout != std::chrono::steady_clock::duration::zero();
  }
  /// Settles deadline and timeout into one time point, counted from now (the call's co_await).
  std::chrono::steady_clock::time_point resolve_deadline() {
    if (timeout != std::chrono::steady_clock::duration::zero()) {
      const auto by_timeout = deadline_after(timeout);
      if (!deadline || by_timeout < *deadline) deadline = by_timeout;
      timeout = {};
    }
    return *deadline;
  }

  cancel_policy policy;
  /// The call took a token of its limiter now.
  void took_token() noexcept {
    holds_token = true;
    token_taken_ns = steady_now_ns();
  }

  bool holds_token = false;
  std::int64_t token_taken_ns = 0;
  std::shared_ptr<limiter_state> limiter;
  void (*on_abandoned)(std::exception_ptr);
  std::optional<std::chrono::steady_clock::time_point> deadline;
  std::chrono::steady_clock::duration timeout;
  unique_function resubmit;  // set while the call waits for a limiter token
};

/// One call in flight. `Handler` is the completion handler; with a `QueueExecutor` it is the
/// bare target of a handler bound to that executor (`bind_executor(loop_strand, callback)`),
/// unwrapped because the call's completion queue already delivers there: the node then
/// holds no copy of the executor (for a strand, an atomic reference count per copy and move).
template <typename Call, typename Handler, typename Extras = no_extras,
          typename QueueExecutor = void>
class call_op final : public op_base {
  static constexpr bool unwrapped = !std::is_void_v<QueueExecutor>;

 public:
  using value_type = typename Call::value_type;
  using handler_executor =
      std::conditional_t<unwrapped, QueueExecutor,
                         net::associated_executor_t<Handler, net::system_executor>>;
  using work_type = std::decay_t<decltype(net::prefer(std::declval<const handler_executor&>(),
                                                      net::execution::outstanding_work.tracked))>;
  using handler_allocator = net::associated_allocator_t<Handler>;
  // Asio's cancellation_slot, or a handler's own kind of slot (a gathered call's, which keeps
  // the canceller in place instead of allocating it).
  using slot_type = net::associated_cancellation_slot_t<Handler>;
  using allocator_type = std::conditional_t<
      std::is_same_v<handler_allocator, std::allocator<void>>, op_allocator<call_op>,
      typename std::allocator_traits<handler_allocator>::template rebind_alloc<call_op>>;

  /// Allocates the node with the handler's allocator, or offload's per-thread cache, and
  /// connects it to the handler's cancellation slot.
  static call_op* create(Call&& call, Handler&& handler, completion_queue* queue,
                         offload_service* home, Extras&& extras = Extras{}) {
    allocator_type alloc(net::get_associated_allocator(handler));
    std::optional<work_type> work;
    if constexpr (!unwrapped) {
      if (queue == nullptr) {
        work.emplace(
            net::prefer(completion_executor(handler), net::execution::outstanding_work.tracked));
      }
    }
    call_op* p = std::allocator_traits<allocator_type>::allocate(alloc, 1);
    try {
      ::new (static_cast<void*>(p)) call_op(std::move(call), std::move(handler), std::move(work),
                                            queue, home, std::move(extras), alloc);
    } catch (...) {
      std::allocator_traits<allocator_type>::deallocate(alloc, p, 1);
      throw;
    }
    return p;
  }

  /// Connects the node to the handler's cancellation slot (may allocate: done once the node
  /// exists, so a failure can be delivered through it).
  void connect_cancellation() {
    if (slot_.is_connected()) {
      slot_.template emplace<canceller>(this);
      cancellable = true;
    }
  }
  void disconnect_cancellation() noexcept {
    slot_.clear();
    cancellable = false;
  }

  Extras& extras() noexcept { return extras_; }
  void set_context(std::unique_ptr<context_snapshot> context) noexcept {
    context_ = std::move(context);
  }

 private:
  // Lives in the awaiter's cancellation slot; runs on the awaiter's executor.
  struct canceller {
    op_base* op;
    explicit canceller(op_base* o) noexcept : op(o) {}
    void operator()(net::cancellation_type type) {
      if (op == nullptr || type == net::cancellation_type::none) return;
      if (op->cancel()) op = nullptr;  // answered: the node now belongs to whoever queues it
    }
  };

  struct no_stop_source {};
  using stop_source_type = std::conditional_t<Call::stoppable, std::stop_source, no_stop_source>;

  call_op(Call&& call, Handler&& handler, std::optional<work_type>&& work, completion_queue* q,
          offload_service* h, Extras&& extras, const allocator_type& alloc)
      : call_(std::in_place, std::move(call)),
        slot_(net::get_associated_cancellation_slot(handler)),
        extras_(std::move(extras)),
        alloc_(alloc),
        handler_(std::move(handler)) {  // last: whatever throws leaves the handler untouched
    static_assert(std::is_nothrow_move_constructible_v<work_type>);
    if (q == nullptr) {
      ::new (static_cast<void*>(std::addressof(work_.value))) work_type(std::move(*work));
    }
    fn = &call_op::dispatch_action;
    queue = q;
    home = h;
    callable_name = Call::name();
    if constexpr (std::is_same_v<Extras, call_extras>) {
      if (extras_.deadline) deadline = *extras_.deadline;
    }
    if (home != nullptr) home->call_started();
  }

  ~call_op() {
    if (queue == nullptr) work_.value.~work_type();
  }

  // The work guard of a call handed back without an offload queue, moved out to live until
  // its handler has run.
  std::optional<work_type> take_work() noexcept {
    if (queue != nullptr) return std::nullopt;
    return std::optional<work_type>(std::move(work_.value));
  }

  void free_self() noexcept {
    allocator_type alloc(alloc_);
    this->~call_op();
    std::allocator_traits<allocator_type>::deallocate(alloc, this, 1);
  }

  static bool dispatch_action(op_base* base, action a, std::exception_ptr* error) {
    auto* self = static_cast<call_op*>(base);
    switch (a) {
      case action::run:
        self->run_call();
        return true;
      case action::fail:
        self->fail_call(std::move(*error));
        return true;
      case action::complete:
        self->deliver();
        return true;
      case action::destroy: {
        if (pool_metrics* m = self->metrics.load(std::memory_order_relaxed)) m->dropped();
        self->release_token();
        const bool counted = self->queue != nullptr;
        offload_service* h = self->home;
        self->free_self();
        if (counted) h->calls_ended();
        return true;
      }
      case action::cancel:
        return self->cancel_call();
      case action::submit:
        self->submit_granted();
        return true;
    }
    return true;
  }

  // A capacity_limiter granted this waiting call a token (on whichever thread released one).
  void submit_granted() noexcept {
    if constexpr (std::is_same_v<Extras, call_extras>) {
      extras_.took_token();
      unique_function resubmit = std::move(extras_.resubmit);
      resubmit();  // never throws: a refused submission fails the call
    }
  }

  // Gives the limiter's token back, once: when f returned, or when the call ends without
  // running.
  void release_token() noexcept {
    if constexpr (std::is_same_v<Extras, call_extras>) {
      if (extras_.holds_token) {
        extras_.holds_token = false;
        extras_.limiter->release(extras_.token_taken_ns);
      }
    }
  }

  // On the awaiter's executor. Not started: the awaiter is answered now and f never runs.
  // Running (or on its way back): f is asked to stop, and the awaiter, which waits for f to
  // return (the wait policy), then sees the cancellation.
  // Under cancel_policy::abandon a running call's awaiter is answered now too; f runs on.
  bool cancel_call() {
    op_state expected = op_state::pending;
    if (state.compare_exchange_strong(expected, op_state::cancelling, std::memory_order_acq_rel)) {
      offload_service* h = home;
      const bool by_deadline = past_deadline();
      if (by_deadline) cancelled_by_deadline.store(true, std::memory_order_relaxed);
      // Not submitted yet (a call waiting for a limiter token may be, on another thread, as we
      // cancel it): the pool that gets it counts it when it finds it cancelled (discard).
      deferred_event event;
      pool_metrics* const m = metrics.load(std::memory_order_acquire);
      if (m != nullptr && !cancel_counted.exchange(true, std::memory_order_acq_rel)) {
        event = m->cancelled_before_start(*this, by_deadline);
      }
      answer_cancelled("offload: the call was cancelled before it started (it never ran)",
                       cancellation_outcome::never_started);
      state.store(op_state::cancelled, std::memory_order_release);  // the node is not ours now
      event.send();
      if (h != nullptr) h->calls_ended();
      return true;
    }
    if (past_deadline()) cancelled_by_deadline.store(true, std::memory_order_relaxed);
    cancel_requested.store(true, std::memory_order_release);
    if constexpr (Call::stoppable) stop_.request_stop();
    if (extras_.policy == cancel_policy::abandon) {
      expected = op_state::running;
      if (state.compare_exchange_strong(expected, op_state::abandoning,
                                        std::memory_order_acq_rel)) {
        pool_metrics* const m = metrics.load(std::memory_order_acquire);
        // Still counted in flight: the worker finishes the node when f returns.
        // Told before the state settles, so that it comes before the worker's on_finish.
        if (m != nullptr) m->abandoned(*this, past_deadline()).send();
        answer_cancelled(
            "offload: the call was cancelled while it ran and was abandoned (it may still be "
            "running)",
            cancellation_outcome::abandoned);
        state.store(op_state::abandoned, std::memory_order_release);
        return true;
      }
    }
    return false;
  }

  handler_executor executor() const {
    if constexpr (unwrapped) {
      return static_cast<const basic_completion_queue<QueueExecutor>*>(queue)->executor();
    } else {
      return completion_executor(handler_);
    }
  }

  // Moves the handler out of the node (whose owner waits while the state is transient).
  void answer_cancelled(const char* what, cancellation_outcome outcome) {
    auto ex = executor();
    auto error = make_cancelled(what, outcome);
    net::post(ex, [h = std::move(handler_), slot = slot_, work = take_work(),
                   error = std::move(error)]() mutable {
      slot.clear();
      invoke_handler<value_type>(h, std::move(error), std::nullopt);
    });
  }

  // f of an abandoned call returned: its outcome goes to on_abandoned, on this worker.
  void finish_abandoned() noexcept {
    if constexpr (std::is_same_v<Extras, call_extras>) {
      if (extras_.on_abandoned != nullptr) {
        try {
          extras_.on_abandoned(error_);
        } catch (...) {
          report_stray_exception("an on_abandoned hook");
        }
      }
    }
    offload_service* h = home;
    free_self();
    if (h != nullptr) h->calls_ended();
  }

  // The node of a call cancelled before it started, reached by whoever held it.
  void discard() noexcept {
    (void)settled_state(state);  // the canceller may still be answering from the node
    pool_metrics* const m = metrics.load(std::memory_order_acquire);
    if (m != nullptr && !cancel_counted.exchange(true, std::memory_order_acq_rel)) {
      m->cancelled_before_start(*this, cancelled_by_deadline.load(std::memory_order_relaxed))
          .send();
    }
    release_token();
    destroy_call();
    free_self();
  }

  // Destroys f and its arguments; a destructor that throws is reported, never rethrown.
  void destroy_call() noexcept {
    try {
      call_.reset();
    } catch (...) {
      report_stray_exception("the destructor of an offloaded callable");
    }
  }

  void fail_call(std::exception_ptr error) noexcept {
    if (!advance(op_state::pending, op_state::done)) {
      discard();  // already answered as cancelled
      return;
    }
    if (pool_metrics* m = metrics.load(std::memory_order_relaxed)) {
      m->failed_before_start(*this,
                             outcome_of_cancellation(error) == cancellation_outcome::never_started);
    }
    error_ = std::move(error);
    release_token();
    destroy_call();
    hand_back();
  }

  void run_call() noexcept {
    if (!advance(op_state::pending, op_state::running)) {
      discard();
      return;
    }
    pool_metrics* const m = metrics.load(std::memory_order_relaxed);
    const std::int64_t started_ns = m != nullptr ? m->started(*this) : 0;
    thread_context& thread = this_thread();
    thread.current_op = this;
    // The caller's context stays installed until the observer heard how the call ended.
    std::optional<context_scope> context;
    try {
      context.emplace(context_.get());
      if (m != nullptr) m->starting(*this);
      if constexpr (Call::stoppable) {
        result_.fill([this]() -> decltype(auto) { return (*call_)(stop_.get_token()); });
      } else {
        result_.fill([this]() -> decltype(auto) { return (*call_)(std::stop_token()); });
      }
    } catch (...) {
      error_ = std::current_exception();
    }
    thread.current_op = nullptr;
    destroy_call();  // f and its arguments die on the worker, not on the loop
    const bool abandoned = !advance(op_state::running, op_state::done);
    if (abandoned) (void)settled_state(state);
    if (m != nullptr) {
      m->finished(*this, error_ ? call_end::threw : call_end::returned, started_ns, abandoned);
    }
    context.reset();
    context_.reset();
    release_token();  // out of the call's context: it may submit the next waiting call
    if (abandoned) {
      finish_abandoned();
      return;
    }
    hand_back();
  }

  void hand_back() noexcept {
    if (queue != nullptr) {
      queue->push(this);  // counted in flight until delivered or destroyed
      return;
    }
    offload_service* h = home;  // `this` may be gone once dispatched
    if (h != nullptr) h->hand_back_started();
    struct finish_on_exit {
      offload_service* h;
      ~finish_on_exit() {
        if (h == nullptr) return;
        h->calls_ended();
        h->hand_back_finished();
      }
    } finish{h};
    try {
      if (immediate) {
        net::post(executor(), completion_runner(this));
      } else {
        net::dispatch(executor(), completion_runner(this));
      }
    } catch (...) {
      report_stray_exception("a completion handler run on a worker thread");
    }
  }

  void deliver() {
    Handler handler(std::move(handler_));
    [[maybe_unused]] std::optional<work_type> work = take_work();  // until the handler ran
    std::exception_ptr error = std::move(error_);
    std::optional<result_holder<value_type>> value;
    if (pool_metrics* m = metrics.load(std::memory_order_relaxed)) m->delivered(*this);
    if (cancel_requested.load(std::memory_order_acquire)) {
      error = make_cancelled(
          "offload: the call was cancelled while it ran (it ran to its end; its result was "
          "discarded)",
          cancellation_outcome::ran_to_end);
    } else if constexpr (!std::is_void_v<value_type>) {
      if (!error) value.emplace(result_.get());
    } else if (!error) {
      value.emplace();
    }
    slot_type slot = slot_;
    free_self();  // a queued call's count ends with its drain
    slot.clear();
    invoke_handler<value_type>(handler, std::move(error), std::move(value));
  }

  std::optional<Call> call_;
  result_slot<value_type> result_;
  std::exception_ptr error_;
  slot_type slot_;
  // Only calls handed back without an offload queue (queue == nullptr) hold a work guard:
  // the others are counted as work by the service, in bulk.
  union work_storage {
    work_storage() noexcept {}
    ~work_storage() {}
    work_type value;
  } work_;
  [[no_unique_address]] Extras extras_;
  [[no_unique_address]] allocator_type alloc_;
  [[no_unique_address]] stop_source_type stop_;
  Handler handler_;
  std::unique_ptr<context_snapshot> context_;
};

}  // namespace offload::detail
