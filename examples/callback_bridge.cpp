// Bridge a callback API into a coroutine: asyncio's
//
//     fut = loop.create_future()
//     sdk.lookup(key, lambda value: loop.call_soon_threadsafe(fut.set_result, value))
//     value = await fut
//
// translated to offload. The "SDK" below is a C interface that completes each request on a
// thread of its own, as many vendor SDKs and C libraries do (c-ares, libpq's async API, an MQTT
// client). offload::future<T> is the awaitable one-shot result; the callback hands the value
// to the loop with call_soon_threadsafe, or sets it directly (every setter is thread-safe).
#include <offload/offload.hpp>

#include <chrono>
#include <exception>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

// --- A C library with a completion callback (stands in for a real SDK) --------------------------
extern "C" {
typedef void (*sdk_callback)(void* user_data, int status, const char* value);
}

class fake_sdk {
 public:
  ~fake_sdk() {
    for (auto& t : threads_) t.join();
  }
  // Starts a lookup; `done` is called later on the SDK's own thread. Status 0 is success.
  void lookup(const std::string& key, std::chrono::milliseconds latency, sdk_callback done,
              void* user_data) {
    threads_.emplace_back([key, latency, done, user_data] {
      std::this_thread::sleep_for(latency);
      if (key == "missing") {
        done(user_data, 404, nullptr);
      } else {
        const std::string value = "value-of-" + key;
        done(user_data, 0, value.c_str());
      }
    });
  }

 private:
  std::vector<std::thread> threads_;
};

// --- The bridge -----------------------------------------------------------------------------------
struct lookup_request {
  offload::event_loop& loop;
  offload::future<std::string> result;
};

// Runs on the SDK's thread. It must not throw into C code, and it may fire after the awaiter
// gave up (a timeout: try_set_result on a future nobody awaits is harmless) or after the loop
// closed (call_soon_threadsafe throws loop_closed). The loop must outlive the SDK's threads.
extern "C" void on_lookup_done(void* user_data, int status, const char* value) {
  std::unique_ptr<lookup_request> request(static_cast<lookup_request*>(user_data));
  try {
    if (status != 0) {
      // The thread-safe setter, called directly from the SDK's thread.
      request->result.try_set_exception(
          std::make_exception_ptr(std::runtime_error("lookup failed: " + std::to_string(status))));
      return;
    }
    // asyncio's loop.call_soon_threadsafe(fut.set_result, value): the loop sets it.
    request->loop.call_soon_threadsafe(
        [fut = request->result, text = std::string(value)]() mutable { fut.try_set_result(text); });
  } catch (const std::exception& e) {
    std::cerr << "on_lookup_done: " << e.what() << '\n';  // the loop had closed
  }
}

offload::awaitable<std::string> lookup(fake_sdk& sdk, std::string key,
                                       std::chrono::milliseconds latency) {
  offload::event_loop& loop = offload::get_running_loop();
  offload::future<std::string> result = loop.create_future<std::string>();
  sdk.lookup(key, latency, on_lookup_done, new lookup_request{loop, result});
  co_return co_await result.get();
}

offload::awaitable<void> main_coro(fake_sdk& sdk) {
  const std::thread::id loop_thread = std::this_thread::get_id();

  std::string first = co_await lookup(sdk, "alpha", 20ms);
  std::cout << "alpha -> " << first << " (resumed on the loop thread: " << std::boolalpha
            << (std::this_thread::get_id() == loop_thread) << ")" << std::endl;

  // Several lookups in flight at once, from tasks started eagerly.
  offload::event_loop& loop = offload::get_running_loop();
  auto beta = loop.create_task(lookup(sdk, "beta", 30ms));
  auto gamma = loop.create_task(lookup(sdk, "gamma", 10ms));
  std::string b = co_await beta.join();
  std::string g = co_await gamma.join();
  std::cout << "beta -> " << b << ", gamma -> " << g << std::endl;

  try {
    (void)co_await lookup(sdk, "missing", 10ms);
  } catch (const std::runtime_error& e) {
    std::cout << "missing -> " << e.what() << std::endl;
  }

  // The awaiter gives up after 20 ms; the SDK answers later into a future nobody awaits.
  try {
    (void)co_await offload::wait_for(lookup(sdk, "slow", 200ms), 20ms);
  } catch (const std::system_error& e) {
    std::cout << "slow -> timeout: " << std::boolalpha << (e.code() == offload::errc::timeout)
              << std::endl;
  }
}

int main() {
  offload::event_loop loop;
  {
    fake_sdk sdk;
    loop.run_until_complete(main_coro(sdk));
  }  // joins the SDK's threads: the slow answer reaches a loop that is still open
  loop.close();  // runs the callbacks handed in before it (the slow answer's set_result)
  std::cout << "done" << std::endl;
}
