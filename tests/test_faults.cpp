// Fault injection: f throws (std and non-std types); an argument's copy or
// move throws at submission; a third-party executor throws on submit; allocation fails (a
// replaced global operator new, swept over every allocation of one call); a pool initializer
// throws; a thread cannot be created. Each fault reaches the caller with its original type,
// nothing is half-submitted (f never runs, nothing stays queued), and the worker, the pool and
// the loop stay usable.
//
// The faults of a co_await'ed call's own setup (its node, a cold first call) are swept in
// tests/test_faults_setup.cpp.
//
// Distributed under the Boost Software License, Version 1.0.
#include "catch.hpp"
#include "loop_helpers.hpp"
#include "probes.hpp"

#include <offload/errors.hpp>
#include <offload/event_loop.hpp>
#include <offload/thread_pool.hpp>
#include <offload/to_thread.hpp>

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "alloc_fault.hpp"

namespace {

namespace net = offload::net;
using namespace std::chrono_literals;
using offload_test::eventually;
using offload_test::this_thread_name;
using offload_test::wait_until;

offload::thread_pool_options pool_options(const char* prefix, std::size_t max_workers = 1) {
  offload::thread_pool_options o;
  o.thread_name_prefix = prefix;
  o.max_workers = max_workers;
  return o;
}

// -- the faults f throws ---------------------------------------------------------------------

/// A std exception type of the tests' own, with data.
struct std_fault : std::logic_error {
  explicit std_fault(int c) : std::logic_error("std_fault #" + std::to_string(c)), code(c) {}
  int code;
};

/// Not derived from std::exception.
struct odd_fault {
  std::string tag;
  int code;
};

/// What one round of throwing calls saw, filled on the loop (after each call came back).
struct throw_report {
  int std_code = 0;
  std::string std_what;
  int int_value = 0;
  std::string odd_tag;
  int odd_code = 0;
  bool all_caught = false;
  std::vector<std::thread::id> worker_ids;  // each call, in order (the last one succeeds)
  int next_value = 0;
  bool resumed_on_loop_thread = true;
};

template <typename Target, typename F>
auto call_on(Target& target, F& f) {
  if constexpr (std::is_same_v<std::remove_cv_t<Target>, offload::default_executor_t>) {
    return offload::to_thread(f);
  } else {
    return offload::run_in_executor(target, f);
  }
}

/// Three calls that throw (a std type, an int, a non-std struct), then one that returns: each
/// exception arrives at its co_await with its type and value, on the loop thread.
template <typename Target>
offload::awaitable<void> throwing_calls(Target& target, throw_report& r) {
  const auto loop_thread = std::this_thread::get_id();
  std::vector<std::thread::id> ids(4);
  auto throw_std = [&ids]() -> int {
    ids[0] = std::this_thread::get_id();
    throw std_fault(7);
  };
  auto throw_int = [&ids]() -> int {
    ids[1] = std::this_thread::get_id();
    throw 42;
  };
  auto throw_odd = [&ids]() -> int {
    ids[2] = std::this_thread::get_id();
    throw odd_fault{"odd", 9};
  };
  auto fine = [&ids]() -> int {
    ids[3] = std::this_thread::get_id();
    return 5;
  };
  int caught = 0;
  try {
    (void)co_await call_on(target, throw_std);
  } catch (const std_fault& e) {
    ++caught;
    r.std_code = e.code;
    r.std_what = e.what();
  }
  r.resumed_on_loop_thread &= std::this_thread::get_id() == loop_thread;
  try {
    (void)co_await call_on(target, throw_int);
  } catch (int v) {
    ++caught;
    r.int_value = v;
  }
  r.resumed_on_loop_thread &= std::this_thread::get_id() == loop_thread;
  try {
    (void)co_await call_on(target, throw_odd);
  } catch (const odd_fault& e) {
    ++caught;
    r.odd_tag = e.tag;
    r.odd_code = e.code;
  }
  r.resumed_on_loop_thread &= std::this_thread::get_id() == loop_thread;
  r.next_value = co_await call_on(target, fine);
  r.resumed_on_loop_thread &= std::this_thread::get_id() == loop_thread;
  r.all_caught = caught == 3;
  r.worker_ids = ids;
}

/// The checks every path shares: types and values intact, one worker thread ran all four
/// calls (it survived each exception), the coroutine always resumed on its loop.
void check_throw_report(const throw_report& r, std::thread::id loop_thread) {
  CHECK(r.all_caught);
  CHECK(r.std_code == 7);
  CHECK(r.std_what == "std_fault #7");
  CHECK(r.int_value == 42);
  CHECK(r.odd_tag == "odd");
  CHECK(r.odd_code == 9);
  CHECK(r.next_value == 5);
  CHECK(r.resumed_on_loop_thread);
  REQUIRE(r.worker_ids.size() == 4);
  CHECK(r.worker_ids[0] != std::thread::id());
  CHECK(r.worker_ids[0] != loop_thread);
  for (const auto& id : r.worker_ids) CHECK(id == r.worker_ids[0]);
}

/// A pool's stats once its worker is idle again after `calls` calls (threads count a call
/// once they are back from it, which may be just after the awaiter resumed).
void check_one_worker_ran(offload::thread_pool& pool, std::uint64_t calls) {
  REQUIRE(eventually([&] { return pool.stats().completed == calls; }));
  const offload::thread_pool_stats s = pool.stats();
  CHECK(s.workers == 1);       // the thread that saw the exceptions is still there
  CHECK(s.peak_workers == 1);  // and no other was ever started to replace it
  CHECK(s.queued == 0);
}

}  // namespace

