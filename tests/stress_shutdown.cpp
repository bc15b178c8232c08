// Stress (issue 5, item 2): shutdown races, thousands of iterations each (scaled by
// OFFLOAD_STRESS_SCALE; fewer by default under sanitizers):
//
//  1. an event_loop on a thread is stopped and closed (on its own thread or on another one)
//     while 4 producer threads call call_soon_threadsafe and run_coroutine_threadsafe: each
//     submission either throws loop_closed or is processed (a callback runs exactly once unless
//     its handle's cancel() returned true, in FIFO order per producer; a future resolves with
//     its value, loop_closed or cancelled), refusal is final, every future is done once close()
//     has returned, and every coroutine frame is destroyed;
//  2. the same against the destruction of an offload::loop_thread;
//  3. thread_pool::shutdown(wait, cancel_pending), all four combinations, called from the main
//     thread or from the coroutines' loop thread, racing 3 threads submitting with callbacks and
//     4 coroutines awaiting calls (on a pool with an unbounded or a bounded queue): each call
//     completes exactly once (its value; operation_aborted, only with
//     cancel_pending; or executor_shutdown), f runs at most once and only for a value, a refused
//     submission runs nothing and completes nothing;
//  4. an io_context (plain, run by 1 or 2 threads, or an event_loop's own, closed) destroyed with
//     offloaded calls in flight on its default executor, a shared offload::thread_pool and an
//     asio::thread_pool: every awaiter either completed or its frame was destroyed while it
//     awaited (an RAII probe in each frame), no frame is leaked, destruction waited for the
//     running calls, and no call starts afterwards.
//
// A watchdog per test aborts with the test's counters if it stalls or overruns.
//
// Distributed under the Boost Software License, Version 1.0.
#include "catch.hpp"
#include "loop_helpers.hpp"
#include "probes.hpp"
#include "stress.hpp"

#include <offload/offload.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <future>
#include <latch>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace {

namespace net = offload::net;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

// -- scale (the seed, the scale from the environment and the watchdog: stress.hpp) -----------

/// Iterations at scale 1, as a fraction of the plain build's: TSan makes thread creation and
/// every synchronization slower; the fraction keeps the stress label within about 3 minutes per
/// sanitizer build on 2 cores (measured on this project's machine).
#if defined(OFFLOAD_STRESS_TSAN)
constexpr double build_factor = 0.5;
#elif defined(OFFLOAD_STRESS_ASAN)
constexpr double build_factor = 1.0;
#else
constexpr double build_factor = 1.0;
#endif
using offload_test::stress_build_kind;
using offload_test::stress_scale;
using offload_test::stress_seed;
using offload_test::watchdog;

int iterations(int plain_count) {
  return std::max(10, static_cast<int>(plain_count * build_factor * stress_scale()));
}

/// What the watchdog reports: the iteration it is in, and a progress counter.
struct progress_state {
  explicit progress_state(std::uint64_t s) : seed(s) {}
  std::atomic<std::uint64_t> iteration{0};
  std::atomic<std::uint64_t> events{0};
  const std::uint64_t seed;
  std::uint64_t total() const { return iteration.load() * 1'000'000 + events.load(); }
  std::string status() const {
    return "seed " + std::to_string(seed) + ", iteration " + std::to_string(iteration.load()) +
           ", " + std::to_string(events.load()) + " events";
  }
};

constexpr auto watchdog_limit = 570s;  // ctest kills at 600 s: say why first
constexpr auto watchdog_stall = 60s;

/// The start of each test: its seed (printed, so that a failure can be replayed), its
/// progress, and a watchdog over it.
struct watched_run {
  watched_run(const char* what, int iterations)
      : progress(stress_seed()),
        dog(
            std::string("stress_shutdown (") + what + ")", watchdog_limit, watchdog_stall,
            [this] { return progress.total(); }, [this] { return progress.status(); }) {
    std::printf("stress_shutdown: %s: %s build, %d iterations, seed %llu\n", what,
                stress_build_kind, iterations, static_cast<unsigned long long>(progress.seed));
  }
  progress_state progress;
  watchdog dog;
};

/// Counts the copies alive of the probe passed to each coroutine: once a frame is destroyed
/// (run to its end, or torn down unfinished) its copy is gone. Zero at the end: no frame leaked.
struct frame_probe {
  explicit frame_probe(std::atomic<long>* l) : live(l) { live->fetch_add(1); }
  frame_probe(const frame_probe& other) : live(other.live) { live->fetch_add(1); }
  frame_probe& operator=(const frame_probe&) = delete;
  ~frame_probe() { live->fetch_sub(1); }
  std::atomic<long>* live;
};

