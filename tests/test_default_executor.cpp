// The default executor: lazy, bounded at min(32, cores + 4), named threads that go
// after a keep-alive, replaceable, awaitable shutdown; and what happens to a call in flight when
// its io_context is destroyed.
//
// Distributed under the Boost Software License, Version 1.0.
#include "catch.hpp"
#include "loop_helpers.hpp"
#include "probes.hpp"

#include <offload/errors.hpp>
#include <offload/event_loop.hpp>
#include <offload/thread_pool.hpp>
#include <offload/to_thread.hpp>

#include <algorithm>
#include <atomic>
#include <future>
#include <memory>
#include <regex>
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
using offload_test::this_thread_name;

std::size_t expected_default_max() {
  const std::size_t cores = std::max(1u, std::thread::hardware_concurrency());
  return std::min<std::size_t>(32, cores + 4);
}

/// "offload-N": the default executor's thread names.
bool is_offload_thread_name(const std::string& name) {
  return std::regex_match(name, std::regex("offload-[1-9][0-9]*"));
}

/// The worker's name, after every one of `together` calls has arrived (so they ran at once).
offload::awaitable<std::string> name_together(offload_test::rendezvous& together) {
  co_return co_await offload::to_thread([&together] {
    together.arrive_and_wait();
    return this_thread_name();
  });
}

// -- lazy, bounded, named ----------------------------------------------------------------------

offload::awaitable<int> one_call() {
  co_return co_await offload::to_thread([] { return 1; });
}

TEST_CASE("the default executor is created lazily and starts threads on demand",
          "[default_executor]") {
  offload::event_loop loop;
  offload::thread_pool& pool = loop.default_executor_pool();  // the pool object, no threads yet
  offload::thread_pool_stats s = pool.stats();
  CHECK(s.workers == 0);
  CHECK(s.peak_workers == 0);

  CHECK(loop.run_until_complete(one_call()) == 1);
  CHECK(&loop.default_executor_pool() == &pool);  // the same pool, made once
  s = pool.stats();
  CHECK(s.workers == 1);  // one call, one thread: not max_workers of them
  CHECK(s.peak_workers == 1);
}

offload::awaitable<void> wait_at_gate(offload_test::gate& g, int& out,
                                      offload_test::countdown& done) {
  out = co_await offload::to_thread([&g] { return g.wait() ? 1 : -1; });
  done.done();
}

offload::awaitable<void> fill_default_executor(std::size_t calls, offload_test::gate& g,
                                               std::vector<int>& results,
                                               offload::thread_pool_stats& seen) {
  auto ex = co_await net::this_coro::executor;
  auto& pool = offload::get_running_loop().default_executor_pool();
  offload_test::countdown done(ex, static_cast<int>(calls));
  for (std::size_t i = 0; i < calls; ++i) {
    net::co_spawn(ex, wait_at_gate(g, results[i], done), net::detached);
  }
  const std::size_t max = pool.max_workers();
  const bool all_busy = co_await offload_test::wait_until(
      [&] { return pool.stats().running == max && pool.stats().queued == calls - max; });
  seen = pool.stats();
  CHECK(all_busy);
  g.open();
  co_await done.wait();
}

TEST_CASE("the default executor holds at most min(32, cores + 4) threads", "[default_executor]") {
  offload::event_loop loop;
  const std::size_t max = loop.default_executor_pool().max_workers();
  CHECK(max == expected_default_max());

  const std::size_t calls = max + 3;
  offload_test::gate g;
  std::vector<int> results(calls, 0);
  offload::thread_pool_stats seen;
  loop.run_until_complete(fill_default_executor(calls, g, results, seen));
  CHECK(seen.workers == max);
  CHECK(seen.running == max);
  CHECK(seen.queued == 3);
  CHECK(loop.default_executor_pool().stats().peak_workers == max);
  CHECK(std::count(results.begin(), results.end(), 1) == static_cast<long>(calls));
}

offload::awaitable<std::string> one_name() {
  co_return co_await offload::to_thread(this_thread_name);
}

offload::awaitable<std::set<std::string>> two_names() {
  offload_test::rendezvous both(2);
  auto ex = co_await net::this_coro::executor;
  // The second call runs in a task of its own, so both are out at once.
  auto second = net::co_spawn(ex, name_together(both), net::use_future);
  const std::string first = co_await name_together(both);
  // The task completes on this loop: let it run before reading its future.
  const bool ready = co_await offload_test::wait_until(
      [&] { return second.wait_for(0s) == std::future_status::ready; });
  REQUIRE(ready);
  co_return std::set<std::string>{first, second.get()};
}

