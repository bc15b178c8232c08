// The slow-callback detector catching a blocking call made on the loop by mistake, then the fix.
//
// asyncio's debug mode reports "Executing <Task ...> took 0.300 seconds" when one step of the
// loop runs too long: some coroutine called blocking code directly, and every other coroutine
// waited for it. offload's loop does the same with set_slow_callback_threshold().
//
// Here a coroutine fetches a URL with a blocking libcurl call while a ticker on the same loop
// should tick every 10 ms. Called directly, the call holds the loop for the whole 300 ms the
// server takes to answer: the detector reports the step and the ticker stalls. Through
// offload::to_thread the same call runs on a worker, no step is slow and the ticker keeps time.
//
// The example is offline: it serves HTTP itself on 127.0.0.1 from a thread of its own
// (examples/support), answering after 300 ms.
#include "support/curl_get.hpp"
#include "support/local_http_server.hpp"

#include <offload/offload.hpp>

#include <algorithm>
#include <chrono>
#include <iomanip>
#include <iostream>
#include <string>

using namespace std::chrono_literals;
using offload_examples::http_get;
using offload_examples::http_response;

double as_ms(std::chrono::nanoseconds d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

// Ticks every 10 ms while `running`, and records the longest gap between two ticks.
offload::awaitable<void> ticker(const bool& running, std::chrono::nanoseconds& longest_gap) {
  offload::net::steady_timer timer(co_await offload::net::this_coro::executor);
  auto last = std::chrono::steady_clock::now();
  while (running) {
    timer.expires_after(10ms);
    co_await timer.async_wait(offload::net::use_awaitable);
    const auto now = std::chrono::steady_clock::now();
    longest_gap = std::max<std::chrono::nanoseconds>(longest_gap, now - last);
    last = now;
  }
}

offload::awaitable<long> fetch_while_ticking(std::string url, bool with_to_thread) {
  auto& loop = offload::get_running_loop();
  bool running = true;
  std::chrono::nanoseconds longest_gap{0};
  offload::task<void> ticking = loop.create_task(ticker(running, longest_gap));
  offload::net::steady_timer settle(co_await offload::net::this_coro::executor, 50ms);
  co_await settle.async_wait(offload::net::use_awaitable);  // the ticker is ticking now

  http_response r;
  if (with_to_thread) {
    r = co_await offload::to_thread(http_get, url);  // the fix: a worker blocks, not the loop
  } else {
    r = http_get(url);  // the mistake: blocks the loop's thread until the server answers
  }

  running = false;
  co_await ticking.join();
  std::cout << "   GET -> " << r.status << "; longest gap between 10 ms ticks: " << std::fixed
            << std::setprecision(0) << as_ms(longest_gap) << " ms\n";
  co_return r.status;
}

int main() {
  offload_examples::curl_global curl;
  offload_examples::local_http_server server;  // on a thread of its own
  const std::string url = server.url("/report?delay_ms=300");

  offload::event_loop loop;
  // Debug aid: report every loop step longer than 100 ms. Without a handler the report goes to
  // stderr ("offload: a loop step took 300.412 ms (threshold 100.000 ms): something blocked
  // the loop; move blocking calls to offload::to_thread"); here it is printed and counted.
  loop.set_slow_callback_threshold(100ms);
  int reports = 0;
  loop.set_slow_callback_handler([&reports](const offload::slow_callback_report& r) {
    ++reports;
    std::cout << "   slow-callback detector: a loop step took " << std::fixed
              << std::setprecision(0) << as_ms(r.took) << " ms (threshold " << as_ms(r.threshold)
              << " ms)\n";
  });

  std::cout << "1. the blocking call made on the loop by mistake:\n";
  const long status1 = loop.run_until_complete(fetch_while_ticking(url, false));
  const int mistake_reports = reports;
  std::cout << "   the detector caught it: " << std::boolalpha << (mistake_reports >= 1) << "\n";

  std::cout << "2. the same call through offload::to_thread:\n";
  reports = 0;
  const long status2 = loop.run_until_complete(fetch_while_ticking(url, true));
  std::cout << "   slow steps reported: " << reports << "\n";

  loop.close();
  const bool ok = status1 == 200 && status2 == 200 && mistake_reports >= 1 && reports == 0;
  std::cout << (ok ? "done" : "unexpected result") << "\n";
  return ok ? 0 : 1;
}
