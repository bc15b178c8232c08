// Allocation failure for offload's fault tests, injected through the global operator new.
// Include it from exactly one translation unit of a test executable (it defines the
// replaceable allocation functions).
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <new>

// -- allocation failure, injected through the global operator new ----------------------------
//
// Off by default: only a thread that arms it counts its allocations, so Catch2 and every other
// thread are unaffected. Armed with n > 0, the n-th allocation on that thread throws
// std::bad_alloc (once); armed with 0 it only counts. Every form forwards to malloc/free, so
// AddressSanitizer sees one consistent allocator.
//
// Clang links its sanitizer runtimes statically and whole (--whole-archive), operator new and
// delete included: a program there cannot replace them (the link fails with "multiple
// definition"). Those builds run every other test here and skip the allocation sweeps.
#if defined(__clang__) && defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer) || \
    __has_feature(memory_sanitizer)
#define OFFLOAD_TEST_CANNOT_REPLACE_NEW 1
#endif
#endif
#if !defined(OFFLOAD_TEST_CANNOT_REPLACE_NEW)
#define OFFLOAD_TEST_CANNOT_REPLACE_NEW 0
#endif

#define OFFLOAD_TEST_NEEDS_NEW_REPLACEMENT()                                                  \
  if (OFFLOAD_TEST_CANNOT_REPLACE_NEW) {                                                      \
    WARN("skipped: this build's sanitizer runtime owns operator new (Clang links it whole)"); \
    return;                                                                                   \
  }

namespace alloc_fault {

thread_local bool counting = false;
thread_local long seen = 0;     // allocations on this thread since arm()
thread_local long fail_at = 0;  // the one to fail (0: none)
thread_local long failed = 0;   // the one that failed (0: none did)

void arm(long n) noexcept {
  seen = 0;
  fail_at = n;
  failed = 0;
  counting = true;
}

/// Stops counting; returns how many allocations were made while armed.
long disarm() noexcept {
  counting = false;
  return seen;
}

bool next_fails() noexcept {
  if (!counting) return false;
  ++seen;
  if (seen != fail_at) return false;
  failed = seen;
  fail_at = 0;
  return true;
}

void* allocate(std::size_t n) {
  if (next_fails()) throw std::bad_alloc();
  if (void* p = std::malloc(n != 0 ? n : 1)) return p;
  throw std::bad_alloc();
}

void* allocate(std::size_t n, std::align_val_t al) {
  if (next_fails()) throw std::bad_alloc();
  const std::size_t align =
      std::max(static_cast<std::size_t>(al), static_cast<std::size_t>(sizeof(void*)));
  void* p = nullptr;
  if (::posix_memalign(&p, align, n != 0 ? n : 1) == 0) return p;
  throw std::bad_alloc();
}

}  // namespace alloc_fault

#if !OFFLOAD_TEST_CANNOT_REPLACE_NEW
void* operator new(std::size_t n) { return alloc_fault::allocate(n); }
void* operator new[](std::size_t n) { return alloc_fault::allocate(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return alloc_fault::allocate(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return alloc_fault::allocate(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new(std::size_t n, std::align_val_t al) { return alloc_fault::allocate(n, al); }
void* operator new[](std::size_t n, std::align_val_t al) { return alloc_fault::allocate(n, al); }
void* operator new(std::size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
  try {
    return alloc_fault::allocate(n, al);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
  try {
    return alloc_fault::allocate(n, al);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
#endif  // !OFFLOAD_TEST_CANNOT_REPLACE_NEW
