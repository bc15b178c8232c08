// offload::to_thread: results, threads, exceptions, argument passing, volume, and the default
// executor it uses.
//
// Distributed under the Boost Software License, Version 1.0.
#include "catch.hpp"
#include "probes.hpp"

#include <offload/errors.hpp>
#include <offload/event_loop.hpp>
#include <offload/thread_pool.hpp>
#include <offload/to_thread.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

namespace net = offload::net;
using namespace std::chrono_literals;
using offload_test::contains;
using offload_test::this_thread_name;

using identity = std::pair<std::thread::id, std::string>;

identity worker_identity() { return {std::this_thread::get_id(), this_thread_name()}; }

std::string join_id(const std::string& prefix, int id) { return prefix + std::to_string(id); }

int twice(int x) { return 2 * x; }

// -- results ---------------------------------------------------------------------------------

offload::awaitable<void> round_trips() {
  const int i = co_await offload::to_thread([] { return 42; });
  CHECK(i == 42);

  // Longer than any small-string buffer: the heap buffer itself must travel intact.
  const std::string s = co_await offload::to_thread([] { return std::string(1000, 'x') + "end"; });
  CHECK(s.size() == 1003);
  CHECK(s.substr(1000) == "end");

  const std::vector<int> v = co_await offload::to_thread([] {
    std::vector<int> out(1000);
    std::iota(out.begin(), out.end(), 0);
    return out;
  });
  REQUIRE(v.size() == 1000);
  CHECK(v.front() == 0);
  CHECK(v.back() == 999);
  CHECK(std::accumulate(v.begin(), v.end(), 0) == 999 * 1000 / 2);

  const std::string prefix = "id-";
  const std::string joined = co_await offload::to_thread(join_id, prefix, 7);
  CHECK(joined == "id-7");
}

TEST_CASE("to_thread returns int, std::string and std::vector results", "[to_thread]") {
  offload::run(round_trips());
}

// -- threads ---------------------------------------------------------------------------------

struct threads_seen {
  std::thread::id before;
  std::thread::id worker;
  std::thread::id after;
  bool resumed_on_executor = false;
};

offload::awaitable<threads_seen> observe_threads_on_loop() {
  threads_seen s;
  s.before = std::this_thread::get_id();
  s.worker = co_await offload::to_thread([] { return std::this_thread::get_id(); });
  s.after = std::this_thread::get_id();
  s.resumed_on_executor = offload::get_running_loop().get_executor().running_in_this_thread();
  co_return s;
}

TEST_CASE("to_thread runs f on a worker thread and resumes on the loop's thread (event_loop)",
          "[to_thread]") {
  const threads_seen s = offload::run(observe_threads_on_loop());
  CHECK(s.before == std::this_thread::get_id());  // run() runs the loop on this thread
  CHECK(s.worker != s.before);
  CHECK(s.after == s.before);
  CHECK(s.resumed_on_executor);  // on the loop's strand, not only on its thread
}

offload::awaitable<threads_seen> observe_threads_on_io_context() {
  threads_seen s;
  s.before = std::this_thread::get_id();
  s.worker = co_await offload::to_thread([] { return std::this_thread::get_id(); });
  s.after = std::this_thread::get_id();
  auto ex = co_await net::this_coro::executor;
  const auto* io = ex.target<net::io_context::executor_type>();
  s.resumed_on_executor = io != nullptr && io->running_in_this_thread();
  co_return s;
}

TEST_CASE(
    "to_thread runs f on a worker thread and resumes on the io_context's thread "
    "(plain io_context + co_spawn, no event_loop)",
    "[to_thread]") {
  net::io_context ctx;
  std::future<threads_seen> result =
      net::co_spawn(ctx, observe_threads_on_io_context(), net::use_future);
  std::thread::id runner_id;
  std::thread runner([&] {
    runner_id = std::this_thread::get_id();
    ctx.run();
  });
  runner.join();
  REQUIRE(result.wait_for(0s) == std::future_status::ready);
  const threads_seen s = result.get();
  CHECK(s.before == runner_id);
  CHECK(s.worker != runner_id);
  CHECK(s.worker != std::this_thread::get_id());
  CHECK(s.after == runner_id);
  CHECK(s.resumed_on_executor);
}

