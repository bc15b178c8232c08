// offload::thread_pool (asyncio's ThreadPoolExecutor): sizing, keep-alive, names, initializer,
// the bounded queue, shutdown in all its forms, the destructor, stats() and running_calls().
//
// Distributed under the Boost Software License, Version 1.0.
#include "catch.hpp"
#include "loop_helpers.hpp"
#include "probes.hpp"

#include <offload/errors.hpp>
#include <offload/event_loop.hpp>
#include <offload/loop_thread.hpp>
#include <offload/node_cache.hpp>
#include <offload/thread_pool.hpp>
#include <offload/threadsafe.hpp>
#include <offload/to_thread.hpp>

#include <algorithm>
#include <atomic>
#include <future>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace net = offload::net;
using namespace std::chrono_literals;
using offload_test::contains;
using offload_test::eventually;
using offload_test::submit_plain;
using offload_test::this_thread_name;

offload::thread_pool_options sized(std::size_t max_workers, std::size_t min_workers = 0) {
  offload::thread_pool_options o;
  o.max_workers = max_workers;
  o.min_workers = min_workers;
  return o;
}

/// What a future's get() throws, or nullptr if it returns.
template <typename T>
std::exception_ptr exception_of(std::future<T>& f) {
  try {
    f.get();
  } catch (...) {
    return std::current_exception();
  }
  return nullptr;
}

// -- sizing ----------------------------------------------------------------------------------

TEST_CASE("thread_pool runs at most max_workers calls at once; the rest wait in its queue",
          "[thread_pool]") {
  offload::thread_pool pool(sized(3));
  offload_test::gate g;
  std::atomic<int> concurrent{0};
  std::atomic<int> most_concurrent{0};
  std::vector<std::future<int>> results;
  for (int i = 0; i < 8; ++i) {
    results.push_back(submit_plain(pool, [&, i] {
      const int now = ++concurrent;
      int seen = most_concurrent.load();
      while (now > seen && !most_concurrent.compare_exchange_weak(seen, now)) {
      }
      g.wait();
      --concurrent;
      return i;
    }));
  }
  // A worker counts as running once it has taken a call, before the call's body has begun:
  // wait for the bodies too, or the gate may open before the third is inside.
  REQUIRE(eventually([&] { return concurrent.load() == 3 && pool.stats().running == 3; }));
  const offload::thread_pool_stats s = pool.stats();
  CHECK(s.workers == 3);
  CHECK(s.peak_workers == 3);
  CHECK(s.running == 3);
  CHECK(s.queued == 5);
  CHECK(s.idle == 0);
  g.open();
  for (int i = 0; i < 8; ++i) CHECK(results[i].get() == i);
  CHECK(most_concurrent.load() == 3);
  CHECK(pool.stats().peak_workers == 3);
  CHECK(eventually([&] { return pool.stats().completed == 8; }));
}

TEST_CASE("thread_pool starts min_workers threads at construction", "[thread_pool]") {
  offload::thread_pool pool(sized(4, 2));
  offload::thread_pool_stats s = pool.stats();
  CHECK(s.workers == 2);
  CHECK(s.peak_workers == 2);
  CHECK(s.running == 0);
  CHECK(s.completed == 0);
  CHECK(eventually([&] { return pool.stats().idle == 2; }));  // they wait for work

  offload::thread_pool lazy(sized(4));
  CHECK(lazy.stats().workers == 0);  // no minimum: no thread until there is work
}

TEST_CASE("thread_pool lets idle threads above min_workers go after keep_alive", "[thread_pool]") {
  offload::thread_pool_options o = sized(4, 1);
  o.keep_alive = 50ms;
  offload::thread_pool pool(std::move(o));
  offload_test::rendezvous all(4);
  std::vector<std::future<bool>> burst;
  for (int i = 0; i < 4; ++i) {
    burst.push_back(submit_plain(pool, [&all] { return all.arrive_and_wait(); }));
  }
  for (auto& f : burst) CHECK(f.get());  // four calls ran at once: four threads
  CHECK(pool.stats().peak_workers == 4);

  CHECK(eventually([&] { return pool.stats().workers == 1; }));
  // Never below the minimum, however long it idles.
  std::this_thread::sleep_for(300ms);
  CHECK(pool.stats().workers == 1);
  // And the one left still works.
  auto after = submit_plain(pool, [] { return 5; });
  CHECK(after.get() == 5);
}

// -- names and initializer -------------------------------------------------------------------