enum class code_kind { none, value, loop_closed, cancelled, executor_shutdown, queue_full, other };

code_kind kind_of(std::exception_ptr e) {
  if (!e) return code_kind::none;
  try {
    std::rethrow_exception(e);
  } catch (const offload::net_system_error& err) {
    if (err.code() == net::error::operation_aborted) return code_kind::cancelled;
#if !defined(OFFLOAD_USE_BOOST_ASIO)
    if (err.code() == offload::errc::loop_closed) return code_kind::loop_closed;
    if (err.code() == offload::errc::executor_shutdown) return code_kind::executor_shutdown;
    if (err.code() == offload::errc::queue_full) return code_kind::queue_full;
#endif
#if defined(OFFLOAD_USE_BOOST_ASIO)
  } catch (const std::system_error& err) {
    if (err.code() == offload::errc::loop_closed) return code_kind::loop_closed;
    if (err.code() == offload::errc::executor_shutdown) return code_kind::executor_shutdown;
    if (err.code() == offload::errc::queue_full) return code_kind::queue_full;
#endif
  } catch (...) {
  }
  return code_kind::other;
}

/// Runs `submit`; the kind of error it threw (none if it returned).
template <typename F>
code_kind thrown_by(F&& submit) {
  try {
    submit();
  } catch (...) {
    return kind_of(std::current_exception());
  }
  return code_kind::none;
}

void spin_for(std::chrono::nanoseconds d) {
  const auto until = clock_type::now() + d;
  while (clock_type::now() < until) {
  }
}

// ================================================================================================
// 1, 2. A loop stopped and closed while 4 producers submit
// ================================================================================================

constexpr int producers = 4;

/// Touched by the loop's callbacks: on the loop's thread, then (after it has stopped) by
/// close() on whichever thread closes it.
struct loop_side {
  std::uint64_t ran[producers] = {};
  int last_seq[producers] = {-1, -1, -1, -1};
  std::uint64_t out_of_order = 0;
};

/// One producer's view of one iteration.
struct producer_record {
  std::uint64_t soon_accepted = 0, soon_cancelled = 0, coro_accepted = 0;
  std::uint64_t refused = 0, slowed = 0, accepted_after_refusal = 0, other_errors = 0;
  std::vector<offload::concurrent_future<int>> futures;
  std::vector<int> expected;
};

struct produce_shared {
  std::atomic<long> live_frames{0};
  std::atomic<std::uint64_t> accepted{0};
  std::atomic<int> producers_done{0};
  std::atomic<std::uint64_t> offloaded_ran{0};
};

offload::awaitable<int> echo(frame_probe, int value, int yields, bool offload_it,
                             std::atomic<std::uint64_t>* offloaded_ran) {
  for (int i = 0; i < yields; ++i) co_await offload_test::yield_once();
  if (offload_it) {
    auto f = [offloaded_ran, value] {
      offloaded_ran->fetch_add(1);
      return value;
    };
    value = co_await offload::to_thread(f);
  }
  co_return value;
}

