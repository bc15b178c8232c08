// offload: map — one offloaded call per element of a range, results in input order
// (concurrent.futures' Executor.map), each call started directly, with no coroutine and no
// callback to bind by hand.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/config.hpp>
#include <offload/detail/child_group.hpp>
#include <offload/detail/deadline.hpp>
#include <offload/errors.hpp>
#include <offload/gather.hpp>
#include <offload/outcome.hpp>
#include <offload/to_thread.hpp>

#include <concepts>
#include <cstddef>
#include <functional>
#include <iterator>
#include <memory>
#include <ranges>
#include <type_traits>
#include <utility>
#include <vector>

namespace offload {

namespace detail {

/// What f returns for an element of Range (void, or the value).
template <typename F, typename Range>
using mapped_value_t =
    call_value_t<std::reference_wrapper<const F>, std::ranges::range_value_t<Range>>;

/// The children of one map: f lives here, shared by its calls, and the group lives until the
/// last of them has finished (the children own it), so a call never outlives the f it runs.
template <typename T, typename Target, typename F>
class map_group final : public child_group {
 public:
  map_group(std::size_t size, on_failure failure, target_holder<Target> target, F f)
      : child_group(size, wake_on::all_finished, failure),
        results(size),
        initiation_{std::move(target), no_extras{}},
        f_(std::move(f)) {}

  /// Starts a call per element. If walking the range throws (a view's iterator), the elements
  /// not reached fail with that exception, which then cancels the calls already started.
  template <typename Range>
  void start_all(const net::any_io_executor& ex, Range& items) {
    const std::shared_ptr<child_group> self = shared_from_this();
    const child_executor where = child_executor::of(ex);
    std::size_t i = 0;
    try {
      for (auto&& item : items) {
        if constexpr (std::ranges::view<Range>) {  // the elements are someone else's
          start_one(self, where, i, std::forward<decltype(item)>(item));
        } else {  // map owns the container: its elements move into their calls
          start_one(self, where, i, std::move(item));
        }
        ++i;
      }
    } catch (...) {
      for (; i < results.size(); ++i) {
        results[i].set_error(std::current_exception());
        child_finished(i, true);
      }
    }
    all_started();
  }

  std::vector<outcome<T>> results;

 private:
  template <typename Item>
  void start_one(const std::shared_ptr<child_group>& self, const child_executor& where,
                 std::size_t i, Item&& item) noexcept {
    try {
      using call_type = call_for<std::reference_wrapper<const F>, Item>;
      launch_child(initiation_, where, child_completion<T>(self, &results[i], i),
                   call_type(std::cref(f_), std::forward<Item>(item)));
    } catch (...) {  // the element could not be copied into its call
      results[i].set_error(std::current_exception());
      child_finished(i, true);
    }
  }

  initiate_run<Target, no_extras> initiation_;
  const F f_;
};

template <typename T, typename Target, typename F, typename Range>
awaitable<std::shared_ptr<map_group<T, Target, F>>> map_all(target_holder<Target> target, F f,
                                                            Range items, on_failure failure) {
  auto ex = co_await net::this_coro::executor;
  const auto size = static_cast<std::size_t>(std::ranges::distance(items));
  auto group =
      std::make_shared<map_group<T, Target, F>>(size, failure, std::move(target), std::move(f));
  group->start_all(ex, items);
  group = co_await await_all(std::move(group));
  rethrow_if_parent_cancelled(*group, "offload::map: the awaiter was cancelled");
  co_return group;
}

template <typename T>
using mapped_results_t = std::conditional_t<std::is_void_v<T>, void, std::vector<T>>;

template <typename T, typename Target, typename F, typename Range>
awaitable<mapped_results_t<T>> map_values(target_holder<Target> target, F f, Range items) {
  auto group = co_await map_all<T>(std::move(target), std::move(f), std::move(items),
                                   on_failure::cancel_siblings);
  if constexpr (std::is_void_v<T>) {
    values_or_first_error(*group, group->results);
  } else {
    co_return values_or_first_error(*group, group->results);
  }
}

template <typename T, typename Target, typename F, typename Range>
awaitable<std::vector<outcome<T>>> map_outcomes(target_holder<Target> target, F f, Range items) {
  auto group =
      co_await map_all<T>(std::move(target), std::move(f), std::move(items), on_failure::let_run);
  co_return std::move(group->results);
}

template <typename F, typename Range>
concept mappable = std::ranges::forward_range<Range> && std::copy_constructible<Range> &&
    callable_with<std::reference_wrapper<const F>, std::ranges::range_value_t<Range>>;

}  // namespace detail

/// `std::vector<R> r = co_await offload::map(target, f, items)`: f(item) for every element, on
/// `target` (anything run_in_executor takes), all at once, each call started directly (as
/// gather starts a call<T>); the results in the order of `items`. f is shared by the calls,
/// which invoke it concurrently as a const object: make it safe for that. map keeps `items`
/// (a container is moved or copied in; a view, such as a std::span or std::views::iota, is
/// kept as the view; a range that is not sized is walked twice, once to count it) and each
/// element is copied into its call (moved, from a container map owns). The first exception cancels
/// the calls not yet finished (queued ones never run, running ones are asked to stop and awaited),
/// then is rethrown; cancelling the awaiter cancels them all. No elements: an empty vector
/// (awaitable<void> when f returns void).
template <typename Target, typename F, typename Range>
requires detail::runs_calls<std::remove_cvref_t<Target>> &&
    detail::mappable<F, std::remove_cvref_t<Range>>
auto map(Target&& target, F f, Range&& items)
    -> awaitable<detail::mapped_results_t<detail::mapped_value_t<F, std::remove_cvref_t<Range>>>> {
  using T = detail::mapped_value_t<F, std::remove_cvref_t<Range>>;
  return detail::map_values<T, Target>(
      detail::target_holder<Target>::make(std::forward<Target>(target)), std::move(f),
      std::remove_cvref_t<Range>(std::forward<Range>(items)));
}

/// map(return_exceptions, target, f, items): every call runs to its end; one outcome (value or
/// exception) per element, in order.
template <typename Target, typename F, typename Range>
requires detail::runs_calls<std::remove_cvref_t<Target>> &&
    detail::mappable<F, std::remove_cvref_t<Range>>
auto map(return_exceptions_t, Target&& target, F f, Range&& items)
    -> awaitable<std::vector<outcome<detail::mapped_value_t<F, std::remove_cvref_t<Range>>>>> {
  using T = detail::mapped_value_t<F, std::remove_cvref_t<Range>>;
  return detail::map_outcomes<T, Target>(
      detail::target_holder<Target>::make(std::forward<Target>(target)), std::move(f),
      std::remove_cvref_t<Range>(std::forward<Range>(items)));
}

}  // namespace offload