TEST_CASE("thread_pool names its threads <prefix>-N", "[thread_pool]") {
  offload::thread_pool_options o = sized(2);
  o.thread_name_prefix = "mypfx";
  offload::thread_pool pool(std::move(o));
  offload_test::rendezvous both(2);
  auto a = submit_plain(pool, [&both] {
    both.arrive_and_wait();
    return this_thread_name();
  });
  auto b = submit_plain(pool, [&both] {
    both.arrive_and_wait();
    return this_thread_name();
  });
  const std::set<std::string> names{a.get(), b.get()};
  CHECK(names == std::set<std::string>{"mypfx-1", "mypfx-2"});

  // Linux keeps 15 characters of a name: the tail, which holds the number.
  offload::thread_pool_options lo = sized(1);
  lo.thread_name_prefix = "a-very-long-prefix";
  offload::thread_pool long_pool(std::move(lo));
  const std::string full = "a-very-long-prefix-1";
  const std::string shown = submit_plain(long_pool, [] { return this_thread_name(); }).get();
#if defined(__linux__)
  CHECK(shown == full.substr(full.size() - 15));
#else
  CHECK(shown == full);
#endif
}

namespace init_probe {
std::mutex mutex;
std::vector<std::thread::id> ids;
thread_local bool initialized = false;
}  // namespace init_probe

TEST_CASE("thread_pool runs the initializer once in each new thread, before its first call",
          "[thread_pool]") {
  init_probe::ids.clear();
  offload::thread_pool_options o = sized(3);
  o.initializer = [] {
    std::lock_guard<std::mutex> lock(init_probe::mutex);
    init_probe::ids.push_back(std::this_thread::get_id());
    init_probe::initialized = true;
  };
  offload::thread_pool pool(std::move(o));
  offload_test::rendezvous all(3);
  std::vector<std::future<std::pair<std::thread::id, bool>>> calls;
  for (int i = 0; i < 3; ++i) {
    calls.push_back(submit_plain(pool, [&all] {
      all.arrive_and_wait();
      return std::make_pair(std::this_thread::get_id(), init_probe::initialized);
    }));
  }
  std::set<std::thread::id> call_threads;
  for (auto& c : calls) {
    const auto [id, initialized] = c.get();
    CHECK(initialized);
    call_threads.insert(id);
  }
  // More calls on the same threads do not run it again.
  for (int i = 0; i < 5; ++i)
    CHECK(submit_plain(pool, [] { return init_probe::initialized; }).get());

  std::vector<std::thread::id> ids;
  {
    std::lock_guard<std::mutex> lock(init_probe::mutex);
    ids = init_probe::ids;
  }
  const std::set<std::thread::id> distinct(ids.begin(), ids.end());
  CHECK(ids.size() == 3);
  CHECK(distinct.size() == 3);
  CHECK(distinct == call_threads);
  CHECK(pool.stats().workers == 3);
}

// -- the bounded queue -----------------------------------------------------------------------

offload::thread_pool_options bounded() {
  offload::thread_pool_options o = sized(1);
  o.max_queue = 2;
  return o;
}

struct order_log {
  std::mutex mutex;
  std::vector<int> order;
  void add(int i) {
    std::lock_guard<std::mutex> lock(mutex);
    order.push_back(i);
  }
};

struct bounded_outcome {
  int values[4] = {-1, -1, -1, -1};
  int failures = 0;
  bool third_done_before_release = false;
  std::size_t queued_while_waiting = 0;
};

offload::awaitable<void> call_logged(offload::thread_pool& pool, int i, offload_test::gate* g,
                                     order_log& log, bounded_outcome& out,
                                     offload_test::countdown& done) {
  auto f = [i, g, &log] {
    if (g != nullptr) g->wait();
    log.add(i);
    return i * 10;
  };
  try {
    out.values[i] = co_await offload::run_in_executor(pool, f);
  } catch (...) {
    ++out.failures;
  }
  done.done();
}

offload::awaitable<void> bounded_queue_scenario(offload::thread_pool& pool, offload_test::gate& g,
                                                order_log& log, bounded_outcome& out) {
  auto ex = co_await net::this_coro::executor;
  offload_test::countdown done(ex, 4);
  net::co_spawn(ex, call_logged(pool, 0, &g, log, out, done), net::detached);
  const bool ok1 = co_await offload_test::wait_until([&] { return pool.stats().running == 1; });
  REQUIRE(ok1);
  net::co_spawn(ex, call_logged(pool, 1, nullptr, log, out, done), net::detached);
  net::co_spawn(ex, call_logged(pool, 2, nullptr, log, out, done), net::detached);
  const bool ok2 = co_await offload_test::wait_until([&] { return pool.stats().queued == 2; });
  REQUIRE(ok2);

  // The queue is full: this coroutine's call waits for room; the loop does not block.
  net::co_spawn(ex, call_logged(pool, 3, nullptr, log, out, done), net::detached);
  const bool ok3 = co_await offload_test::wait_until([&] { return pool.stats().queued == 3; });
  REQUIRE(ok3);
  out.queued_while_waiting = pool.stats().queued;
  out.third_done_before_release = done.remaining() < 4;
  g.open();  // from the loop's own thread: it was free all along
  co_await done.wait();
}

