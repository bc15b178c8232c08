// offload: to_thread, run_in_executor and async_run — run a blocking call on a thread and
// resume the awaiting coroutine on its own executor.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/call.hpp>
#include <offload/call_options.hpp>
#include <offload/config.hpp>
#include <offload/context.hpp>
#include <offload/detail/awaitable_initiation.hpp>
#include <offload/detail/call_op.hpp>
#include <offload/detail/loop_step.hpp>
#include <offload/detail/op_allocator.hpp>
#include <offload/detail/service.hpp>
#include <offload/errors.hpp>
#include <offload/limiter.hpp>
#include <offload/thread_pool.hpp>
#include <offload/timeout.hpp>

#include <atomic>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <type_traits>
#include <utility>

namespace offload {

/// Names the default executor of the loop the call is made from (asyncio's `None`).
struct default_executor_t {
  explicit constexpr default_executor_t() = default;
};
inline constexpr default_executor_t default_executor{};

namespace detail {
struct work_item_access;
}  // namespace detail

/// What offload hands to an executor it does not own: a copyable `void()` callable that runs
/// the call the first time it is invoked. If every copy is destroyed unrun (the pool dropped
/// it), the awaiter gets broken_promise: a call is never lost silently.
class work_item {
 public:
  void operator()() const {
    if (detail::op_base* op = guard_->op.exchange(nullptr, std::memory_order_acq_rel)) op->run();
  }

 private:
  friend struct detail::work_item_access;

  struct guard {
    std::atomic<detail::op_base*> op;
    explicit guard(detail::op_base* o) noexcept : op(o) {}
    ~guard() {
      if (detail::op_base* o = op.exchange(nullptr, std::memory_order_acq_rel)) {
        o->fail(std::make_exception_ptr(make_error(
            errc::broken_promise, "offload: the executor destroyed the call without running it")));
      }
    }
  };

  explicit work_item(detail::op_base* op) : guard_(std::make_shared<guard>(op)) {}
  detail::op_base* release() noexcept {
    return guard_->op.exchange(nullptr, std::memory_order_acq_rel);
  }