/// Submits to `loop` until it refuses (loop_closed), then checks that the refusal is final.
void produce(offload::event_loop& loop, int p, std::uint64_t seed, loop_side& side,
             produce_shared& shared, producer_record& rec, std::latch& start) {
  std::mt19937 rng(static_cast<std::uint32_t>(seed));
  start.arrive_and_wait();
  // Past this many submissions a producer slows down (50 us apart) but goes on racing the
  // close: stopping and closing a flooded loop takes a while on 2 cores.
  constexpr int full_speed = 400;
  auto submit = [&](int seq, bool coro) {
    if (!coro) {
      offload::handle h = loop.call_soon_threadsafe([&side, p, seq] {
        ++side.ran[p];
        if (seq <= side.last_seq[p]) ++side.out_of_order;
        side.last_seq[p] = seq;
      });
      ++rec.soon_accepted;
      if (seq % 5 == 0 && h.cancel()) ++rec.soon_cancelled;
    } else {
      const int yields = static_cast<int>(rng() % 3);
      const bool offload_it = rng() % 4 == 0;
      auto fut = offload::run_coroutine_threadsafe(
          echo(frame_probe{&shared.live_frames}, seq, yields, offload_it, &shared.offloaded_ran),
          loop);
      ++rec.coro_accepted;
      if (seq % 7 == 0) fut.cancel();
      rec.futures.push_back(std::move(fut));
      rec.expected.push_back(seq);
    }
  };
  int seq = 0;
  for (;; ++seq) {
    if (seq == full_speed) ++rec.slowed;
    if (seq >= full_speed) std::this_thread::sleep_for(50us);
    const bool coro = rng() % 3 == 0;
    const code_kind k = thrown_by([&] { submit(seq, coro); });
    if (k == code_kind::none) {
      shared.accepted.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (k == code_kind::loop_closed) {
      ++rec.refused;
    } else {
      ++rec.other_errors;
    }
    break;
  }
  // Refusal is final: both kinds of submission keep failing with loop_closed.
  for (int extra = 0; extra < 2; ++extra) {
    const code_kind k = thrown_by([&] { submit(++seq, extra == 1); });
    if (k == code_kind::none) {
      ++rec.accepted_after_refusal;
    } else if (k != code_kind::loop_closed) {
      ++rec.other_errors;
    }
  }
  shared.producers_done.fetch_add(1);
}

struct close_tally {
  std::uint64_t iterations = 0, accepted = 0, refused = 0, slowed = 0, callbacks_ran = 0,
                cancelled_handles = 0;
  std::uint64_t futures = 0, values = 0, loop_closed = 0, cancelled = 0;
  std::uint64_t not_done = 0, wrong = 0, lost_callbacks = 0, out_of_order = 0, leaked_frames = 0;
  std::uint64_t accepted_after_refusal = 0, other_errors = 0;
};

/// Checks one iteration's records once the loop is closed and the producers have returned.
void check_iteration(const loop_side& side, std::vector<producer_record>& recs,
                     const produce_shared& shared, close_tally& t) {
  ++t.iterations;
  t.out_of_order += side.out_of_order;
  for (int p = 0; p < producers; ++p) {
    producer_record& rec = recs[p];
    t.accepted += rec.soon_accepted + rec.coro_accepted;
    t.refused += rec.refused;
    t.slowed += rec.slowed;
    t.callbacks_ran += side.ran[p];
    t.cancelled_handles += rec.soon_cancelled;
    t.accepted_after_refusal += rec.accepted_after_refusal;
    t.other_errors += rec.other_errors;
    if (side.ran[p] != rec.soon_accepted - rec.soon_cancelled) ++t.lost_callbacks;
    for (std::size_t i = 0; i < rec.futures.size(); ++i) {
      auto& fut = rec.futures[i];
      ++t.futures;
      if (!fut.done()) {
        ++t.not_done;  // close() has returned: nothing may still be pending
        if (!fut.wait_for(10s)) continue;
      }
      const std::exception_ptr e = fut.exception();
      switch (kind_of(e)) {
        case code_kind::none:
          if (fut.result() == rec.expected[i]) {
            ++t.values;
          } else {
            ++t.wrong;
          }
          break;
        case code_kind::loop_closed:
          ++t.loop_closed;
          break;
        case code_kind::cancelled:
          ++t.cancelled;
          break;
        default:
          ++t.wrong;
          break;
      }
    }
  }
  if (shared.live_frames.load() != 0) ++t.leaked_frames;
}

void require_clean(const close_tally& t) {
  CHECK(t.not_done == 0);
  CHECK(t.wrong == 0);
  CHECK(t.lost_callbacks == 0);
  CHECK(t.out_of_order == 0);
  CHECK(t.leaked_frames == 0);
  CHECK(t.accepted_after_refusal == 0);
  CHECK(t.other_errors == 0);
  CHECK(t.refused == t.iterations * producers);  // each producer ended on loop_closed
  CHECK(t.values + t.loop_closed + t.cancelled == t.futures);
  CHECK(t.loop_closed > 0);  // some coroutines really were pending when their loop closed
}

void print_close_tally(const char* what, const close_tally& t, double seconds) {
  std::printf(
      "stress_shutdown: %s: %llu iterations in %.1f s: %llu submissions accepted; %llu "
      "refused (loop_closed) (%llu producers slowed down before the close); %llu callbacks "
      "ran (+%llu cancelled by their handle); %llu futures: %llu values, %llu loop_closed, %llu "
      "cancelled\n",
      what, static_cast<unsigned long long>(t.iterations), seconds,
      static_cast<unsigned long long>(t.accepted), static_cast<unsigned long long>(t.refused),
      static_cast<unsigned long long>(t.slowed), static_cast<unsigned long long>(t.callbacks_ran),
      static_cast<unsigned long long>(t.cancelled_handles),
      static_cast<unsigned long long>(t.futures), static_cast<unsigned long long>(t.values),
      static_cast<unsigned long long>(t.loop_closed), static_cast<unsigned long long>(t.cancelled));
  std::fflush(stdout);
}

/// Waits (yielding) until the producers have had `threshold` submissions accepted.
void wait_for_accepted(const produce_shared& shared, std::uint64_t threshold) {
  while (shared.accepted.load(std::memory_order_relaxed) < threshold) std::this_thread::yield();
}

// ================================================================================================
// 3. thread_pool::shutdown racing submissions
// ================================================================================================

enum class outcome : std::uint8_t { none, value, aborted, executor_shutdown, other };

struct pool_iteration {
  explicit pool_iteration(std::size_t n) : completions(n), ran(n), result(n), accepted(n) {}
  std::vector<std::atomic<std::uint8_t>> completions;
  std::vector<std::atomic<std::uint8_t>> ran;
  std::vector<std::atomic<std::uint8_t>> result;
  std::vector<std::uint8_t> accepted;  // plain submitters only: async_run returned
  std::atomic<std::uint64_t> submitted{0};
  std::atomic<std::uint64_t> queue_full{0};
  std::atomic<std::uint64_t> other_submit_errors{0};

  void record(std::size_t id, std::exception_ptr e, int v) {
    outcome o = outcome::other;
    if (!e) {
      o = v == static_cast<int>(id) ? outcome::value : outcome::other;
    } else {
      switch (kind_of(e)) {
        case code_kind::cancelled:
          o = outcome::aborted;
          break;
        case code_kind::executor_shutdown:
          o = outcome::executor_shutdown;
          break;
        default:
          break;
      }
    }
    result[id].store(static_cast<std::uint8_t>(o));
    completions[id].fetch_add(1);
  }
};

struct pool_call {
  pool_iteration* it;
  std::size_t id;
  int operator()() const {
    it->ran[id].fetch_add(1);
    if (id % 3 == 0) spin_for(std::chrono::microseconds(id % 20));
    return static_cast<int>(id);
  }
};

constexpr int pool_plain_producers = 3;
constexpr int pool_coroutines = 4;
constexpr std::size_t pool_cap = 500;  // calls per submitter and iteration, at most

offload::awaitable<void> pool_submitter(offload::thread_pool* pool, pool_iteration* it,
                                        std::size_t first) {
  for (std::size_t id = first; id < first + pool_cap; ++id) {
    pool_call f{it, id};
    std::exception_ptr e;
    int v = -1;
    try {
      v = co_await offload::run_in_executor(*pool, f);
    } catch (...) {
      e = std::current_exception();
    }
    it->submitted.fetch_add(1, std::memory_order_relaxed);
    it->record(id, e, v);
    if (e && kind_of(e) == code_kind::executor_shutdown) co_return;  // refused, or stranded
  }
}

struct pool_tally {
  std::uint64_t iterations = 0, accepted = 0, refused = 0, values = 0, aborted = 0, stranded = 0,
                queue_full = 0, from_loop = 0, by_combination[4] = {};
  std::uint64_t bad_completions = 0, bad_ran = 0, bad_outcome = 0, half_submitted = 0, other = 0;
};

// ================================================================================================
// 4. An io_context destroyed with offloaded calls in flight
// ================================================================================================

struct coro_record {
  std::atomic<int> started{0};    // calls begun
  std::atomic<int> completed{0};  // calls whose co_await returned
  std::atomic<std::uint8_t> entered{0}, finished{0}, body_ended{0}, ended_in_await{0},
      handler_ran{0};
};

struct inflight_shared {
  std::atomic<long> live_frames{0};
  std::atomic<std::uint64_t> f_started{0};
  std::atomic<std::uint64_t> f_finished{0};
  std::atomic<std::uint64_t> completed_calls{0};
  std::atomic<std::uint64_t> errors{0};
};

/// Sets its record's flags when the frame it lives in is destroyed (finished or not).
struct body_guard {
  coro_record* rec;
  ~body_guard() {
    if (rec->started.load() != rec->completed.load()) rec->ended_in_await.store(1);
    rec->body_ended.store(1);
  }
};

struct inflight_call {
  inflight_shared* shared;
  unsigned spin_us;
  void operator()() const {
    shared->f_started.fetch_add(1);
    spin_for(std::chrono::microseconds(spin_us));
    shared->f_finished.fetch_add(1);
  }
};

constexpr int inflight_coroutines = 8;
constexpr int inflight_calls = 40;

offload::awaitable<void> inflight_worker(frame_probe, coro_record* rec, inflight_shared* shared,
                                         offload::thread_pool* pool, net::thread_pool* asio_pool,
                                         std::uint64_t seed) {
  body_guard guard{rec};
  rec->entered.store(1);
  std::mt19937 rng(static_cast<std::uint32_t>(seed));
  for (int i = 0; i < inflight_calls; ++i) {
    inflight_call f{shared, static_cast<unsigned>(rng() % 30)};
    rec->started.fetch_add(1);
    switch (rng() % 3) {
      case 0:
        co_await offload::to_thread(f);
        break;
      case 1:
        co_await offload::run_in_executor(*pool, f);
        break;
      default:
        co_await offload::run_in_executor(*asio_pool, f);
        break;
    }
    rec->completed.fetch_add(1);
    shared->completed_calls.fetch_add(1);
  }
  rec->finished.store(1);
}

struct inflight_tally {
  std::uint64_t iterations = 0, coroutines = 0, finished = 0, destroyed_in_await = 0,
                destroyed_unstarted = 0, destroyed_between = 0, calls_started = 0,
                calls_completed = 0;
  std::uint64_t leaked = 0, still_running = 0, started_late = 0, bad_record = 0, errors = 0;
};

}  // namespace