TEST_CASE(
    "to_thread, f throws a std or a non-std type: rethrown at the co_await with "
    "its type and value; the worker survives and the next call works",
    "[faults][throw]") {
  offload::event_loop loop;
  auto pool = std::make_shared<offload::thread_pool>(pool_options("fault-default"));
  loop.set_default_executor(pool);
  const auto target = offload::default_executor;
  throw_report r;
  loop.run_until_complete(throwing_calls(target, r));
  check_throw_report(r, std::this_thread::get_id());
  check_one_worker_ran(*pool, 4);
}

TEST_CASE(
    "run_in_executor(thread_pool&), f throws: rethrown with its type and value; "
    "the worker survives and the next call works",
    "[faults][throw]") {
  offload::thread_pool pool(pool_options("fault-pool"));
  offload::event_loop loop;
  throw_report r;
  loop.run_until_complete(throwing_calls(pool, r));
  check_throw_report(r, std::this_thread::get_id());
  check_one_worker_ran(pool, 4);
}

TEST_CASE(
    "run_in_executor(asio::thread_pool&), f throws: rethrown with its type and "
    "value; the pool's thread survives and the next call works",
    "[faults][throw]") {
  net::thread_pool apool(1);
  offload::event_loop loop;
  throw_report r;
  loop.run_until_complete(throwing_calls(apool, r));
  check_throw_report(r, std::this_thread::get_id());
  // The pool's one thread is still there: it runs what is posted to it now.
  auto id = [] { return std::this_thread::get_id(); };
  CHECK(net::post(apool, net::use_future(id)).get() == r.worker_ids[0]);
}

namespace {

// The futures are shared so that this thread, not the worker, drops the last reference to each
// result: the worker destroys its promise just after completing it, and an exception freed
// there would be freed through libstdc++'s exception_ptr refcount, which ThreadSanitizer does
// not see (the system libstdc++ is not instrumented): a false data race report.
template <typename Target>
void throwing_futures(Target& target, std::thread::id& worker) {
  std::vector<std::thread::id> ids(4);
  auto throw_std = [&ids]() -> int {
    ids[0] = std::this_thread::get_id();
    throw std_fault(3);
  };
  auto throw_int = [&ids]() -> int {
    ids[1] = std::this_thread::get_id();
    throw 17;
  };
  auto throw_odd = [&ids]() -> int {
    ids[2] = std::this_thread::get_id();
    throw odd_fault{"far", 4};
  };
  auto fine = [&ids]() -> int {
    ids[3] = std::this_thread::get_id();
    return 11;
  };
  std::shared_future<int> a = offload::async_run(target, throw_std, net::use_future).share();
  try {
    (void)a.get();
    FAIL("no exception");
  } catch (const std_fault& e) {
    CHECK(e.code == 3);
    CHECK(std::string(e.what()) == "std_fault #3");
  }
  std::shared_future<int> b = offload::async_run(target, throw_int, net::use_future).share();
  try {
    (void)b.get();
    FAIL("no exception");
  } catch (int v) {
    CHECK(v == 17);
  }
  std::shared_future<int> c = offload::async_run(target, throw_odd, net::use_future).share();
  try {
    (void)c.get();
    FAIL("no exception");
  } catch (const odd_fault& e) {
    CHECK(e.tag == "far");
    CHECK(e.code == 4);
  }
  std::future<int> d = offload::async_run(target, fine, net::use_future);
  CHECK(d.get() == 11);
  CHECK(ids[0] != std::this_thread::get_id());
  for (const auto& id : ids) CHECK(id == ids[0]);
  worker = ids[0];
}

}  // namespace

TEST_CASE(
    "async_run(use_future), f throws: future.get() rethrows it with its type and "
    "value; the worker survives",
    "[faults][throw][async_run]") {
  std::thread::id worker;
  SECTION("on an offload::thread_pool") {
    offload::thread_pool pool(pool_options("fault-future"));
    throwing_futures(pool, worker);
    check_one_worker_ran(pool, 4);
  }
  SECTION("on a foreign asio::thread_pool") {
    net::thread_pool apool(1);
    throwing_futures(apool, worker);
    auto id = [] { return std::this_thread::get_id(); };
    CHECK(net::post(apool, net::use_future(id)).get() == worker);
  }
}