TEST_CASE("thread_pool with a full bounded queue: a coroutine's submission waits for room",
          "[thread_pool][queue]") {
  offload::thread_pool pool(bounded());
  offload_test::gate g;
  order_log log;
  bounded_outcome out;
  offload::run(bounded_queue_scenario(pool, g, log, out));
  CHECK(out.failures == 0);
  CHECK_FALSE(out.third_done_before_release);
  CHECK(out.queued_while_waiting == 3);
  for (int i = 0; i < 4; ++i) CHECK(out.values[i] == i * 10);
  CHECK(log.order == std::vector<int>{0, 1, 2, 3});  // the waiting call keeps its place
}

TEST_CASE("thread_pool with a full bounded queue: a submitter with no loop gets queue_full",
          "[thread_pool][queue][errors]") {
  offload::thread_pool pool(bounded());
  offload_test::gate g;
  auto running = submit_plain(pool, [&g] { return g.wait(); });
  REQUIRE(eventually([&] { return pool.stats().running == 1; }));
  auto q1 = submit_plain(pool, [] { return true; });
  auto q2 = submit_plain(pool, [] { return true; });
  REQUIRE(pool.stats().queued == 2);

  bool ran = false;
  bool called = false;
  std::error_code code;
  std::string what;
  try {
    offload::async_run(
        pool,
        [&ran] {
          ran = true;
          return 1;
        },
        [&called](std::exception_ptr, int) { called = true; });
  } catch (const std::system_error& e) {
    code = e.code();
    what = e.what();
  }
  CHECK(code == offload::errc::queue_full);
  CHECK_THAT(what, contains("max_queue"));  // says what to do
  CHECK(pool.stats().queued == 2);

  std::error_code future_code;
  try {
    auto never = offload::async_run(
        pool, [] { return 1; }, net::use_future);
    (void)never;
  } catch (const std::system_error& e) {
    future_code = e.code();
  }
  CHECK(future_code == offload::errc::queue_full);

  g.open();
  CHECK(running.get());
  CHECK(q1.get());
  CHECK(q2.get());
  CHECK_FALSE(ran);
  CHECK_FALSE(called);
}

// -- shutdown --------------------------------------------------------------------------------

struct refused_outcome {
  bool ran = false;
  std::error_code code;
  std::string what;
};

offload::awaitable<void> call_after_shutdown(offload::thread_pool& pool, refused_outcome& out) {
  auto f = [&out] {
    out.ran = true;
    return 1;
  };
  try {
    (void)co_await offload::run_in_executor(pool, f);
  } catch (const std::system_error& e) {
    out.code = e.code();
    out.what = e.what();
  }
}

TEST_CASE("thread_pool::shutdown() refuses new work with executor_shutdown",
          "[thread_pool][shutdown]") {
  offload::thread_pool pool(sized(2));
  CHECK(submit_plain(pool, [] { return 1; }).get() == 1);
  pool.shutdown();
  CHECK(pool.is_shutdown());
  CHECK(pool.stats().workers == 0);

  // At the co_await.
  refused_outcome out;
  offload::run(call_after_shutdown(pool, out));
  CHECK(out.code == offload::errc::executor_shutdown);
  CHECK_FALSE(out.ran);
  CHECK_THAT(out.what, contains("shut down"));

  // From a thread with no loop: at the call.
  bool ran = false;
  std::error_code plain;
  try {
    auto never = submit_plain(pool, [&ran] { ran = true; });
    never.get();
  } catch (const std::system_error& e) {
    plain = e.code();
  }
  CHECK(plain == offload::errc::executor_shutdown);
  CHECK_FALSE(ran);

  // Through use_future: at the call or at get(), but executor_shutdown either way.
  std::error_code future_code;
  try {
    auto fut = offload::async_run(
        pool, [&ran] { ran = true; }, net::use_future);
    fut.get();
  } catch (const std::system_error& e) {
    future_code = e.code();
  }
  CHECK(future_code == offload::errc::executor_shutdown);
  CHECK_FALSE(ran);
}