  std::shared_ptr<guard> guard_;
};

namespace detail {
struct work_item_access {
  static work_item make(op_base* op) { return work_item(op); }
  static op_base* release(work_item& w) noexcept { return w.release(); }
};
}  // namespace detail

/// The customization point for a pool offload does not know: specialize this (or give the
/// pool a member `submit(callable)`) so that `submit` runs `item()` once on some thread.
template <typename Pool>
struct executor_traits;

namespace detail {

template <typename T>
concept has_member_submit = requires(T& pool, work_item item) {
  pool.submit(std::move(item));
};

template <typename T>
concept has_executor_traits = requires(T& pool, work_item item) {
  executor_traits<T>::submit(pool, std::move(item));
};

template <typename T>
concept asio_executor = net::execution::is_executor<T>::value || net::is_executor<T>::value;

template <typename T>
concept asio_context = std::is_base_of_v<net::execution_context, T> && requires(T& ctx) {
  { ctx.get_executor() } -> asio_executor;
};

template <typename T>
concept has_asio_executor = requires(T& t) {
  { t.get_executor() } -> asio_executor;
};

template <typename T>
struct is_shared_pool : std::false_type {};
template <>
struct is_shared_pool<std::shared_ptr<thread_pool>> : std::true_type {};

/// Something that hands out an offload pool's executor: a thread_pool, a serial_thread.
template <typename T>
concept native_pool_owner = requires(T& t) {
  { t.get_executor() } -> std::same_as<thread_pool::executor_type>;
};

/// Every kind of target, classified in one place: which targets run calls, how one is held and
/// how a call reaches it all read this. The first kind that matches wins.
enum class target_kind {
  none,
  default_executor,  // the calling loop's default pool
  native_executor,   // thread_pool::executor_type
  native_owner,      // a thread_pool or serial_thread, by reference
  shared_pool,       // std::shared_ptr<thread_pool>
  asio_executor,     // any Asio executor
  asio_owner,        // an Asio execution context, or anything with an Asio get_executor()
  traits,            // executor_traits<T>::submit
  member_submit,     // T::submit(work_item)
};

template <typename T>
constexpr target_kind classify_target() noexcept {
  if constexpr (std::is_same_v<T, default_executor_t>) {
    return target_kind::default_executor;
  } else if constexpr (std::is_same_v<T, thread_pool::executor_type>) {
    return target_kind::native_executor;
  } else if constexpr (native_pool_owner<T>) {
    return target_kind::native_owner;
  } else if constexpr (is_shared_pool<T>::value) {
    return target_kind::shared_pool;
  } else if constexpr (asio_executor<T>) {
    return target_kind::asio_executor;
  } else if constexpr (asio_context<T> || has_asio_executor<T>) {
    return target_kind::asio_owner;
  } else if constexpr (has_executor_traits<T>) {
    return target_kind::traits;
  } else if constexpr (has_member_submit<T>) {
    return target_kind::member_submit;
  } else {
    return target_kind::none;
  }
}

template <typename T>
inline constexpr target_kind target_kind_of = classify_target<T>();

// clang-format 14 breaks this concept after the template argument list.
// clang-format off
template <typename T>
concept runs_calls = target_kind_of<T> != target_kind::none;
// clang-format on

/// How the initiation keeps the target: executors and handles by value, pools by address
/// (a pool must outlive the calls made on it).
template <typename Target>
struct target_holder {
  using type = std::remove_cvref_t<Target>;
  static constexpr target_kind kind = target_kind_of<type>;
  static constexpr bool by_value =
      kind == target_kind::default_executor || kind == target_kind::native_executor ||
      kind == target_kind::shared_pool || kind == target_kind::asio_executor;
  using stored = std::conditional_t<by_value, type, type*>;

  stored value;

  static target_holder make(Target&& t) {
    if constexpr (by_value) {
      return target_holder{std::forward<Target>(t)};
    } else {
      static_assert(std::is_lvalue_reference_v<Target>,
                    "offload: pass the pool by reference; it must outlive the calls made on it");
      return target_holder{std::addressof(t)};
    }
  }
  type& get() noexcept {
    if constexpr (by_value) {
      return value;
    } else {
      return *value;
    }
  }
};

template <typename T>
inline constexpr bool dependent_false = false;

inline void submit_native(thread_pool& pool, op_base* op, bool may_wait) {
  switch (submit_call(pool, op, may_wait)) {
    case submit_status::accepted:
      return;
    case submit_status::shut_down:
      throw_error(errc::executor_shutdown, "offload: submitting a call");
    case submit_status::full:
      throw_error(errc::queue_full, "offload: submitting a call from a thread with no loop");
  }
}

template <typename Submit>
void submit_foreign(op_base* op, Submit&& submit) {
  work_item item = work_item_access::make(op);
  try {
    submit(work_item(item));
  } catch (...) {
    // We still hold the call unless the executor ran it: fail it with the executor's error.
    if (op_base* mine = work_item_access::release(item)) mine->fail(std::current_exception());
    return;
  }
}

/// One code path for every kind of target: resolve it to something that runs an op.
template <typename T>
void submit_to(T& target, op_base* op, offload_service* default_owner, bool may_wait) {
  constexpr target_kind kind = target_kind_of<T>;
  if constexpr (kind == target_kind::default_executor) {
    if (default_owner == nullptr) {
      throw_error(errc::no_running_loop, "offload::to_thread / run_in_executor(default_executor)");
    }
    submit_native(default_owner->default_pool(), op, may_wait);
  } else if constexpr (kind == target_kind::native_executor) {
    submit_native(target.context(), op, may_wait);
  } else if constexpr (kind == target_kind::native_owner) {
    submit_native(target.get_executor().context(), op, may_wait);
  } else if constexpr (kind == target_kind::shared_pool) {
    submit_native(*target, op, may_wait);
  } else if constexpr (kind == target_kind::asio_executor) {
    submit_foreign(op, [&](work_item&& item) { net::post(target, std::move(item)); });
  } else if constexpr (kind == target_kind::asio_owner) {
    submit_foreign(op,
                   [&](work_item&& item) { net::post(target.get_executor(), std::move(item)); });
  } else if constexpr (kind == target_kind::traits) {
    submit_foreign(op,
                   [&](work_item&& item) { executor_traits<T>::submit(target, std::move(item)); });
  } else if constexpr (kind == target_kind::member_submit) {
    submit_foreign(op, [&](work_item&& item) { target.submit(std::move(item)); });
  } else {
    static_assert(dependent_false<T>,
                  "offload: this is not something offload can run calls on: pass "
                  "offload::default_executor, an offload::thread_pool or serial_thread, an Asio "
                  "executor or execution context, or a pool with submit(callable) / "
                  "executor_traits");
  }
}

template <typename Target, typename Extras = no_extras>
struct initiate_run {
  target_holder<Target> target;
  Extras extras;