// ================================================================================================

TEST_CASE(
    "shutdown race: an event_loop stopped and closed while 4 producers call "
    "call_soon_threadsafe and run_coroutine_threadsafe",
    "[stress][shutdown][threadsafe]") {
  const int n = iterations(2000);
  watched_run run("loop close", n);
  progress_state& progress = run.progress;
  INFO("seed " << progress.seed);
  std::mt19937_64 rng(progress.seed);
  close_tally t;
  const auto start = clock_type::now();
  for (int it = 0; it < n; ++it) {
    progress.iteration.store(static_cast<std::uint64_t>(it));
    const bool close_on_loop_thread = it % 2 == 0;
    const std::uint64_t threshold = rng() % 400;
    auto loop = std::make_unique<offload::event_loop>();
    loop_side side;
    produce_shared shared;
    std::vector<producer_record> recs(producers);
    std::latch start_line(producers + 1);
    std::thread runner([&] {
      loop->run_forever();
      if (close_on_loop_thread) loop->close();
    });
    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p) {
      threads.emplace_back(produce, std::ref(*loop), p, rng(), std::ref(side), std::ref(shared),
                           std::ref(recs[p]), std::ref(start_line));
    }
    start_line.arrive_and_wait();
    wait_for_accepted(shared, threshold);
    loop->stop();
    runner.join();
    if (!close_on_loop_thread) loop->close();
    for (auto& th : threads) th.join();
    progress.events.fetch_add(shared.accepted.load());
    check_iteration(side, recs, shared, t);
    loop.reset();
  }
  print_close_tally("event_loop stop+close", t,
                    std::chrono::duration<double>(clock_type::now() - start).count());
  require_clean(t);
}