// -- an argument whose copy or move throws at submission -------------------------------------

namespace {

struct arg_fault {
  int at;  // which copy/move threw
};

/// Counts its copies and moves on the submitting thread; the `throw_at`-th one throws.
struct fragile {
  static thread_local inline int ops = 0;
  static thread_local inline int throw_at = 0;  // 0: never
  static void reset(int at) noexcept {
    ops = 0;
    throw_at = at;
  }
  static void disable() noexcept { throw_at = 0; }  // keeps the count

  int value;
  explicit fragile(int v) noexcept : value(v) {}
  fragile(const fragile& other) : value(other.value) { tick(); }
  fragile(fragile&& other) : value(other.value) { tick(); }
  fragile& operator=(const fragile&) = delete;
  fragile& operator=(fragile&&) = delete;
  ~fragile() = default;

  static void tick() {
    ++ops;
    if (throw_at != 0 && ops == throw_at) throw arg_fault{ops};
  }
};

struct submission {
  bool threw = false;
  int threw_at = 0;
  bool other_error = false;
  int value = 0;
};

/// f takes the argument by const&: every copy/move counted is one made at submission (none on
/// the worker).
offload::awaitable<void> submit_fragile(offload::thread_pool& pool, bool as_rvalue, int at,
                                        std::atomic<int>& ran, submission& out) {
  auto f = [&ran](const fragile& a) {
    ++ran;
    return a.value;
  };
  fragile arg(21);
  fragile::reset(at);
  try {
    if (as_rvalue) {
      out.value = co_await offload::run_in_executor(pool, f, std::move(arg));
    } else {
      out.value = co_await offload::run_in_executor(pool, f, arg);
    }
  } catch (const arg_fault& e) {
    out.threw = true;
    out.threw_at = e.at;
  } catch (...) {
    out.other_error = true;
  }
  fragile::disable();
}

}  // namespace

TEST_CASE(
    "co_await, an argument's copy or move throws: the exception reaches the "
    "caller, f never runs, nothing is enqueued, the pool stays usable",
    "[faults][arguments]") {
  const bool as_rvalue = GENERATE(false, true);
  INFO((as_rvalue ? "argument passed as an rvalue (moved)" : "argument passed as an lvalue"));
  offload::event_loop loop;

  // How many copies/moves one submission makes.
  int copies_and_moves = 0;
  {
    offload::thread_pool pool(pool_options("fault-args"));
    std::atomic<int> ran{0};
    submission clean;
    loop.run_until_complete(submit_fragile(pool, as_rvalue, 0, ran, clean));
    copies_and_moves = fragile::ops;
    CHECK_FALSE(clean.threw);
    CHECK(clean.value == 21);
    CHECK(ran.load() == 1);
  }
  INFO("copies and moves of the argument in one submission: " << copies_and_moves);
  REQUIRE(copies_and_moves >= 2);

  // Every one of them, the last (made inside the co_await's initiation) included.
  for (int at = 1; at <= copies_and_moves; ++at) {
    INFO("the copy/move that throws: #" << at);
    offload::thread_pool pool(pool_options("fault-args"));
    std::atomic<int> ran{0};
    submission out;
    loop.run_until_complete(submit_fragile(pool, as_rvalue, at, ran, out));
    CHECK(out.threw);
    CHECK(out.threw_at == at);
    CHECK_FALSE(out.other_error);
    CHECK(ran.load() == 0);
    const offload::thread_pool_stats s = pool.stats();
    CHECK(s.workers == 0);  // nothing reached the pool: no thread was even started
    CHECK(s.peak_workers == 0);
    CHECK(s.queued == 0);
    CHECK(s.completed == 0);

    // The pool and the loop go on.
    submission next;
    loop.run_until_complete(submit_fragile(pool, as_rvalue, 0, ran, next));
    CHECK_FALSE(next.threw);
    CHECK(next.value == 21);
    CHECK(ran.load() == 1);
    CHECK(eventually([&] { return pool.stats().completed == 1; }));
  }
}

