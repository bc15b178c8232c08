// Start an event loop in another thread and submit coroutines to it: the asyncio recipe
//
//     loop = asyncio.new_event_loop()
//     threading.Thread(target=loop.run_forever, daemon=True).start()
//     fut = asyncio.run_coroutine_threadsafe(work(), loop)
//     print(fut.result())
//     loop.call_soon_threadsafe(callback)
//
// translated to offload. offload::loop_thread is the thread and the loop in one object; unlike
// the daemon thread above, it is stopped and joined when it goes out of scope, and whatever is
// still pending then fails with loop_closed instead of waiting forever.
#include <offload/offload.hpp>

#include <chrono>
#include <future>
#include <iostream>
#include <thread>

using namespace std::chrono_literals;

// A coroutine for the loop: it waits on a timer (without blocking the loop's thread), says
// where it runs, and returns that thread's id.
offload::awaitable<std::thread::id> work(std::chrono::milliseconds delay) {
  offload::net::steady_timer timer(co_await offload::net::this_coro::executor, delay);
  co_await timer.async_wait(offload::net::use_awaitable);
  std::cout << "running in the loop thread " << std::this_thread::get_id() << std::endl;
  co_return std::this_thread::get_id();
}

offload::awaitable<int> add(int a, int b) { co_return a + b; }

int main() {
  const std::thread::id main_id = std::this_thread::get_id();
  std::cout << "main thread " << main_id << std::endl;

  // 1. A loop on a thread of its own, running from here on.
  offload::loop_thread bg;

  // 2. Hand it a coroutine. The future is this thread's handle on the result: result() blocks
  //    this thread (never the loop) until the coroutine has finished, and rethrows its errors.
  offload::concurrent_future<std::thread::id> fut =
      offload::run_coroutine_threadsafe(work(100ms), bg.loop());
  const std::thread::id loop_id = fut.result();

  // 3. A plain callback goes the same way: call_soon_threadsafe is safe from any thread.
  std::promise<std::thread::id> ran_on;
  bg.loop().call_soon_threadsafe([&ran_on] { ran_on.set_value(std::this_thread::get_id()); });
  const std::thread::id callback_id = ran_on.get_future().get();
  std::cout << "callback ran on the loop thread: " << std::boolalpha << (callback_id == loop_id)
            << std::endl;

  // 4. For one-off calls, call() is submit-and-wait in one step (a blocking portal).
  const int sum = bg.call(add(2, 3));
  std::cout << "2 + 3 = " << sum << " (computed on the loop)" << std::endl;

  if (loop_id == main_id || callback_id != loop_id || sum != 5) {
    std::cout << "unexpected result" << std::endl;
    return 1;
  }
  std::cout << "done" << std::endl;
  return 0;
}  // 5. ~loop_thread: stops the loop, fails what is still pending with loop_closed, joins.
