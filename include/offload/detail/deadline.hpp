// offload: deadlines on the steady clock, counted from now without overflowing, and the
// executor that carries a deadline to the calls made under wait_for / wait_until.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/config.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <type_traits>
#include <typeinfo>
#include <utility>

namespace offload::detail {

using steady_time = std::chrono::steady_clock::time_point;
/// "No deadline": every comparison with a real deadline keeps the real one.
inline constexpr steady_time no_deadline = steady_time::max();

/// now + after, or the clock's last time point when that would overflow: duration::max() is
/// the usual way to say "no limit".
inline steady_time deadline_after(std::chrono::steady_clock::duration after) noexcept {
  using clock = std::chrono::steady_clock;
  const steady_time now = clock::now();
  return after >= steady_time::max() - now ? steady_time::max() : now + after;
}

/// A wait_for / wait_until in progress: its deadline, whether it is still waiting, and the
/// scope it runs inside, if any. Shared by the executors that carry it: a coroutine its
/// operation started and left running still holds one once the wait is over.
struct deadline_scope {
  deadline_scope(steady_time d, std::shared_ptr<const deadline_scope> o) noexcept
      : deadline(d), outer(std::move(o)) {}

  /// The earliest deadline among this scope and those around it that are still waiting.
  steady_time earliest_open() const noexcept {
    steady_time earliest = no_deadline;
    for (const deadline_scope* s = this; s != nullptr; s = s->outer.get()) {
      if (s->open.load(std::memory_order_acquire)) earliest = std::min(earliest, s->deadline);
    }
    return earliest;
  }

  const steady_time deadline;
  const std::shared_ptr<const deadline_scope> outer;
  std::atomic<bool> open{true};  // cleared on the scope's executor, read where calls start
};

/// An executor with a deadline scope attached: wait_for / wait_until run their operation on
/// it, so each call that operation makes (and each coroutine it starts on its executor) can
/// learn the deadline it is under, the one place an Asio coroutine keeps something of its own.
/// Everything an executor does is the wrapped executor's; the wrapped one never carries a
/// scope itself (a nested scope links to the one around it instead).
class deadline_carrier {
 public:
  deadline_carrier(net::any_io_executor inner, std::shared_ptr<const deadline_scope> scope) noexcept
      : inner_(std::move(inner)), scope_(std::move(scope)) {}

  const net::any_io_executor& inner() const noexcept { return inner_; }
  const std::shared_ptr<const deadline_scope>& scope() const noexcept { return scope_; }

  // clang-format 14 runs a requires-clause into the declaration after it.
  // clang-format off
  template <typename Property>
  requires net::can_query<const net::any_io_executor&, const Property&>::value
  decltype(auto) query(const Property& property) const {
    return net::query(inner_, property);
  }
  template <typename Property>
  requires net::can_require<const net::any_io_executor&, const Property&>::value
  deadline_carrier require(const Property& property) const {
    return deadline_carrier(net::require(inner_, property), scope_);
  }
  template <typename Property>
  requires net::can_prefer<const net::any_io_executor&, const Property&>::value
  deadline_carrier prefer(const Property& property) const {
    return deadline_carrier(net::prefer(inner_, property), scope_);
  }
  // clang-format on
  template <typename F>
  void execute(F&& f) const {
    inner_.execute(std::forward<F>(f));
  }

  friend bool operator==(const deadline_carrier& a, const deadline_carrier& b) noexcept {
    return a.inner_ == b.inner_ && a.scope_ == b.scope_;
  }
  friend bool operator!=(const deadline_carrier& a, const deadline_carrier& b) noexcept {
    return !(a == b);
  }

 private:
  net::any_io_executor inner_;
  std::shared_ptr<const deadline_scope> scope_;
};

/// The carrier inside `ex`, or null. Without RTTI nothing is recognised: deadlines then do not
/// travel into wait_for's operation (each call's own still holds).
inline const deadline_carrier* carrier_of(const net::any_io_executor& ex) noexcept {
#if defined(ASIO_NO_TYPEID) || defined(BOOST_ASIO_NO_TYPEID)
  (void)ex;
  return nullptr;
#else
  return ex.target_type() == typeid(deadline_carrier) ? ex.template target<deadline_carrier>()
                                                      : nullptr;
#endif
}

/// The deadline a completion handler's executor carries: the earliest of the scopes it is
/// under that are still waiting (no_deadline if none).
template <typename Executor>
steady_time deadline_carried_by(const Executor& ex) noexcept {
  if constexpr (std::is_same_v<Executor, net::any_io_executor>) {
    const deadline_carrier* carrier = carrier_of(ex);
    return carrier != nullptr ? carrier->scope()->earliest_open() : no_deadline;
  } else {
    (void)ex;
    return no_deadline;
  }
}

/// While a wait_for / wait_until waits: the executor its operation runs on, carrying its
/// scope. Closed when the wait is over, however it ends.
class open_deadline_scope {
 public:
  open_deadline_scope(const net::any_io_executor& ex, steady_time deadline) {
#if defined(ASIO_NO_TYPEID) || defined(BOOST_ASIO_NO_TYPEID)
    executor_ = ex;  // nothing could read a carrier: the executor stays as it is
    (void)deadline;
#else
    const deadline_carrier* around = carrier_of(ex);
    scope_ =
        std::make_shared<deadline_scope>(deadline, around != nullptr ? around->scope() : nullptr);
    executor_ = deadline_carrier(around != nullptr ? around->inner() : ex, scope_);
#endif
  }
  ~open_deadline_scope() {
    if (scope_) scope_->open.store(false, std::memory_order_release);
  }
  open_deadline_scope(const open_deadline_scope&) = delete;
  open_deadline_scope& operator=(const open_deadline_scope&) = delete;

  const net::any_io_executor& executor() const noexcept { return executor_; }

 private:
  std::shared_ptr<deadline_scope> scope_;
  net::any_io_executor executor_;
};

}  // namespace offload::detail
