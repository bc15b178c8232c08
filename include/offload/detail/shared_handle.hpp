// offload: shared_handle<State>, the part of a handle whose copies share one state and are
// counted (a future, a task): copying, moving, and telling the state when its last copy goes.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <memory>
#include <mutex>
#include <utility>

namespace offload::detail {

/// State has `mutex`, `handles`, `done`, and `last_handle_released(lock)`, called with `mutex`
/// held (as `lock`, which it may release) when the last copy goes away.
template <typename State>
class shared_handle {
 public:
  shared_handle() = default;
  shared_handle(const shared_handle& other) : state_(other.state_) { add_handle(); }
  shared_handle(shared_handle&& other) noexcept : state_(std::move(other.state_)) {}
  shared_handle& operator=(shared_handle other) noexcept {
    std::swap(state_, other.state_);
    return *this;
  }
  ~shared_handle() { release_handle(); }

  bool valid() const noexcept { return state_ != nullptr; }

  bool done() const {
    std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->done;
  }

 protected:
  explicit shared_handle(std::shared_ptr<State> state) : state_(std::move(state)) { add_handle(); }

  std::shared_ptr<State> state_;

 private:
  void add_handle() {
    if (!state_) return;
    std::lock_guard<std::mutex> lock(state_->mutex);
    ++state_->handles;
  }
  void release_handle() noexcept {
    if (!state_) return;
    std::unique_lock<std::mutex> lock(state_->mutex);
    if (--state_->handles == 0) state_->last_handle_released(lock);
  }
};

}  // namespace offload::detail
