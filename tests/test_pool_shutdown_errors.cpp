// thread_pool::shutdown(cancel_pending) answers each queued call with an exception object of
// its own: awaiters on other threads share nothing with the thread that shut the pool down.
// (A shared one is freed by whichever thread drops the last exception_ptr; libstdc++'s count is
// not instrumented, so ThreadSanitizer reported a race on every run of this test.)
//
// The scenario: 8 coroutines on a loop (on a thread of its own) await calls queued behind a
// busy worker, then one call with a plain callback is queued last. shutdown(true, true) on the
// main thread fails the chain in order: the loop resumes the 8 awaiters, which read their error
// and drop it, while the last call's callback (run inline by shutdown) waits for that.
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
  } catch (const offload::net_system_error& e) {
    if (e.code() == net::error::operation_aborted) aborted->fetch_add(1, std::memory_order_relaxed);
  }
}

}  // namespace

TEST_CASE("shutdown(cancel_pending) on another thread: each awaiter owns its error (TSan-clean)",
          "[thread_pool][tsan]") {
  constexpr int on_loop = 8;
  offload::thread_pool pool(1);
  offload_test::loop_on_thread home;
  std::latch running(1);
  // The only worker is busy until shutdown has failed the queue: everything below waits in it.
  offload_test::gate queue_failed;
  auto block = [&running, &queue_failed] {
    running.count_down();
    queue_failed.wait();
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
  offload::async_run(pool, noop, [&aborted, &queue_failed](std::exception_ptr) {
    offload_test::eventually([&] { return aborted.load(std::memory_order_relaxed) == on_loop; });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the awaiters drop their error
    queue_failed.open();
  });
  // TSan: data race: free in exception_ptr::_M_release (this thread, in shutdown) vs the
  // awaiters' read of e.code() (the loop's thread).
  pool.shutdown(true, true);
  CHECK(aborted.load() == on_loop);
  blocker.get();
}