offload::awaitable<threads_seen> observe_threads_on_strand() {
  threads_seen s;
  s.before = std::this_thread::get_id();
  s.worker = co_await offload::to_thread([] { return std::this_thread::get_id(); });
  s.after = std::this_thread::get_id();
  auto ex = co_await net::this_coro::executor;
  const auto* strand = ex.target<net::strand<net::io_context::executor_type>>();
  s.resumed_on_executor = strand != nullptr && strand->running_in_this_thread();
  co_return s;
}

TEST_CASE(
    "to_thread from a coroutine on a strand of a plain io_context resumes inside that "
    "strand",
    "[to_thread]") {
  net::io_context ctx;
  std::future<threads_seen> result =
      net::co_spawn(net::make_strand(ctx), observe_threads_on_strand(), net::use_future);
  ctx.run();
  REQUIRE(result.wait_for(0s) == std::future_status::ready);
  const threads_seen s = result.get();
  CHECK(s.before == std::this_thread::get_id());
  CHECK(s.worker != s.before);
  CHECK(s.after == s.before);
  CHECK(s.resumed_on_executor);
}

// -- exceptions ------------------------------------------------------------------------------

struct custom_error : std::exception {
  custom_error(int c, std::string d) : code(c), detail(std::move(d)) {}
  const char* what() const noexcept override { return "custom_error"; }
  int code;
  std::string detail;
};

offload::awaitable<void> custom_exception_round_trip() {
  bool caught = false;
  try {
    (void)co_await offload::to_thread([]() -> int { throw custom_error(17, "from the worker"); });
  } catch (const custom_error& e) {
    caught = true;
    CHECK(e.code == 17);
    CHECK(e.detail == "from the worker");
  }
  CHECK(caught);

  // The same through a void call.
  caught = false;
  try {
    co_await offload::to_thread([] { throw custom_error(18, "void"); });
  } catch (const custom_error& e) {
    caught = true;
    CHECK(e.code == 18);
  }
  CHECK(caught);
}

offload::awaitable<void> non_std_exception_round_trip() {
  bool caught = false;
  try {
    (void)co_await offload::to_thread([]() -> int { throw 7; });
  } catch (int v) {
    caught = true;
    CHECK(v == 7);
  } catch (...) {
    FAIL("the thrown int arrived as something else");
  }
  CHECK(caught);
}

offload::awaitable<void> system_error_round_trip() {
  bool caught = false;
  try {
    (void)co_await offload::to_thread([]() -> std::string {
      throw std::system_error(std::make_error_code(std::errc::permission_denied),
                              "open /etc/shadow");
    });
  } catch (const std::system_error& e) {
    caught = true;
    CHECK(e.code() == std::errc::permission_denied);
    CHECK(e.code().category() == std::generic_category());
    CHECK_THAT(e.what(), contains("open /etc/shadow"));
  }
  CHECK(caught);
}

TEST_CASE("an exception thrown by f arrives at the co_await with its original type",
          "[to_thread][errors]") {
  SECTION("a custom std::exception type with data members") {
    offload::run(custom_exception_round_trip());
  }
  SECTION("a non-std thrown type (throw 7) is caught as int") {
    offload::run(non_std_exception_round_trip());
  }
  SECTION("std::system_error keeps its error code and message") {
    offload::run(system_error_round_trip());
  }
}

// -- result kinds ----------------------------------------------------------------------------

offload::awaitable<void> void_result(std::atomic<int>& hits) {
  static_assert(std::is_same_v<decltype(offload::to_thread([] {})), offload::call<void>>);
  co_await offload::to_thread([&hits] { hits.fetch_add(1); });
  CHECK(hits.load() == 1);  // done before the co_await resumed
  int out = 0;
  co_await offload::to_thread([](int& o, int v) { o = v; }, std::ref(out), 31);
  CHECK(out == 31);
}

TEST_CASE("to_thread with a void f completes after f ran", "[to_thread]") {
  std::atomic<int> hits{0};
  offload::run(void_result(hits));
  CHECK(hits.load() == 1);
}

offload::awaitable<void> move_only_result() {
  std::unique_ptr<int> p = co_await offload::to_thread([] { return std::make_unique<int>(5); });
  REQUIRE(p != nullptr);
  CHECK(*p == 5);
}

TEST_CASE("to_thread returns a move-only result (std::unique_ptr<int>)", "[to_thread]") {
  offload::run(move_only_result());
}

struct no_default {
  no_default() = delete;
  explicit no_default(int v) : value(v), text(std::to_string(v)) {}
  int value;
  std::string text;
};
static_assert(!std::is_default_constructible_v<no_default>);

