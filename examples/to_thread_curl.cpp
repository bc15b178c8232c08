// to_thread basics with a real blocking library: an HTTP GET through libcurl's easy API.
//
//     async def main():
//         r = await asyncio.to_thread(requests.get, url)
//
// curl_easy_perform() blocks its thread until the whole response is in. Called on the loop, it
// would freeze every other coroutine for that long; through offload::to_thread it runs on a
// worker thread while the coroutine waits, and the coroutine resumes on the loop with the
// result, or with the exception the call threw.
//
// The example is offline: it serves HTTP itself on 127.0.0.1 (examples/support), and that
// server runs on the same event loop. So each GET below can only complete because the loop
// stayed free while a worker was blocked in curl.
#include "support/local_http_server.hpp"

#include <offload/offload.hpp>

#include <curl/curl.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

using namespace std::chrono_literals;

struct http_response {
  long status = 0;
  std::string body;
  std::thread::id thread;  // where the call ran, to show it was not the loop's thread
};

/// What http_get throws when curl fails (no connection, timeout, ...).
class curl_error : public std::runtime_error {
 public:
  curl_error(CURLcode c, const char* what) : std::runtime_error(what), code(c) {}
  CURLcode code;
};

/// A plain blocking function, as you would write it without any event loop.
http_response http_get(const std::string& url) {
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), &curl_easy_cleanup);
  if (!curl) throw curl_error(CURLE_FAILED_INIT, "curl_easy_init failed");
  http_response response;
  curl_write_callback append = [](char* data, std::size_t size, std::size_t n, void* out) {
    static_cast<std::string*>(out)->append(data, size * n);
    return size * n;
  };
  curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, append);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &response.body);
  curl_easy_setopt(curl.get(), CURLOPT_NOSIGNAL, 1L);  // needed when threads use curl
  curl_easy_setopt(curl.get(), CURLOPT_NOPROXY, "*");  // a local server: ignore http_proxy
  curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT_MS, 10'000L);
  const CURLcode rc = curl_easy_perform(curl.get());  // blocks
  if (rc != CURLE_OK) throw curl_error(rc, curl_easy_strerror(rc));
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &response.status);
  response.thread = std::this_thread::get_id();
  return response;
}

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

// A port on 127.0.0.1 that nothing listens on: bound by the system, then released.
unsigned short closed_port() {
  offload::net::io_context ctx;
  offload::net::ip::tcp::acceptor probe(ctx, {offload::net::ip::make_address("127.0.0.1"), 0});
  return probe.local_endpoint().port();
}

offload::awaitable<bool> main_coro() {
  auto& loop = offload::get_running_loop();
  const std::thread::id loop_thread = std::this_thread::get_id();
  bool ok = true;

  // Served by this loop: it answers a request only while the loop is free.
  offload_examples::local_http_server server{loop.get_executor()};

  // 1. One GET. The coroutine is suspended here; the loop goes on (and answers the request).
  http_response hello = co_await offload::to_thread(http_get, server.url("/hello"));
  std::cout << "GET /hello -> " << hello.status << ": " << first_line(hello.body) << "\n";
  std::cout << "curl ran on a worker thread, not the loop's: " << std::boolalpha
            << (hello.thread != loop_thread) << "\n";
  ok = ok && hello.status == 200 && hello.thread != loop_thread;

  // 2. A slow answer: the server holds it back 300 ms. A ticker on the loop keeps running
  //    meanwhile; if http_get had been called on the loop, neither would have got a turn.
  bool fetching = true;
  int ticks = 0;
  auto ticker = [&]() -> offload::awaitable<void> {
    offload::net::steady_timer timer(co_await offload::net::this_coro::executor);
    while (fetching) {
      timer.expires_after(20ms);
      co_await timer.async_wait(offload::net::use_awaitable);
      ++ticks;
    }
  };
  offload::task<void> ticking = loop.create_task(ticker());
  const auto start = std::chrono::steady_clock::now();
  http_response slow = co_await offload::to_thread(http_get, server.url("/slow?delay_ms=300"));
  const auto took = std::chrono::steady_clock::now() - start;
  fetching = false;
  co_await ticking.join();
  std::cout << "GET /slow -> " << slow.status << " after "
            << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
            << " ms; the loop ticked " << ticks << " times meanwhile\n";
  ok = ok && slow.status == 200;

  // 3. A status that is not 200 is just data; curl's own failures are exceptions. What
  //    http_get throws on the worker is rethrown here, with its own type.
  http_response missing = co_await offload::to_thread(http_get, server.url("/status/404"));
  std::cout << "GET /status/404 -> " << missing.status << "\n";
  ok = ok && missing.status == 404;

  const std::string refused = "http://127.0.0.1:" + std::to_string(closed_port()) + "/";
  try {
    co_await offload::to_thread(http_get, refused);
    std::cout << "GET on a closed port succeeded?\n";
    ok = false;
  } catch (const curl_error& e) {
    std::cout << "GET on a closed port threw curl_error: " << e.what() << "\n";
    ok = ok && e.code == CURLE_COULDNT_CONNECT;
  }

  std::cout << "the loop's server answered " << server.requests_served() << " requests\n";
  server.close();
  co_return ok;
}

int main() {
  curl_global_init(CURL_GLOBAL_DEFAULT);  // once, before any thread uses curl
  const bool ok = offload::run(main_coro());
  curl_global_cleanup();
  std::cout << (ok ? "done" : "unexpected result") << "\n";
  return ok ? 0 : 1;
}
