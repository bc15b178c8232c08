// Context propagation: a context_hook captures thread-local context where a call is made and
// installs it in the worker for the duration of f, on every offload path; nothing leaks back.
#include "catch.hpp"
#include "loop_helpers.hpp"

#include <offload/context.hpp>
#include <offload/offload.hpp>

#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

namespace net = offload::net;

namespace {

thread_local std::string tl_request_id = "none";

offload::context_hook make_request_id_hook() {
  return offload::context_hook(
      [] { return tl_request_id; },
      [](std::string id) { return std::exchange(tl_request_id, std::move(id)); });
}

// A third-party pool adapted with a member submit(callable).
struct thread_per_call_pool {
  void submit(offload::work_item item) { std::thread(std::move(item)).detach(); }
};

struct seen {
  std::string in_worker;
  std::string after_change_in_worker;
};

template <typename Offload>
offload::awaitable<seen> observe(Offload offload_call) {
  tl_request_id = "req-42";
  seen s;
  auto f = [] {
    std::string in_worker = tl_request_id;
    tl_request_id = "changed-by-worker";  // must not leak anywhere
    return in_worker;
  };
  s.in_worker = co_await offload_call(std::move(f));
  s.after_change_in_worker = tl_request_id;
  tl_request_id = "none";
  co_return s;
}

}  // namespace

TEST_CASE("a context hook carries thread-local context into every kind of executor",
          "[context]") {
  offload::context_hook hook = make_request_id_hook();
  offload::thread_pool pool(1);
  net::thread_pool asio_pool(1);
  thread_per_call_pool custom;

  auto on_default = [](auto f) { return offload::to_thread(std::move(f)); };
  auto on_pool = [&pool](auto f) { return offload::run_in_executor(pool, std::move(f)); };
  auto on_asio = [&asio_pool](auto f) {
    return offload::run_in_executor(asio_pool.get_executor(), std::move(f));
  };
  auto on_custom = [&custom](auto f) { return offload::run_in_executor(custom, std::move(f)); };

  for (const seen& s : {offload::run(observe(on_default)), offload::run(observe(on_pool)),
                        offload::run(observe(on_asio)), offload::run(observe(on_custom))}) {
    CHECK(s.in_worker == "req-42");
    CHECK(s.after_change_in_worker == "req-42");  // the worker's change did not leak back
  }
  asio_pool.join();
}

TEST_CASE("a worker gets its own context back after each call", "[context]") {
  offload::thread_pool pool(1);
  std::string worker_before, worker_after;
  {
    auto read = [] { return tl_request_id; };
    worker_before = offload::run(offload::run_in_executor(pool, read));
  }
  {
    offload::context_hook hook = make_request_id_hook();
    auto body = [&]() -> offload::awaitable<std::string> {
      tl_request_id = "req-7";
      auto f = [] {
        tl_request_id = "scribbled";
        return tl_request_id;
      };
      std::string r = co_await offload::run_in_executor(pool, std::move(f));
      tl_request_id = "none";
      co_return r;
    };
    CHECK(offload::run(body()) == "scribbled");
  }
  auto read = [] { return tl_request_id; };
  worker_after = offload::run(offload::run_in_executor(pool, read));
  CHECK(worker_before == "none");
  CHECK(worker_after == "none");  // restored on the same (only) worker
}

TEST_CASE("without a hook, or once it is gone, nothing is propagated", "[context]") {
  offload::thread_pool pool(1);
  auto body = [&]() -> offload::awaitable<std::string> {
    tl_request_id = "req-1";
    auto f = [] { return tl_request_id; };
    std::string r = co_await offload::run_in_executor(pool, std::move(f));
    tl_request_id = "none";
    co_return r;
  };
  { offload::context_hook hook = make_request_id_hook(); }
  CHECK(offload::run(body()) == "none");
}

TEST_CASE("hooks compose: each captures and installs its own piece of context", "[context]") {
  thread_local int tl_tenant = 0;
  offload::context_hook ids = make_request_id_hook();
  offload::context_hook tenants([] { return tl_tenant; },
                                [](int t) { return std::exchange(tl_tenant, t); });
  auto body = []() -> offload::awaitable<std::string> {
    tl_request_id = "req-9";
    tl_tenant = 3;
    auto f = [] { return tl_request_id + "/" + std::to_string(tl_tenant); };
    std::string r = co_await offload::to_thread(std::move(f));
    tl_request_id = "none";
    tl_tenant = 0;
    co_return r;
  };
  CHECK(offload::run(body()) == "req-9/3");
}

TEST_CASE(
    "a throwing capture reaches the awaiter; a throwing install fails the call before f runs",
    "[context]") {
  std::atomic<bool> ran{false};
  auto call = [&]() -> offload::awaitable<std::string> {
    auto f = [&ran] { ran = true; };
    try {
      co_await offload::to_thread(std::move(f));
    } catch (const std::runtime_error& e) {
      co_return e.what();
    }
    co_return "no error";
  };
  {
    offload::context_hook bad_capture([]() -> int { throw std::runtime_error("capture failed"); },
                                      [](int v) { return v; });
    CHECK(offload::run(call()) == "capture failed");
  }
  {
    offload::context_hook bad_install([] { return 1; },
                                      [](int) -> int { throw std::runtime_error("install failed"); });
    CHECK(offload::run(call()) == "install failed");
  }
  CHECK_FALSE(ran.load());
}