offload::awaitable<void> non_default_constructible_result() {
  no_default r = co_await offload::to_thread([] { return no_default(64); });
  CHECK(r.value == 64);
  CHECK(r.text == "64");

  bool caught = false;
  try {
    (void)co_await offload::to_thread([]() -> no_default { throw custom_error(3, "none"); });
  } catch (const custom_error& e) {
    caught = true;
    CHECK(e.code == 3);
  }
  CHECK(caught);
}

TEST_CASE("to_thread returns a result type that is not default-constructible", "[to_thread]") {
  offload::run(non_default_constructible_result());
}

// -- copies and moves ------------------------------------------------------------------------

struct result_tag {};
struct result_nd_tag {};
using result_probe = offload_test::counted<result_tag>;
using result_probe_nd = offload_test::counted<result_nd_tag, false>;

offload::awaitable<void> probe_results() {
  result_probe::reset();
  result_probe p = co_await offload::to_thread([] { return result_probe(99); });
  CHECK(p.value == 99);
  CHECK(result_probe::copies.load() == 0);

  result_probe_nd::reset();
  result_probe_nd q = co_await offload::to_thread([] { return result_probe_nd(98); });
  CHECK(q.value == 98);
  CHECK(result_probe_nd::copies.load() == 0);
}

TEST_CASE("the result comes back moved, never copied", "[to_thread]") {
  offload::run(probe_results());
}

struct arg_tag {};
using arg_probe = offload_test::counted<arg_tag>;

struct fn_tag {};
struct counting_fn {
  offload_test::counted<fn_tag> state{21};
  int operator()() const { return state.value * 2; }
};

offload::awaitable<void> probe_arguments() {
  auto look = [](const arg_probe& p) {
    return std::make_pair(p.value, reinterpret_cast<std::uintptr_t>(&p));
  };

  // An lvalue argument is decay-copied once, at the call site; then only moved.
  arg_probe original(5);
  arg_probe::reset();
  const auto [value, address] = co_await offload::to_thread(look, original);
  CHECK(value == 5);
  CHECK(arg_probe::copies.load() == 1);
  CHECK(address != reinterpret_cast<std::uintptr_t>(&original));  // f saw the copy

  // An rvalue argument is never copied.
  arg_probe::reset();
  const auto [value2, address2] = co_await offload::to_thread(look, std::move(original));
  CHECK(value2 == 5);
  CHECK(arg_probe::copies.load() == 0);
  (void)address2;

  // The callable itself: an rvalue is moved, an lvalue copied once.
  offload_test::counted<fn_tag>::reset();
  const int r1 = co_await offload::to_thread(counting_fn{});
  CHECK(r1 == 42);
  CHECK(offload_test::counted<fn_tag>::copies.load() == 0);
  counting_fn named;
  offload_test::counted<fn_tag>::reset();
  const int r2 = co_await offload::to_thread(named);
  CHECK(r2 == 42);
  CHECK(offload_test::counted<fn_tag>::copies.load() == 1);
}

TEST_CASE("arguments are decay-copied once at the call site, then only moved", "[to_thread]") {
  offload::run(probe_arguments());
}

offload::awaitable<void> reference_arguments() {
  int target = 0;
  co_await offload::to_thread([](int& t) { t = 123; }, std::ref(target));
  CHECK(target == 123);

  // Without std::ref, f gets a copy even when it takes a reference; std::cref passes the object.
  const int x = 1;
  const auto by_value = co_await offload::to_thread(
      [](const int& r) { return reinterpret_cast<std::uintptr_t>(&r); }, x);
  CHECK(by_value != reinterpret_cast<std::uintptr_t>(&x));
  const auto by_cref = co_await offload::to_thread(
      [](const int& r) { return reinterpret_cast<std::uintptr_t>(&r); }, std::cref(x));
  CHECK(by_cref == reinterpret_cast<std::uintptr_t>(&x));
}

TEST_CASE("std::ref passes a reference: f mutates the caller's variable", "[to_thread]") {
  offload::run(reference_arguments());
}

offload::awaitable<void> rvalue_arguments() {
  auto up = std::make_unique<int>(41);
  const int r =
      co_await offload::to_thread([](std::unique_ptr<int> p) { return *p + 1; }, std::move(up));
  CHECK(r == 42);
  CHECK(up == nullptr);  // moved into the call

  // f may take an rvalue reference: its argument is the call's own copy, passed as an rvalue.
  std::string text = "kept by the caller";
  const std::string taken = co_await offload::to_thread(
      [](std::string&& s) {
        std::string mine = std::move(s);
        return mine;
      },
      text);
  CHECK(taken == "kept by the caller");
  CHECK(text == "kept by the caller");
}

