// A tiny HTTP/1.1 server on 127.0.0.1 for offload's network examples, so they run offline.
//
// It listens on a free port chosen by the system and answers every GET with `200 OK` and a
// short text body, then closes the connection. Two things in the request target change that:
//
//   /status/404          answers with that status code instead of 200
//   ...?delay_ms=250     waits that long (on a timer, without blocking anything) before answering
//
// It is an Asio coroutine per connection, written with offload::net so that it builds with
// standalone Asio and with Boost.Asio. Two ways to run it:
//
//   local_http_server server;                  // serves on a thread of its own until destroyed
//   local_http_server server{loop.get_executor()};  // serves on an executor that you run, e.g.
//                                              // the event loop: then a request is answered only
//                                              // while the loop is free
//
// This is example code, not part of offload: it does just enough HTTP for libcurl.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/config.hpp>

#include <atomic>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

namespace offload_examples {

class local_http_server {
 public:
  /// Listens now and serves on `ex`; whoever runs `ex` answers the requests. Destroy the server
  /// (or call close()) on a thread that runs `ex`, or after `ex` has stopped running.
  template <typename Executor>
  explicit local_http_server(const Executor& ex) : state_(std::make_shared<state>(ex)) {
    offload::net::co_spawn(ex, accept_loop(state_), offload::net::detached);
  }

  /// Listens now and serves on a thread of its own, until it is destroyed.
  local_http_server() {
    own_ = std::make_unique<own_thread>();
    state_ = std::make_shared<state>(own_->ctx.get_executor());
    offload::net::co_spawn(own_->ctx, accept_loop(state_), offload::net::detached);
    own_->thread = std::thread([ctx = &own_->ctx] { ctx->run(); });
  }

  local_http_server(const local_http_server&) = delete;
  local_http_server& operator=(const local_http_server&) = delete;

  ~local_http_server() {
    if (own_) {
      // Stop accepting and drop connections still open: the thread's run() then returns.
      offload::net::post(own_->ctx, [s = state_, ctx = &own_->ctx] {
        s->close();
        ctx->stop();
      });
      own_->thread.join();
    } else {
      close();
    }
  }

  /// Stops accepting connections. For a server on your executor: call it from that executor.
  void close() { state_->close(); }

  unsigned short port() const noexcept { return state_->port; }

  /// "http://127.0.0.1:<port>" followed by `target`, which starts with '/'.
  std::string url(std::string_view target = "/") const {
    return "http://127.0.0.1:" + std::to_string(port()) + std::string(target);
  }

  /// How many requests it has answered so far (from any thread).
  std::size_t requests_served() const noexcept {
    return state_->served.load(std::memory_order_acquire);
  }

 private:
  using tcp = offload::net::ip::tcp;

  struct state {
    template <typename Executor>
    explicit state(const Executor& ex)
        : acceptor(ex, tcp::endpoint(offload::net::ip::make_address("127.0.0.1"), 0)),
          port(acceptor.local_endpoint().port()) {}

    void close() {
      offload::net_error_code ignored;
      acceptor.close(ignored);
    }

    tcp::acceptor acceptor;
    unsigned short port;
    std::atomic<std::size_t> served{0};
  };

  struct own_thread {
    offload::net::io_context ctx{1};
    std::thread thread;
  };

  struct request {
    std::string path;  // the target without its query
    int status = 200;
    std::chrono::milliseconds delay{0};
  };

  // "GET /status/404?delay_ms=20 HTTP/1.1" -> {"/status/404", 404, 20 ms}
  static std::optional<request> parse(std::string_view head) {
    const auto line_end = head.find("\r\n");
    const std::string_view line = head.substr(0, line_end);
    const auto sp1 = line.find(' ');
    if (sp1 == std::string_view::npos) return std::nullopt;
    const auto sp2 = line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos) return std::nullopt;
    if (line.substr(0, sp1) != "GET") return std::nullopt;
    const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);

    request r;
    const auto q = target.find('?');
    r.path = std::string(target.substr(0, q));
    if (std::string_view p = r.path; p.starts_with("/status/")) {
      p.remove_prefix(8);
      int code = 0;
      if (std::from_chars(p.data(), p.data() + p.size(), code).ec == std::errc{} && code >= 100 &&
          code <= 599) {
        r.status = code;
      }
    }
    if (q != std::string_view::npos) {
      std::string_view query = target.substr(q + 1);
      constexpr std::string_view key = "delay_ms=";
      if (const auto k = query.find(key); k != std::string_view::npos) {
        query.remove_prefix(k + key.size());
        long ms = 0;
        std::from_chars(query.data(), query.data() + query.size(), ms);
        if (ms > 0 && ms <= 60'000) r.delay = std::chrono::milliseconds(ms);
      }
    }
    return r;
  }

  static const char* reason(int status) {
    switch (status) {
      case 200:
        return "OK";
      case 400:
        return "Bad Request";
      case 404:
        return "Not Found";
      case 500:
        return "Internal Server Error";
      case 503:
        return "Service Unavailable";
      default:
        return "Status";
    }
  }

  static offload::awaitable<void> accept_loop(std::shared_ptr<state> s) {
    for (;;) {
      offload::net_error_code ec;
      tcp::socket socket = co_await s->acceptor.async_accept(
          offload::net::redirect_error(offload::net::use_awaitable, ec));
      if (ec) co_return;  // closed
      offload::net::co_spawn(socket.get_executor(), session(std::move(socket), s),
                             offload::net::detached);
    }
  }

  static offload::awaitable<void> session(tcp::socket socket, std::shared_ptr<state> s) {
    offload::net_error_code ec;
    std::string in;
    co_await offload::net::async_read_until(
        socket, offload::net::dynamic_buffer(in, 16 * 1024), "\r\n\r\n",
        offload::net::redirect_error(offload::net::use_awaitable, ec));
    if (ec) co_return;

    std::optional<request> r = parse(in);
    int status = 400;
    std::string body = "bad request\n";
    if (r) {
      if (r->delay.count() > 0) {
        offload::net::steady_timer timer(socket.get_executor(), r->delay);
        co_await timer.async_wait(offload::net::redirect_error(offload::net::use_awaitable, ec));
      }
      status = r->status;
      body = "hello from 127.0.0.1: " + r->path + "\n";
    }
    std::string out =
        "HTTP/1.1 " + std::to_string(status) + " " + reason(status) +
        "\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
        "\r\nConnection: close\r\n\r\n" + body;
    // Counted before the write: a client that has its answer sees it counted.
    s->served.fetch_add(1, std::memory_order_acq_rel);
    co_await offload::net::async_write(
        socket, offload::net::buffer(out),
        offload::net::redirect_error(offload::net::use_awaitable, ec));
    socket.shutdown(tcp::socket::shutdown_send, ec);
    socket.close(ec);
  }

  std::unique_ptr<own_thread> own_;  // declared first: destroyed last, after state_
  std::shared_ptr<state> state_;
};

}  // namespace offload_examples
