// run_in_executor's pluggable targets: each kind of executor runs f on its own
// thread and the coroutine resumes on its loop; foreign pools that drop or refuse a call make
// the awaiter fail with a reason instead of hanging (nothing is dropped silently).
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
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace net = offload::net;
using namespace std::chrono_literals;
using offload_test::contains;
using offload_test::this_thread_name;

// -- foreign pools ---------------------------------------------------------------------------

/// The smallest pool a user might have: one named thread, a mutex, a deque of std::function,
/// and a member submit(). Runs what is queued before it stops.
class tiny_pool {
 public:
  explicit tiny_pool(std::string name) : name_(std::move(name)), thread_([this] { run(); }) {}
  ~tiny_pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  tiny_pool(const tiny_pool&) = delete;
  tiny_pool& operator=(const tiny_pool&) = delete;

  void submit(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(std::move(job));
      ++submitted_;
    }
    cv_.notify_one();
  }

  std::thread::id thread_id() const noexcept { return thread_.get_id(); }
  int submitted() {
    std::lock_guard<std::mutex> lock(mutex_);
    return submitted_;
  }

 private:
  void run() {
    offload_test::set_this_thread_name(name_.c_str());
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      std::function<void()> job = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      job();
      job = nullptr;
      lock.lock();
    }
  }

  std::string name_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  int submitted_ = 0;
  std::thread thread_;  // last: starts once everything above exists
};

/// A pool with an API of its own (no submit member): adapted through offload::executor_traits.
class legacy_pool {
 public:
  explicit legacy_pool(std::string name) : inner_(std::move(name)) {}
  void post_job(std::function<void()> job) { inner_.submit(std::move(job)); }
  std::thread::id thread_id() const noexcept { return inner_.thread_id(); }

 private:
  tiny_pool inner_;
};

std::atomic<int> legacy_traits_submits{0};

/// Takes the call and destroys it without running it.
struct dropping_pool {
  int received = 0;
  void submit(std::function<void()> job) {
    ++received;
    (void)job;  // destroyed unrun when submit returns
  }
};

/// Keeps the call; the test destroys it later, unrun, from another thread.
struct hoarding_pool {
  std::vector<std::function<void()>> kept;
  void submit(std::function<void()> job) { kept.push_back(std::move(job)); }
};

struct pool_refused : std::runtime_error {
  pool_refused(const char* what, int length) : std::runtime_error(what), queue_length(length) {}
  int queue_length;
};

/// Refuses every call with an exception of its own.
struct throwing_pool {
  int attempts = 0;
  void submit(std::function<void()>) {
    ++attempts;
    throw pool_refused("throwing_pool: no room", 128);
  }
};

}  // namespace

template <>
struct offload::executor_traits<legacy_pool> {
  static void submit(legacy_pool& pool, offload::work_item item) {
    ++legacy_traits_submits;
    pool.post_job(std::move(item));
  }
};

