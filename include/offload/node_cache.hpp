// offload: how much memory of finished calls each thread keeps for the next ones.
//
// Every call lives in one node, allocated on the thread that makes the call and freed, in the
// common case, on the same thread when its awaiter resumes. Freed nodes go to a per-thread cache
// that the next calls reuse: steady-state calls do not call malloc, and a burst of calls after
// an earlier one reuses memory the kernel has already mapped instead of faulting fresh pages in
// (which costs more than everything else a call does). A thread running an event loop keeps at
// most the limit below; any other thread (a pool's worker frees the nodes of calls cancelled
// or abandoned there; a bare io_context's thread resumes its calls) keeps at most 64 KiB of it.
// Beyond that, nodes go back to the heap. A thread's cache is freed when it exits.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/detail/op_allocator.hpp>

#include <atomic>
#include <cstddef>

namespace offload {

/// Bytes of freed call nodes a thread running an event loop keeps for reuse; 256 MiB unless set
/// (about 1.6 million calls of a typical size). Only what was once in flight at the same time is
/// kept: a loop that never has more than a thousand calls out keeps a thousand nodes. 0: no
/// thread keeps any, every call allocates and frees its node.
inline std::size_t node_cache_limit() noexcept {
  return detail::node_cache_limit_bytes().load(std::memory_order_relaxed);
}

/// Sets the limit for every thread, from now on; a cache already above it shrinks as calls
/// are made rather than at once.
inline void set_node_cache_limit(std::size_t bytes) noexcept {
  detail::node_cache_limit_bytes().store(bytes, std::memory_order_relaxed);
}

}  // namespace offload
