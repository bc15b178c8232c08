// offload: a move-only `void()` function (completion handlers are move-only).
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <memory>
#include <type_traits>
#include <utility>

namespace offload::detail {

class unique_function {
 public:
  unique_function() = default;
  template <typename F>
  requires(!std::is_same_v<std::decay_t<F>, unique_function>) unique_function(F&& f)
      : impl_(std::make_unique<model<std::decay_t<F>>>(std::forward<F>(f))) {}

  explicit operator bool() const noexcept { return impl_ != nullptr; }
  void operator()() { impl_->call(); }

 private:
  struct concept_base {
    virtual ~concept_base() = default;
    virtual void call() = 0;
  };
  template <typename F>
  struct model final : concept_base {
    template <typename G>
    explicit model(G&& g) : f(std::forward<G>(g)) {}
    void call() override { f(); }
    F f;
  };
  std::unique_ptr<concept_base> impl_;
};

}  // namespace offload::detail
