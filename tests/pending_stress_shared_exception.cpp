// PENDING (not built: the test globs are test_*.cpp and stress_*.cpp). Found by
// tests/stress_shutdown.cpp under ThreadSanitizer (Clang 14, libstdc++ 12); rename to
// test_*.cpp once the library is fixed.
//
// thread_pool::shutdown(wait, cancel_pending = true) answers every queued call with ONE shared
// exception object: fail_chain(cancelled, make_cancelled(...)) passes the same exception_ptr to
// each call (join_all's executor_shutdown for stranded calls, and the initializer's or thread
// creation's error, are shared the same way). An awaiter that reads its error (e.code()) on its
// loop's thread, while the thread that called shutdown() still holds the temporary
// exception_ptr, ends with that thread dropping the last reference and freeing the object.
// libstdc++'s exception_ptr reference count is not instrumented, so TSan sees no
// happens-before between the awaiter's read and the free and reports a data race:
//
//   WARNING: ThreadSanitizer: data race
//     Write of size 8 by main thread:
//       #0 free
//       #1 std::__exception_ptr::exception_ptr::_M_release() (libstdc++.so.6)
//       #2 ... thread_pool::shutdown
//     Previous read of size 4 by thread T1 (the loop):
//       #0 std::error_code::value() const
//       #1 ... the awaiting coroutine, reading the operation_aborted it caught
//
// It is a false positive for the memory model (the count is atomic), but it is what the TSan CI
// job sees: SPEC §6 wants the suite clean under TSan, and every user who awaits calls on a pool
// shut down from another thread gets the same report. Expected: no report. Fix in the library
// (not in the tests): give each call its own exception object (make_cancelled per call in
// fail_chain for offload's own errors; they cost one allocation each and only on shutdown).
//
// Minimal repro, deterministic (reports on every run): 8 coroutines on a loop (on a thread of
// its own) await calls queued behind a busy worker, then one call with a plain callback is
// queued last.
// shutdown(true, true) on the main thread fails the chain in order: the loop resumes the 8
// awaiters, which read their error and drop it, while the last call's callback (run inline on
// the main thread by shutdown) waits for that; the temporary exception_ptr in shutdown() is then
// the last reference, and its release frees the object on the main thread. Build by hand:
//   clang++ -std=c++20 -O1 -g -fsanitize=thread -DOFFLOAD_CATCH2_V3=0 -Itests/support -Iinclude \
//     tests/pending_stress_shared_exception.cpp <tsan build>/tests/liboffload_test_main.a -pthread
//
// Distributed under the Boost Software License, Version 1.0.
#include "catch.hpp"
#include "probes.hpp"

#include <offload/offload.hpp>

#include <atomic>
#include <chrono>
#include <exception>
#include <latch>
#include <thread>

namespace {

namespace net = offload::net;

// One awaiter: reads the error it gets (on the loop's thread). Relaxed on purpose: the test
// must not add a happens-before of its own between this read and the free on the main thread.
offload::awaitable<void> await_queued(offload::thread_pool* pool, std::atomic<int>* aborted) {
  auto f = [] {};
  try {
    co_await offload::run_in_executor(*pool, f);
  } catch (const net::system_error& e) {
    if (e.code() == net::error::operation_aborted) aborted->fetch_add(1, std::memory_order_relaxed);
  }
}

}  // namespace

TEST_CASE(
    "PENDING: shutdown(cancel_pending) from another thread than the awaiters': no TSan report "
    "on the shared exception object",
    "[pending][thread_pool][tsan]") {
  constexpr int on_loop = 8;
  offload::thread_pool pool(1);
  offload_test::loop_on_thread home;
  std::latch running(1);
  // The only worker is busy for 200 ms: everything below waits in the queue behind it.
  auto block = [&running] {
    running.count_down();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  };
  auto blocker = offload_test::submit_plain(pool, block);
  running.wait();
  // First in the queue: `on_loop` calls awaited by coroutines on the loop's thread.
  std::atomic<int> aborted{0};
  home.loop.call_soon_threadsafe([&] {
    for (int i = 0; i < on_loop; ++i) {
      net::co_spawn(home.loop.get_executor(), await_queued(&pool, &aborted), net::detached);
    }
  });
  REQUIRE(offload_test::eventually([&] { return pool.stats().queued == on_loop; }));
  // Last in the queue: a call with a plain callback, which shutdown() runs inline on this
  // thread, in the middle of failing the chain. It lets the loop's awaiters read their error
  // and drop it first, so the temporary exception_ptr shutdown() shares is the last reference
  // and is released here. (Relaxed: no happens-before of the test's own.)
  auto noop = [] {};
  offload::async_run(pool, noop, [&aborted](std::exception_ptr) {
    offload_test::eventually([&] { return aborted.load(std::memory_order_relaxed) == on_loop; });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  });
  // TSan: data race: free in exception_ptr::_M_release (this thread, in shutdown) vs the
  // awaiters' read of e.code() (the loop's thread).
  pool.shutdown(true, true);
  CHECK(aborted.load() == on_loop);
  blocker.get();
}
