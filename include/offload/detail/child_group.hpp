// offload: children of one aggregate (gather, as_completed, wait_for), and the parent parked
// until the group has something for it. A child is an offloaded call started with a
// child_completion as its handler (no coroutine: the outcome is written in place), or any
// other awaitable, run as a coroutine on the awaiting coroutine's executor.
//
// Ownership: the children own the group; a parked parent does not (its handler is kept by
// the group and gets the group back when it completes), so a context destroyed mid-flight
// frees everything without a reference cycle.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/config.hpp>
#include <offload/detail/awaitable_initiation.hpp>
#include <offload/errors.hpp>
#include <offload/outcome.hpp>

#include <cstddef>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

namespace offload::detail {

/// Where the cancellation handler of a child started directly lives: in place, in the group's
/// array (Asio's cancellation_signal allocates each handler it is given). Used, like Asio's
/// slots, only on the awaiting coroutine's executor, which must run one handler at a time (a
/// strand, or an io_context run by one thread: see gather's documentation).
struct child_cancel_cell {
  void (*invoke)(child_cancel_cell&, net::cancellation_type) = nullptr;
  alignas(void*) unsigned char storage[2 * sizeof(void*)];  // an op's canceller: one pointer
};

/// The cancellation slot of a child started directly (Asio's slot concept: is_connected,
/// emplace, clear).
class child_slot {
 public:
  explicit child_slot(child_cancel_cell* cell = nullptr) noexcept : cell_(cell) {}

  bool is_connected() const noexcept { return cell_ != nullptr; }

  template <typename Handler, typename... Args>
  Handler& emplace(Args&&... args) {
    static_assert(sizeof(Handler) <= sizeof(child_cancel_cell::storage) &&
                      alignof(Handler) <= alignof(void*) &&
                      std::is_trivially_destructible_v<Handler>,
                  "offload: a child's cancellation handler must be small and trivial to destroy");
    auto* handler = ::new (static_cast<void*>(cell_->storage)) Handler(std::forward<Args>(args)...);
    cell_->invoke = [](child_cancel_cell& cell, net::cancellation_type type) {
      (*std::launder(reinterpret_cast<Handler*>(cell.storage)))(type);
    };
    return *handler;
  }

  void clear() noexcept {
    if (cell_ != nullptr) cell_->invoke = nullptr;
  }

 private:
  child_cancel_cell* cell_;
};

/// When a parked parent is resumed.
enum class wake_on {
  each_finish,  // as soon as a child has finished that it has not taken (as_completed)
  all_finished  // once no child is running (gather, wait_for)
};

/// Whether the first failure cancels the children still running.
enum class on_failure { let_run, cancel_siblings };

class child_group : public std::enable_shared_from_this<child_group> {
 public:
  static constexpr std::size_t none = static_cast<std::size_t>(-1);

  /// Every one of the `size` children counts as running from the start: each must be started
  /// (or failed with fail_child) exactly once.
  child_group(std::size_t size, wake_on wake, on_failure failure)
      : size_(size),
        signals_(std::make_unique<net::cancellation_signal[]>(size)),
        cells_(std::make_unique<child_cancel_cell[]>(size)),
        done_(size),
        running_(size),
        wake_(wake),
        failure_(failure) {}
  child_group(const child_group&) = delete;
  child_group& operator=(const child_group&) = delete;
  virtual ~child_group() = default;

  std::size_t size() const noexcept { return size_; }

  /// The cancellation slot of child `index` when it is started directly.
  child_slot direct_slot(std::size_t index) const noexcept {
    return child_slot(&cells_[index]);
  }

  /// Runs `child` (which calls child_finished at its end) with cancellation slot `index`.
  template <typename Executor>
  void spawn(const Executor& ex, std::size_t index, awaitable<void> child) {
    net::co_spawn(ex, std::move(child),
                  net::bind_cancellation_slot(signals_[index].slot(), net::detached));
  }