offload::awaitable<int> await_on(offload::thread_pool& pool, int i, offload_test::gate* g,
                                 std::atomic<int>& ran, std::atomic<bool>* finished) {
  auto f = [i, g, &ran, finished] {
    if (g != nullptr) g->wait();
    ++ran;
    if (finished != nullptr) *finished = true;
    return i;
  };
  co_return co_await offload::run_in_executor(pool, f);
}

TEST_CASE(
    "thread_pool::shutdown(true, true) cancels queued calls (operation_aborted) and lets "
    "the running one finish",
    "[thread_pool][shutdown]") {
  offload::thread_pool pool(sized(1));
  offload_test::gate g;
  std::atomic<int> ran_blocker{0};
  std::atomic<int> ran_queued{0};
  std::atomic<bool> blocker_finished{false};
  offload_test::loop_on_thread lt;
  auto blocker =
      net::co_spawn(lt.loop.get_executor(), await_on(pool, 100, &g, ran_blocker, &blocker_finished),
                    net::use_future);
  REQUIRE(eventually([&] { return pool.stats().running == 1; }));
  std::vector<std::future<int>> queued;
  for (int i = 0; i < 3; ++i) {
    queued.push_back(net::co_spawn(
        lt.loop.get_executor(), await_on(pool, i, nullptr, ran_queued, nullptr), net::use_future));
  }
  REQUIRE(eventually([&] { return pool.stats().queued == 3; }));

  // Let the running call go only once shutdown has taken the queue away.
  std::thread releaser([&] {
    eventually([&] { return pool.stats().queued == 0; });
    g.open();
  });
  pool.shutdown(true, true);
  const bool finished_at_return = blocker_finished.load();
  releaser.join();

  CHECK(finished_at_return);  // wait = true: returned after the running call
  CHECK(blocker.get() == 100);
  for (auto& q : queued) CHECK(offload_test::is_cancelled(exception_of(q)));
  CHECK(ran_queued.load() == 0);
  CHECK(ran_blocker.load() == 1);
}

/// A call running on `pool` (counted running by the time the constructor returns) until its
/// gate opens; then it returns `value`.
struct gated_call {
  gated_call(offload::thread_pool& pool, int value)
      : result(submit_plain(pool, [this, value] {
          gate.wait();
          finished = true;
          return value;
        })) {
    REQUIRE(eventually([&] { return pool.stats().running == 1; }));
  }
  offload_test::gate gate;
  std::atomic<bool> finished{false};
  std::future<int> result;
};

TEST_CASE("thread_pool::shutdown(true) returns after the running calls finished",
          "[thread_pool][shutdown]") {
  offload::thread_pool pool(sized(2));
  gated_call call(pool, 9);
  std::thread releaser([&] {
    eventually([&] { return pool.is_shutdown(); });
    std::this_thread::sleep_for(20ms);  // shutdown is now waiting (or about to)
    call.gate.open();
  });
  pool.shutdown(true);
  const bool finished_at_return = call.finished.load();
  releaser.join();
  CHECK(finished_at_return);
  CHECK(pool.stats().workers == 0);
  CHECK(call.result.get() == 9);
}

TEST_CASE("thread_pool::shutdown(false) returns at once while a call runs",
          "[thread_pool][shutdown]") {
  offload::thread_pool pool(sized(2));
  gated_call call(pool, 4);
  pool.shutdown(false);
  CHECK(pool.is_shutdown());
  CHECK_FALSE(call.finished.load());  // the gate is still closed: shutdown did not wait for it
  call.gate.open();
  CHECK(call.result.get() == 4);  // the running call still completes
  pool.join();
  CHECK(pool.stats().workers == 0);
}

struct deadlock_outcome {
  std::error_code code;
  std::string what;
  bool open_after = false;
  int after = 0;
  bool shut_from_worker = false;
};

offload::awaitable<void> shutdown_from_worker(offload::thread_pool& pool, deadlock_outcome& out) {
  auto wait_for_myself = [&pool] {
    pool.shutdown();
    return 1;
  };
  try {
    (void)co_await offload::run_in_executor(pool, wait_for_myself);
  } catch (const std::system_error& e) {
    out.code = e.code();
    out.what = e.what();
  }
  out.open_after = !pool.is_shutdown();
  out.after = co_await offload::run_in_executor(pool, [] { return 5; });
  // Without waiting, a worker may shut its own pool down.
  auto no_wait = [&pool] {
    pool.shutdown(false);
    return pool.is_shutdown();
  };
  out.shut_from_worker = co_await offload::run_in_executor(pool, no_wait);
}

