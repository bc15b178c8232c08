// offload::detail::op_queue, the lock-free FIFO under the pool and the completion queue: order,
// the flag's three push modes, the idle handshake the completion queue builds on, and many
// producers against one consumer.
//
// Distributed under the Boost Software License, Version 1.0.
#include "catch.hpp"

#include <offload/detail/op_queue.hpp>

#include <atomic>
#include <cstddef>
#include <thread>
#include <vector>

namespace {

using offload::detail::op_base;
using offload::detail::op_queue;

struct item : op_base {
  int producer = 0;
  int seq = 0;
};

int seq_of(op_base* op) { return static_cast<item*>(op)->seq; }

std::vector<int> pop_all(op_queue& q) {
  std::vector<int> seqs;
  while (op_base* op = q.pop()) seqs.push_back(seq_of(op));
  return seqs;
}

}  // namespace

TEST_CASE("op_queue: nodes come out in the order they went in, chains included") {
  op_queue q;
  std::vector<item> items(5);
  for (int i = 0; i < 5; ++i) items[i].seq = i;
  CHECK(q.empty());
  CHECK(q.pop() == nullptr);

  CHECK(q.push(&items[0], &items[0], op_queue::on_flag::refuse) == op_queue::pushed::queued);
  items[1].next = &items[2];
  items[2].next = &items[3];
  q.push(&items[1], &items[3], op_queue::on_flag::keep);
  CHECK_FALSE(q.empty());
  CHECK(q.size() == 4);
  CHECK(pop_all(q) == std::vector<int>{0, 1, 2, 3});
  CHECK(q.empty());
  CHECK(q.size() == 0);

  // The last node left through the stub; the queue keeps working after it.
  q.push(&items[4], &items[4], op_queue::on_flag::keep);
  CHECK(q.size() == 1);
  CHECK(pop_all(q) == std::vector<int>{4});
  q.push(&items[0], &items[0], op_queue::on_flag::keep);
  q.push(&items[1], &items[1], op_queue::on_flag::keep);
  CHECK(pop_all(q) == std::vector<int>{0, 1});
}

TEST_CASE("op_queue: the flag refuses, survives or is cleared by a push, as asked") {
  std::vector<item> items(4);
  for (int i = 0; i < 4; ++i) items[i].seq = i;

  SECTION("refuse") {
    op_queue q;
    q.set_flag();
    CHECK(q.flagged());
    CHECK(q.push(&items[0], &items[0], op_queue::on_flag::refuse) == op_queue::pushed::refused);
    CHECK(q.empty());
  }
  SECTION("keep: a shut-down pool still queues a batch accepted before") {
    op_queue q;
    q.push(&items[0], &items[0], op_queue::on_flag::keep);
    q.set_flag();
    CHECK(q.push(&items[1], &items[1], op_queue::on_flag::keep) == op_queue::pushed::queued);
    CHECK(q.flagged());
    CHECK(pop_all(q) == std::vector<int>{0, 1});
    CHECK(q.flagged());  // taking the last node (the stub goes in behind it) keeps it too
  }
  SECTION("clear: only the push that finds the flag set is told so") {
    op_queue q(true);
    CHECK(q.flagged());
    CHECK(q.push(&items[0], &items[0], op_queue::on_flag::clear) == op_queue::pushed::cleared_flag);
    CHECK(q.push(&items[1], &items[1], op_queue::on_flag::clear) == op_queue::pushed::queued);
    CHECK_FALSE(q.flagged());
    CHECK_FALSE(q.flag_if_empty());
    CHECK(pop_all(q) == std::vector<int>{0, 1});
    CHECK(q.flag_if_empty());
    CHECK(q.flagged());
    CHECK(q.push(&items[2], &items[2], op_queue::on_flag::clear) == op_queue::pushed::cleared_flag);
  }
}