  template <typename Handler, typename Call>
  void operator()(Handler&& handler, Call&& call) {
    initiate(std::forward<Handler>(handler), std::forward<Call>(call), no_deadline);
  }

  /// A callback bound to an executor offload has a completion queue for (the loop's strand, an
  /// io_context's executor): the node keeps only the callback, since the queue delivers there.
  /// `deadline`: the one the executor the callback was bound from carried (see launch).
  template <typename Binder, typename Call>
  void run_bound(Binder&& binder, Call&& call, steady_time deadline) {
    using binder_type = std::remove_cvref_t<Binder>;
    using executor_type = typename binder_type::executor_type;
    using target_type = typename binder_type::target_type;
    if constexpr (std::is_same_v<executor_type, loop_strand_type> ||
                  std::is_same_v<executor_type, net::io_context::executor_type>) {
      using op_type = call_op<std::decay_t<Call>, target_type, Extras, executor_type>;
      op_type* op = nullptr;
      offload_service* home = nullptr;
      try {
        const executor_type ex = binder.get_executor();
        home = &service_of(context_of(ex));
        completion_queue* queue = home->queue_for(ex);
        if (queue != nullptr) {
          if constexpr (std::is_lvalue_reference_v<Binder>) {
            target_type target(binder.get());
            op =
                op_type::create(std::move(call), std::move(target), queue, home, std::move(extras));
          } else {  // moved from only once the node exists: a failure leaves it untouched
            op = op_type::create(std::move(call), std::move(binder.get()), queue, home,
                                 std::move(extras));
          }
        }
      } catch (...) {
        fail_unstarted<typename op_type::value_type>(binder_type(std::forward<Binder>(binder)),
                                                     std::current_exception());
        return;
      }
      if (op != nullptr) {
        start(op, home, false, deadline);
        return;
      }
    }
    initiate(std::forward<Binder>(binder), std::forward<Call>(call), deadline);
  }

