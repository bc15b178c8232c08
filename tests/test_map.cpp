// offload::map: one call per element of a range, results in input order, the first failure
// cancelling the rest (or return_exceptions), on any target run_in_executor takes.
//
// Distributed under the Boost Software License, Version 1.0.
#include "catch.hpp"
#include "loop_helpers.hpp"
#include "net_errors.hpp"
#include "probes.hpp"

#include <offload/event_loop.hpp>
#include <offload/map.hpp>
#include <offload/thread_pool.hpp>

#include <atomic>
#include <latch>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <typeinfo>
#include <utility>
#include <vector>

namespace {

namespace net = offload::net;
using namespace std::chrono_literals;

template <typename Body>
void run_on_loop(Body body) {
  offload::event_loop loop;
  loop.run_until_complete(body());
}

/// 0, 1, ..., n - 1 (std::views::iota would do, but Clang 14 cannot compile libstdc++ 12's).
std::vector<int> indices(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

struct no_default {
  explicit no_default(int v) : value(v) {}
  int value;
};

}  // namespace

TEST_CASE("map runs f once per element on the target's threads and keeps the input order",
          "[map]") {
  offload::thread_pool pool(4);
  std::mutex threads_mutex;
  std::set<std::thread::id> threads;
  std::thread::id loop_thread;
  auto square = [&](int x) {
    {
      std::lock_guard<std::mutex> lock(threads_mutex);
      threads.insert(std::this_thread::get_id());
    }
    return x * x;
  };
  std::vector<int> input(1000);
  std::iota(input.begin(), input.end(), 0);
  std::vector<int> squares;
  run_on_loop([&]() -> offload::awaitable<void> {
    loop_thread = std::this_thread::get_id();
    squares = co_await offload::map(pool, square, input);
  });
  REQUIRE(squares.size() == 1000);
  for (int i = 0; i < 1000; ++i) CHECK(squares[static_cast<std::size_t>(i)] == i * i);
  CHECK(input.size() == 1000);  // an lvalue container is copied, not moved from
  CHECK(threads.count(loop_thread) == 0);
}

TEST_CASE("map takes views, owned containers of move-only values, and void functions", "[map]") {
  offload::thread_pool pool(2);
  std::atomic<int> sum{0};
  auto add = [&sum](int x) { sum += x; };
  auto length = [](const std::unique_ptr<std::string>& s) { return s->size(); };
  std::vector<std::size_t> lengths;
  std::vector<int> owned{1, 2, 3};
  std::vector<int> from_span;
  auto twice = [](int x) { return 2 * x; };
  run_on_loop([&]() -> offload::awaitable<void> {
    const std::vector<int> one_to_hundred = [] {
      std::vector<int> v = indices(100);
      for (int& x : v) ++x;
      return v;
    }();
    co_await offload::map(pool, add, std::span<const int>(one_to_hundred));
    std::vector<std::unique_ptr<std::string>> words;
    words.push_back(std::make_unique<std::string>("one"));
    words.push_back(std::make_unique<std::string>("three"));
    lengths = co_await offload::map(pool, length, std::move(words));
    from_span = co_await offload::map(pool, twice, std::span<const int>(owned));
  });
  CHECK(sum == 5050);
  CHECK(lengths == std::vector<std::size_t>{3, 5});
  CHECK(from_span == std::vector<int>{2, 4, 6});
  CHECK(owned == std::vector<int>{1, 2, 3});  // a view's elements are copied
}

TEST_CASE("map of an empty range yields an empty vector without submitting anything", "[map]") {
  offload::thread_pool pool(1);
  std::atomic<int> calls{0};
  auto f = [&calls](int x) {
    ++calls;
    return x;
  };
  std::optional<std::vector<int>> out;
  run_on_loop([&]() -> offload::awaitable<void> {
    const std::vector<int> none;  // named: GCC 12 may destroy a temporary in co_await twice
    out = co_await offload::map(pool, f, none);
  });
  REQUIRE(out.has_value());
  CHECK(out->empty());
  CHECK(calls == 0);
}

TEST_CASE("map: the first exception cancels the calls still queued, then is rethrown",
          "[map][cancellation]") {
  offload::thread_pool pool(1);  // one thread: the calls after the failing one are queued
  std::atomic<int> ran{0};
  // The calls after the failing one wait to be asked to stop (bounded, so a bug fails rather
  // than hangs): the worker can never be more than one call ahead of the cancellation.
  auto f = [&ran](std::stop_token stop, int x) {
    ++ran;
    if (x == 2) throw std::runtime_error("two");
    if (x > 2) offload_test::eventually([&] { return stop.stop_requested(); }, 10s);
    return x;
  };
  std::string what;
  run_on_loop([&]() -> offload::awaitable<void> {
    try {
      const std::vector<int> items = indices(200);
      (void)co_await offload::map(pool, f, items);
    } catch (const std::runtime_error& e) {
      what = e.what();
    }
  });
  CHECK(what == "two");
  const std::uint64_t cancelled = pool.stats().calls.cancelled_before_start;
  CHECK(cancelled + static_cast<std::uint64_t>(ran.load()) == 200);  // each ran or never did
  CHECK(cancelled >= 195);  // all but the three before the failure and the one running then
}

TEST_CASE("map(return_exceptions) runs every call and yields each outcome in order",
          "[map][cancellation]") {
  offload::thread_pool pool(2);
  auto f = [](int x) -> int {
    if (x % 3 == 0) throw std::runtime_error("multiple of three");
    return x;
  };
  std::vector<offload::outcome<int>> out;
  run_on_loop([&]() -> offload::awaitable<void> {
    const std::vector<int> items = indices(10);
    out = co_await offload::map(offload::return_exceptions, pool, f,
                                std::span<const int>(items).subspan(1));
  });
  REQUIRE(out.size() == 9);
  for (int x = 1; x <= 9; ++x) {
    const auto& o = out[static_cast<std::size_t>(x - 1)];
    if (x % 3 == 0) {
      CHECK(o.has_error());
    } else {
      REQUIRE_FALSE(o.has_error());
      CHECK(o.value() == x);
    }
  }
}

TEST_CASE("cancelling map's awaiter cancels its calls; a running one is asked to stop",
          "[map][cancellation]") {
  offload::thread_pool pool(1);
  offload::event_loop loop;
  std::latch started(1), all_cancelled(1);
  std::atomic<int> ran{0};
  auto f = [&](std::stop_token stop, int) {
    if (ran++ == 0) {
      started.count_down();
      while (!stop.stop_requested()) std::this_thread::yield();
      all_cancelled.wait();  // emit() cancels every child before it returns
    }
  };
  std::optional<std::exception_ptr> result;
  std::vector<offload::running_call> running;
  net::cancellation_signal signal;
  auto mapped = [&]() -> offload::awaitable<void> {
    const std::vector<int> items = indices(50);
    co_await offload::map(pool, f, items);
  };
  net::co_spawn(
      loop.get_executor(), mapped(),
      net::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr e) { result = e; }));
  auto cancel = [&]() -> offload::awaitable<void> {
    co_await offload_test::wait_until([&] { return started.try_wait(); });
    running = pool.running_calls();
    signal.emit(net::cancellation_type::terminal);
    all_cancelled.count_down();
    co_await offload_test::wait_until([&] { return result.has_value(); });
  };
  loop.run_until_complete(cancel());
  REQUIRE(result.has_value());
  CHECK(offload_test::is_cancelled(*result));
  CHECK(ran == 1);  // the queued 49 never ran
  REQUIRE(running.size() == 1);
  CHECK(running[0].callable == typeid(f).name());  // f's own type, not map's wrapper
}

