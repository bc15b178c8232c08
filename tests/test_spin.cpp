// offload::detail::adaptive_spin, which decides whether a waiting thread (the loop waiting for
// a hand-back, an idle worker waiting for work) spins or parks: a spin that lost its CPU twice
// in a row parks the next waits at once (once is not enough), and a parked thread's probe that
// loses comes back later each time, one that wins brings spinning back. Nothing here asserts a
// duration: each check counts how often a wait looked at its condition (once: it parked at once;
// more: it spun).
//
// Distributed under the Boost Software License, Version 1.0.
#include "catch.hpp"

#include <offload/detail/spin.hpp>

#include <chrono>
#include <thread>

using namespace std::chrono_literals;

namespace {

using offload::detail::adaptive_spin;

// Far longer than any turn of a spin: the spin that sees it has been off its CPU.
constexpr auto off_cpu = 2ms;
constexpr auto budget = 1ms;

// A wait's condition: never true; it counts its looks, and one look stalls when asked to, as
// a thread that lost its CPU to the one it waits for.
struct condition {
  int stall_at = 0;  // 0: never
  int looks = 0;
  bool operator()() {
    if (++looks == stall_at) std::this_thread::sleep_for(off_cpu);
    return false;
  }
};

int looks_of_a_wait(adaptive_spin& spinner, int stall_at = 0) {
  condition c{stall_at};
  (void)spinner.spin([&] { return c(); });
  return c.looks;
}

constexpr int stall_first_look = 1;
// Only a wait that spins looks twice: a parked wait does not reach it.
constexpr int stall_if_spinning = 2;

// Waits until the first one since the spinner parked that spins (a probe), which loses either
// its CPU or by running out its budget; how many waits that took.
int waits_until_probe(adaptive_spin& spinner, bool probe_loses_cpu) {
  for (int wait = 1;; ++wait) {
    if (looks_of_a_wait(spinner, probe_loses_cpu ? stall_if_spinning : 0) > 1) return wait;
  }
}

void park(adaptive_spin& spinner) {
  (void)looks_of_a_wait(spinner, stall_first_look);
  (void)looks_of_a_wait(spinner, stall_first_look);
}

bool spinning_yields() {
  // On one usable CPU the spin yields instead, and gaps are what it asks for.
  return offload::detail::single_usable_cpu();
}

}  // namespace

TEST_CASE("two spins in a row that lost their CPU: the next wait parks at once", "[spin]") {
  if (spinning_yields()) return;
  adaptive_spin spinner(budget);
  REQUIRE(looks_of_a_wait(spinner) > 1);  // spins while nothing says it cannot win
  park(spinner);
  REQUIRE(looks_of_a_wait(spinner) == 1);
  REQUIRE(looks_of_a_wait(spinner) == 1);
}

TEST_CASE("one spin that lost its CPU (an interrupt may do that) does not park the next",
          "[spin]") {
  if (spinning_yields()) return;
  adaptive_spin spinner(budget);
  (void)looks_of_a_wait(spinner, stall_first_look);
  // At least a turn of looks before the spin reads the clock: more than one whatever happens.
  REQUIRE(looks_of_a_wait(spinner) > 1);
}

TEST_CASE("a parked thread probes again, later each time a probe loses", "[spin]") {
  if (spinning_yields()) return;
  adaptive_spin spinner(budget);
  park(spinner);
  const int first = waits_until_probe(spinner, true);    // lost its CPU
  const int second = waits_until_probe(spinner, false);  // ran out its budget
  const int third = waits_until_probe(spinner, false);
  REQUIRE(first > 1);
  REQUIRE(second > first);
  REQUIRE(third > second);
}

TEST_CASE("a probe that wins brings spinning back", "[spin]") {
  if (spinning_yields()) return;
  adaptive_spin spinner(budget);
  park(spinner);
  REQUIRE(looks_of_a_wait(spinner) == 1);
  // A probe whose wait loses its CPU before its third look counts as lost: then try again.
  bool spins_again = false;
  for (int attempt = 0; attempt < 5 && !spins_again; ++attempt) {
    int looks = 0;
    while (!spinner.spin([&] { return ++looks >= 3; })) looks = 0;  // parked until the probe
    spins_again = looks_of_a_wait(spinner) > 1;
  }
  REQUIRE(spins_again);
  REQUIRE(looks_of_a_wait(spinner) > 1);
}
