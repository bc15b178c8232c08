// run_in_executor with a pool of your own: asyncio's
//
//     pool = ThreadPoolExecutor(max_workers=20, thread_name_prefix="fetch", initializer=init)
//     results = await asyncio.gather(*(loop.run_in_executor(pool, fetch, url) for url in urls))
//
// The calls are blocking HTTP GETs through libcurl's easy API. The pool's initializer runs once
// in each new thread and gives it a curl handle of its own (a curl handle must not be used by
// two threads at once, and reusing one per thread saves setting one up per call).
// stats() shows the pool at work: threads start on demand, at most max_workers of them.
//
// The example is offline: it serves HTTP itself on 127.0.0.1 from a thread of its own
// (examples/support), answering each request after 100 ms.
#include "support/local_http_server.hpp"

#include <offload/offload.hpp>

#include <curl/curl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <iostream>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__linux__) || defined(__APPLE__)
#include <pthread.h>
#endif

using namespace std::chrono_literals;

// -- per-thread state, set up by the pool's initializer ---------------------------------------

struct curl_handle_deleter {
  void operator()(CURL* c) const noexcept { curl_easy_cleanup(c); }
};
thread_local std::unique_ptr<CURL, curl_handle_deleter> thread_curl;  // freed when its thread exits
std::atomic<int> initializer_runs{0};

void open_thread_curl() {
  thread_curl.reset(curl_easy_init());
  if (!thread_curl) throw std::runtime_error("curl_easy_init failed");
  initializer_runs.fetch_add(1);
}

std::string this_thread_name() {
#if defined(__linux__) || defined(__APPLE__)
  char name[64] = {};
  if (pthread_getname_np(pthread_self(), name, sizeof(name)) == 0) return name;
#endif
  return "?";
}

// -- the blocking call ------------------------------------------------------------------------

struct fetched {
  long status = 0;
  std::string thread_name;
  const void* handle = nullptr;  // which thread's curl handle it used
};

fetched fetch(const std::string& url) {
  CURL* curl = thread_curl.get();
  if (curl == nullptr)
    throw std::logic_error("fetch ran on a thread the initializer did not set up");
  curl_easy_reset(curl);  // the handle keeps its connection cache; options start afresh
  std::string body;
  curl_write_callback append = [](char* data, std::size_t size, std::size_t n, void* out) {
    static_cast<std::string*>(out)->append(data, size * n);
    return size * n;
  };
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, append);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10'000L);
  const CURLcode rc = curl_easy_perform(curl);  // blocks ~100 ms: the server waits that long
  if (rc != CURLE_OK) throw std::runtime_error(curl_easy_strerror(rc));
  fetched f;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &f.status);
  f.thread_name = this_thread_name();
  f.handle = curl;
  return f;
}

void print_stats(const char* when, const offload::thread_pool_stats& s) {
  std::cout << when << ": workers " << s.workers << " (idle " << s.idle << ", peak "
            << s.peak_workers << "), queued " << s.queued << ", running " << s.running
            << ", completed " << s.completed << "\n";
}

// -- the coroutine ----------------------------------------------------------------------------

offload::awaitable<bool> main_coro(const offload_examples::local_http_server& server) {
  auto& loop = offload::get_running_loop();

  offload::thread_pool_options options;
  options.max_workers = 20;
  options.thread_name_prefix = "fetch";  // threads are named fetch-1, fetch-2, ...
  options.initializer = open_thread_curl;
  offload::thread_pool pool{options};
  print_stats("before any call", pool.stats());

  // 40 GETs, each taking ~100 ms: started all at once, they run 20 at a time on the pool.
  constexpr int calls = 40;
  const auto start = std::chrono::steady_clock::now();
  std::vector<offload::task<fetched>> tasks;
  for (int i = 0; i < calls; ++i) {
    const std::string url = server.url("/item/" + std::to_string(i) + "?delay_ms=100");
    tasks.push_back(loop.create_task(offload::run_in_executor(pool, fetch, url)));
  }

  // Look at the pool while the calls run (the loop is free to do so).
  offload::net::steady_timer timer(co_await offload::net::this_coro::executor, 50ms);
  co_await timer.async_wait(offload::net::use_awaitable);
  print_stats("50 ms later", pool.stats());

  std::vector<fetched> results;
  for (auto& t : tasks) results.push_back(co_await t.join());
  const auto took = std::chrono::steady_clock::now() - start;

  bool all_ok =
      std::all_of(results.begin(), results.end(), [](const fetched& f) { return f.status == 200; });
  std::set<std::string> names;
  std::set<const void*> handles;
  for (const fetched& f : results) {
    names.insert(f.thread_name);
    handles.insert(f.handle);
  }
  std::cout << calls << " GETs of 100 ms took "
            << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms on "
            << names.size() << " threads; all answered 200: " << std::boolalpha << all_ok << "\n";
  const bool named = std::all_of(names.begin(), names.end(),
                                 [](const std::string& n) { return n.rfind("fetch-", 0) == 0; });
  std::cout << "every thread is named fetch-<n>: " << named << "\n";
  std::cout << "one curl handle per thread: " << (handles.size() == names.size()) << "\n";

  // The same as the pool's destructor: refuses new calls, waits for the threads to exit.
  pool.shutdown();
  const offload::thread_pool_stats s = pool.stats();
  print_stats("after shutdown", s);
  const bool once_per_thread = initializer_runs.load() == static_cast<int>(s.peak_workers);
  std::cout << "the initializer ran once per thread: " << once_per_thread << "\n";
  std::cout << "peak workers within max_workers (20): " << (s.peak_workers <= 20) << "\n";
  const bool ok = all_ok && named && once_per_thread && s.peak_workers <= 20 &&
                  s.completed == calls && handles.size() == names.size();
  co_return ok;
}

int main() {
  curl_global_init(CURL_GLOBAL_DEFAULT);  // once, before any thread uses curl
  bool ok = false;
  {
    offload_examples::local_http_server server;  // on a thread of its own
    ok = offload::run(main_coro(server));
  }
  curl_global_cleanup();
  std::cout << (ok ? "done" : "unexpected result") << "\n";
  return ok ? 0 : 1;
}
