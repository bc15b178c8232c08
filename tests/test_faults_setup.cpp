// Faults while a co_await'ed call is being set up (its node, its arguments' last move, the
// first call's service on a bare io_context) reach the co_await as exceptions, nothing
// half-submitted; a thread_pool whose constructor cannot start a min_workers thread throws and
// leaves no thread behind. (Its own executable: it replaces the global operator new.)
//
// Distributed under the Boost Software License, Version 1.0.
#include "catch.hpp"
#include "probes.hpp"

#include <offload/errors.hpp>
#include <offload/event_loop.hpp>
#include <offload/thread_pool.hpp>
#include <offload/to_thread.hpp>

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "alloc_fault.hpp"

namespace {

namespace net = offload::net;

struct arg_fault {
  int at;
};

struct fragile {
  static thread_local inline int ops = 0;
  static thread_local inline int throw_at = 0;
  int value;
  explicit fragile(int v) noexcept : value(v) {}
  fragile(const fragile& other) : value(other.value) { tick(); }
  fragile(fragile&& other) : value(other.value) { tick(); }
  static void tick() {
    ++ops;
    if (throw_at != 0 && ops == throw_at) throw arg_fault{ops};
  }
};

offload::awaitable<void> submit_fragile(offload::thread_pool& pool, int at, std::atomic<int>& ran,
                                        bool& threw) {
  auto f = [&ran](const fragile& a) {
    ++ran;
    return a.value;
  };
  fragile arg(21);
  fragile::ops = 0;
  fragile::throw_at = at;
  try {
    (void)co_await offload::run_in_executor(pool, f, std::move(arg));
  } catch (const arg_fault&) {
    threw = true;
  }
  fragile::throw_at = 0;
}

}  // namespace

TEST_CASE("argument move into the node throws: the exception reaches the co_await",
          "[faults][arguments]") {
  offload::event_loop loop;
  std::atomic<int> ran{0};
  int moves = 0;
  {
    offload::thread_pool pool(1);
    bool threw = false;
    loop.run_until_complete(submit_fragile(pool, 0, ran, threw));
    moves = fragile::ops;
  }
  REQUIRE(moves >= 1);
  offload::thread_pool pool(1);
  bool threw = false;
  ran = 0;
  loop.run_until_complete(submit_fragile(pool, moves, ran, threw));
  CHECK(threw);
  CHECK(ran.load() == 0);
  CHECK(pool.stats().workers == 0);
  CHECK(pool.stats().completed == 0);
}

namespace {

struct attempt {
  long failed = 0;
  bool bad_alloc = false;
  bool got_value = false;
  bool next_ok = false;
};

offload::awaitable<void> node_call(offload::thread_pool& pool, long n, attempt& out) {
  auto f = [] { return 4; };
  alloc_fault::arm(n);
  try {
    out.got_value = co_await offload::run_in_executor(pool, f) == 4;
  } catch (const std::bad_alloc&) {
    out.bad_alloc = true;
  }
  alloc_fault::disarm();
  out.failed = alloc_fault::failed;
  out.next_ok = co_await offload::run_in_executor(pool, f) == 4;
}

}  // namespace

TEST_CASE("each allocation of a call fails in turn: bad_alloc at the co_await (node included)",
          "[faults][alloc]") {
  OFFLOAD_TEST_NEEDS_NEW_REPLACEMENT()
  for (long n = 1; n <= 64; ++n) {
    INFO("allocation #" << n << " fails");
    attempt a;
    // A fresh thread: its cache of call nodes is empty, so the node is allocated in the call.
    std::thread([&] {
      offload::thread_pool pool(1);
      offload::event_loop loop;
      loop.set_spin(std::chrono::nanoseconds::zero());
      loop.run_until_complete(node_call(pool, n, a));
    }).join();
    if (a.failed == 0) {
      CHECK(a.got_value);
      break;
    }
    CHECK(a.bad_alloc);
    CHECK_FALSE(a.got_value);
    CHECK(a.next_ok);
  }
}

namespace {

/// A callback bound to `ex` whose call is made with the n-th allocation failing. The callback
/// records what it got, on which thread; f counts its runs.
struct bound_attempt {
  long failed = 0;
  bool threw = false;  // async_run itself threw: nothing was taken
  int callbacks = 0;
  bool bad_alloc = false;
  bool got_value = false;
  bool on_executor = false;
  int f_runs = 0;
};

template <typename Executor, typename Done>
void bound_call(offload::thread_pool& pool, const Executor& ex, long n, bound_attempt& out,
                std::atomic<int>& f_runs, Done done) {
  auto f = [&f_runs] {
    ++f_runs;
    return 4;
  };
  auto callback = [&out, ex, done](std::exception_ptr e, int v) {
    ++out.callbacks;
    done();
    out.on_executor = ex.running_in_this_thread();
    try {
      if (e) std::rethrow_exception(e);
      out.got_value = v == 4;
    } catch (const std::bad_alloc&) {
      out.bad_alloc = true;
    }
  };
  alloc_fault::arm(n);
  try {
    offload::async_run(pool, f, net::bind_executor(ex, std::move(callback)));
  } catch (const std::bad_alloc&) {
    out.threw = true;
  }
  alloc_fault::disarm();
  out.failed = alloc_fault::failed;
  if (out.threw) done();
}

void check_bound_attempt(const bound_attempt& a) {
  if (a.threw) {
    CHECK(a.callbacks == 0);
    CHECK(a.f_runs == 0);
    return;
  }
  CHECK(a.callbacks == 1);  // once, on its executor, with the error or the value
  CHECK(a.on_executor);
  CHECK(a.bad_alloc != a.got_value);
  CHECK(a.f_runs == (a.got_value ? 1 : 0));
}

/// `attempt_on_fresh_thread(n, a)` makes the call with its n-th allocation failing, for n = 1, 2,
/// ... until the call makes fewer than n allocations.
template <typename Attempt>
void sweep_bound(Attempt attempt_on_fresh_thread) {
  for (long n = 1; n <= 64; ++n) {
    INFO("allocation #" << n << " fails");
    bound_attempt a;
    // A fresh thread: its node cache is empty, so the node is allocated in the call.
    std::thread([&] { attempt_on_fresh_thread(n, a); }).join();
    check_bound_attempt(a);
    if (a.failed == 0) {
      CHECK(a.got_value);
      CHECK(n > 1);  // the call allocated: its node at least
      WARN(n - 1 << " allocation points swept");
      return;
    }
    CHECK(a.bad_alloc);
  }
}

}  // namespace