TEST_CASE("op_queue: take_all returns everything queued, oldest first, and empties the queue") {
  op_queue q;
  std::vector<item> items(3);
  for (int i = 0; i < 3; ++i) {
    items[i].seq = i;
    q.push(&items[i], &items[i], op_queue::on_flag::keep);
  }
  std::vector<int> seqs;
  for (op_base* op = q.take_all(); op != nullptr; op = op->next) seqs.push_back(seq_of(op));
  CHECK(seqs == std::vector<int>{0, 1, 2});
  CHECK(q.empty());
  CHECK(q.take_all() == nullptr);
}

TEST_CASE("op_queue: many producers, one consumer: nothing lost, each producer's order kept") {
  constexpr int producers = 3;
  constexpr int per_producer = 50000;
  op_queue q;
  std::vector<item> items(producers * per_producer);
  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      item* mine = &items[static_cast<std::size_t>(p) * per_producer];
      for (int i = 0; i < per_producer; ++i) {
        mine[i].producer = p;
        mine[i].seq = i;
      }
      // Singles and chains of three, as the pool's batches arrive.
      for (int i = 0; i < per_producer;) {
        if (i % 7 == 0 && i + 3 <= per_producer) {
          mine[i].next = &mine[i + 1];
          mine[i + 1].next = &mine[i + 2];
          q.push(&mine[i], &mine[i + 2], op_queue::on_flag::keep);
          i += 3;
        } else {
          q.push(&mine[i], &mine[i], op_queue::on_flag::keep);
          ++i;
        }
      }
    });
  }
  std::vector<int> next_seq(producers, 0);
  int taken = 0;
  bool in_order = true;
  while (taken < producers * per_producer) {
    op_base* op = q.pop();
    if (op == nullptr) {
      std::this_thread::yield();
      continue;
    }
    auto* it = static_cast<item*>(op);
    in_order = in_order && it->seq == next_seq[it->producer];
    next_seq[it->producer] = it->seq + 1;
    ++taken;
  }
  for (auto& t : threads) t.join();
  CHECK(in_order);
  CHECK(next_seq == std::vector<int>(producers, per_producer));
  CHECK(q.empty());
  CHECK(q.pop() == nullptr);
}

// The completion queue's protocol: a push that clears the flag schedules one drain; the drain
// pops until empty and sets the flag again, or carries on when a push beat it to it.
TEST_CASE("op_queue: the idle flag hands exactly one drain duty at a time, and loses no node") {
  constexpr int producers = 2;
  constexpr int per_producer = 50000;
  op_queue q(true);
  std::vector<item> items(producers * per_producer);
  std::atomic<int> drains_scheduled{0};
  std::atomic<int> max_outstanding{0};
  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      item* mine = &items[static_cast<std::size_t>(p) * per_producer];
      for (int i = 0; i < per_producer; ++i) {
        mine[i].seq = i;
        if (q.push(&mine[i], &mine[i], op_queue::on_flag::clear) ==
            op_queue::pushed::cleared_flag) {
          const int outstanding = drains_scheduled.fetch_add(1) + 1;
          int seen = max_outstanding.load();
          while (outstanding > seen && !max_outstanding.compare_exchange_weak(seen, outstanding)) {
          }
        }
      }
    });
  }
  int taken = 0;
  int drains = 0;
  while (taken < producers * per_producer || drains_scheduled.load() != 0) {
    if (drains_scheduled.load() == 0) {
      std::this_thread::yield();
      continue;
    }
    ++drains;
    for (;;) {  // one drain
      if (q.pop() != nullptr) {
        ++taken;
        continue;
      }
      // The duty ends as the flag goes up: a push after that may start the next one.
      drains_scheduled.fetch_sub(1);
      if (q.flag_if_empty()) break;
      drains_scheduled.fetch_add(1);
      std::this_thread::yield();
    }
  }
  for (auto& t : threads) t.join();
  CHECK(taken == producers * per_producer);
  CHECK(max_outstanding.load() == 1);
  CHECK(drains >= 1);
  CHECK(q.flagged());
  CHECK(q.empty());
}