TEST_CASE(
    "thread_pool::shutdown() from one of its own workers throws would_deadlock there, and "
    "it arrives at the co_await",
    "[thread_pool][shutdown][errors]") {
  offload::thread_pool pool(sized(2));
  deadlock_outcome out;
  offload::run(shutdown_from_worker(pool, out));
  CHECK(out.code == offload::errc::would_deadlock);
  CHECK_THAT(out.what, contains("shutdown(false)"));  // says what to do
  CHECK(out.open_after);                              // the failed shutdown changed nothing
  CHECK(out.after == 5);
  CHECK(out.shut_from_worker);
  CHECK(pool.is_shutdown());
}

TEST_CASE("thread_pool's destructor runs every queued call and every awaiter gets its value",
          "[thread_pool][shutdown]") {
  std::optional<offload::thread_pool> pool(std::in_place, sized(1));
  offload_test::gate g;
  std::atomic<int> ran{0};
  offload_test::loop_on_thread lt;
  std::vector<std::future<int>> calls;
  calls.push_back(
      net::co_spawn(lt.loop.get_executor(), await_on(*pool, 0, &g, ran, nullptr), net::use_future));
  REQUIRE(eventually([&] { return pool->stats().running == 1; }));
  for (int i = 1; i <= 5; ++i) {
    calls.push_back(net::co_spawn(lt.loop.get_executor(), await_on(*pool, i, nullptr, ran, nullptr),
                                  net::use_future));
  }
  REQUIRE(eventually([&] { return pool->stats().queued == 5; }));

  std::thread releaser([&] {
    eventually([&] { return pool->is_shutdown(); });
    g.open();
  });
  pool.reset();  // = shutdown(true): queued calls still run
  const int ran_at_return = ran.load();
  releaser.join();
  CHECK(ran_at_return == 6);
  for (int i = 0; i <= 5; ++i) CHECK(calls[i].get() == i);
}

// -- stats and running_calls -----------------------------------------------------------------

offload::awaitable<int> run_many(offload::thread_pool& pool, int n) {
  int sum = 0;
  for (int i = 0; i < n; ++i) sum += co_await offload::run_in_executor(pool, [i] { return i; });
  co_return sum;
}

TEST_CASE("thread_pool::stats() counts completed calls and shows the pool idle after work",
          "[thread_pool][stats]") {
  offload::thread_pool pool(sized(2));
  CHECK(pool.stats().completed == 0);
  CHECK(offload::run(run_many(pool, 10)) == 45);
  CHECK(eventually([&] { return pool.stats().completed == 10; }));
  CHECK(eventually([&] {
    const auto s = pool.stats();
    return s.running == 0 && s.queued == 0 && s.workers >= 1 && s.idle == s.workers;
  }));
  const auto s = pool.stats();
  CHECK(s.workers <= 2);
  CHECK(s.peak_workers >= s.workers);
  CHECK(s.completed == 10);
}

struct slow_query {
  offload_test::gate* g;
  std::atomic<bool>* started;
  std::thread::id* where;
  bool operator()() const {
    *where = std::this_thread::get_id();
    *started = true;
    return g->wait();
  }
};

TEST_CASE(
    "thread_pool::running_calls() reports a blocked call: its thread, callable type and "
    "how long it has run",
    "[thread_pool][stats]") {
  offload::thread_pool_options o = sized(2);
  o.thread_name_prefix = "rc";
  offload::thread_pool pool(std::move(o));
  CHECK(pool.running_calls().empty());
  offload_test::gate g;
  std::atomic<bool> started{false};
  std::thread::id where;
  auto call = submit_plain(pool, slow_query{&g, &started, &where});
  REQUIRE(eventually([&] { return started.load(); }));
  // Let it run a while: the pool may time calls with a coarse clock (a few ms per tick).
  std::this_thread::sleep_for(30ms);

  const std::vector<offload::running_call> calls = pool.running_calls();
  REQUIRE(calls.size() == 1);
  CHECK(calls[0].thread == where);
  CHECK(calls[0].thread_name == "rc-1");
  CHECK_FALSE(calls[0].callable.empty());
  CHECK_THAT(calls[0].callable, contains("slow_query"));
  CHECK(calls[0].running_for >= 10ms);

  g.open();
  CHECK(call.get());
  CHECK(eventually([&] { return pool.running_calls().empty(); }));
}

