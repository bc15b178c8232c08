// What every README fragment block is compiled after (see CMakeLists.txt here): offload, the
// standard headers the snippets use, the `net` alias the READMEs write, and declarations of the
// stand-ins they call for "your own code". Only declared: the snippets are compiled, never linked.
#pragma once

#include <offload/offload.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <future>
#include <iostream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

namespace net = offload::net;
using namespace std::chrono_literals;

// Blocking calls: a driver, an SDK, a slow parse.
std::string http_get(std::string url);
int http_status(std::string url);
int checksum(int n);
std::size_t lookup(const std::string& name);
void flush_journal();
void open_thread_connection();

struct config {};
std::unique_ptr<config> parse_config(std::string path);

struct device_error : std::runtime_error {
  using std::runtime_error::runtime_error;
  int device = 0;
};
void open_device(int device);

struct db_handle {};
struct row {};
struct rows {};
void fetch_rows(db_handle& db, std::string sql, std::vector<row>& out);
rows blocking_query(const std::string& sql);

struct user {};
struct order {};
user load_user(int id);
std::vector<order> load_orders(int id);
struct document {};
document parse_file(const std::string& path);

// Coroutines of your own.
offload::awaitable<void> heartbeat();
offload::awaitable<void> serve();
offload::awaitable<int> compute();