TEST_CASE(
    "a callback bound to the loop: each allocation of its call fails in turn: the callback "
    "gets bad_alloc on the loop, f never runs",
    "[faults][alloc][async_run]") {
  OFFLOAD_TEST_NEEDS_NEW_REPLACEMENT()
  sweep_bound([](long n, bound_attempt& a) {
    offload::thread_pool pool(1);
    offload::event_loop loop;
    std::atomic<int> f_runs{0};
    loop.call_soon(
        [&] { bound_call(pool, loop.get_executor(), n, a, f_runs, [&loop] { loop.stop(); }); });
    loop.run_forever();
    pool.shutdown();
    a.f_runs = f_runs.load();
  });
}

TEST_CASE(
    "a callback bound to a bare io_context: each allocation of its first call fails in turn: "
    "the callback gets bad_alloc there, f never runs",
    "[faults][alloc][async_run]") {
  OFFLOAD_TEST_NEEDS_NEW_REPLACEMENT()
  sweep_bound([](long n, bound_attempt& a) {
    offload::thread_pool pool(1);
    std::atomic<int> f_runs{0};
    {
      net::io_context ctx;
      bound_call(pool, ctx.get_executor(), n, a, f_runs, [] {});
      ctx.run();
    }
    pool.shutdown();
    a.f_runs = f_runs.load();
  });
}

namespace {

offload::awaitable<void> first_call_on_bare_context(offload::thread_pool& pool, long n,
                                                    attempt& out) {
  auto f = [] { return 4; };
  alloc_fault::arm(n);
  try {
    out.got_value = co_await offload::run_in_executor(pool, f) == 4;
  } catch (const std::bad_alloc&) {
    out.bad_alloc = true;
  }
  alloc_fault::disarm();
  out.failed = alloc_fault::failed;
}

}  // namespace

TEST_CASE("bare io_context: each allocation of its first call fails: bad_alloc at the co_await",
          "[faults][alloc]") {
  OFFLOAD_TEST_NEEDS_NEW_REPLACEMENT()
  offload::thread_pool pool(1);
  for (long n = 1; n <= 64; ++n) {
    INFO("allocation #" << n << " fails");
    attempt a;
    std::thread([&] {
      // Keep the node out of it (see the first cases): fill this thread's node cache first.
      auto& cache = offload::detail::block_cache::local();
      for (std::size_t size = cache.step; size <= cache.max_block; size += cache.step) {
        cache.deallocate(::operator new(size), size);
      }
      net::io_context ctx;
      net::co_spawn(ctx, first_call_on_bare_context(pool, n, a), net::detached);
      ctx.run();
    }).join();
    if (a.failed == 0) {
      CHECK(a.got_value);
      break;
    }
    CHECK(a.bad_alloc);
    CHECK_FALSE(a.got_value);
  }
}

TEST_CASE("pool constructor: a min_workers thread cannot start: it throws, no thread left",
          "[faults][alloc][thread]") {
  OFFLOAD_TEST_NEEDS_NEW_REPLACEMENT()
  long allocations = 0;
  {
    offload::thread_pool_options o;
    o.min_workers = 3;
    o.max_workers = 4;
    o.thread_name_prefix = "ctor";
    alloc_fault::arm(0);
    offload::thread_pool pool(std::move(o));
    allocations = alloc_fault::disarm();
    CHECK(pool.stats().workers == 3);
  }
  REQUIRE(allocations >= 3);
  for (long n = 1; n <= allocations; ++n) {
    INFO("allocation #" << n << " of " << allocations << " fails");
    offload::thread_pool_options o;
    o.min_workers = 3;
    o.max_workers = 4;
    o.thread_name_prefix = "ctor";
    bool threw = false;
    bool usable = false;
    alloc_fault::arm(n);
    try {
      offload::thread_pool pool(std::move(o));
      alloc_fault::disarm();
      // Or built with fewer threads: then it must still run calls.
      auto f = [] { return 1; };
      usable = offload::async_run(pool, f, net::use_future).get() == 1;
    } catch (const std::bad_alloc&) {
      alloc_fault::disarm();
      threw = true;
    }
    CHECK((threw || usable));
  }
}