TEST_CASE(
    "async_run(use_future), an argument's copy or move throws: async_run throws "
    "it, f never runs, nothing is enqueued",
    "[faults][arguments][async_run]") {
  const bool as_rvalue = GENERATE(false, true);
  INFO((as_rvalue ? "captured by moving an rvalue" : "captured by copying an lvalue"));
  auto submit = [as_rvalue](offload::thread_pool& pool, std::atomic<int>& ran, int at) {
    fragile arg(8);
    fragile::reset(at);
    std::future<int> fut;
    auto fn = [&ran](const fragile& a) {
      ++ran;
      return a.value;
    };
    try {
      // async_run takes f alone: the argument travels inside f.
      if (as_rvalue) {
        fut = offload::async_run(
            pool, [fn, a = std::move(arg)]() { return fn(a); }, net::use_future);
      } else {
        fut = offload::async_run(
            pool, [fn, arg]() { return fn(arg); }, net::use_future);
      }
    } catch (...) {
      fragile::disable();
      throw;
    }
    fragile::disable();
    return fut;
  };

  int copies_and_moves = 0;
  {
    offload::thread_pool pool(pool_options("fault-args"));
    std::atomic<int> ran{0};
    // Counts the capture itself too: every one of them is at the call site.
    std::future<int> fut = submit(pool, ran, 0);
    copies_and_moves = fragile::ops;
    CHECK(fut.get() == 8);
    CHECK(ran.load() == 1);
  }
  INFO("copies and moves in one submission: " << copies_and_moves);
  REQUIRE(copies_and_moves >= 2);

  for (int at = 1; at <= copies_and_moves; ++at) {
    INFO("the copy/move that throws: #" << at);
    offload::thread_pool pool(pool_options("fault-args"));
    std::atomic<int> ran{0};
    bool threw = false;
    try {
      (void)submit(pool, ran, at);
    } catch (const arg_fault& e) {
      threw = true;
      CHECK(e.at == at);
    }
    CHECK(threw);
    CHECK(ran.load() == 0);
    const offload::thread_pool_stats s = pool.stats();
    CHECK(s.workers == 0);
    CHECK(s.queued == 0);
    CHECK(s.completed == 0);
    std::future<int> next = submit(pool, ran, 0);
    CHECK(next.get() == 8);
    CHECK(ran.load() == 1);
  }
}

// -- a third-party executor that throws on submit --------------------------------------------

namespace {

struct submit_refused : std::runtime_error {
  explicit submit_refused(int n) : std::runtime_error("submit refused"), depth(n) {}
  int depth;
};

/// A pool with a member submit(callable) that refuses every call with a std exception.
struct refusing_pool {
  int attempts = 0;
  template <typename Callable>
  void submit(Callable&&) {
    ++attempts;
    throw submit_refused(64);
  }
};

/// A pool with an API of its own, adapted with offload::executor_traits; its "enqueue" throws
/// a non-std type.
struct legacy_refusing_pool {
  int attempts = 0;
  void enqueue(std::function<void()>) {
    ++attempts;
    throw odd_fault{"legacy full", 2};
  }
};

/// Keeps a copy of the item, then throws: the call must fail now and never run later.
struct keep_then_throw_pool {
  std::vector<std::function<void()>> kept;
  void submit(std::function<void()> item) {
    kept.push_back(item);
    throw submit_refused(1);
  }
};

/// Runs the item inside submit, then throws: the call ran, so its result is what counts.
struct run_then_throw_pool {
  void submit(std::function<void()> item) {
    item();
    throw submit_refused(2);
  }
};

}  // namespace

template <>
struct offload::executor_traits<legacy_refusing_pool> {
  static void submit(legacy_refusing_pool& pool, offload::work_item item) {
    pool.enqueue(std::move(item));
  }
};

namespace {

struct refusal_report {
  int std_depth = 0;
  std::string std_what;
  std::string odd_tag;
  bool both_caught = false;
  std::thread::id resumed_on;
  int next_value = 0;
  std::thread::id next_worker;
  bool next_resumed_on_loop = false;
};

offload::awaitable<void> refused_calls(refusing_pool& a, legacy_refusing_pool& b,
                                       offload::thread_pool& other, std::atomic<int>& ran,
                                       refusal_report& r) {
  auto& loop = offload::get_running_loop();
  auto f = [&ran] {
    ++ran;
    return 1;
  };
  int caught = 0;
  try {
    (void)co_await offload::run_in_executor(a, f);
  } catch (const submit_refused& e) {
    ++caught;
    r.std_depth = e.depth;
    r.std_what = e.what();
  }
  try {
    (void)co_await offload::run_in_executor(b, f);
  } catch (const odd_fault& e) {
    ++caught;
    r.odd_tag = e.tag;
  }
  r.both_caught = caught == 2;
  r.resumed_on = std::this_thread::get_id();
  // The loop is unharmed: a call on another executor works.
  auto g = [] { return std::make_pair(7, std::this_thread::get_id()); };
  auto [value, worker] = co_await offload::run_in_executor(other, g);
  r.next_value = value;
  r.next_worker = worker;
  r.next_resumed_on_loop = loop.get_executor().running_in_this_thread();
}

}  // namespace

