// Timeouts and cancellation of a real blocking call: a socket read that honours a
// std::stop_token, against a local server that never answers.
//
//   wait_for      → errc::timeout, and the read was asked to stop (wait policy: it returned first)
//   abandon       → the awaiter resumes at the deadline; the call finishes later on its own
//   gather        → one call fails, its sibling is cancelled and awaited, the error comes back
//
// Distributed under the Boost Software License, Version 1.0.
#include <offload/offload.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace net = offload::net;
using namespace std::chrono_literals;

namespace {

// A blocking client: connect, then wait for bytes, polling the stop token every 20 ms (the
// slice a real driver would use between blocking reads).
std::string read_reply(std::stop_token stop, unsigned short port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    throw std::runtime_error("connect() failed");
  }
  std::string reply;
  while (!stop.stop_requested()) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 20) > 0) {
      char buf[256];
      const auto n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      reply.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  if (stop.stop_requested()) std::printf("read_reply: stop requested, returning\n");
  return reply;
}

// A server on the loop that accepts and then says nothing.
offload::awaitable<void> silent_server(net::ip::tcp::acceptor& acceptor) {
  std::vector<net::ip::tcp::socket> held;
  for (;;) held.push_back(co_await acceptor.async_accept(net::use_awaitable));
}

std::atomic<int> abandoned_calls{0};
void on_abandoned(std::exception_ptr error) {  // on the worker, once the call returned
  abandoned_calls.fetch_add(error ? 100 : 1);
}

offload::awaitable<void> demo(unsigned short port) {
  // 1. wait_for: the deadline cancels the read, which sees its stop_token and returns.
  try {
    co_await offload::wait_for(offload::to_thread(read_reply, port), 100ms);
  } catch (const std::system_error& e) {
    std::printf("wait_for: timeout = %s\n", e.code() == offload::errc::timeout ? "true" : "false");
  }

  // 2. abandon: the awaiter resumes at the deadline; a call that cannot be interrupted (one
  //    300 ms poll) finishes later and reports to on_abandoned.
  auto one_slow_poll = [] {
    ::poll(nullptr, 0, 300);
    return 1;
  };
  const auto started = std::chrono::steady_clock::now();
  try {
    co_await offload::wait_for(
        offload::to_thread(
            {.policy = offload::cancel_policy::abandon, .on_abandoned = on_abandoned},
            one_slow_poll),
        50ms);
  } catch (const std::system_error& e) {
    const auto waited = std::chrono::steady_clock::now() - started;
    std::printf("abandon: timeout = %s, resumed before the call returned = %s\n",
                e.code() == offload::errc::timeout ? "true" : "false",
                waited < 250ms ? "true" : "false");
  }
  net::steady_timer until(co_await net::this_coro::executor, 10ms);
  while (abandoned_calls.load() == 0) {
    until.expires_after(10ms);
    co_await until.async_wait(net::use_awaitable);
  }
  std::printf("abandon: on_abandoned saw the call return normally = %s\n",
              abandoned_calls.load() == 1 ? "true" : "false");

  // 3. gather: the failing call cancels its sibling's read, which returns; then the error.
  auto fails = []() -> int {
    std::this_thread::sleep_for(30ms);
    throw std::runtime_error("the other call failed");
  };
  try {
    co_await offload::gather(offload::to_thread(read_reply, port), offload::to_thread(fails));
  } catch (const std::runtime_error& e) {
    std::printf("gather: %s\n", e.what());
  }
}

}  // namespace

int main() {
  offload::event_loop loop;
  net::ip::tcp::acceptor acceptor(loop.context(),
                                  net::ip::tcp::endpoint(net::ip::address_v4::loopback(), 0));
  const unsigned short port = acceptor.local_endpoint().port();
  auto server = loop.create_task(silent_server(acceptor));
  loop.run_until_complete(demo(port));
  server.cancel();
  std::printf("done\n");
}
