// offload: the typed node of one offloaded call, and how its result travels back.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/config.hpp>
#include <offload/detail/op.hpp>
#include <offload/detail/op_allocator.hpp>
#include <offload/detail/service.hpp>

#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>

namespace offload::detail {

/// f and its decay-copied arguments; invoked once, with everything passed as rvalues, as
/// std::thread does (std::ref passes a reference).
template <typename F, typename... Args>
class bound_call {
 public:
  using invoke_result = std::invoke_result_t<F&&, Args&&...>;
  using value_type = std::conditional_t<std::is_void_v<invoke_result>, void,
                                        std::remove_cvref_t<invoke_result>>;

  template <typename F2, typename... A2>
  explicit bound_call(F2&& f, A2&&... args)
      : f_(std::forward<F2>(f)), args_(std::forward<A2>(args)...) {}

  invoke_result operator()() {
    return std::apply(
        [this](Args&... args) -> invoke_result {
          return std::invoke(std::move(f_), std::move(args)...);
        },
        args_);
  }

  static const char* name() noexcept { return typeid(F).name(); }

 private:
  F f_;
  std::tuple<Args...> args_;
};

/// The completion signature of a call returning R: Asio's (exception_ptr, value) shape, with
/// std::optional<R> for a result that cannot be default-constructed (an error carries none).
template <typename R>
struct completion_signature {
  using type = std::conditional_t<std::is_default_constructible_v<R>,
                                  void(std::exception_ptr, R),
                                  void(std::exception_ptr, std::optional<R>)>;
};
template <>
struct completion_signature<void> {
  using type = void(std::exception_ptr);
};
template <typename R>
using completion_signature_t = typename completion_signature<R>::type;

/// Room for a result, filled straight from the call's return value (no move on the way in).
template <typename T>
class result_slot {
 public:
  result_slot() noexcept {}
  result_slot(const result_slot&) = delete;
  ~result_slot() {
    if (has_) value_.~T();
  }
  template <typename Call>
  void fill(Call& call) {
    ::new (static_cast<void*>(std::addressof(value_))) T(call());
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
  template <typename Call>
  void fill(Call& call) {
    call();
  }
};

inline void report_stray_exception(const char* where) noexcept {
  try {
    throw;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "offload: %s threw: %s\n", where, e.what());
  } catch (...) {
    std::fprintf(stderr, "offload: %s threw a non-std exception\n", where);
  }
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

template <typename Call, typename Handler>
class call_op final : public op_base {
 public:
  using value_type = typename Call::value_type;
  using handler_executor = net::associated_executor_t<Handler>;
  using work_type = std::decay_t<decltype(net::prefer(
      std::declval<const handler_executor&>(), net::execution::outstanding_work.tracked))>;
  using handler_allocator = net::associated_allocator_t<Handler>;
  using allocator_type =
      std::conditional_t<std::is_same_v<handler_allocator, std::allocator<void>>,
                         op_allocator<call_op>,
                         typename std::allocator_traits<
                             handler_allocator>::template rebind_alloc<call_op>>;

  /// Allocates the node with the handler's allocator, or offload's per-thread cache.
  static call_op* create(Call&& call, Handler&& handler, completion_queue* queue,
                         offload_service* home) {
    allocator_type alloc(net::get_associated_allocator(handler));
    call_op* p = std::allocator_traits<allocator_type>::allocate(alloc, 1);
    try {
      ::new (static_cast<void*>(p)) call_op(std::move(call), std::move(handler), queue, home);
    } catch (...) {
      std::allocator_traits<allocator_type>::deallocate(alloc, p, 1);
      throw;
    }
    return p;
  }

 private:
  call_op(Call&& call, Handler&& handler, completion_queue* q, offload_service* h)
      : call_(std::in_place, std::move(call)),
        handler_(std::move(handler)),
        work_(q != nullptr ? std::nullopt
                           : std::optional<work_type>(
                                 net::prefer(net::get_associated_executor(handler_),
                                             net::execution::outstanding_work.tracked))) {
    fn = &call_op::dispatch_action;
    queue = q;
    home = h;
    callable_name = Call::name();
    if (home != nullptr) home->op_started();
  }

  void free_self() noexcept {
    allocator_type alloc(net::get_associated_allocator(handler_));
    this->~call_op();
    std::allocator_traits<allocator_type>::deallocate(alloc, this, 1);
  }

  static void dispatch_action(op_base* base, action a, std::exception_ptr* error) {
    auto* self = static_cast<call_op*>(base);
    switch (a) {
      case action::run:
        self->run_call();
        return;
      case action::fail:
        self->error_ = std::move(*error);
        self->call_.reset();
        self->state.store(op_state::done, std::memory_order_release);
        self->hand_back();
        return;
      case action::complete:
        self->deliver();
        return;
      case action::destroy: {
        const bool counted = self->queue != nullptr;
        offload_service* h = self->home;
        self->free_self();
        if (counted) h->op_finished();
        return;
      }
    }
  }

  void run_call() noexcept {
    op_state expected = op_state::pending;
    if (!state.compare_exchange_strong(expected, op_state::running, std::memory_order_acq_rel)) {
      return;
    }
    tl_calling_loop = home != nullptr ? home->attached_loop() : nullptr;
    try {
      result_.fill(*call_);
    } catch (...) {
      error_ = std::current_exception();
    }
    tl_calling_loop = nullptr;
    try {
      call_.reset();  // f and its arguments die on the worker, not on the loop
    } catch (...) {
      report_stray_exception("the destructor of an offloaded callable");
    }
    state.store(op_state::done, std::memory_order_release);
    hand_back();
  }

  void hand_back() noexcept {
    if (queue != nullptr) {
      offload_service* h = home;
      h->hand_back_started();
      queue->push(this);
      h->hand_back_finished();
      return;
    }
    offload_service* h = home;  // `this` may be gone once dispatched
    if (h != nullptr) h->hand_back_started();
    struct finish_on_exit {
      offload_service* h;
      ~finish_on_exit() {
        if (h == nullptr) return;
        h->op_finished();
        h->hand_back_finished();
      }
    } finish{h};
    try {
      if (immediate) {
        net::post(net::get_associated_executor(handler_), completion_runner(this));
      } else {
        net::dispatch(net::get_associated_executor(handler_), completion_runner(this));
      }
    } catch (...) {
      report_stray_exception("a completion handler run on a worker thread");
    }
  }

  void deliver() {
    Handler handler(std::move(handler_));
    std::optional<work_type> work(std::move(work_));
    std::exception_ptr error = std::move(error_);
    const bool counted = queue != nullptr;
    offload_service* h = home;
    if constexpr (std::is_void_v<value_type>) {
      free_self();
      if (counted) h->op_finished();
      std::move(handler)(std::move(error));
    } else if constexpr (std::is_default_constructible_v<value_type>) {
      if (error) {
        free_self();
        if (counted) h->op_finished();
        std::move(handler)(std::move(error), value_type{});
      } else {
        value_type value(result_.get());
        free_self();
        if (counted) h->op_finished();
        std::move(handler)(std::exception_ptr(), std::move(value));
      }
    } else {
      std::optional<value_type> value;
      if (!error) value.emplace(result_.get());
      free_self();
      if (counted) h->op_finished();
      std::move(handler)(std::move(error), std::move(value));
    }
  }

  std::optional<Call> call_;
  result_slot<value_type> result_;
  std::exception_ptr error_;
  Handler handler_;
  // Calls handed back through an offload queue are counted as work by the service, in bulk.
  std::optional<work_type> work_;
};

}  // namespace offload::detail
