// offload: children of one aggregate (gather, as_completed, wait_for), run as coroutines on
// the awaiting coroutine's executor, and the parent parked until one of them finishes.
//
// Ownership: the children own the group; a parked parent does not (its handler is kept by
// the group and gets the group back when it completes), so a context destroyed mid-flight
// frees everything without a reference cycle.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/config.hpp>
#include <offload/errors.hpp>
#include <offload/outcome.hpp>

#include <cstddef>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace offload::detail {

class child_group : public std::enable_shared_from_this<child_group> {
 public:
  static constexpr std::size_t none = static_cast<std::size_t>(-1);

  explicit child_group(std::size_t size)
      : size_(size), signals_(std::make_unique<net::cancellation_signal[]>(size)), done_(size) {}
  child_group(const child_group&) = delete;
  child_group& operator=(const child_group&) = delete;
  virtual ~child_group() = default;

  std::size_t size() const noexcept { return size_; }

  /// Runs `child` (which calls child_finished at its end) with cancellation slot `index`.
  template <typename Executor>
  void spawn(const Executor& ex, std::size_t index, awaitable<void> child) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++running_;
    }
    net::co_spawn(ex, std::move(child),
                  net::bind_cancellation_slot(signals_[index].slot(), net::detached));
  }

  void child_finished(std::size_t index, bool failed) {
    std::unique_ptr<waiter_base> waiter;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_[index] = true;
      --running_;
      finished_.push_back(index);
      if (failed && first_failure_ == none) first_failure_ = index;
      waiter = std::move(waiter_);
    }
    if (waiter) waiter->complete(shared_from_this());
  }

  /// Asks every child still running to stop (they still finish, with whatever they report).
  void cancel_children(net::cancellation_type type = net::cancellation_type::terminal) {
    std::vector<std::size_t> targets;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (std::size_t i = 0; i < size_; ++i)
        if (!done_[i]) targets.push_back(i);
    }
    for (std::size_t i : targets) signals_[i].emit(type);
  }

  // -- the parent's view (read after a wake-up) ----------------------------------------------
  bool all_finished() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return running_ == 0;
  }
  bool has_finished() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return !finished_.empty();
  }
  /// The next child in completion order not yet taken, or `none`.
  std::size_t take_finished() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (finished_.empty()) return none;
    const std::size_t index = finished_.front();
    finished_.pop_front();
    return index;
  }
  std::size_t first_failure() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return first_failure_;
  }
  bool parent_cancelled() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return parent_cancelled_;
  }

  /// The parent resumes (with the group back) once a child has finished that it has not taken
  /// yet, or when none is running. Cancelling the parent meanwhile cancels the children.
  template <typename Handler>
  void park(Handler&& handler, std::shared_ptr<child_group> self) {
    auto slot = net::get_associated_cancellation_slot(handler);
    std::unique_lock<std::mutex> lock(mutex_);
    if (!finished_.empty() || running_ == 0) {
      lock.unlock();
      waiter<std::decay_t<Handler>>(std::forward<Handler>(handler)).complete(std::move(self));
      return;
    }
    if (slot.is_connected()) slot.template emplace<parent_canceller>(weak_from_this());
    waiter_ = std::make_unique<waiter<std::decay_t<Handler>>>(std::forward<Handler>(handler));
  }

 private:
  struct waiter_base {
    virtual ~waiter_base() = default;
    virtual void complete(std::shared_ptr<child_group> group) = 0;
  };

  template <typename Handler>
  struct waiter final : waiter_base {
    explicit waiter(Handler&& h) : handler(std::move(h)) {}
    void complete(std::shared_ptr<child_group> group) override {
      auto ex = net::get_associated_executor(handler);
      auto slot = net::get_associated_cancellation_slot(handler);
      net::post(ex, [h = std::move(handler), slot, group = std::move(group)]() mutable {
        slot.clear();
        std::move(h)(std::move(group));
      });
    }
    Handler handler;
  };

  struct parent_canceller {
    std::weak_ptr<child_group> group;
    explicit parent_canceller(std::weak_ptr<child_group> g) noexcept : group(std::move(g)) {}
    void operator()(net::cancellation_type type) {
      if (type == net::cancellation_type::none) return;
      if (auto g = group.lock()) {
        {
          std::lock_guard<std::mutex> lock(g->mutex_);
          g->parent_cancelled_ = true;
        }
        g->cancel_children(type);
      }
    }
  };

  const std::size_t size_;
  std::unique_ptr<net::cancellation_signal[]> signals_;
  mutable std::mutex mutex_;
  std::vector<bool> done_;
  std::size_t running_ = 0;
  std::deque<std::size_t> finished_;
  std::size_t first_failure_ = none;
  bool parent_cancelled_ = false;
  std::unique_ptr<waiter_base> waiter_;
};

struct park_initiation {
  template <typename Handler>
  void operator()(Handler&& handler, std::shared_ptr<child_group> group) const {
    child_group* g = group.get();
    g->park(std::forward<Handler>(handler), std::move(group));
  }
};

/// `group = co_await park(std::move(group))`: the caller gives up its reference while parked.
template <typename Group>
awaitable<std::shared_ptr<Group>> park(std::shared_ptr<Group> group) {
  std::shared_ptr<child_group> base = std::move(group);
  auto parked =
      net::async_initiate<const net::use_awaitable_t<>&, void(std::shared_ptr<child_group>)>(
          park_initiation{}, net::use_awaitable, std::move(base));
  std::shared_ptr<child_group> back = co_await std::move(parked);
  co_return std::static_pointer_cast<Group>(std::move(back));
}

/// Parks until `keep_waiting(group)` is false. The parent's own cancellation must not cut the
/// wait short (the children are still running, and will finish cancelled), so Asio's
/// throw_if_cancelled is off while it parks, and restored after.
template <typename Group, typename Predicate>
awaitable<std::shared_ptr<Group>> park_while(std::shared_ptr<Group> group,
                                             Predicate keep_waiting) {
  const bool throw_if_cancelled = co_await net::this_coro::throw_if_cancelled();
  co_await net::this_coro::throw_if_cancelled(false);
  while (keep_waiting(*group)) group = co_await park(std::move(group));
  co_await net::this_coro::throw_if_cancelled(throw_if_cancelled);
  co_return group;
}

/// One child: awaits `aw`, stores its outcome in `*out`, tells the group.
template <typename T>
awaitable<void> run_child(std::shared_ptr<child_group> group, outcome<T>* out, std::size_t index,
                          awaitable<T> aw) {
  bool failed = false;
  try {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(aw);
      out->set_value();
    } else {
      T value = co_await std::move(aw);
      out->set_value(std::move(value));
    }
  } catch (...) {
    out->set_error(std::current_exception());
    failed = true;
  }
  group->child_finished(index, failed);
}

}  // namespace offload::detail
