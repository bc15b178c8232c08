// offload: gather and as_completed — run awaitables concurrently on the awaiting coroutine's
// executor and collect their results, all at once or as each finishes.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/call.hpp>
#include <offload/config.hpp>
#include <offload/detail/child_group.hpp>
#include <offload/errors.hpp>
#include <offload/outcome.hpp>

#include <cstddef>
#include <exception>
#include <iterator>
#include <memory>
#include <ranges>
#include <stdexcept>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace offload {

/// Selects the gather form that yields an outcome per awaitable instead of throwing.
struct return_exceptions_t {
  explicit constexpr return_exceptions_t() = default;
};
inline constexpr return_exceptions_t return_exceptions{};

namespace detail {

template <typename T>
struct awaitable_traits {
  static constexpr bool is_awaitable = false;
};
template <typename T>
struct awaitable_traits<net::awaitable<T, net::any_io_executor>> {
  static constexpr bool is_awaitable = true;
  using value_type = T;
};
template <typename T>
struct awaitable_traits<call<T>> {
  static constexpr bool is_awaitable = true;
  using value_type = T;
};

/// What gather and as_completed take: an awaitable<T>, or a call<T>, which they start directly.
template <typename A>
concept gatherable = awaitable_traits<A>::is_awaitable;

template <typename A>
using gatherable_value_t = typename awaitable_traits<A>::value_type;

template <typename Range>
concept awaitable_range = std::ranges::input_range<Range> &&
    awaitable_traits<std::remove_cvref_t<std::ranges::range_value_t<Range>>>::is_awaitable;

template <typename Range>
using range_awaitable_value_t =
    typename awaitable_traits<std::remove_cvref_t<std::ranges::range_value_t<Range>>>::value_type;

/// What gather yields for an awaitable<T>: T, or std::monostate for void.
template <typename T>
using gathered_t = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

template <typename T>
gathered_t<T> take_value(outcome<T>& o) {
  if constexpr (std::is_void_v<T>) {
    o.value();
    return {};
  } else {
    return std::move(o).value();
  }
}

template <typename... T>
class tuple_group final : public child_group {
 public:
  explicit tuple_group(on_failure failure)
      : child_group(sizeof...(T), wake_on::all_finished, failure) {}

  template <std::size_t... I, typename... A>
  void start_all(const net::any_io_executor& ex, std::index_sequence<I...>, A&&... aws) {
    const std::shared_ptr<child_group> self = shared_from_this();
    (start_child<T>(self, ex, I, &std::get<I>(results), std::forward<A>(aws)), ...);
    all_started();
  }

  std::exception_ptr error_at(std::size_t index) const {
    std::exception_ptr error;
    std::size_t i = 0;
    std::apply(
        [&](const auto&... o) { ((i++ == index ? (void)(error = o.error()) : void()), ...); },
        results);
    return error;
  }

  std::tuple<outcome<T>...> results;
};

template <typename T>
class range_group final : public child_group {
 public:
  range_group(std::size_t size, wake_on wake, on_failure failure)
      : child_group(size, wake, failure), results(size) {}

  void start_all(const net::any_io_executor& ex, std::vector<call<T>>& calls) {
    const std::shared_ptr<child_group> self = shared_from_this();
    for (std::size_t i = 0; i < calls.size(); ++i)
      start_child<T>(self, ex, i, &results[i], std::move(calls[i]));
    all_started();
  }