TEST_CASE("arguments reach f as rvalues: move-only arguments and rvalue-reference parameters",
          "[to_thread]") {
  offload::run(rvalue_arguments());
}

struct account {
  int balance = 0;
  int deposit(int amount) {
    balance += amount;
    return balance;
  }
  int get() const { return balance; }
};

offload::awaitable<void> member_function_calls() {
  account acc{100};
  // Through a pointer: the caller's object.
  const int r1 = co_await offload::to_thread(&account::deposit, &acc, 5);
  CHECK(r1 == 105);
  CHECK(acc.balance == 105);
  // By value: a decay-copy, the caller's object is untouched.
  const int r2 = co_await offload::to_thread(&account::deposit, acc, 10);
  CHECK(r2 == 115);
  CHECK(acc.balance == 105);
  // Through std::ref: the caller's object.
  const int r3 = co_await offload::to_thread(&account::deposit, std::ref(acc), 1);
  CHECK(r3 == 106);
  CHECK(acc.balance == 106);
  const int r4 = co_await offload::to_thread(&account::get, acc);
  CHECK(r4 == 106);
}

TEST_CASE("to_thread calls a pointer to member function with an object argument", "[to_thread]") {
  offload::run(member_function_calls());
}

offload::awaitable<void> function_pointer_calls() {
  const int r1 = co_await offload::to_thread(twice, 21);  // a function name decays
  CHECK(r1 == 42);
  int (*fp)(int) = &twice;
  const int r2 = co_await offload::to_thread(fp, 4);
  CHECK(r2 == 8);
  const int r3 = co_await offload::to_thread(&twice, -3);
  CHECK(r3 == -6);
}

TEST_CASE("to_thread calls a function pointer", "[to_thread]") {
  offload::run(function_pointer_calls());
}

// -- volume ----------------------------------------------------------------------------------

offload::awaitable<std::int64_t> sequential_sum(int n) {
  std::int64_t sum = 0;
  for (int i = 0; i < n; ++i) sum += co_await offload::to_thread([i] { return std::int64_t{i}; });
  co_return sum;
}

TEST_CASE("10'000 sequential to_thread calls give the right sum", "[to_thread]") {
  constexpr int n = 10'000;
  CHECK(offload::run(sequential_sum(n)) == std::int64_t{n} * (n - 1) / 2);
}

struct many_state {
  std::int64_t sum = 0;
  int completed = 0;
  int failed = 0;
  int resumed_off_loop = 0;
};

offload::awaitable<void> one_of_many(int i, many_state& st, offload_test::countdown& all) {
  const int v = co_await offload::to_thread([i] { return i * 2; });
  if (!offload::get_running_loop().in_loop_thread()) ++st.resumed_off_loop;
  st.sum += v;
  ++st.completed;
  all.done();
}

offload::awaitable<void> spawn_many(int n, many_state& st) {
  auto ex = co_await net::this_coro::executor;
  offload_test::countdown all(ex, n);
  for (int i = 0; i < n; ++i) {
    net::co_spawn(ex, one_of_many(i, st, all), [&st](std::exception_ptr e) {
      if (e) ++st.failed;
    });
  }
  co_await all.wait();
}

TEST_CASE("1'000 concurrent coroutines each awaiting to_thread all complete correctly",
          "[to_thread]") {
  constexpr int n = 1000;
  many_state st;
  offload::run(spawn_many(n, st));
  CHECK(st.failed == 0);
  CHECK(st.completed == n);
  CHECK(st.resumed_off_loop == 0);
  CHECK(st.sum == std::int64_t{n} * (n - 1));  // sum of 2*i
}

// -- completions that overtake their co_await ------------------------------------------------

struct doubled {
  int x;
  int operator()() const { return 2 * x; }
};

// Every form of awaiting a call, with values that tell a lost or repeated result.
offload::awaitable<std::int64_t> await_every_form(int i, offload::thread_pool& pool,
                                                  net::thread_pool& asio_pool) {
  std::int64_t sum = co_await offload::to_thread(doubled{i});
  sum += co_await offload::run_in_executor(pool, doubled{i + 1});
  sum += co_await offload::run_in_executor(asio_pool, doubled{i + 2});
  sum += co_await offload::to_thread(offload::call_options{.timeout = 1h}, doubled{i + 3});
  sum += co_await offload::async_run(pool, doubled{i + 4}, net::use_awaitable);
  co_return sum;
}