namespace {
offload::awaitable<int> hold_close_open(std::atomic<int>* producers_done,
                                        std::atomic<bool>* gate_running) {
  // Runs on the loop's default executor, whose shutdown close() waits for: the loop_thread's
  // destructor cannot free the loop before every producer has seen loop_closed and stopped
  // touching it (the race under test is stop + close against the producers).
  auto f = [producers_done, gate_running] {
    gate_running->store(true);
    const auto give_up = clock_type::now() + 300s;  // the watchdog fires long before
    while (producers_done->load() < producers && clock_type::now() < give_up) {
      std::this_thread::sleep_for(20us);
    }
    return 1;
  };
  co_return co_await offload::to_thread(f);
}
}  // namespace

TEST_CASE(
    "shutdown race: an offload::loop_thread destroyed while 4 producers call "
    "call_soon_threadsafe and run_coroutine_threadsafe",
    "[stress][shutdown][loop_thread]") {
  const int n = iterations(1000);
  watched_run run("loop_thread destruction", n);
  progress_state& progress = run.progress;
  INFO("seed " << progress.seed);
  std::mt19937_64 rng(progress.seed);
  close_tally t;
  std::uint64_t gate_not_closed = 0;
  const auto start = clock_type::now();
  for (int it = 0; it < n; ++it) {
    progress.iteration.store(static_cast<std::uint64_t>(it));
    const std::uint64_t threshold = rng() % 400;
    loop_side side;
    produce_shared shared;
    std::vector<producer_record> recs(producers);
    std::latch start_line(producers + 1);
    auto lt = std::make_unique<offload::loop_thread>();
    std::atomic<bool> gate_running{false};
    auto gate = offload::run_coroutine_threadsafe(
        hold_close_open(&shared.producers_done, &gate_running), lt->loop());
    while (!gate_running.load()) std::this_thread::yield();
    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p) {
      threads.emplace_back(produce, std::ref(lt->loop()), p, rng(), std::ref(side),
                           std::ref(shared), std::ref(recs[p]), std::ref(start_line));
    }
    start_line.arrive_and_wait();
    wait_for_accepted(shared, threshold);
    lt.reset();  // stops the loop, closes it (pending futures: loop_closed) and joins
    for (auto& th : threads) th.join();
    if (!gate.done() || kind_of(gate.exception()) != code_kind::loop_closed) ++gate_not_closed;
    progress.events.fetch_add(shared.accepted.load());
    check_iteration(side, recs, shared, t);
  }
  print_close_tally("loop_thread destruction", t,
                    std::chrono::duration<double>(clock_type::now() - start).count());
  require_clean(t);
  CHECK(gate_not_closed == 0);
}