// -- calls made in one loop step (published in groups) ------------------------------------------

TEST_CASE("a burst of calls made in one loop step starts in the order it was made",
          "[thread_pool][batch]") {
  offload::thread_pool pool(sized(1));
  offload::event_loop loop;
  auto ex = loop.get_executor();
  constexpr int n = 1000;  // several groups, and a remainder published when the step ends
  std::vector<int> started;
  std::mutex m;
  int done = 0;
  loop.call_soon([&] {
    for (int i = 0; i < n; ++i) {
      auto f = [&, i] {
        std::lock_guard<std::mutex> lock(m);
        started.push_back(i);
        return i;
      };
      offload::async_run(pool, std::move(f), net::bind_executor(ex, [&](std::exception_ptr e, int) {
                           CHECK_FALSE(e);
                           if (++done == n) loop.stop();
                         }));
    }
  });
  loop.run_forever();
  REQUIRE(started.size() == static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) REQUIRE(started[static_cast<std::size_t>(i)] == i);
}

TEST_CASE("the first call of a loop step starts while the step still runs",
          "[thread_pool][batch]") {
  offload::thread_pool pool(sized(1));
  offload::event_loop loop;
  auto ex = loop.get_executor();
  std::atomic<bool> ran{false};
  bool seen_during_step = false;
  loop.call_soon([&] {
    offload::async_run(
        pool, [&] { ran = true; },
        net::bind_executor(ex, [&](std::exception_ptr) { loop.stop(); }));
    seen_during_step = eventually([&] { return ran.load(); });
  });
  loop.run_forever();
  CHECK(seen_during_step);
}

TEST_CASE("calls to two pools made in one loop step each run on their own pool",
          "[thread_pool][batch]") {
  offload::thread_pool_options oa = sized(1);
  oa.thread_name_prefix = "pa";
  offload::thread_pool_options ob = sized(1);
  ob.thread_name_prefix = "pb";
  offload::thread_pool a(std::move(oa));
  offload::thread_pool b(std::move(ob));
  offload::event_loop loop;
  auto ex = loop.get_executor();
  constexpr int n = 300;
  int done = 0;
  int on_a = 0;
  int on_b = 0;
  loop.call_soon([&] {
    for (int i = 0; i < n; ++i) {
      auto handler = net::bind_executor(ex, [&, i](std::exception_ptr e, std::string name) {
        CHECK_FALSE(e);
        (i % 2 == 0 ? on_a : on_b) += name == (i % 2 == 0 ? "pa-1" : "pb-1") ? 1 : 0;
        if (++done == n) loop.stop();
      });
      offload::async_run(i % 2 == 0 ? a : b, this_thread_name, std::move(handler));
    }
  });
  loop.run_forever();
  CHECK(on_a == n / 2);
  CHECK(on_b == n / 2);
}

TEST_CASE("shutdown(wait=false) in the step that made calls still runs them",
          "[thread_pool][batch]") {
  // The step's calls past the first are held until the step ends; shutdown publishes them
  // first, so they were submitted before it and run (only cancel_pending drops them).
  offload::thread_pool pool(sized(1));
  offload::event_loop loop;
  auto ex = loop.get_executor();
  constexpr int n = 10;
  int values = 0;
  int done = 0;
  loop.call_soon([&] {
    for (int i = 0; i < n; ++i) {
      offload::async_run(
          pool, [] { return 1; }, net::bind_executor(ex, [&](std::exception_ptr e, int v) {
            if (!e) values += v;
            if (++done == n) loop.stop();
          }));
    }
    pool.shutdown(false);
  });
  loop.run_forever();
  CHECK(values == n);
  pool.join();
}

