// offload: memory for call nodes and drain posts without a malloc per call.
//
// A call node is allocated where the call is made (the loop thread) and freed where it is
// delivered (the loop thread again), so a per-thread cache of blocks by size class makes
// steady-state calls allocation-free, and bursts free of page faults. Asio's own recycling
// cache is left to Asio's operations: sharing its two slots with nodes of other sizes made
// both miss.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <new>
#include <utility>

namespace offload::detail {

/// How many bytes of freed call nodes each thread keeps for reuse (see set_node_cache_limit).
inline std::atomic<std::size_t>& node_cache_limit_bytes() noexcept {
  static std::atomic<std::size_t> limit{std::size_t(256) << 20};
  return limit;
}

class block_cache {
 public:
  static constexpr std::size_t step = 16;
  static constexpr std::size_t class_count = 24;  // 16-byte steps up to 384 bytes
  static constexpr std::size_t max_block = step * class_count;

  block_cache() = default;
  block_cache(const block_cache&) = delete;
  block_cache& operator=(const block_cache&) = delete;
  ~block_cache() {
    for (node*& head : lists_) {
      while (head != nullptr)
        ::operator delete(static_cast<void*>(std::exchange(head, head->next)));
    }
  }

  static block_cache& local() noexcept {
    thread_local block_cache cache;
    return cache;
  }

  void* allocate(std::size_t bytes) {
    const int c = class_of(bytes);
    if (c < 0) return ::operator new(bytes);
    node*& head = lists_[c];
    if (head != nullptr) {
      cached_bytes_ -= class_size(c);
      return std::exchange(head, head->next);
    }
    return ::operator new(class_size(c));
  }

  // Keeping blocks up to the limit, rather than a few per size, is what makes a burst of
  // calls cheap: its nodes come back to this cache, and the next burst reuses memory the
  // kernel has already mapped instead of faulting fresh pages in. Only threads that run a loop
  // (where calls are made and resumed) keep that much; others, such as pool workers, which
  // free only the nodes of calls that ended there, keep a little.
  void deallocate(void* p, std::size_t bytes) noexcept {
    const int c = class_of(bytes);
    std::size_t limit = node_cache_limit_bytes().load(std::memory_order_relaxed);
    if (!keep_full_ && limit > other_thread_limit) limit = other_thread_limit;
    if (c < 0 || cached_bytes_ + class_size(c) > limit) {
      ::operator delete(p);
      return;
    }
    lists_[c] = ::new (p) node{lists_[c]};
    cached_bytes_ += class_size(c);
  }

  std::size_t cached_bytes() const noexcept { return cached_bytes_; }

  /// Whether this thread keeps up to the whole limit (it runs a loop); returns the old setting.
  bool keep_full(bool on) noexcept { return std::exchange(keep_full_, on); }

  static constexpr std::size_t other_thread_limit = std::size_t(64) << 10;

 private:
  struct node {
    node* next;
  };

  static constexpr std::size_t class_size(int c) noexcept {
    return step * (static_cast<std::size_t>(c) + 1);
  }
  static constexpr int class_of(std::size_t bytes) noexcept {
    const std::size_t c = (bytes + step - 1) / step;
    return c == 0 ? 0 : (c <= class_count ? static_cast<int>(c - 1) : -1);
  }

  node* lists_[class_count] = {};
  std::size_t cached_bytes_ = 0;
  bool keep_full_ = false;
};

template <typename T>
struct op_allocator {
  using value_type = T;
  op_allocator() noexcept = default;
  template <typename U>
  op_allocator(const op_allocator<U>&) noexcept {}
  template <typename U>
  explicit op_allocator(const std::allocator<U>&) noexcept {}

  T* allocate(std::size_t n) {
    static_assert(alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__);
    return static_cast<T*>(block_cache::local().allocate(n * sizeof(T)));
  }
  void deallocate(T* p, std::size_t n) noexcept {
    block_cache::local().deallocate(p, n * sizeof(T));
  }
  template <typename U>
  friend bool operator==(const op_allocator&, const op_allocator<U>&) noexcept {
    return true;
  }
};

/// Deletes what make_cached made.
template <typename T>
struct cached_delete {
  void operator()(T* p) const noexcept {
    p->~T();
    op_allocator<T>().deallocate(p, 1);
  }
};

/// A T in a block of the calling thread's cache (for objects made and freed on one thread).
template <typename T, typename... Args>
std::unique_ptr<T, cached_delete<T>> make_cached(Args&&... args) {
  T* p = op_allocator<T>().allocate(1);
  try {
    ::new (static_cast<void*>(p)) T(std::forward<Args>(args)...);
  } catch (...) {
    op_allocator<T>().deallocate(p, 1);
    throw;
  }
  return std::unique_ptr<T, cached_delete<T>>(p);
}

/// Two blocks, reused by whatever is posted while they are free: a queue has at most one drain
/// post outstanding, and posting it to a strand takes a second block for the strand's own
/// invoker. Asio frees a handler's memory before it invokes it.
struct reusable_block {
  static constexpr std::size_t slots = 2;
  // Room for what Asio allocates for a posted drain and for a strand's invoker; a larger
  // request falls back to operator new (W7 of the benchmark counts those).
  static constexpr std::size_t size = 192;
  alignas(std::max_align_t) unsigned char storage[slots][size];
  std::atomic<bool> in_use[slots] = {};
};

template <typename T>
struct reusable_block_allocator {
  using value_type = T;
  reusable_block* block;

  explicit reusable_block_allocator(reusable_block* b) noexcept : block(b) {}
  template <typename U>
  reusable_block_allocator(const reusable_block_allocator<U>& other) noexcept
      : block(other.block) {}

  T* allocate(std::size_t n) {
    if (n * sizeof(T) <= reusable_block::size && alignof(T) <= alignof(std::max_align_t)) {
      for (std::size_t i = 0; i < reusable_block::slots; ++i) {
        if (!block->in_use[i].exchange(true, std::memory_order_acquire)) {
          return reinterpret_cast<T*>(block->storage[i]);
        }
      }
    }
    return static_cast<T*>(::operator new(n * sizeof(T)));
  }
  void deallocate(T* p, std::size_t) noexcept {
    for (std::size_t i = 0; i < reusable_block::slots; ++i) {
      if (reinterpret_cast<unsigned char*>(p) == block->storage[i]) {
        block->in_use[i].store(false, std::memory_order_release);
        return;
      }
    }
    ::operator delete(static_cast<void*>(p));
  }
  template <typename U>
  friend bool operator==(const reusable_block_allocator& a,
                         const reusable_block_allocator<U>& b) noexcept {
    return a.block == b.block;
  }
};

}  // namespace offload::detail