  void child_finished(std::size_t index, bool failed) {
    std::unique_ptr<waiter_base> waiter;
    bool cancel_siblings = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_[index] = true;
      --running_;
      if (wake_ == wake_on::each_finish) finished_.push_back(index);
      if (failed && first_failure_ == none) {
        first_failure_ = index;
        // While children are still being started, all_started() cancels the others: those
        // not started yet would miss it now.
        cancel_siblings = failure_ == on_failure::cancel_siblings && running_ != 0 && !starting_;
      }
      if (ready_locked()) waiter = std::move(waiter_);
    }
    if (cancel_siblings) cancel_children();
    if (waiter) waiter->complete(shared_from_this());
  }

  /// Every child has been started: a failure that came meanwhile (a child that failed before its
  /// first suspension, which co_spawn runs inline) now cancels the others.
  void all_started() {
    bool cancel_siblings = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      starting_ = false;
      cancel_siblings =
          failure_ == on_failure::cancel_siblings && first_failure_ != none && running_ != 0;
    }
    if (cancel_siblings) cancel_children();
  }

  /// Asks every child still running to stop (they still finish, with whatever they report).
  void cancel_children(net::cancellation_type type = net::cancellation_type::terminal) {
    std::vector<std::size_t> targets;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (std::size_t i = 0; i < size_; ++i)
        if (!done_[i]) targets.push_back(i);
    }
    for (std::size_t i : targets) {
      signals_[i].emit(type);
      if (cells_[i].invoke != nullptr) cells_[i].invoke(cells_[i], type);
    }
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
    if (ready_locked()) {
      lock.unlock();
      waiter<std::decay_t<Handler>>(std::forward<Handler>(handler)).complete(std::move(self));
      return;
    }
    if (slot.is_connected()) slot.template emplace<parent_canceller>(weak_from_this());
    waiter_ = std::make_unique<waiter<std::decay_t<Handler>>>(std::forward<Handler>(handler));
  }

 private:
  bool ready_locked() const noexcept {
    return running_ == 0 || (wake_ == wake_on::each_finish && !finished_.empty());
  }

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
  std::unique_ptr<net::cancellation_signal[]> signals_;  // children run as coroutines
  std::unique_ptr<child_cancel_cell[]> cells_;            // children started directly
  mutable std::mutex mutex_;
  std::vector<bool> done_;
  std::size_t running_;
  const wake_on wake_;
  const on_failure failure_;
  std::deque<std::size_t> finished_;
  std::size_t first_failure_ = none;
  bool starting_ = true;
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
  auto parked = async_initiate_awaitable<void(std::shared_ptr<child_group>)>(park_initiation{},
                                                                             std::move(base));
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

/// One child that is an offloaded call: the call's handler writes its outcome to `*out`
/// and tells the group, on the awaiting coroutine's executor.
template <typename T>
class child_completion {
 public:
  using cancellation_slot_type = child_slot;

  child_completion(std::shared_ptr<child_group> group, outcome<T>* out, std::size_t index) noexcept
      : group_(std::move(group)), out_(out), index_(index) {}

  cancellation_slot_type get_cancellation_slot() const noexcept {
    return group_->direct_slot(index_);
  }

  void operator()(std::exception_ptr error) {
    static_assert(std::is_void_v<T>);
    if (error) {
      out_->set_error(std::move(error));
    } else {
      out_->set_value();
    }
    group_->child_finished(index_, out_->has_error());
  }

  /// `value` is a T, or a std::optional<T> for a T with no default constructor.
  template <typename V>
  void operator()(std::exception_ptr error, V&& value) {
    if (error) {
      out_->set_error(std::move(error));
    } else {
      try {
        if constexpr (std::is_same_v<std::remove_cvref_t<V>, std::optional<T>>) {
          out_->set_value(std::move(*value));
        } else {
          out_->set_value(std::forward<V>(value));
        }
      } catch (...) {
        out_->set_error(std::current_exception());
      }
    }
    group_->child_finished(index_, out_->has_error());
  }

 private:
  std::shared_ptr<child_group> group_;
  outcome<T>* out_;
  std::size_t index_;
};

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