TEST_CASE(
    "shutdown race: thread_pool::shutdown, with and without wait and cancel_pending, racing "
    "3 threads submitting with callbacks and 4 coroutines awaiting calls",
    "[stress][shutdown][thread_pool]") {
  const int n = iterations(2000);
  watched_run run("thread_pool shutdown", n);
  progress_state& progress = run.progress;
  INFO("seed " << progress.seed);
  std::mt19937_64 rng(progress.seed);
  pool_tally t;
  offload_test::loop_on_thread home;  // the coroutines' loop, for all iterations
  auto on_home = [&home](auto fn) {   // runs fn on the loop's thread and waits for it
    std::promise<void> done;
    auto finished = done.get_future();
    home.loop.call_soon_threadsafe([&] {
      fn();
      done.set_value();
    });
    finished.wait();
  };
  constexpr std::size_t ids = (pool_plain_producers + pool_coroutines) * pool_cap;
  const auto start = clock_type::now();
  for (int it = 0; it < n; ++it) {
    progress.iteration.store(static_cast<std::uint64_t>(it));
    const bool wait = it % 2 == 0;
    const bool cancel_pending = (it / 2) % 2 == 0;
    // Shut down from the main thread, or from the loop's thread where the coroutines run.
    // (From the main thread, TSan once reported the exception object shutdown(cancel_pending)
    // shared between the cancelled calls: tests/test_pool_shutdown_errors.cpp.)
    const bool from_loop = (it / 4) % 2 == 1;
    const std::uint64_t threshold = rng() % 300;
    offload::thread_pool_options options;
    options.max_workers = 1 + rng() % 3;
    options.max_queue = it % 5 == 4 ? 8 : 0;
    auto pool = std::make_unique<offload::thread_pool>(options);
    auto data = std::make_unique<pool_iteration>(ids);
    std::latch start_line(pool_plain_producers + 1);

    std::vector<offload::concurrent_future<void>> coroutines;
    for (int c = 0; c < pool_coroutines; ++c) {
      coroutines.push_back(offload::run_coroutine_threadsafe(
          pool_submitter(pool.get(), data.get(), (pool_plain_producers + c) * pool_cap),
          home.loop));
    }
    std::vector<std::thread> threads;
    for (int p = 0; p < pool_plain_producers; ++p) {
      threads.emplace_back([&, p] {
        pool_iteration& d = *data;
        start_line.arrive_and_wait();
        for (std::size_t id = p * pool_cap; id < (p + 1) * pool_cap; ++id) {
          pool_call f{&d, id};
          auto done = [&d, id](std::exception_ptr e, int v) { d.record(id, e, v); };
          const code_kind k = thrown_by([&] { offload::async_run(*pool, f, done); });
          d.submitted.fetch_add(1, std::memory_order_relaxed);
          if (k == code_kind::none) {
            d.accepted[id] = 1;
          } else if (k == code_kind::queue_full) {
            d.queue_full.fetch_add(1);  // a thread cannot wait for room: it tries again
          } else if (k == code_kind::executor_shutdown) {
            break;
          } else {
            d.other_submit_errors.fetch_add(1);
            break;
          }
        }
      });
    }
    start_line.arrive_and_wait();
    while (data->submitted.load(std::memory_order_relaxed) < threshold) std::this_thread::yield();
    if (from_loop) {
      on_home([&] { pool->shutdown(wait, cancel_pending); });
    } else {
      pool->shutdown(wait, cancel_pending);
    }
    for (auto& th : threads) th.join();
    // After shutdown(false) too: fails the calls no thread could run.
    if (from_loop) {
      on_home([&] { pool->join(); });
    } else {
      pool->join();
    }
    for (auto& c : coroutines) {
      if (c.exception()) ++t.other;
    }
    pool.reset();  // only now: the coroutines use it until they have seen executor_shutdown
    progress.events.fetch_add(data->submitted.load());

    // Every call is accounted for, one by one.
    ++t.iterations;
    ++t.by_combination[(wait ? 2 : 0) + (cancel_pending ? 1 : 0)];
    if (from_loop) ++t.from_loop;
    t.queue_full += data->queue_full.load();
    t.other += data->other_submit_errors.load();
    for (std::size_t id = 0; id < ids; ++id) {
      const unsigned completions = data->completions[id].load(), ran = data->ran[id].load();
      const auto o = static_cast<outcome>(data->result[id].load());
      const bool plain = id < pool_plain_producers * pool_cap;
      if (plain && !data->accepted[id]) {
        if (completions != 0 || ran != 0) ++t.half_submitted;  // refused: nothing may happen
        continue;
      }
      if (completions == 0 && ran == 0) continue;  // a coroutine's id it never reached
      if (completions != 1) {
        ++t.bad_completions;
        continue;
      }
      if (ran > 1) ++t.bad_ran;
      switch (o) {
        case outcome::value:
          ++t.values;
          if (ran != 1) ++t.bad_ran;
          break;
        case outcome::aborted:
          ++t.aborted;
          if (ran != 0 || !cancel_pending) ++t.bad_outcome;
          break;
        case outcome::executor_shutdown:  // refused at the co_await, or stranded by shutdown
          if (ran != 0) ++t.bad_outcome;
          if (plain) {
            ++t.stranded;
          } else {
            ++t.refused;
          }
          break;
        default:
          ++t.bad_outcome;
          break;
      }
      if (plain || o != outcome::executor_shutdown) ++t.accepted;
    }
  }
  std::printf(
      "stress_shutdown: thread_pool shutdown: %llu iterations in %.1f s (%llu/%llu/%llu/%llu "
      "with wait/cancel_pending = 0/0, 0/1, 1/0, 1/1; %llu of them from the coroutines' loop "
      "thread): %llu calls accepted: %llu values, %llu aborted by cancel_pending, %llu stranded "
      "(executor_shutdown); %llu coroutine submissions refused; %llu queue_full\n",
      static_cast<unsigned long long>(t.iterations),
      std::chrono::duration<double>(clock_type::now() - start).count(),
      static_cast<unsigned long long>(t.by_combination[0]),
      static_cast<unsigned long long>(t.by_combination[1]),
      static_cast<unsigned long long>(t.by_combination[2]),
      static_cast<unsigned long long>(t.by_combination[3]),
      static_cast<unsigned long long>(t.from_loop), static_cast<unsigned long long>(t.accepted),
      static_cast<unsigned long long>(t.values), static_cast<unsigned long long>(t.aborted),
      static_cast<unsigned long long>(t.stranded), static_cast<unsigned long long>(t.refused),
      static_cast<unsigned long long>(t.queue_full));
  std::fflush(stdout);
  CHECK(t.bad_completions == 0);
  CHECK(t.bad_ran == 0);
  CHECK(t.bad_outcome == 0);
  CHECK(t.half_submitted == 0);
  CHECK(t.other == 0);
  CHECK(t.aborted > 0);  // cancel_pending really caught queued calls
}