  std::vector<outcome<T>> results;
};

/// Waits until every child has finished.
template <typename Group>
awaitable<std::shared_ptr<Group>> await_all(std::shared_ptr<Group> group) {
  return park_while(std::move(group), [](Group& g) { return !g.all_finished(); });
}

/// The range's elements as calls (an awaitable becomes a call that is not started directly);
/// a vector of calls is taken as it is.
template <typename Range>
std::vector<call<range_awaitable_value_t<Range>>> collect(Range& range) {
  using T = range_awaitable_value_t<Range>;
  if constexpr (std::is_same_v<Range, std::vector<call<T>>>) {
    return std::move(range);
  } else {
    std::vector<call<T>> out;
    if constexpr (std::ranges::sized_range<Range>) out.reserve(std::ranges::size(range));
    for (auto&& aw : range) {
      if constexpr (is_call<std::remove_cvref_t<decltype(aw)>>::value) {
        out.push_back(std::move(aw));
      } else {
        out.push_back(call_access::make<T>(std::move(aw), nullptr));
      }
    }
    return out;
  }
}

/// A range of children's results: the first failure's exception rethrown, or the values in
/// order (nothing for void).
template <typename T>
auto values_or_first_error(const child_group& group, std::vector<outcome<T>>& results) {
  if (const std::size_t failed = group.first_failure(); failed != child_group::none) {
    std::rethrow_exception(results[failed].error());
  }
  if constexpr (!std::is_void_v<T>) {
    std::vector<T> values;
    values.reserve(results.size());
    for (auto& o : results) values.push_back(std::move(o).value());
    return values;
  }
}

inline void rethrow_if_parent_cancelled(const child_group& group, const char* where) {
  if (group.parent_cancelled()) std::rethrow_exception(make_cancelled(where));
}

/// Starts the group's children (`start(group, executor)`) on the awaiting coroutine's executor
/// and waits until every one has finished; rethrows the awaiter's own cancellation.
template <typename Group, typename Start>
awaitable<std::shared_ptr<Group>> run_all(std::shared_ptr<Group> group, Start start) {
  const net::any_io_executor ex = co_await net::this_coro::executor;
  start(*group, ex);
  group = co_await await_all(std::move(group));
  rethrow_if_parent_cancelled(*group, "offload::gather: the awaiter was cancelled");
  co_return group;
}

}  // namespace detail

/// `auto [a, b] = co_await gather(f(), g())`: runs the awaitables concurrently on the
/// awaiting coroutine's executor and yields their results in argument order (std::monostate
/// for void). The first exception cancels the others; once they have finished it is rethrown
/// (asyncio's gather leaves them running). Cancelling the awaiter cancels them all.
template <detail::gatherable... A>
awaitable<std::tuple<detail::gathered_t<detail::gatherable_value_t<A>>...>> gather(A... aws) {
  auto group = std::make_shared<detail::tuple_group<detail::gatherable_value_t<A>...>>(
      detail::on_failure::cancel_siblings);
  auto start = [&aws...](auto& g, const net::any_io_executor& ex) {
    g.start_all(ex, std::index_sequence_for<A...>{}, std::move(aws)...);
  };
  group = co_await detail::run_all(std::move(group), start);
  if (const std::size_t failed = group->first_failure(); failed != detail::child_group::none) {
    std::rethrow_exception(group->error_at(failed));
  }
  co_return std::apply(
      [](auto&... o) {
        return std::tuple<detail::gathered_t<detail::gatherable_value_t<A>>...>(
            detail::take_value(o)...);
      },
      group->results);
}

/// `gather(return_exceptions, f(), g())`: every awaitable runs to the end; yields one
/// outcome (value or exception) per argument.
template <detail::gatherable... A>
awaitable<std::tuple<outcome<detail::gatherable_value_t<A>>...>> gather(return_exceptions_t,
                                                                        A... aws) {
  auto group = std::make_shared<detail::tuple_group<detail::gatherable_value_t<A>...>>(
      detail::on_failure::let_run);
  auto start = [&aws...](auto& g, const net::any_io_executor& ex) {
    g.start_all(ex, std::index_sequence_for<A...>{}, std::move(aws)...);
  };
  group = co_await detail::run_all(std::move(group), start);
  co_return std::move(group->results);
}