offload::awaitable<void> overtaking_worker(int calls, offload::thread_pool& pool,
                                           net::thread_pool& asio_pool, std::int64_t& sum) {
  for (int i = 0; i < calls; ++i) sum += co_await await_every_form(i, pool, asio_pool);
}

// Without a strand, an io_context run by two threads may resume the coroutine on the other
// thread, as soon as the call completes: while the awaiting thread is still inside the
// co_await's initiation (Asio 1.22 runs it there). The initiation must touch nothing after the
// hand-off; Clang before 19 kept its locals in the coroutine's frame, freed by then (a race
// under TSan, a use after free in general: see detail/awaitable_initiation.hpp).
TEST_CASE(
    "a call completing on another thread of the io_context before its co_await's initiation "
    "returns is delivered once, and the initiation touches nothing after the hand-off",
    "[to_thread][io_context]") {
  constexpr int coroutines = 4;
  constexpr int calls = 500;
  offload::thread_pool pool{2};
  net::thread_pool asio_pool{2};
  net::io_context ctx;
  std::vector<std::int64_t> sums(coroutines, 0);
  std::atomic<int> failed{0};
  for (auto& sum : sums) {
    net::co_spawn(ctx, overtaking_worker(calls, pool, asio_pool, sum),
                  [&failed](std::exception_ptr e) {
                    if (e) failed.fetch_add(1);
                  });
  }
  std::thread second([&ctx] { ctx.run(); });
  ctx.run();
  second.join();
  CHECK(failed.load() == 0);
  // Each round sums 2 * (5i + 10); over i < calls: 10 * calls * (calls - 1) / 2 + 20 * calls.
  const std::int64_t expected = std::int64_t{5} * calls * (calls - 1) + std::int64_t{20} * calls;
  for (const std::int64_t sum : sums) CHECK(sum == expected);
}

// -- the default executor --------------------------------------------------------------------

offload::awaitable<identity> identify_worker() {
  co_return co_await offload::to_thread(worker_identity);
}

TEST_CASE(
    "to_thread on a plain io_context uses that context's own default executor, whose "
    "threads are named offload-N",
    "[to_thread][default_executor]") {
  net::io_context ctx1;
  net::io_context ctx2;
  auto f1 = net::co_spawn(ctx1, identify_worker(), net::use_future);
  ctx1.run();  // returns once the coroutine is done: no event_loop involved
  REQUIRE(f1.wait_for(0s) == std::future_status::ready);
  const identity w1 = f1.get();

  auto f2 = net::co_spawn(ctx2, identify_worker(), net::use_future);
  ctx2.run();
  REQUIRE(f2.wait_for(0s) == std::future_status::ready);
  const identity w2 = f2.get();

  CHECK(w1.first != std::this_thread::get_id());
  CHECK(w1.second == "offload-1");
  // ctx1's worker is still alive (10 s keep-alive), yet ctx2's call went to a pool of its own,
  // which numbers its threads from 1 again.
  CHECK(w2.second == "offload-1");
  CHECK(w2.first != w1.first);
}

struct after_shutdown_result {
  bool threw = false;
  bool ran = false;
  std::error_code code;
  std::string what;
};

offload::awaitable<void> to_thread_after_shutdown(after_shutdown_result& r) {
  auto& loop = offload::get_running_loop();
  co_await offload::to_thread([] {});  // the default executor exists and works
  co_await loop.shutdown_default_executor();
  try {
    co_await offload::to_thread([&r] { r.ran = true; });
  } catch (const std::system_error& e) {
    r.threw = true;
    r.code = e.code();
    r.what = e.what();
  }
}

TEST_CASE(
    "to_thread after the loop's default executor was shut down fails with "
    "executor_shutdown at the co_await",
    "[to_thread][default_executor][errors]") {
  offload::event_loop loop;
  after_shutdown_result r;
  loop.run_until_complete(to_thread_after_shutdown(r));
  CHECK(r.threw);
  CHECK_FALSE(r.ran);
  CHECK(r.code == offload::errc::executor_shutdown);
  CHECK(r.code.category() == offload::error_category());
  CHECK_THAT(r.what, contains("set_default_executor"));  // says what to do
}

}  // namespace