TEST_CASE("a shutdown from another thread waits for the calls a loop step holds for the pool",
          "[thread_pool][batch]") {
  // The step's calls past the first were accepted before the shutdown: they run, or with
  // cancel_pending are cancelled, as calls queued before it are; none is left in a queue that
  // no worker reads any more. A call the step makes once the shutdown has begun is refused.
  // The pool is destroyed right after its shutdown, on the shutting thread, while the loop's
  // thread is still handing in the held calls (ASan sees any use of the freed pool).
  const bool cancel_pending = GENERATE(false, true);
  auto pool = std::make_unique<offload::thread_pool>(sized(1));
  offload::event_loop loop;
  auto ex = loop.get_executor();
  constexpr int n = 5;
  std::atomic<int> ran{0};
  int succeeded = 0;
  int aborted = 0;
  int done = 0;
  std::error_code late_call;
  offload_test::gate first_call;
  std::atomic<bool> first_started{false};
  bool first_was_running = false;
  auto one_done = [&] {
    if (++done == n + 1) loop.stop();  // the n calls and the late one
  };
  std::thread stopper;
  loop.call_soon([&] {
    for (int i = 0; i < n; ++i) {
      auto f = [&, i] {
        if (i == 0) {  // the others stay queued until the shutdown is done
          first_started = true;
          first_call.wait();
        }
        ++ran;
      };
      offload::async_run(*pool, f, net::bind_executor(ex, [&](std::exception_ptr e) {
        ++(e ? aborted : succeeded);
        one_done();
      }));
    }
    first_was_running = eventually([&] { return first_started.load(); });
    stopper = std::thread([&] {
      pool->shutdown(false, cancel_pending);
      first_call.open();
      pool.reset();
    });
    // The shutdown refuses new work before it waits for this step's calls.
    while (!pool->is_shutdown()) std::this_thread::yield();
    try {  // refused at once, or through its callback
      offload::async_run(
          *pool, [&] { ++ran; }, net::bind_executor(ex, [&](std::exception_ptr e) {
            late_call = offload_test::code_of(e);
            one_done();
          }));
    } catch (const std::system_error& e) {
      late_call = e.code();
      one_done();
    }
  });
  loop.run_forever();
  stopper.join();
  REQUIRE(first_was_running);
  CHECK(late_call == offload::errc::executor_shutdown);
  CHECK(succeeded + aborted == n);
  CHECK(ran.load() == succeeded);
  // The step's first call went out at once and was running.
  CHECK(succeeded == (cancel_pending ? 1 : n));
}

TEST_CASE("an observer that asks for stats() as each call of a loop step is submitted loses none",
          "[thread_pool][batch]") {
  // on_submit runs on the loop's thread while the step holds calls back; stats() there
  // settles the step, so the call being submitted must not be half-linked into a chain then.
  struct stats_on_submit : offload::call_observer {
    offload::thread_pool* pool = nullptr;
    std::size_t looks = 0;
    void on_submit(const offload::call_info&) override {
      if (pool != nullptr) {
        (void)pool->stats();
        ++looks;
      }
    }
  };
  auto observer = std::make_shared<stats_on_submit>();
  offload::thread_pool_options options = sized(1);
  options.observer = observer;
  offload::thread_pool pool(std::move(options));
  observer->pool = &pool;
  offload::event_loop loop;
  auto ex = loop.get_executor();
  constexpr int n = 200;  // several chains' worth
  int sum = 0;
  int done = 0;
  loop.call_soon([&] {
    for (int i = 0; i < n; ++i) {
      offload::async_run(
          pool, [i] { return i; }, net::bind_executor(ex, [&](std::exception_ptr e, int v) {
            CHECK_FALSE(e);
            sum += v;
            if (++done == n) loop.stop();
          }));
    }
  });
  loop.run_forever();
  CHECK(observer->looks == static_cast<std::size_t>(n));
  CHECK(sum == n * (n - 1) / 2);
}

TEST_CASE("stats() in the step that made calls counts them as queued", "[thread_pool][batch]") {
  offload::thread_pool pool(sized(1));
  offload::event_loop loop;
  auto ex = loop.get_executor();
  offload_test::gate g;
  std::atomic<bool> started{false};
  std::size_t queued = 0;
  int done = 0;
  auto finish = [&](std::exception_ptr) {
    if (++done == 6) loop.stop();
  };
  loop.call_soon([&] {
    offload::async_run(
        pool,
        [&] {
          started = true;
          g.wait();
        },
        net::bind_executor(ex, finish));
  });
  loop.call_soon([&] {
    REQUIRE(eventually([&] { return started.load(); }));
    for (int i = 0; i < 5; ++i)
      offload::async_run(
          pool, [] {}, net::bind_executor(ex, finish));
    queued = pool.stats().queued;
    g.open();
  });
  loop.run_forever();
  CHECK(queued == 5);
}

TEST_CASE("a loop step that blocks on a concurrent_future publishes its calls first",
          "[thread_pool][batch]") {
  // The step's second call would otherwise wait for the step to end, which waits for it.
  offload::thread_pool pool(sized(2));
  offload::loop_thread other;
  offload::event_loop loop;
  auto ex = loop.get_executor();
  std::atomic<bool> second_ran{false};
  bool seen = false;
  int done = 0;
  auto finish = [&](std::exception_ptr) {
    if (++done == 2) loop.stop();
  };
  loop.call_soon([&] {
    offload::async_run(
        pool, [] {}, net::bind_executor(ex, finish));
    offload::async_run(
        pool, [&] { second_ran = true; }, net::bind_executor(ex, finish));
    auto watch = [&]() -> offload::awaitable<bool> {
      co_return co_await offload_test::wait_until([&] { return second_ran.load(); });
    };
    seen = offload::run_coroutine_threadsafe(watch(), other.loop()).result();
  });
  loop.run_forever();
  CHECK(seen);
}