 private:
  // `deadline`: one the caller knows the call is under, beside any its handler's executor
  // carries (the awaiting coroutine runs under wait_for).
  template <typename Handler, typename Call>
  void initiate(Handler&& handler, Call&& call, steady_time deadline) {
    using handler_type = std::decay_t<Handler>;
    using op_type = call_op<std::decay_t<Call>, handler_type, Extras>;
    // A handler with no executor of its own (use_future, a bare callback) may complete on any
    // thread; only the default executor then needs a loop to belong to.
    constexpr bool no_loop = is_system_executor<net::associated_executor_t<handler_type>>::value;

    handler_type h(std::forward<Handler>(handler));
    op_type* op = nullptr;
    offload_service* default_owner = nullptr;
    try {
      offload_service* home = nullptr;
      completion_queue* queue = nullptr;
      if constexpr (!no_loop) {
        auto ex = net::get_associated_executor(h);
        home = &service_of(context_of(ex));
        queue = home->queue_for(ex);
        deadline = std::min(deadline, deadline_carried_by(ex));
      }
      default_owner = no_loop ? this_thread().loop_service : home;
      if (no_loop && std::is_same_v<typename target_holder<Target>::type, default_executor_t> &&
          default_owner == nullptr) {
        throw_error(errc::no_running_loop,
                    "offload::async_run(default_executor) with a handler that has no executor "
                    "(bind one with asio::bind_executor)");
      }
      op = op_type::create(std::move(call), std::move(h), queue, home, std::move(extras));
    } catch (...) {
      // Nothing was submitted and the handler was not taken. A caller without a loop gets the
      // error directly; an awaiting coroutine must not be resumed (or unwound) from inside its
      // own co_await, so it gets the error through its executor.
      if constexpr (no_loop) {
        throw;
      } else {
        fail_unstarted<typename op_type::value_type>(std::move(h), std::current_exception());
        return;
      }
    }
    start(op, default_owner, no_loop, deadline);
  }

  // Connects the node to cancellation and its context, then submits it.
  template <typename Op>
  void start(Op* op, offload_service* default_owner, bool no_loop, steady_time deadline) {
    op->limit_deadline(deadline);
    try {
      op->connect_cancellation();
      op->set_context(context_registry::instance().capture());
      if constexpr (std::is_same_v<Extras, call_extras>) {
        if (!take_token(op, default_owner, !no_loop)) return;  // queued for a token
      }
      submit_to(target.get(), op, default_owner, !no_loop);
    } catch (...) {
      if (no_loop) {
        op->disconnect_cancellation();
        op->destroy();  // nobody awaits yet: the caller gets the error directly
        throw;
      }
      op->immediate = true;
      op->fail(std::current_exception());
    }
  }