TEST_CASE("the default executor's threads are named offload-N", "[default_executor]") {
  const std::set<std::string> names = offload::run(two_names());
  REQUIRE(names.size() == 2);  // two threads ran the two calls at once
  for (const std::string& name : names) CHECK(is_offload_thread_name(name));
  // A fresh executor's first thread is number 1.
  CHECK(offload::run(one_name()) == "offload-1");
}

// -- keep-alive and replacement ----------------------------------------------------------------

TEST_CASE("the default executor lets idle threads go after its keep-alive", "[default_executor]") {
  offload::event_loop loop;
  offload::thread_pool_options o;
  o.keep_alive = 50ms;
  loop.set_default_executor(std::move(o));
  const std::set<std::string> names = loop.run_until_complete(two_names());
  REQUIRE(names.size() == 2);
  for (const std::string& name : names) CHECK(is_offload_thread_name(name));  // still offload-N
  CHECK(loop.default_executor_pool().stats().peak_workers >= 2);
  CHECK(eventually([&] { return loop.default_executor_pool().stats().workers == 0; }));
}

struct replace_outcome {
  std::string before;
  std::string after;
  std::string old_call;
  bool same_object = false;
  int old_call_failed = 0;
};

offload::awaitable<void> blocked_name(offload_test::gate& g, std::string& out) {
  out = co_await offload::to_thread([&g] {
    g.wait();
    return this_thread_name();
  });
}

offload::awaitable<void> replace_default(replace_outcome& r, offload_test::gate& g) {
  auto& loop = offload::get_running_loop();
  auto ex = co_await net::this_coro::executor;
  r.before = co_await offload::to_thread(this_thread_name);
  offload::thread_pool& old_pool = loop.default_executor_pool();

  // A call still running on the old pool when it is replaced.
  offload_test::countdown old_done(ex, 1);
  net::co_spawn(ex, blocked_name(g, r.old_call), [&](std::exception_ptr e) {
    if (e) ++r.old_call_failed;
    old_done.done();
  });
  const bool old_busy =
      co_await offload_test::wait_until([&] { return old_pool.stats().running == 1; });
  REQUIRE(old_busy);

  offload::thread_pool_options o;
  o.thread_name_prefix = "custom";
  auto custom = std::make_shared<offload::thread_pool>(std::move(o));
  loop.set_default_executor(custom);
  r.same_object = &loop.default_executor_pool() == custom.get();
  r.after = co_await offload::to_thread(this_thread_name);

  g.open();
  co_await old_done.wait();  // the old pool still finishes what it had
}

TEST_CASE("set_default_executor(shared_ptr<thread_pool>) replaces the default executor",
          "[default_executor]") {
  replace_outcome r;
  offload_test::gate g;
  offload::run(replace_default(r, g));
  CHECK(r.before == "offload-1");
  CHECK(r.same_object);
  CHECK(r.after == "custom-1");
  CHECK(r.old_call_failed == 0);
  CHECK_THAT(r.old_call, contains("offload-"));
}

// -- shutdown_default_executor -----------------------------------------------------------------

struct shutdown_outcome {
  int running_call = 0;
  bool completed = false;
  std::size_t stragglers = 99;
  std::error_code after_code;
  std::string after_what;
  bool after_ran = false;
};

offload::awaitable<void> running_call(offload_test::gate& g, shutdown_outcome& out,
                                      offload_test::countdown& done) {
  out.running_call = co_await offload::to_thread([&g] { return g.wait() ? 1 : -1; });
  done.done();
}

offload::awaitable<void> open_later(offload_test::gate& g) {
  co_await offload_test::sleep_for(20ms);
  g.open();
}

offload::awaitable<void> shutdown_then_call(offload_test::gate& g, shutdown_outcome& out) {
  auto& loop = offload::get_running_loop();
  auto ex = co_await net::this_coro::executor;
  offload_test::countdown done(ex, 1);
  net::co_spawn(ex, running_call(g, out, done), net::detached);
  const bool busy = co_await offload_test::wait_until(
      [&] { return loop.default_executor_pool().stats().running == 1; });
  REQUIRE(busy);
  // Only the loop can open the gate: shutdown must wait without blocking it.
  net::co_spawn(ex, open_later(g), net::detached);
  const offload::shutdown_report report = co_await loop.shutdown_default_executor(10s);
  out.completed = report.completed;
  out.stragglers = report.stragglers.size();
  co_await done.wait();

  try {
    co_await offload::to_thread([&out] { out.after_ran = true; });
  } catch (const std::system_error& e) {
    out.after_code = e.code();
    out.after_what = e.what();
  }
}