TEST_CASE("a call that skips the step's batch (an unbound callback) starts after the batch",
          "[thread_pool][batch]") {
  offload::thread_pool pool(sized(1));
  offload::event_loop loop;
  auto ex = loop.get_executor();
  offload_test::gate g;
  std::atomic<bool> blocker_started{false};
  std::vector<char> started;
  std::mutex m;
  auto record = [&](char c) {
    std::lock_guard<std::mutex> lock(m);
    started.push_back(c);
  };
  int done = 0;
  auto finish = [&](std::exception_ptr) {
    if (++done == 4) loop.stop();
  };
  std::future<void> unbound;
  loop.call_soon([&] {
    offload::async_run(
        pool,
        [&] {
          blocker_started = true;
          g.wait();
        },
        net::bind_executor(ex, finish));
  });
  loop.call_soon([&] {
    REQUIRE(eventually([&] { return blocker_started.load(); }));
    offload::async_run(
        pool, [&] { record('b'); }, net::bind_executor(ex, finish));  // batched
    offload::async_run(
        pool, [&] { record('c'); }, net::bind_executor(ex, finish));  // batched
    // No executor to resume on: this one goes straight to the pool, after b and c.
    unbound = submit_plain(pool, [&] { record('d'); });
    g.open();
  });
  loop.call_soon([&] { finish(nullptr); });
  loop.run_forever();
  unbound.get();
  CHECK(started == std::vector<char>{'b', 'c', 'd'});
}

TEST_CASE(
    "shutdown(false) from another thread while a loop step holds calls for the pool: "
    "those calls run, later ones get executor_shutdown",
    "[thread_pool][batch]") {
  offload::thread_pool pool(sized(1));
  offload::event_loop loop;
  auto ex = loop.get_executor();
  int values = 0;
  std::exception_ptr refused;
  int done = 0;
  std::thread closer;
  loop.call_soon([&] {
    for (int i = 0; i < 3; ++i) {  // the first goes out at once, the other two are held
      offload::async_run(
          pool, [] { return 1; }, net::bind_executor(ex, [&](std::exception_ptr e, int v) {
            if (!e) values += v;
            if (++done == 4) loop.stop();
          }));
    }
    closer = std::thread([&] { pool.shutdown(false); });
    REQUIRE(eventually([&] { return pool.is_shutdown(); }));
    offload::async_run(
        pool, [] { return 1; }, net::bind_executor(ex, [&](std::exception_ptr e, int) {
          refused = e;
          if (++done == 4) loop.stop();
        }));
  });
  loop.run_forever();
  closer.join();
  pool.join();
  CHECK(values == 3);
  REQUIRE(refused);
  std::error_code code;
  try {
    std::rethrow_exception(refused);
  } catch (const std::system_error& e) {
    code = e.code();
  }
  CHECK(code == offload::errc::executor_shutdown);
}

// -- node cache -------------------------------------------------------------------------------

TEST_CASE("finished calls' nodes stay in the thread's cache up to node_cache_limit",
          "[thread_pool][node_cache]") {
  const std::size_t saved = offload::node_cache_limit();
  CHECK(saved == (std::size_t(256) << 20));
  offload::thread_pool pool(sized(2));
  // Fresh threads: each starts with an empty cache.
  std::size_t kept_at_zero = 1;
  offload::set_node_cache_limit(0);
  CHECK(offload::node_cache_limit() == 0);
  std::thread([&] {
    CHECK(offload::run(run_many(pool, 50)) == 1225);
    kept_at_zero = offload::detail::block_cache::local().cached_bytes();
  }).join();
  CHECK(kept_at_zero == 0);  // every node went back to the heap

  std::size_t kept = 0;
  offload::set_node_cache_limit(std::size_t(1) << 20);
  std::thread([&] {
    CHECK(offload::run(run_many(pool, 50)) == 1225);
    kept = offload::detail::block_cache::local().cached_bytes();
  }).join();
  CHECK(kept > 0);
  CHECK(kept <= (std::size_t(1) << 20));

  offload::set_node_cache_limit(saved);
}

}  // namespace