  // False: the limiter queued the call; the thread that frees a token submits it.
  template <typename Op>
  bool take_token(Op* op, offload_service* default_owner, bool may_wait) {
    limiter_state* limiter = op->extras().limiter.get();
    if (limiter == nullptr || limiter->try_acquire()) {
      if (limiter != nullptr) op->extras().took_token();
      return true;
    }
    op->extras().resubmit = [op, t = target, default_owner, may_wait]() mutable {
      try {
        submit_to(t.get(), op, default_owner, may_wait);
      } catch (...) {
        op->fail(std::current_exception());
      }
    };
    if (!limiter->acquire_or_enqueue(op)) return false;
    op->extras().resubmit = {};
    op->extras().took_token();
    return true;
  }
};

template <typename F, typename... Args>
constexpr void check_call() {
  using D = std::decay_t<F>;
  static_assert(std::is_class_v<D> || std::is_pointer_v<D> || std::is_member_pointer_v<D>,
                "offload: f is not callable: pass a function, a lambda or a function object");
  static_assert(std::is_invocable_v<D&&, std::decay_t<Args>&&...> ||
                    std::is_invocable_v<D&&, std::stop_token, std::decay_t<Args>&&...>,
                "offload: f cannot be called with these arguments (they are decay-copied and "
                "passed as rvalues, as std::thread does; wrap an argument in std::ref to pass "
                "a reference)");
}

template <typename F, typename... Args>
using call_for = bound_call<std::decay_t<F>, std::decay_t<Args>...>;

template <typename F, typename... Args>
inline constexpr bool callable_with =
    std::is_invocable_v<std::decay_t<F>&&, std::decay_t<Args>&&...> ||
    std::is_invocable_v<std::decay_t<F>&&, std::stop_token, std::decay_t<Args>&&...>;

// The result type, or void when the call is ill-formed, so the static_assert in the body is
// the error the user sees rather than a failed substitution.
template <typename F, typename... Args>
struct call_value {
  using type = void;
};
template <typename F, typename... Args>
requires callable_with<F, Args...>
struct call_value<F, Args...> {
  using type = typename call_for<F, Args...>::value_type;
};
template <typename F, typename... Args>
using call_value_t = typename call_value<F, Args...>::type;

template <typename T>
awaitable<T> unwrap_optional(awaitable<std::optional<T>> inner) {
  std::optional<T> value = co_await std::move(inner);
  co_return std::move(*value);
}

/// A callback bound to an executor (`asio::bind_executor(ex, callback)`): already a complete
/// handler, so it is taken as one. Going through Asio's async_result for executor_binder
/// instead would copy the executor twice more per call (for a strand, two more atomic
/// reference-count round trips).
template <typename Token, typename Signature>
struct is_bound_callback : std::false_type {};
template <typename T, typename Executor, typename R, typename... Args>
struct is_bound_callback<net::executor_binder<T, Executor>, R(Args...)>
    : std::bool_constant<std::is_invocable_v<T&&, Args...>> {};

template <typename Target, typename Extras, typename Call, typename Token>
auto initiate_call(Target&& target, Extras&& extras, Call&& call, Token&& token) {
  using signature = completion_signature_t<typename std::decay_t<Call>::value_type>;
  initiate_run<Target, std::decay_t<Extras>> initiation{
      target_holder<Target>::make(std::forward<Target>(target)), std::forward<Extras>(extras)};
  if constexpr (is_bound_callback<std::remove_cvref_t<Token>, signature>::value) {
    initiation.run_bound(std::forward<Token>(token), std::forward<Call>(call), no_deadline);
  } else {
    // Through off_frame_initiation: the token may be use_awaitable (or an adapter of it).
    return net::async_initiate<Token, signature>(
        off_frame_initiation<decltype(initiation)>{std::move(initiation)}, token,
        std::forward<Call>(call));
  }
}

}  // namespace detail

/// Runs `f()` on `target` and completes `token` with the result: (exception_ptr, R), or
/// (exception_ptr) for void, or (exception_ptr, std::optional<R>) when R has no default
/// constructor. Works with use_awaitable, use_future, deferred and callbacks.
template <typename Target, typename F, typename Token>
requires detail::runs_calls<std::remove_cvref_t<Target>> && detail::callable_with<F>
auto async_run(Target&& target, F&& f, Token&& token) {
  return detail::initiate_call(std::forward<Target>(target), detail::no_extras{},
                               detail::call_for<F>(std::forward<F>(f)), std::forward<Token>(token));
}

/// async_run with per-call options (cancel policy, capacity limiter; no deadline).
template <typename Target, typename F, typename Token>
requires detail::runs_calls<std::remove_cvref_t<Target>> && detail::callable_with<F>
auto async_run(Target&& target, call_options options, F&& f, Token&& token) {
  if (options.deadline || options.timeout != std::chrono::steady_clock::duration::zero()) {
    throw std::invalid_argument(
        "offload::async_run: call_options.deadline / timeout are for to_thread and "
        "run_in_executor (co_await them, or wrap the call in wait_until)");
  }
  return detail::initiate_call(std::forward<Target>(target), detail::call_extras(options),
                               detail::call_for<F>(std::forward<F>(f)), std::forward<Token>(token));
}

namespace detail {

template <typename T>
concept not_options = !std::is_same_v<std::remove_cvref_t<T>, call_options>;

/// A call with a deadline: settled when the call is awaited, then the call is made under
/// wait_until, which cancels it there (one still queued never starts).
template <typename Target, typename Call>
awaitable<typename Call::value_type> offload_call_by_deadline(target_holder<Target> target,
                                                              call_extras extras, Call call) {
  using value_type = typename Call::value_type;
  using signature = completion_signature_t<value_type>;
  const auto deadline = extras.resolve_deadline();
  if (deadline <= std::chrono::steady_clock::now()) {
    std::rethrow_exception(
        make_timed_out("offload: the call's deadline had passed when it was "
                       "awaited (nothing was submitted)",
                       cancellation_outcome::never_started));
  }
  auto op = async_initiate_awaitable<signature>(
      initiate_run<Target, call_extras>{std::move(target), std::move(extras)}, std::move(call));
  static constexpr deadline_messages says{
      "offload::to_thread / run_in_executor: the call's deadline passed (it was cancelled)",
      "offload::to_thread / run_in_executor: the awaiter was cancelled", ""};
  if constexpr (std::is_void_v<value_type> || std::is_default_constructible_v<value_type>) {
    co_return co_await await_with_deadline<value_type>(std::move(op), {.at = deadline}, says);
  } else {
    auto unwrapped = unwrap_optional<value_type>(std::move(op));  // named: GCC 12's co_await
    co_return co_await await_with_deadline<value_type>(std::move(unwrapped), {.at = deadline},
                                                       says);
  }
}

/// Where a group's child calls complete: on `any`, bound to its concrete type where offload
/// has a completion queue for that (the node then keeps no copy of the executor; see
/// run_bound), under the deadline it carries. Read once for a group's children.
struct child_executor {
  const net::any_io_executor& any;
  const loop_strand_type* strand;
  const net::io_context::executor_type* io;
  steady_time deadline;