TEST_CASE(
    "third-party executor, submit throws: the exception arrives at the co_await "
    "with its type (member submit, executor_traits); f never runs; the loop goes "
    "on",
    "[faults][foreign]") {
  refusing_pool a;
  legacy_refusing_pool b;
  offload::thread_pool other(pool_options("fault-other"));
  offload::event_loop loop;
  std::atomic<int> ran{0};
  refusal_report r;
  loop.run_until_complete(refused_calls(a, b, other, ran, r));
  CHECK(r.both_caught);
  CHECK(r.std_depth == 64);
  CHECK(r.std_what == "submit refused");
  CHECK(r.odd_tag == "legacy full");
  CHECK(a.attempts == 1);
  CHECK(b.attempts == 1);
  CHECK(ran.load() == 0);
  CHECK(r.resumed_on == std::this_thread::get_id());
  CHECK(r.next_value == 7);
  CHECK(r.next_worker != std::this_thread::get_id());
  CHECK(r.next_resumed_on_loop);
  // The loop runs more work after that too.
  auto again = [&]() -> offload::awaitable<int> {
    auto h = [] { return 8; };
    co_return co_await offload::run_in_executor(other, h);
  };
  CHECK(loop.run_until_complete(again()) == 8);
}

TEST_CASE(
    "third-party executor, submit throws, async_run(use_future): the future holds "
    "its exception; f never runs",
    "[faults][foreign][async_run]") {
  std::atomic<int> ran{0};
  auto f = [&ran] {
    ++ran;
    return 1;
  };
  // The refusal completes the call (as any completion would), through the future.
  refusing_pool a;
  std::future<int> fa = offload::async_run(a, f, net::use_future);
  CHECK_THROWS_AS(fa.get(), submit_refused);
  legacy_refusing_pool b;
  std::future<int> fb = offload::async_run(b, f, net::use_future);
  try {
    (void)fb.get();
    FAIL("no exception");
  } catch (const odd_fault& e) {
    CHECK(e.tag == "legacy full");
    CHECK(e.code == 2);
  }
  CHECK(a.attempts == 1);
  CHECK(b.attempts == 1);
  CHECK(ran.load() == 0);
}

namespace {

offload::awaitable<void> keep_then_throw(keep_then_throw_pool& pool, std::atomic<int>& ran,
                                         bool& refused) {
  auto f = [&ran] {
    ++ran;
    return 1;
  };
  try {
    (void)co_await offload::run_in_executor(pool, f);
  } catch (const submit_refused& e) {
    refused = e.depth == 1;
  }
}

offload::awaitable<int> run_then_throw(run_then_throw_pool& pool, std::atomic<int>& ran) {
  auto f = [&ran] {
    ++ran;
    return 6;
  };
  co_return co_await offload::run_in_executor(pool, f);
}

}  // namespace

TEST_CASE(
    "third-party executor keeps a copy, then throws: the awaiter gets the error, "
    "and the kept copy does nothing when run later",
    "[faults][foreign]") {
  keep_then_throw_pool pool;
  std::atomic<int> ran{0};
  bool refused = false;
  offload::event_loop loop;
  loop.run_until_complete(keep_then_throw(pool, ran, refused));
  CHECK(refused);
  REQUIRE(pool.kept.size() == 1);
  pool.kept.front()();  // the pool runs its copy anyway, later, on another thread
  std::thread([&pool] { pool.kept.front()(); }).join();
  pool.kept.clear();
  CHECK(ran.load() == 0);  // the call was answered with the error: it never runs
}

TEST_CASE(
    "third-party executor runs the item, then throws: the call ran, so the "
    "awaiter gets its result",
    "[faults][foreign]") {
  run_then_throw_pool pool;
  std::atomic<int> ran{0};
  offload::event_loop loop;
  CHECK(loop.run_until_complete(run_then_throw(pool, ran)) == 6);
  CHECK(ran.load() == 1);
}

// -- allocation failure ----------------------------------------------------------------------

