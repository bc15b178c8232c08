// Temporaries in a co_await operand on GCC 12: an object with a destructor that initializes a
// member of another temporary (a lambda's capture, an aggregate's member, what std::bind
// stores) is destroyed twice there (GCC PR c++/100611, c++/101367), whatever the awaited
// function does with it. Each form below is written the way that is safe on GCC 12 (the
// temporary is named first and moved in) and checks the result and that the string inside
// survived intact, so a sanitizer build on GCC catches a regression of the form.
//
// Distributed under the Boost Software License, Version 1.0.
#include "catch.hpp"

#include <offload/event_loop.hpp>
#include <offload/to_thread.hpp>

#include <atomic>
#include <cstddef>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>

namespace {

// Longer than any small-string buffer: the heap buffer is what a double destruction frees twice.
// The strings are built from it inside each form, as the trap's shapes build them.
constexpr const char* long_label =
    "a label long enough to be allocated on the heap rather than in the string itself";

// Keyword arguments, translated as an aggregate (Python's `f(10, label="...")`).
struct options {
  std::string label;
};

std::string describe(int n, options o) { return o.label + ":" + std::to_string(n); }

// Counts live objects, so a double destruction shows up as a negative count even without a
// sanitizer.
struct tracked {
  static inline std::atomic<int> alive{0};
  std::string text;
  explicit tracked(std::string t) : text(std::move(t)) { ++alive; }
  tracked(const tracked& other) : text(other.text) { ++alive; }
  tracked(tracked&& other) noexcept : text(std::move(other.text)) { ++alive; }
  tracked& operator=(const tracked&) = delete;
  tracked& operator=(tracked&&) = delete;
  ~tracked() { --alive; }
};

struct tracked_options {
  tracked label;
};

std::string describe_tracked(int n, tracked_options o) {
  return o.label.text + ":" + std::to_string(n);
}

// (a) A lambda capturing a string (Python's closure over a local).
offload::awaitable<void> lambda_named_then_moved() {
  auto fn = [s = std::string(long_label)] { return s + "!"; };
  const std::string got = co_await offload::to_thread(std::move(fn));
  CHECK(got == std::string(long_label) + "!");
}

// (b) std::bind with an aggregate argument (Python's functools.partial).
offload::awaitable<void> bind_named_then_moved() {
  auto call = std::bind(describe, 10, options{long_label});
  const std::string got = co_await offload::to_thread(std::move(call));
  CHECK(got == std::string(long_label) + ":10");
}

// (c) An aggregate temporary as an argument (Python's keyword arguments).
offload::awaitable<void> aggregate_named_then_moved() {
  options opts{long_label};
  const std::string got = co_await offload::to_thread(describe, 10, std::move(opts));
  CHECK(got == std::string(long_label) + ":10");
}

// (c) again with a type that counts itself: every object made is destroyed exactly once.
offload::awaitable<void> counted_aggregate_named_then_moved() {
  tracked_options opts{tracked(long_label)};
  const std::string got = co_await offload::to_thread(describe_tracked, 7, std::move(opts));
  CHECK(got == std::string(long_label) + ":7");
}

// A string passed directly (not inside another temporary) is safe written inline.
offload::awaitable<void> direct_string_inline() {
  const std::size_t got = co_await offload::to_thread(
      [](const std::string& s) { return s.size(); }, std::string(long_label));
  CHECK(got == std::string(long_label).size());
}

// Nothing to destroy twice: trivially destructible temporaries are safe written inline.
struct point {
  int x;
  int y;
};
static_assert(std::is_trivially_destructible_v<point>);

int weigh(int n, point p) { return n * (p.x + p.y); }

offload::awaitable<void> trivially_destructible_inline() {
  const int a = co_await offload::to_thread([n = 41] { return n + 1; });
  CHECK(a == 42);
  const int b = co_await offload::to_thread(std::bind(weigh, 10, point{2, 3}));
  CHECK(b == 50);
  const int c = co_await offload::to_thread(weigh, 10, point{2, 3});
  CHECK(c == 50);
}

}  // namespace

TEST_CASE("(a) a lambda capturing a string, named then moved into to_thread", "[gcc12]") {
  offload::run(lambda_named_then_moved());
}

TEST_CASE("(b) a std::bind holding an aggregate with a string, named then moved", "[gcc12]") {
  offload::run(bind_named_then_moved());
}

TEST_CASE("(c) an aggregate argument with a string, named then moved", "[gcc12]") {
  offload::run(aggregate_named_then_moved());
}

TEST_CASE("(c) every object of a named-then-moved aggregate argument is destroyed once",
          "[gcc12]") {
  tracked::alive = 0;
  offload::run(counted_aggregate_named_then_moved());
  CHECK(tracked::alive == 0);
}

TEST_CASE("a string passed directly to to_thread is safe inline", "[gcc12]") {
  offload::run(direct_string_inline());
}

TEST_CASE("trivially destructible temporaries are safe inline in all three forms", "[gcc12]") {
  offload::run(trivially_destructible_inline());
}