/// `std::vector<T> all = co_await gather(std::move(calls))`: the range form, any size, results
/// in range order (awaitable<void> for a range of awaitable<void>); same cancellation rules.
template <detail::awaitable_range Range>
auto gather(Range aws)
    -> awaitable<std::conditional_t<std::is_void_v<detail::range_awaitable_value_t<Range>>, void,
                                    std::vector<detail::range_awaitable_value_t<Range>>>> {
  using T = detail::range_awaitable_value_t<Range>;
  auto children = detail::collect(aws);
  auto group = std::make_shared<detail::range_group<T>>(
      children.size(), detail::wake_on::all_finished, detail::on_failure::cancel_siblings);
  auto start = [&children](auto& g, const net::any_io_executor& ex) { g.start_all(ex, children); };
  group = co_await detail::run_all(std::move(group), start);
  if constexpr (std::is_void_v<T>) {
    detail::values_or_first_error(*group, group->results);
  } else {
    co_return detail::values_or_first_error(*group, group->results);
  }
}

/// The range form of gather(return_exceptions, ...): one outcome per element, in order.
template <detail::awaitable_range Range>
auto gather(return_exceptions_t, Range aws)
    -> awaitable<std::vector<outcome<detail::range_awaitable_value_t<Range>>>> {
  using T = detail::range_awaitable_value_t<Range>;
  auto children = detail::collect(aws);
  auto group = std::make_shared<detail::range_group<T>>(
      children.size(), detail::wake_on::all_finished, detail::on_failure::let_run);
  auto start = [&children](auto& g, const net::any_io_executor& ex) { g.start_all(ex, children); };
  group = co_await detail::run_all(std::move(group), start);
  co_return std::move(group->results);
}

/// Results in completion order, each as soon as it is ready (see as_completed()).
template <typename T>
class as_completed_stream {
 public:
  explicit as_completed_stream(std::vector<call<T>> aws)
      : pending_(std::move(aws)), size_(pending_.size()), remaining_(size_) {}
  as_completed_stream(as_completed_stream&&) noexcept = default;
  as_completed_stream& operator=(as_completed_stream&&) = delete;
  /// The awaitables still running are cancelled (and finish on their own).
  ~as_completed_stream() {
    if (group_) group_->cancel_children();
  }

  std::size_t size() const noexcept { return size_; }
  /// Results not yet taken with next().
  std::size_t remaining() const noexcept { return remaining_; }
  bool done() const noexcept { return remaining_ == 0; }
  /// The position (in the original range) of the result the last next() returned.
  std::size_t last_index() const noexcept { return last_index_; }

  /// The next result to finish (or rethrows its exception). The first call starts them all on
  /// the awaiting coroutine's executor. Cancelling the awaiter cancels every one still running
  /// and this next() reports the cancellation.
  awaitable<T> next() {
    if (remaining_ == 0) throw std::out_of_range("offload::as_completed: no results remain");
    if (!group_) {
      auto ex = co_await net::this_coro::executor;
      group_ = std::make_shared<detail::range_group<T>>(size_, detail::wake_on::each_finish,
                                                        detail::on_failure::let_run);
      group_->start_all(ex, pending_);
      pending_.clear();
    }
    auto nothing_finished = [](detail::range_group<T>& g) { return !g.has_finished(); };
    group_ = co_await detail::park_while(std::move(group_), nothing_finished);
    const std::size_t index = group_->take_finished();
    --remaining_;
    last_index_ = index;
    detail::rethrow_if_parent_cancelled(*group_,
                                        "offload::as_completed: the awaiter was cancelled");
    if constexpr (std::is_void_v<T>) {
      group_->results[index].value();
    } else {
      co_return std::move(group_->results[index]).value();
    }
  }

 private:
  std::vector<call<T>> pending_;
  std::shared_ptr<detail::range_group<T>> group_;
  std::size_t size_;
  std::size_t remaining_;
  std::size_t last_index_ = 0;
};

/// `for (auto s = as_completed(std::move(calls)); !s.done();) use(co_await s.next());`
/// Any number of awaitables; all run concurrently on the awaiting coroutine's executor.
template <detail::awaitable_range Range>
auto as_completed(Range aws) -> as_completed_stream<detail::range_awaitable_value_t<Range>> {
  return as_completed_stream<detail::range_awaitable_value_t<Range>>(detail::collect(aws));
}

}  // namespace offload