namespace {

/// One call made with the n-th allocation of its armed stretch failing.
struct attempt {
  long allocations = 0;  // made while armed
  long failed = 0;       // which one failed (0: the call made fewer than n)
  bool bad_alloc = false;
  bool other_error = false;
  std::string other_what;
  bool got_value = false;
  int f_runs = 0;
  bool next_ok = false;  // a call made afterwards (nothing failing) returned its value
  offload::thread_pool_stats before_next;  // the pool right after the failed call
  bool destroyed = false;                  // the loop (and its io_context) went away cleanly
};

/// Warms this thread's cache of call nodes, so the node of the call is not allocated while the
/// injection is armed (that point is swept in tests/test_faults_setup.cpp). Every other
/// allocation of the call is swept. (The frame Asio allocates for the initiation comes from Asio's
/// per-thread recycling cache in these runs, warmed by the loop starting the coroutine, so it is
/// not among the points: when it is allocated, it is at the call expression, before any
/// submission.)
void seed_node_cache() {
  auto& cache = offload::detail::block_cache::local();
  for (std::size_t size = cache.step; size <= cache.max_block; size += cache.step) {
    cache.deallocate(::operator new(size), size);
  }
}

/// The call under test: f takes a string long enough to be copied to the heap at the call site.
template <typename Target>
offload::awaitable<void> faulty_call(Target& target, long n, attempt& out) {
  std::atomic<int> counter{0};
  auto f = [&counter](const std::string& s) {
    ++counter;
    return static_cast<int>(s.size());
  };
  const std::string arg(100, 'x');
  alloc_fault::arm(n);
  try {
    if constexpr (std::is_same_v<std::remove_cv_t<Target>, offload::default_executor_t>) {
      out.got_value = co_await offload::to_thread(f, arg) == 100;
    } else {
      out.got_value = co_await offload::run_in_executor(target, f, arg) == 100;
    }
  } catch (const std::bad_alloc&) {
    out.bad_alloc = true;
  } catch (const std::exception& e) {
    out.other_error = true;
    out.other_what = e.what();
  } catch (...) {
    out.other_error = true;
  }
  out.allocations = alloc_fault::disarm();
  out.failed = alloc_fault::failed;
  out.f_runs = counter.load();
}

template <typename Target>
offload::awaitable<void> next_call(Target& target, attempt& out) {
  auto g = [] { return 3; };
  if constexpr (std::is_same_v<std::remove_cv_t<Target>, offload::default_executor_t>) {
    out.next_ok = co_await offload::to_thread(g) == 3;
  } else {
    out.next_ok = co_await offload::run_in_executor(target, g) == 3;
  }
}

/// Runs `one(n)` for n = 1, 2, ... each on a fresh thread (cold per-thread caches: the same
/// allocations every time) until the call makes fewer than n allocations: by then every
/// allocation of the call has failed once. The last entry is the clean run.
template <typename One>
std::vector<attempt> sweep(One one) {
  std::vector<attempt> results;
  for (long n = 1; n <= 256; ++n) {
    attempt a;
    std::thread([&] { a = one(n); }).join();
    results.push_back(a);
    if (a.failed == 0) break;
  }
  return results;
}

void check_sweep(const std::vector<attempt>& results, const char* path) {
  INFO("path: " << path);
  REQUIRE_FALSE(results.empty());
  const attempt& clean = results.back();
  REQUIRE(clean.failed == 0);  // the sweep ended: n went past the last allocation
  CHECK(clean.got_value);
  CHECK(clean.f_runs == 1);
  CHECK_FALSE(clean.bad_alloc);
  CHECK(clean.destroyed);
  const long points = static_cast<long>(results.size()) - 1;
  CHECK(points == clean.allocations);  // one failing run per allocation of the call
  WARN(path << ": " << points << " allocation points swept");
  for (std::size_t i = 0; i + 1 < results.size(); ++i) {
    const attempt& a = results[i];
    INFO("allocation #" << i + 1 << " of " << points << " fails");
    CHECK(a.failed == static_cast<long>(i) + 1);
    INFO(a.other_what);
    CHECK(a.bad_alloc);  // std::bad_alloc at the co_await
    CHECK_FALSE(a.other_error);
    CHECK_FALSE(a.got_value);
    CHECK(a.f_runs == 0);  // nothing half-submitted: f never ran
    CHECK(a.before_next.queued == 0);
    CHECK(a.before_next.running == 0);
    CHECK(a.before_next.completed == 0);
    CHECK(a.next_ok);    // the pool and the loop go on
    CHECK(a.destroyed);  // and the io_context is destroyed cleanly afterwards
  }
}

attempt to_thread_attempt(long n) {
  attempt out;
  seed_node_cache();
  {
    offload::event_loop loop;
    loop.set_spin(std::chrono::nanoseconds::zero());  // only the worker posts the hand-back
    const auto target = offload::default_executor;
    // The default executor is created lazily, inside the call: its creation is swept too.
    loop.run_until_complete(faulty_call(target, n, out));
    out.before_next = loop.default_executor_pool().stats();
    loop.run_until_complete(next_call(target, out));
  }
  out.destroyed = true;
  return out;
}

attempt pool_attempt(long n) {
  attempt out;
  seed_node_cache();
  // A prefix past the short-string buffer: naming the new thread allocates too.
  offload::thread_pool pool(pool_options("fault-injection-pool"));
  {
    offload::event_loop loop;
    loop.set_spin(std::chrono::nanoseconds::zero());
    loop.run_until_complete(faulty_call(pool, n, out));
    out.before_next = pool.stats();
    loop.run_until_complete(next_call(pool, out));
  }
  out.destroyed = true;
  return out;
}

attempt asio_pool_attempt(long n) {
  attempt out;
  seed_node_cache();
  net::thread_pool apool(1);
  {
    offload::event_loop loop;
    loop.set_spin(std::chrono::nanoseconds::zero());
    loop.run_until_complete(faulty_call(apool, n, out));
    loop.run_until_complete(next_call(apool, out));
  }
  out.destroyed = true;
  return out;
}

/// async_run(use_future) from a thread with no loop: the initiation runs inside async_run, so
/// the node's allocation is swept here too. bad_alloc comes out of async_run, or out of the
/// future when the pool could not start a thread for the queued call.
attempt future_attempt(long n) {
  attempt out;
  offload::thread_pool pool(pool_options("fault-injection-future"));
  std::atomic<int> runs{0};
  auto f = [&runs, arg = std::string(100, 'y')] {
    ++runs;
    return static_cast<int>(arg.size());
  };
  std::future<int> fut;
  alloc_fault::arm(n);
  try {
    fut = offload::async_run(pool, f, net::use_future);
  } catch (const std::bad_alloc&) {
    out.bad_alloc = true;
  } catch (...) {
    out.other_error = true;
  }
  out.allocations = alloc_fault::disarm();
  out.failed = alloc_fault::failed;
  if (fut.valid()) {
    try {
      out.got_value = fut.get() == 100;
    } catch (const std::bad_alloc&) {
      out.bad_alloc = true;
    } catch (...) {
      out.other_error = true;
    }
  }
  out.f_runs = runs.load();
  out.before_next = pool.stats();
  auto g = [] { return 3; };
  out.next_ok = offload::async_run(pool, g, net::use_future).get() == 3;
  out.destroyed = true;
  return out;
}

}  // namespace