TEST_CASE(
    "shutdown race: an io_context destroyed with offloaded calls in flight: each awaiter "
    "completes or its frame is destroyed, none is leaked, running calls are waited for",
    "[stress][shutdown][io_context]") {
  const int n = iterations(2000);
  watched_run run("io_context destruction", n);
  progress_state& progress = run.progress;
  INFO("seed " << progress.seed);
  std::mt19937_64 rng(progress.seed);
  inflight_tally t;
  inflight_shared shared;
  offload::thread_pool pool{2};
  net::thread_pool asio_pool{2};
  std::uint64_t after_last_destruction = 0;
  const auto start = clock_type::now();
  for (int it = 0; it < n; ++it) {
    progress.iteration.store(static_cast<std::uint64_t>(it));
    const int variant = it % 3;  // 0: io_context run by 1 thread, 1: by 2, 2: an event_loop
    const std::uint64_t threshold = rng() % (inflight_coroutines * inflight_calls / 2);
    if (shared.f_started.load() != after_last_destruction) ++t.started_late;
    const std::uint64_t completed_before = shared.completed_calls.load();
    std::vector<coro_record> recs(inflight_coroutines);

    auto spawn_all = [&](const auto& ex) {
      for (int k = 0; k < inflight_coroutines; ++k) {
        coro_record* rec = &recs[k];
        auto on_done = [rec, &shared](std::exception_ptr e) {
          if (e) shared.errors.fetch_add(1);
          rec->handler_ran.store(1);
        };
        net::co_spawn(ex,
                      inflight_worker(frame_probe{&shared.live_frames}, rec, &shared, &pool,
                                      &asio_pool, rng()),
                      std::move(on_done));
      }
    };
    auto reached = [&] { return shared.completed_calls.load() - completed_before >= threshold; };
    if (variant < 2) {
      auto ctx = std::make_unique<net::io_context>();
      spawn_all(ctx->get_executor());
      std::vector<std::thread> runners;
      for (int r = 0; r <= variant; ++r) runners.emplace_back([&] { ctx->run(); });
      while (!reached() && !ctx->stopped()) std::this_thread::yield();
      ctx->stop();
      for (auto& r : runners) r.join();
      ctx.reset();  // waits for the calls running, destroys the frames
    } else {
      auto loop = std::make_unique<offload::event_loop>();
      spawn_all(loop->get_executor());
      std::atomic<bool> returned{false};
      std::thread runner([&] {
        loop->run_forever();
        returned.store(true);
      });
      while (!reached() && !returned.load()) std::this_thread::yield();
      loop->stop();
      runner.join();
      loop->close();  // shuts its default executor down, then destroys its io_context
      loop.reset();
    }
    // Destruction waited for every call in flight: none runs now, and none starts later.
    if (shared.f_started.load() != shared.f_finished.load()) ++t.still_running;
    const std::uint64_t f_started_after = shared.f_started.load();
    if (shared.live_frames.load() != 0) ++t.leaked;

    ++t.iterations;
    for (const coro_record& rec : recs) {
      ++t.coroutines;
      const int started = rec.started.load(), completed = rec.completed.load();
      t.calls_started += static_cast<std::uint64_t>(started);
      t.calls_completed += static_cast<std::uint64_t>(completed);
      const bool in_await = started - completed == 1;
      const bool ok = (started == completed || in_await) &&
                      rec.body_ended.load() == rec.entered.load() &&
                      (rec.ended_in_await.load() != 0) == in_await &&
                      (rec.finished.load() == 0 || (completed == inflight_calls && !in_await)) &&
                      (rec.handler_ran.load() == 0 || rec.finished.load() != 0);
      if (!ok) ++t.bad_record;
      if (rec.finished.load() != 0) {
        ++t.finished;
      } else if (rec.entered.load() == 0) {
        ++t.destroyed_unstarted;
      } else if (in_await) {
        ++t.destroyed_in_await;
      } else {
        ++t.destroyed_between;  // stopped between two calls (at no await of a call)
      }
    }
    // Checked again at the next iteration's start and at the end: no call of this io_context
    // starts after its destruction.
    after_last_destruction = f_started_after;
    progress.events.store(f_started_after);
  }
  pool.shutdown();
  asio_pool.join();
  if (shared.f_started.load() != after_last_destruction) ++t.started_late;
  t.errors = shared.errors.load();
  std::printf(
      "stress_shutdown: io_context destruction: %llu iterations in %.1f s: %llu coroutines: "
      "%llu finished, %llu destroyed while awaiting a call, %llu destroyed between calls, "
      "%llu destroyed before they started; %llu calls started, %llu completed\n",
      static_cast<unsigned long long>(t.iterations),
      std::chrono::duration<double>(clock_type::now() - start).count(),
      static_cast<unsigned long long>(t.coroutines), static_cast<unsigned long long>(t.finished),
      static_cast<unsigned long long>(t.destroyed_in_await),
      static_cast<unsigned long long>(t.destroyed_between),
      static_cast<unsigned long long>(t.destroyed_unstarted),
      static_cast<unsigned long long>(t.calls_started),
      static_cast<unsigned long long>(t.calls_completed));
  std::fflush(stdout);
  CHECK(t.leaked == 0);
  CHECK(t.still_running == 0);
  CHECK(t.started_late == 0);
  CHECK(t.bad_record == 0);
  CHECK(t.errors == 0);
  CHECK(t.calls_started == t.calls_completed + t.destroyed_in_await);
  CHECK(t.destroyed_in_await > 0);  // the race was really run
}
