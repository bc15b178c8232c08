// offload: deadlines on the steady clock, counted from now without overflowing, and the
// executor that carries a deadline to the calls made under wait_for / wait_until.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/config.hpp>

#include <algorithm>
#include <chrono>
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

/// An executor with a deadline attached: wait_for / wait_until run their operation on it, so
/// each call that operation makes (and each coroutine it starts on its executor) can learn the
/// deadline it is under, the one place an Asio coroutine keeps something of its own. Everything
/// an executor does is the wrapped executor's; the wrapped one never carries a deadline itself
/// (nested scopes keep the earliest deadline on the outermost executor).
class deadline_carrier {
 public:
  deadline_carrier(net::any_io_executor inner, steady_time deadline) noexcept
      : inner_(std::move(inner)), deadline_(deadline) {}

  const net::any_io_executor& inner() const noexcept { return inner_; }
  steady_time deadline() const noexcept { return deadline_; }

  template <typename Property>
  requires net::can_query<const net::any_io_executor&, const Property&>::value
  decltype(auto) query(const Property& property) const {
    return net::query(inner_, property);
  }
  template <typename Property>
  requires net::can_require<const net::any_io_executor&, const Property&>::value
  deadline_carrier require(const Property& property) const {
    return deadline_carrier(net::require(inner_, property), deadline_);
  }
  template <typename Property>
  requires net::can_prefer<const net::any_io_executor&, const Property&>::value
  deadline_carrier prefer(const Property& property) const {
    return deadline_carrier(net::prefer(inner_, property), deadline_);
  }
  template <typename F>
  void execute(F&& f) const {
    inner_.execute(std::forward<F>(f));
  }

  friend bool operator==(const deadline_carrier& a, const deadline_carrier& b) noexcept {
    return a.inner_ == b.inner_ && a.deadline_ == b.deadline_;
  }
  friend bool operator!=(const deadline_carrier& a, const deadline_carrier& b) noexcept {
    return !(a == b);
  }

 private:
  net::any_io_executor inner_;
  steady_time deadline_;
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

/// The deadline a completion handler's executor carries (no_deadline if none).
template <typename Executor>
steady_time deadline_carried_by(const Executor& ex) noexcept {
  if constexpr (std::is_same_v<Executor, net::any_io_executor>) {
    const deadline_carrier* carrier = carrier_of(ex);
    return carrier != nullptr ? carrier->deadline() : no_deadline;
  } else {
    (void)ex;
    return no_deadline;
  }
}

/// `ex` carrying `deadline`, or the deadline it already carries when that is earlier.
inline net::any_io_executor carrying_deadline(const net::any_io_executor& ex,
                                              steady_time deadline) {
  if (const deadline_carrier* carrier = carrier_of(ex)) {
    return deadline_carrier(carrier->inner(), std::min(deadline, carrier->deadline()));
  }
  return deadline_carrier(ex, deadline);
}

}  // namespace offload::detail
