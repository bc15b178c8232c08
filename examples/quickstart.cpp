// The flagship example: a coroutine hands blocking calls to threads and keeps the loop free.
#include <offload/offload.hpp>

#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>

using namespace std::chrono_literals;

// Stands in for a blocking library call: a driver query, an SDK, a slow parse.
std::string slow_lookup(int id) {
  std::this_thread::sleep_for(100ms);
  std::ostringstream out;
  out << "record-" << id << " (read on thread " << std::this_thread::get_id() << ")";
  return out.str();
}

offload::awaitable<int> main_coro() {
  auto& loop = offload::get_running_loop();
  std::cout << "loop thread " << std::this_thread::get_id() << "\n";

  // The loop stays responsive while the calls block: a ticker keeps running.
  int ticks = 0;
  auto ticker = [&ticks]() -> offload::awaitable<void> {
    offload::net::steady_timer timer(co_await offload::net::this_coro::executor);
    for (int i = 0; i < 5; ++i) {
      timer.expires_after(30ms);
      co_await timer.async_wait(offload::net::use_awaitable);
      ++ticks;
    }
  };
  auto ticking = loop.create_task(ticker());

  const auto start = std::chrono::steady_clock::now();
  std::string a = co_await offload::to_thread(slow_lookup, 1);
  std::string b = co_await offload::to_thread(slow_lookup, 2);
  const auto took = std::chrono::steady_clock::now() - start;
  co_await ticking.join();

  std::cout << a << "\n" << b << "\n";
  std::cout << "two 100 ms calls took "
            << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
            << " ms; the loop ticked " << ticks << " times meanwhile\n";
  co_return ticks;
}

int main() {
  const int ticks = offload::run(main_coro());
  std::cout << (ticks == 5 ? "done" : "loop was blocked") << "\n";
  return ticks == 5 ? 0 : 1;
}
