// offload: context propagation — thread-local context (a request id, a tracing span) captured
// where a call is made and installed in the worker for the duration of f, as asyncio's
// to_thread copies the caller's contextvars.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/detail/op.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

namespace offload {

namespace detail {

/// One captured value, installed in a worker and later restored.
struct context_value {
  virtual ~context_value() = default;
  virtual void install() = 0;
  virtual void restore() noexcept = 0;
};

template <typename Value, typename Install>
class context_value_impl final : public context_value {
 public:
  context_value_impl(Value captured, const Install& install)
      : captured_(std::move(captured)), install_(install) {}

  void install() override { previous_.emplace(install_(Value(captured_))); }
  void restore() noexcept override {
    if (!previous_) return;
    try {
      (void)install_(std::move(*previous_));
    } catch (...) {
      report_stray_exception("a context hook restoring the worker's context");
    }
    previous_.reset();
  }

 private:
  Value captured_;
  std::optional<Value> previous_;
  Install install_;
};

struct context_hook_base {
  virtual ~context_hook_base() = default;
  virtual std::unique_ptr<context_value> capture() const = 0;
};

/// What every registered hook captured at one call site.
class context_snapshot {
 public:
  void add(std::unique_ptr<context_value> value) { values_.push_back(std::move(value)); }

  /// In registration order; if one install throws, those already installed are restored.
  void install() {
    for (; installed_ < values_.size(); ++installed_) {
      try {
        values_[installed_]->install();
      } catch (...) {
        restore();
        throw;
      }
    }
  }
  void restore() noexcept {
    while (installed_ > 0) values_[--installed_]->restore();
  }

 private:
  std::vector<std::unique_ptr<context_value>> values_;
  std::size_t installed_ = 0;
};

class context_registry {
 public:
  static context_registry& instance() {
    static context_registry registry;
    return registry;
  }

  void add(const context_hook_base* hook) {
    std::lock_guard<std::mutex> lock(mutex_);
    hooks_.push_back(hook);
    count_.store(hooks_.size(), std::memory_order_release);
  }
  void remove(const context_hook_base* hook) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    hooks_.erase(std::remove(hooks_.begin(), hooks_.end(), hook), hooks_.end());
    count_.store(hooks_.size(), std::memory_order_release);
  }

  /// Null (and no allocation) while no hook is registered: the common case costs one load.
  std::unique_ptr<context_snapshot> capture() const {
    if (count_.load(std::memory_order_acquire) == 0) return nullptr;
    std::lock_guard<std::mutex> lock(mutex_);
    if (hooks_.empty()) return nullptr;
    auto snapshot = std::make_unique<context_snapshot>();
    for (const context_hook_base* hook : hooks_) snapshot->add(hook->capture());
    return snapshot;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<const context_hook_base*> hooks_;
  std::atomic<std::size_t> count_{0};
};

/// Installs a snapshot on the worker for as long as f runs.
class context_scope {
 public:
  explicit context_scope(context_snapshot* snapshot) : snapshot_(snapshot) {
    if (snapshot_ != nullptr) snapshot_->install();
  }
  context_scope(const context_scope&) = delete;
  context_scope& operator=(const context_scope&) = delete;
  ~context_scope() {
    if (snapshot_ != nullptr) snapshot_->restore();
  }

 private:
  context_snapshot* snapshot_;
};

}  // namespace detail

/// Propagates one piece of thread-local context into every offloaded call (to_thread,
/// run_in_executor on any executor, async_run) made while the hook is alive:
///
///     offload::context_hook request_id_hook(
///         [] { return current_request_id; },                  // where the call is made
///         [](std::string id) { return std::exchange(current_request_id, std::move(id)); });
///
/// `capture()` runs on the calling thread and returns a value; `install(value)` runs on the
/// worker before f and returns the value it replaced, which is installed again after f, so
/// nothing f changes leaks into the worker's next call or back to the caller. Both must be
/// safe to call from any thread. An exception from capture reaches the awaiter; one from
/// install becomes f's exception (f does not run).
class context_hook {
 public:
  template <typename Capture, typename Install>
  requires std::is_invocable_v<const Capture&> &&
      std::is_convertible_v<std::invoke_result_t<const Install&,
                                                 std::decay_t<std::invoke_result_t<const Capture&>>>,
                            std::decay_t<std::invoke_result_t<const Capture&>>>
  context_hook(Capture capture, Install install)
      : impl_(std::make_unique<impl<Capture, Install>>(std::move(capture), std::move(install))) {
    detail::context_registry::instance().add(impl_.get());
  }
  context_hook(const context_hook&) = delete;
  context_hook& operator=(const context_hook&) = delete;
  /// Calls made after this no longer propagate the context; calls already made keep theirs.
  ~context_hook() { detail::context_registry::instance().remove(impl_.get()); }

 private:
  template <typename Capture, typename Install>
  struct impl final : detail::context_hook_base {
    using value_type = std::decay_t<std::invoke_result_t<const Capture&>>;
    impl(Capture c, Install i) : capture_fn(std::move(c)), install_fn(std::move(i)) {}
    std::unique_ptr<detail::context_value> capture() const override {
      return std::make_unique<detail::context_value_impl<value_type, Install>>(capture_fn(),
                                                                              install_fn);
    }
    Capture capture_fn;
    Install install_fn;
  };

  std::unique_ptr<detail::context_hook_base> impl_;
};

}  // namespace offload