TEST_CASE("map works with values that are not default-constructible, and on an Asio executor",
          "[map]") {
  offload::thread_pool pool(2);
  net::thread_pool asio_pool(2);
  auto make = [](int x) { return no_default(x + 1); };
  std::vector<no_default> made, on_asio;
  run_on_loop([&]() -> offload::awaitable<void> {
    const std::vector<int> items = indices(3);
    made = co_await offload::map(pool, make, items);
    on_asio = co_await offload::map(asio_pool.get_executor(), make, items);
  });
  asio_pool.join();
  REQUIRE(made.size() == 3);
  CHECK(made[2].value == 3);
  REQUIRE(on_asio.size() == 3);
  CHECK(on_asio[0].value == 1);
}

namespace {

/// A forward range of 0, 1, ... whose iterator throws when it reaches `throw_at`, as a view
/// whose function throws would.
class throwing_range {
 public:
  struct iterator {
    using value_type = int;
    using difference_type = std::ptrdiff_t;
    int at = 0;
    int throw_at = 0;
    int operator*() const {
      if (at == throw_at) throw std::runtime_error("the range broke");
      return at;
    }
    iterator& operator++() {
      ++at;
      return *this;
    }
    iterator operator++(int) {
      iterator before = *this;
      ++at;
      return before;
    }
    bool operator==(const iterator& other) const { return at == other.at; }
  };
  throwing_range(int size, int throw_at) : size_(size), throw_at_(throw_at) {}
  iterator begin() const { return {0, throw_at_}; }
  iterator end() const { return {size_, throw_at_}; }

 private:
  int size_;
  int throw_at_;
};

}  // namespace

TEST_CASE(
    "map: a range whose walk throws fails the map with that exception once the calls "
    "it started have finished",
    "[map]") {
  static_assert(std::ranges::forward_range<throwing_range>);
  offload::thread_pool pool(2);
  std::atomic<int> ran{0}, finished{0};
  auto f = [&](int x) {
    ++ran;
    ++finished;
    return x;
  };
  std::string what;
  int finished_when_thrown = -1;
  run_on_loop([&]() -> offload::awaitable<void> {
    try {
      (void)co_await offload::map(pool, f, throwing_range(10, 4));
    } catch (const std::runtime_error& e) {
      what = e.what();
      finished_when_thrown = finished.load();
    }
  });
  CHECK(what == "the range broke");
  CHECK(ran <= 4);                            // only the elements before the throw were started
  CHECK(finished_when_thrown == ran.load());  // and all of them had finished
}