namespace {

// -- where a call runs -----------------------------------------------------------------------

struct worker_view {
  std::thread::id id;
  std::string name;
  bool on_calling_loop = true;  // f saw itself on the loop that awaits it (it must not)
  bool on_target = false;       // the target's own "running in this thread" check, inside f
};

struct ran_at {
  worker_view worker;
  std::thread::id loop_thread;
  std::thread::id resumed;
  bool resumed_on_loop = false;
};

/// Runs a probe on `target` with run_in_executor and reports where f ran and where the
/// coroutine resumed. `on_target` is evaluated inside f.
template <typename Target, typename OnTarget>
offload::awaitable<ran_at> run_on(Target& target, OnTarget on_target) {
  auto& loop = offload::get_running_loop();
  ran_at r;
  r.loop_thread = std::this_thread::get_id();
  auto f = [&loop, on_target] {
    return worker_view{std::this_thread::get_id(), this_thread_name(), loop.in_loop_thread(),
                       on_target()};
  };
  r.worker = co_await offload::run_in_executor(target, f);
  r.resumed = std::this_thread::get_id();
  r.resumed_on_loop = loop.get_executor().running_in_this_thread();
  co_return r;
}

constexpr auto anywhere = [] { return true; };

void check_resumed_on_loop(const ran_at& r) {
  CHECK(r.loop_thread == std::this_thread::get_id());  // offload::run ran the loop here
  CHECK(r.worker.id != r.loop_thread);
  CHECK_FALSE(r.worker.on_calling_loop);
  CHECK(r.resumed == r.loop_thread);
  CHECK(r.resumed_on_loop);
}

offload::thread_pool_options named_pool(const char* prefix) {
  offload::thread_pool_options o;
  o.thread_name_prefix = prefix;
  o.max_workers = 2;
  return o;
}

/// The ids of an asio::thread_pool's threads (each of its n threads checks in once).
std::set<std::thread::id> thread_ids_of(net::thread_pool& pool, int n) {
  struct state {
    explicit state(int k) : all(k) {}
    std::mutex m;
    std::set<std::thread::id> ids;
    offload_test::rendezvous all;
  };
  // Shared: the pool's threads may still be leaving the rendezvous when this returns.
  auto st = std::make_shared<state>(n + 1);
  for (int i = 0; i < n; ++i) {
    net::post(pool, [st] {
      {
        std::lock_guard<std::mutex> lock(st->m);
        st->ids.insert(std::this_thread::get_id());
      }
      st->all.arrive_and_wait();
    });
  }
  st->all.arrive_and_wait();
  std::lock_guard<std::mutex> lock(st->m);
  return st->ids;
}

// -- offload's own executors -----------------------------------------------------------------

TEST_CASE("run_in_executor(offload::default_executor) runs f on the loop's default executor",
          "[executors]") {
  auto target = offload::default_executor;
  const ran_at r = offload::run(run_on(target, anywhere));
  check_resumed_on_loop(r);
  CHECK(r.worker.name == "offload-1");
}

TEST_CASE("run_in_executor(offload::thread_pool&) runs f on that pool", "[executors]") {
  offload::thread_pool pool(named_pool("tpref"));
  const ran_at r = offload::run(run_on(pool, anywhere));
  check_resumed_on_loop(r);
  CHECK(r.worker.name == "tpref-1");
  // The worker counts the call once it is back from it: soon after the coroutine resumed.
  CHECK(offload_test::eventually([&] { return pool.stats().completed == 1; }));
}

TEST_CASE("run_in_executor(thread_pool::executor_type) runs f on that pool", "[executors]") {
  offload::thread_pool pool(named_pool("tpex"));
  auto ex = pool.get_executor();
  CHECK(&ex.context() == &pool);
  const ran_at r = offload::run(run_on(ex, anywhere));
  check_resumed_on_loop(r);
  CHECK(r.worker.name == "tpex-1");
}

TEST_CASE("run_in_executor(std::shared_ptr<offload::thread_pool>) runs f on that pool",
          "[executors]") {
  auto pool = std::make_shared<offload::thread_pool>(named_pool("tpsh"));
  const ran_at r = offload::run(run_on(pool, anywhere));
  check_resumed_on_loop(r);
  CHECK(r.worker.name == "tpsh-1");
  CHECK(pool.use_count() == 1);  // the call kept no reference once done
}

// -- Asio executors and contexts -------------------------------------------------------------

TEST_CASE("run_in_executor(asio::thread_pool&) runs f on that pool's thread", "[executors]") {
  net::thread_pool apool(1);
  const auto ids = thread_ids_of(apool, 1);
  auto ex = apool.get_executor();
  const ran_at r = offload::run(run_on(apool, [ex] { return ex.running_in_this_thread(); }));
  check_resumed_on_loop(r);
  CHECK(ids.count(r.worker.id) == 1);
  CHECK(r.worker.on_target);
}

TEST_CASE("run_in_executor(asio::thread_pool::executor_type) runs f on that pool's thread",
          "[executors]") {
  net::thread_pool apool(1);
  const auto ids = thread_ids_of(apool, 1);
  auto ex = apool.get_executor();
  const ran_at r = offload::run(run_on(ex, [ex] { return ex.running_in_this_thread(); }));
  check_resumed_on_loop(r);
  CHECK(ids.count(r.worker.id) == 1);
  CHECK(r.worker.on_target);
}

TEST_CASE("run_in_executor(asio::strand over an asio::thread_pool) runs f inside the strand",
          "[executors]") {
  net::thread_pool apool(2);
  const auto ids = thread_ids_of(apool, 2);
  auto strand = net::make_strand(apool);
  const ran_at r =
      offload::run(run_on(strand, [strand] { return strand.running_in_this_thread(); }));
  check_resumed_on_loop(r);
  CHECK(ids.count(r.worker.id) == 1);
  CHECK(r.worker.on_target);
}

TEST_CASE("run_in_executor(asio::any_io_executor) runs f on the wrapped executor", "[executors]") {
  net::thread_pool apool(1);
  const auto ids = thread_ids_of(apool, 1);
  auto raw = apool.get_executor();
  net::any_io_executor ex = raw;
  const ran_at r = offload::run(run_on(ex, [raw] { return raw.running_in_this_thread(); }));
  check_resumed_on_loop(r);
  CHECK(ids.count(r.worker.id) == 1);
  CHECK(r.worker.on_target);
}

TEST_CASE("run_in_executor(another event_loop's executor) runs f on that loop's thread",
          "[executors]") {
  offload_test::loop_on_thread other;
  auto ex = other.loop.get_executor();
  offload::event_loop* other_loop = &other.loop;
  const ran_at r = offload::run(run_on(ex, [other_loop] { return other_loop->in_loop_thread(); }));
  check_resumed_on_loop(r);
  CHECK(r.worker.id == other.thread_id);
  CHECK(r.worker.on_target);  // inside the other loop's strand
}

// -- foreign pools ---------------------------------------------------------------------------

TEST_CASE(
    "run_in_executor(a foreign pool with a member submit(std::function<void()>)) runs f "
    "on that pool's thread",
    "[executors][foreign]") {
  tiny_pool pool("tiny-pool");
  const ran_at r = offload::run(run_on(pool, anywhere));
  check_resumed_on_loop(r);
  CHECK(r.worker.id == pool.thread_id());
  CHECK(r.worker.name == "tiny-pool");
  CHECK(pool.submitted() == 1);
}

TEST_CASE(
    "run_in_executor(a foreign pool adapted by offload::executor_traits) runs f on that "
    "pool's thread",
    "[executors][foreign]") {
  legacy_pool pool("legacy-pool");
  legacy_traits_submits = 0;
  const ran_at r = offload::run(run_on(pool, anywhere));
  check_resumed_on_loop(r);
  CHECK(r.worker.id == pool.thread_id());
  CHECK(r.worker.name == "legacy-pool");
  CHECK(legacy_traits_submits.load() == 1);
}

struct failure {
  bool threw = false;
  bool ran = false;
  std::error_code code;
  std::string what;
};

template <typename Pool>
offload::awaitable<void> await_call(Pool& pool, failure& out) {
  try {
    auto f = [&out] {
      out.ran = true;
      return 1;
    };
    (void)co_await offload::run_in_executor(pool, f);
  } catch (const std::system_error& e) {
    out.threw = true;
    out.code = e.code();
    out.what = e.what();
  }
}

offload::awaitable<void> dropped_later(hoarding_pool& pool, failure& out) {
  auto ex = co_await net::this_coro::executor;
  offload_test::countdown done(ex, 1);
  net::co_spawn(ex, await_call(pool, out), [&done](std::exception_ptr) { done.done(); });
  for (int i = 0; i < 100 && pool.kept.empty(); ++i) co_await offload_test::yield_once();
  REQUIRE(pool.kept.size() == 1);                      // the call waits in the pool
  CHECK(done.remaining() == 1);                        // and its awaiter with it
  std::thread([&pool] { pool.kept.clear(); }).join();  // destroyed unrun, on another thread
  co_await done.wait();
}

TEST_CASE(
    "a foreign pool that drops the work item without running it: the awaiter gets "
    "broken_promise",
    "[executors][foreign][errors]") {
  failure out;
  SECTION("dropped inside submit") {
    dropping_pool pool;
    offload::run(await_call(pool, out));
    CHECK(pool.received == 1);
  }
  SECTION("kept, then destroyed on another thread") {
    hoarding_pool pool;
    offload::run(dropped_later(pool, out));
  }
  CHECK(out.threw);
  CHECK_FALSE(out.ran);
  CHECK(out.code == offload::errc::broken_promise);
  CHECK_THAT(out.what, contains("without running it"));
}

struct refused {
  bool caught = false;
  bool ran = false;
  int queue_length = 0;
  std::string what;
  int after = 0;
  bool caught_again = false;
};

offload::awaitable<void> call_refused(throwing_pool& pool, refused& out) {
  auto f = [&out] {
    out.ran = true;
    return 1;
  };
  try {
    (void)co_await offload::run_in_executor(pool, f);
  } catch (const pool_refused& e) {
    out.caught = true;
    out.queue_length = e.queue_length;
    out.what = e.what();
  }
  // The loop goes on: the next calls work (or fail the same way).
  out.after = co_await offload::to_thread([] { return 3; });
  try {
    (void)co_await offload::run_in_executor(pool, f);
  } catch (const pool_refused&) {
    out.caught_again = true;
  }
}

TEST_CASE(
    "a foreign pool whose submit throws: that exception arrives at the co_await and the "
    "loop keeps working",
    "[executors][foreign][errors]") {
  throwing_pool pool;
  refused out;
  offload::run(call_refused(pool, out));
  CHECK(out.caught);
  CHECK(out.queue_length == 128);
  CHECK(out.what == "throwing_pool: no room");
  CHECK_FALSE(out.ran);
  CHECK(out.after == 3);
  CHECK(out.caught_again);
  CHECK(pool.attempts == 2);
}

struct stopped_outcome {
  bool finished = false;
  bool ran = false;
  std::error_code code;
};

offload::awaitable<void> call_stopped(net::thread_pool::executor_type ex, stopped_outcome& out) {
  try {
    auto f = [&out] {
      out.ran = true;
      return 1;
    };
    (void)co_await offload::run_in_executor(ex, f);
  } catch (const std::system_error& e) {
    out.code = e.code();
  }
  out.finished = true;
}

TEST_CASE(
    "an asio::thread_pool stopped and joined before the call: the awaiter gets "
    "broken_promise once the pool is destroyed (never a hang)",
    "[executors][errors]") {
  std::optional<net::thread_pool> apool(std::in_place, 1);
  apool->stop();
  apool->join();

  net::io_context ctx;
  stopped_outcome out;
  net::co_spawn(ctx, call_stopped(apool->get_executor(), out), net::detached);
  ctx.poll();  // the coroutine submits its call and waits
  // Asio keeps the call queued in the stopped pool; destroying the pool destroys it unrun.
  apool.reset();
  ctx.run_for(10s);  // returns as soon as the coroutine finished; the bound only avoids a hang
  CHECK(out.finished);
  CHECK_FALSE(out.ran);
  CHECK(out.code == offload::errc::broken_promise);
}

// -- lifetime --------------------------------------------------------------------------------

offload::awaitable<int> one_pool_call(offload::thread_pool& pool) {
  co_return co_await offload::run_in_executor(pool, [] { return 1; });
}

// The worker that hands a result back must be done with the loop's executor before the loop's
// io_context can go away: here each loop is destroyed the moment its only call came back, while
// the pool (which the loop does not own, so does not join) lives on. A worker still inside its
// hand-back then touches freed memory: AddressSanitizer / ThreadSanitizer see it.
TEST_CASE(
    "a loop destroyed right after its last call came back from a pool that outlives it: "
    "the worker is done with the loop's executor first",
    "[executors][lifetime]") {
  offload::thread_pool pool(named_pool("outlives"));
  int delivered = 0;
  for (int i = 0; i < 300; ++i) {
    offload::event_loop loop;
    loop.set_spin(std::chrono::nanoseconds::zero());  // the worker posts the hand-back itself
    delivered += loop.run_until_complete(one_pool_call(pool));
  }
  CHECK(delivered == 300);
}

// The same with a coroutine on a strand of a plain io_context (no event_loop): the worker
// completes through the strand and must be done with the context before it is destroyed.
TEST_CASE(
    "an io_context destroyed right after its last call came back (coroutine on a strand) "
    "from a pool that outlives it: the worker is done with the context first",
    "[executors][lifetime]") {
  offload::thread_pool pool(named_pool("outlives"));
  int delivered = 0;
  for (int i = 0; i < 300; ++i) {
    net::io_context ctx;
    auto result = net::co_spawn(net::make_strand(ctx), one_pool_call(pool), net::use_future);
    ctx.run();
    delivered += result.get();
  }
  CHECK(delivered == 300);
}

}  // namespace