TEST_CASE(
    "allocation failure injection: off by default, it fails exactly the n-th "
    "allocation of the armed thread, once",
    "[faults][alloc]") {
  OFFLOAD_TEST_NEEDS_NEW_REPLACEMENT();
  alloc_fault::arm(2);
  int* a = new int(1);
  bool threw = false;
  try {
    delete new int(2);
  } catch (const std::bad_alloc&) {
    threw = true;
  }
  int* c = new int(3);  // only the one fails
  CHECK(alloc_fault::disarm() == 3);
  CHECK(threw);
  CHECK(alloc_fault::failed == 2);
  delete a;
  delete c;

  // Another thread is unaffected while this one is armed.
  std::promise<void> go;
  std::future<void> going = go.get_future();
  std::promise<bool> result;
  std::future<bool> other_threw = result.get_future();
  std::thread other([&] {
    going.wait();
    bool t = false;
    try {
      delete new int(4);
    } catch (...) {
      t = true;
    }
    result.set_value(t);
  });
  alloc_fault::arm(1);
  go.set_value();
  const bool t = other_threw.get();
  CHECK(alloc_fault::disarm() == 0);  // nothing above allocated on this thread
  other.join();
  CHECK_FALSE(t);
}

TEST_CASE(
    "to_thread, allocation failure at each allocation point: bad_alloc at the "
    "co_await, f never runs, the pool and loop stay usable",
    "[faults][alloc]") {
  OFFLOAD_TEST_NEEDS_NEW_REPLACEMENT();
  check_sweep(sweep(to_thread_attempt), "to_thread (default executor, created lazily)");
}

TEST_CASE(
    "run_in_executor(thread_pool&), allocation failure at each point: bad_alloc "
    "at the co_await, no thread is left half-started, the pool stays usable",
    "[faults][alloc]") {
  OFFLOAD_TEST_NEEDS_NEW_REPLACEMENT();
  const auto results = sweep(pool_attempt);
  check_sweep(results, "run_in_executor(thread_pool&), the pool's first thread started by it");
  // A failed call never got as far as a running thread (a thread that could not be created
  // is one of the swept points): the pool started none.
  for (std::size_t i = 0; i + 1 < results.size(); ++i) CHECK(results[i].before_next.workers == 0);
}

TEST_CASE(
    "run_in_executor(asio::thread_pool&), allocation failure at each point: "
    "bad_alloc at the co_await, f never runs, the loop stays usable",
    "[faults][alloc]") {
  OFFLOAD_TEST_NEEDS_NEW_REPLACEMENT();
  check_sweep(sweep(asio_pool_attempt), "run_in_executor(asio::thread_pool&)");
}

TEST_CASE(
    "async_run(use_future), allocation failure at each point: bad_alloc reaches "
    "the caller, f never runs, the pool stays usable",
    "[faults][alloc][async_run]") {
  OFFLOAD_TEST_NEEDS_NEW_REPLACEMENT();
  const auto results = sweep(future_attempt);
  check_sweep(results, "async_run(thread_pool&, use_future)");
}

// -- a pool initializer that throws; a thread that cannot be created ---------------------------

