// Concurrent fetch: 20 blocking libcurl GETs through offload::to_thread, each status printed as
// it completes. asyncio's
//
//     calls = [asyncio.to_thread(http_get, url) for url in urls]
//     for call in asyncio.as_completed(calls):
//         response = await call
//
// The GETs are started in one order and answered in the opposite one: the server holds GET i
// back 20 * (20 - i) ms, so the first one asked for is the last to come back. as_completed
// yields each response as soon as its call returns, and last_index() says which URL it was.
//
// The default executor has min(32, cores + 4) threads (6 on a 2-core machine), so 20 GETs would
// run 6 at a time there; the example gives the loop a 20-thread default executor first
// (loop.set_default_executor) so that all 20 block at once.
//
// The example is offline: it serves HTTP itself on 127.0.0.1 from a thread of its own
// (examples/support), so that the answers leave on time whatever the loop is doing.
//
// Distributed under the Boost Software License, Version 1.0.
#include "support/curl_get.hpp"
#include "support/local_http_server.hpp"

#include <offload/offload.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <iomanip>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

constexpr std::size_t calls = 20;

long long ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               start)
      .count();
}

// 1 -> "1st", 2 -> "2nd", 20 -> "20th"
std::string ordinal(std::size_t n) {
  const char* suffix = "th";
  if (n % 100 < 11 || n % 100 > 13) {
    if (n % 10 == 1) suffix = "st";
    if (n % 10 == 2) suffix = "nd";
    if (n % 10 == 3) suffix = "rd";
  }
  return std::to_string(n) + suffix;
}

offload::awaitable<bool> main_coro(const offload_examples::local_http_server& server) {
  auto& loop = offload::get_running_loop();

  // asyncio's loop.set_default_executor(ThreadPoolExecutor(max_workers=20)).
  offload::thread_pool_options options;
  options.max_workers = calls;
  loop.set_default_executor(options);
  const unsigned built_in = std::min(32u, std::max(1u, std::thread::hardware_concurrency()) + 4);
  std::cout << "default executor: " << options.max_workers << " threads (the built-in one, min(32, "
            << "cores + 4) = " << built_in << " here, would run them " << built_in
            << " at a time)\n";

  // GET i is answered after 20 * (20 - i) ms: the first submitted is the slowest.
  std::vector<std::string> urls;
  std::vector<int> delays;
  std::vector<offload::awaitable<offload_examples::http_response>> gets;
  for (std::size_t i = 0; i < calls; ++i) {
    delays.push_back(20 * static_cast<int>(calls - i));
    urls.push_back(
        server.url("/item/" + std::to_string(i) + "?delay_ms=" + std::to_string(delays.back())));
    gets.push_back(offload::to_thread(offload_examples::http_get, urls.back()));
  }

  // The first next() starts all 20; each later one resumes as soon as any call has returned.
  const auto start = std::chrono::steady_clock::now();
  auto stream = offload::as_completed(std::move(gets));
  std::vector<std::size_t> order;
  bool all_ok = true;
  while (!stream.done()) {
    offload_examples::http_response response = co_await stream.next();
    const std::size_t i = stream.last_index();
    order.push_back(i);
    all_ok = all_ok && response.status == 200;
    std::cout << "  " << std::setw(2) << order.size() << ". GET "
              << urls[i].substr(urls[i].find("/item/")) << " -> " << response.status << " at "
              << ms_since(start) << " ms\n";
  }
  const long long wall = ms_since(start);

  // On a quiet machine completion order is the exact reverse of submission order. On a busy
  // one, answers due 20 ms apart may come back in either order, so check only what holds
  // anyway: the order is not submission order, and GET 19 (20 ms) came back before GET 0
  // (400 ms) although it was submitted after it.
  std::vector<std::size_t> submitted(calls);
  for (std::size_t i = 0; i < submitted.size(); ++i) submitted[i] = i;
  std::vector<std::size_t> seen = order;
  std::sort(seen.begin(), seen.end());
  const bool each_once = seen == submitted;
  auto came_back = [&](std::size_t get) {  // 1 for the first result printed
    return static_cast<std::size_t>(std::find(order.begin(), order.end(), get) - order.begin()) + 1;
  };
  const bool completion_order =
      each_once && order != submitted && came_back(calls - 1) < came_back(0);
  std::cout << "all " << calls << " answered 200, each once: " << std::boolalpha
            << (all_ok && each_once) << "\n";
  std::cout << "results arrived in completion order, not submission order: " << completion_order
            << " (GET 0, submitted first with the longest wait, came back " << ordinal(came_back(0))
            << "; GET " << calls - 1 << ", submitted last with the shortest, came back "
            << ordinal(came_back(calls - 1)) << ")\n";

  int sum = 0;
  for (int d : delays) sum += d;
  std::cout << "wall time " << wall << " ms for " << sum << " ms of delays: " << std::fixed
            << std::setprecision(1) << static_cast<double>(sum) / static_cast<double>(wall)
            << "x faster than one after another, on "
            << loop.default_executor_pool().stats().peak_workers << " threads\n";
  const bool ok = all_ok && each_once && completion_order;
  co_return ok;
}

}  // namespace

int main() {
  offload_examples::curl_global curl;  // once, before any thread uses curl
  bool ok = false;
  {
    offload_examples::local_http_server server;  // on a thread of its own
    ok = offload::run(main_coro(server));
  }
  std::cout << (ok ? "done" : "unexpected result") << "\n";
  return ok ? 0 : 1;
}