TEST_CASE(
    "shutdown_default_executor waits for running calls without blocking the loop; "
    "to_thread then fails with executor_shutdown",
    "[default_executor][shutdown]") {
  offload::event_loop loop;
  offload_test::gate g;
  shutdown_outcome out;
  loop.run_until_complete(shutdown_then_call(g, out));
  CHECK(out.running_call == 1);  // the gate was opened by the loop, not by its timeout
  CHECK(out.completed);
  CHECK(out.stragglers == 0);
  CHECK(out.after_code == offload::errc::executor_shutdown);
  CHECK_FALSE(out.after_ran);
  CHECK(loop.default_executor_pool().is_shutdown());
}

struct timeout_outcome {
  bool completed = true;
  std::vector<offload::running_call> stragglers;
  int call = 0;
};

offload::awaitable<void> shutdown_with_timeout(offload_test::gate& g, timeout_outcome& out) {
  auto& loop = offload::get_running_loop();
  auto ex = co_await net::this_coro::executor;
  offload_test::countdown done(ex, 1);
  shutdown_outcome call;
  net::co_spawn(ex, running_call(g, call, done), net::detached);
  const bool busy = co_await offload_test::wait_until(
      [&] { return loop.default_executor_pool().stats().running == 1; });
  REQUIRE(busy);
  offload::shutdown_report report = co_await loop.shutdown_default_executor(50ms);
  out.completed = report.completed;
  out.stragglers = std::move(report.stragglers);
  g.open();
  co_await done.wait();
  out.call = call.running_call;
}

TEST_CASE(
    "shutdown_default_executor(timeout) reports the calls still running instead of "
    "hanging",
    "[default_executor][shutdown]") {
  offload::event_loop loop;
  offload_test::gate g;
  timeout_outcome out;
  loop.run_until_complete(shutdown_with_timeout(g, out));
  CHECK_FALSE(out.completed);
  REQUIRE(out.stragglers.size() == 1);
  CHECK(out.stragglers[0].thread_name == "offload-1");
  CHECK_FALSE(out.stragglers[0].callable.empty());
  CHECK(out.call == 1);  // it still finished, after the report
}

// -- the io_context goes away while a call runs ------------------------------------------------

struct frame_flags {
  std::atomic<bool> frame_destroyed{false};
  std::atomic<bool> delivered{false};
  std::atomic<bool> call_started{false};
  std::atomic<bool> call_returned{false};
};

struct sets_on_destruction {
  std::atomic<bool>* flag;
  ~sets_on_destruction() { flag->store(true); }
};

offload::awaitable<void> blocked_forever_on_context(offload_test::gate& g, frame_flags& fl) {
  sets_on_destruction witness{&fl.frame_destroyed};
  auto f = [&g, &fl] {
    fl.call_started = true;
    const bool opened = g.wait();
    fl.call_returned = true;
    return opened ? 1 : -1;
  };
  const int v = co_await offload::to_thread(f);
  (void)v;
  fl.delivered = true;
}

TEST_CASE(
    "destroying an io_context while a to_thread call runs waits for the call, never "
    "delivers its result, and destroys the awaiting coroutine",
    "[default_executor][lifetime]") {
  offload_test::gate g;
  frame_flags fl;
  auto ctx = std::make_unique<net::io_context>();
  net::co_spawn(*ctx, blocked_forever_on_context(g, fl), net::detached);
  // Run the context until the call is out on a worker, then leave it.
  REQUIRE(eventually([&] {
    ctx->poll();
    return fl.call_started.load();
  }));
  std::thread releaser([&g] {
    std::this_thread::sleep_for(50ms);
    g.open();
  });
  ctx.reset();
  const bool returned_before_destruction_ended = fl.call_returned.load();
  releaser.join();
  CHECK(returned_before_destruction_ended);  // destruction waited for the running call
  CHECK(fl.frame_destroyed.load());
  CHECK_FALSE(fl.delivered.load());
}

}  // namespace