namespace {

struct init_fault : std::runtime_error {
  explicit init_fault(int n) : std::runtime_error("initializer failed"), attempt(n) {}
  int attempt;
};

struct init_report {
  bool caught = false;
  int failed_attempt = 0;
  std::string what;
  int next_value = 0;
  std::string next_thread;
};

offload::awaitable<void> call_through_failing_initializer(offload::thread_pool& pool,
                                                          std::atomic<int>& ran, init_report& r) {
  auto f = [&ran] {
    ++ran;
    return 1;
  };
  try {
    (void)co_await offload::run_in_executor(pool, f);
  } catch (const init_fault& e) {
    r.caught = true;
    r.failed_attempt = e.attempt;
    r.what = e.what();
  }
  auto g = [] { return std::make_pair(2, this_thread_name()); };
  auto [value, name] = co_await offload::run_in_executor(pool, g);
  r.next_value = value;
  r.next_thread = name;
}

}  // namespace

TEST_CASE(
    "pool initializer throws: the awaiter of the call its thread was started for "
    "gets the initializer's exception with its type; the next call starts a new "
    "thread",
    "[faults][initializer]") {
  std::atomic<int> inits{0};
  offload::thread_pool_options o = pool_options("fault-init");
  o.initializer = [&inits] {
    const int n = ++inits;
    if (n == 1) throw init_fault(n);  // only the first thread's
  };
  offload::thread_pool pool(std::move(o));
  offload::event_loop loop;
  std::atomic<int> ran{0};
  init_report r;
  loop.run_until_complete(call_through_failing_initializer(pool, ran, r));
  CHECK(r.caught);
  CHECK(r.failed_attempt == 1);
  CHECK(r.what == "initializer failed");
  CHECK(ran.load() == 0);  // f of the failed call never ran
  CHECK(r.next_value == 2);
  CHECK(r.next_thread == "fault-init-2");  // a new thread, initialized this time
  CHECK(inits.load() == 2);
  REQUIRE(eventually([&] { return pool.stats().completed == 1; }));
  const offload::thread_pool_stats s = pool.stats();
  CHECK(s.workers == 1);
  CHECK(s.queued == 0);
}

TEST_CASE(
    "pool initializer always throws a non-std type: every call fails with it, "
    "none hangs, and the pool shuts down cleanly",
    "[faults][initializer]") {
  std::atomic<int> inits{0};
  offload::thread_pool_options o = pool_options("fault-init-bad", 2);
  o.initializer = [&inits] {
    ++inits;
    throw 13;
  };
  offload::thread_pool pool(std::move(o));
  std::atomic<int> ran{0};
  auto f = [&ran] {
    ++ran;
    return 1;
  };
  // Kept until the threads are joined: this thread drops the last reference to each result
  // (see throwing_futures).
  std::vector<std::shared_future<int>> futures;
  for (int i = 0; i < 3; ++i) {
    INFO("call " << i);
    futures.push_back(offload::async_run(pool, f, net::use_future).share());
    const std::shared_future<int>& fut = futures.back();
    try {
      (void)fut.get();
      FAIL("no exception");
    } catch (int v) {
      CHECK(v == 13);
    }
    // The failed thread has gone before the next call: that one starts its own.
    REQUIRE(eventually([&] { return pool.stats().workers == 0; }));
  }
  CHECK(ran.load() == 0);
  CHECK(inits.load() == 3);
  const offload::thread_pool_stats s = pool.stats();
  CHECK(s.queued == 0);
  CHECK(s.completed == 0);
  pool.shutdown(true);  // joins the threads that failed: returns
  CHECK(pool.is_shutdown());
}

TEST_CASE("pool initializer fails in one of two threads: the calls run on the other one",
          "[faults][initializer]") {
  offload::thread_pool_options o = pool_options("init-one", 2);
  o.min_workers = 2;
  std::atomic<int> failures{0};
  o.initializer = [&failures] {
    if (this_thread_name() == "init-one-1") {
      ++failures;
      throw init_fault(1);
    }
  };
  offload::thread_pool pool(std::move(o));
  auto settled = [&] {
    const offload::thread_pool_stats s = pool.stats();
    return s.workers == 1 && s.idle == 1 && failures.load() == 1;
  };
  const bool ok = eventually(settled);
  {
    const offload::thread_pool_stats s = pool.stats();
    INFO("workers " << s.workers << " idle " << s.idle << " failures " << failures.load());
    REQUIRE(ok);
  }
  auto where = [] { return this_thread_name(); };
  for (int i = 0; i < 3; ++i) {
    // With the survivor idle, a call goes to it (an idle thread is never passed over for a
    // new one).
    const bool idle_again = eventually(settled);
    const offload::thread_pool_stats s = pool.stats();
    INFO("call " << i << ": workers " << s.workers << " idle " << s.idle << " failures "
                 << failures.load());
    REQUIRE(idle_again);
    CHECK(offload::async_run(pool, where, net::use_future).get() == "init-one-2");
  }
  CHECK(pool.stats().workers == 1);
  CHECK(failures.load() == 1);
}