  static child_executor of(const net::any_io_executor& ex) noexcept {
    const loop_strand_type* strand = executor_target<loop_strand_type>(ex);
    return {ex, strand,
            strand != nullptr ? nullptr : executor_target<net::io_context::executor_type>(ex),
            deadline_carried_by(ex)};
  }
};

/// Starts a group's child call, its completion bound as `where` says.
template <typename Initiation, typename Completion, typename Call>
void launch_child(Initiation& initiation, const child_executor& where, Completion&& completion,
                  Call&& call) {
  if (where.strand != nullptr) {
    initiation.run_bound(net::bind_executor(*where.strand, std::forward<Completion>(completion)),
                         std::forward<Call>(call), where.deadline);
  } else if (where.io != nullptr) {
    initiation.run_bound(net::bind_executor(*where.io, std::forward<Completion>(completion)),
                         std::forward<Call>(call), where.deadline);
  } else {
    initiation(net::bind_executor(where.any, std::forward<Completion>(completion)),
               std::forward<Call>(call));
  }
}

/// A call made but not started: its initiation and its callable, until it is awaited (as the
/// operation of its awaitable) or launched as a group's child.
template <typename Target, typename Extras, typename Call>
class deferred_call final : public call_launcher<typename Call::value_type> {
 public:
  using value_type = typename Call::value_type;

  deferred_call(initiate_run<Target, Extras>&& initiation, Call&& call)
      : initiation_(std::move(initiation)), call_(std::move(call)) {}

  template <typename Handler>
  void start(Handler&& handler) {
    initiation_(std::forward<Handler>(handler), std::move(call_));
  }

  void launch(child_completion<value_type> completion,
              const net::any_io_executor& ex) noexcept override {
    launch_child(initiation_, child_executor::of(ex), std::move(completion), std::move(call_));
  }

 private:
  initiate_run<Target, Extras> initiation_;
  Call call_;
};

/// The operation of a call's awaitable: starts the deferred call, which it owns, when awaited.
template <typename Deferred>
struct start_deferred {
  std::unique_ptr<Deferred, cached_delete<Deferred>> deferred;

  template <typename Handler>
  void operator()(Handler&& handler) {
    auto started = std::move(deferred);  // freed as soon as the call is under way
    started->start(std::forward<Handler>(handler));
  }
};

template <typename Target, typename Extras, typename F, typename... Args>
auto offload_call(Target&& target, Extras&& extras, F&& f, Args&&... args)
    -> call<call_value_t<F, Args...>> {
  check_call<F, Args...>();
  if constexpr (callable_with<F, Args...>) {
    using call_type = call_for<F, Args...>;
    using value_type = typename call_type::value_type;
    using signature = completion_signature_t<value_type>;
    using extras_type = std::decay_t<Extras>;
    if constexpr (std::is_same_v<extras_type, call_extras>) {
      if (extras.has_deadline()) {  // a coroutine around the call: it is not started directly
        return call_access::make<value_type>(
            offload_call_by_deadline<Target, call_type>(
                target_holder<Target>::make(std::forward<Target>(target)), std::move(extras),
                call_type(std::forward<F>(f), std::forward<Args>(args)...)),
            nullptr);
      }
    }
    using deferred_type = deferred_call<Target, extras_type, call_type>;
    auto deferred = make_cached<deferred_type>(
        initiate_run<Target, extras_type>{target_holder<Target>::make(std::forward<Target>(target)),
                                          std::move(extras)},
        call_type(std::forward<F>(f), std::forward<Args>(args)...));
    deferred_type* launcher = deferred.get();
    auto op =
        async_initiate_awaitable<signature>(start_deferred<deferred_type>{std::move(deferred)});
    if constexpr (std::is_void_v<value_type> || std::is_default_constructible_v<value_type>) {
      return call_access::make<value_type>(std::move(op), launcher);
    } else {
      return call_access::make<value_type>(unwrap_optional<value_type>(std::move(op)), launcher);
    }
  } else {
    return {};
  }
}

}  // namespace detail

/// `co_await run_in_executor(ex, f, args...)`: runs `std::invoke(f, args...)` on `ex` and
/// resumes on the awaiting coroutine's executor with the result, or rethrows f's exception.
template <typename Target, detail::not_options F, typename... Args>
requires detail::runs_calls<std::remove_cvref_t<Target>>
auto run_in_executor(Target&& target, F&& f, Args&&... args)
    -> call<detail::call_value_t<F, Args...>> {
  return detail::offload_call(std::forward<Target>(target), detail::no_extras{}, std::forward<F>(f),
                              std::forward<Args>(args)...);
}

/// run_in_executor with per-call options:
/// `run_in_executor(pool, {.policy = cancel_policy::abandon, .limiter = &lim}, f, args...)`.
template <typename Target, typename F, typename... Args>
requires detail::runs_calls<std::remove_cvref_t<Target>>
auto run_in_executor(Target&& target, call_options options, F&& f, Args&&... args)
    -> call<detail::call_value_t<F, Args...>> {
  return detail::offload_call(std::forward<Target>(target), detail::call_extras(options),
                              std::forward<F>(f), std::forward<Args>(args)...);
}

/// Python's `loop.run_in_executor(None, f)`: offload spells "the default executor" as a name,
/// so a null target is one readable error instead of a page of failed overloads.
template <typename F, typename... Args>
auto run_in_executor(std::nullptr_t, F&&, Args&&...) -> call<detail::call_value_t<F, Args...>> {
  static_assert(detail::dependent_false<F>,
                "offload: run_in_executor(nullptr, f): Python's None is "
                "spelled offload::default_executor here (or use "
                "offload::to_thread(f, args...))");
  return {};
}
template <typename F, typename... Args>
auto run_in_executor(std::nullptr_t, call_options, F&&, Args&&...)
    -> call<detail::call_value_t<F, Args...>> {
  static_assert(detail::dependent_false<F>,
                "offload: run_in_executor(nullptr, f): Python's None is "
                "spelled offload::default_executor here (or use "
                "offload::to_thread(f, args...))");
  return {};
}

/// `co_await to_thread(f, args...)`: run_in_executor on the loop's default executor.
template <detail::not_options F, typename... Args>
auto to_thread(F&& f, Args&&... args) -> call<detail::call_value_t<F, Args...>> {
  return run_in_executor(default_executor, std::forward<F>(f), std::forward<Args>(args)...);
}

/// to_thread with per-call options: `to_thread({.limiter = &lim}, f, args...)`.
template <typename F, typename... Args>
auto to_thread(call_options options, F&& f, Args&&... args)
    -> call<detail::call_value_t<F, Args...>> {
  return run_in_executor(default_executor, std::move(options), std::forward<F>(f),
                         std::forward<Args>(args)...);
}

}  // namespace offload
