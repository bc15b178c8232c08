// A blocking database driver behind a capacity limiter: SQLite queries on a pool of 8 threads,
// at most 2 at a time; then the same queries on two long-lived connections, each living on a
// thread of its own (offload::serial_thread), as a driver whose handles must stay on the thread
// that opened them needs. Trio's
//
//     connections = trio.CapacityLimiter(2)
//     await trio.to_thread.run_sync(query, customer, limiter=connections)
//
// with the queries started together and collected by offload::gather, as asyncio.gather does.
// The database (a file in a temporary directory) stands in for a server that accepts two
// connections: each query opens its own connection, runs, and closes it, and the limiter makes
// sure no more than two are open at once, however many threads the pool has. The other calls
// wait in the limiter's queue without holding a thread. Each query is a real one: a full scan of
// 240,000 rows with no index to help it.
//
// The second form is aiosqlite's: each connection has one thread, every call on it runs there,
// one at a time, in order; two connections give two queries at once with no limiter needed.
//
// Distributed under the Boost Software License, Version 1.0.
#include <offload/offload.hpp>

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using namespace std::chrono_literals;

namespace {

constexpr int customers = 24;
constexpr int rows = 240'000;

// -- a small blocking driver over the sqlite3 C API -------------------------------------------

class sqlite_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct db_closer {
  void operator()(sqlite3* db) const noexcept { sqlite3_close(db); }
};
struct stmt_finalizer {
  void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
};
using connection = std::unique_ptr<sqlite3, db_closer>;
using statement = std::unique_ptr<sqlite3_stmt, stmt_finalizer>;

connection open_db(const std::string& path, int flags) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  connection owned(db);  // sqlite3_open_v2 may hand back a handle even when it fails
  if (rc != SQLITE_OK) {
    throw sqlite_error("sqlite3_open_v2(" + path +
                       "): " + (db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
  }
  sqlite3_busy_timeout(db, 5'000);
  return owned;
}

void exec(sqlite3* db, const char* sql) {
  char* message = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &message) != SQLITE_OK) {
    const std::string what = message != nullptr ? message : sqlite3_errmsg(db);
    sqlite3_free(message);
    throw sqlite_error(what);
  }
}

statement prepare(sqlite3* db, const char* sql) {
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &s, nullptr) != SQLITE_OK) {
    throw sqlite_error(sqlite3_errmsg(db));
  }
  return statement(s);
}

// -- the blocking calls -----------------------------------------------------------------------

// 240,000 orders spread over 24 customers, written in one transaction.
void create_database(const std::string& path) {
  connection db = open_db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX);
  exec(db.get(),
       "CREATE TABLE orders(id INTEGER PRIMARY KEY, customer INTEGER NOT NULL,"
       "                    amount REAL NOT NULL);"
       "BEGIN;"
       "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 239999)"
       "  INSERT INTO orders(customer, amount) SELECT i % 24, (i * 37 % 1000) / 10.0 FROM n;"
       "COMMIT;");
}

struct customer_total {
  int customer = 0;
  std::int64_t orders = 0;
  double amount = 0;
};

// How many queries are inside query_customer right now, and the most there ever were.
std::atomic<int> running{0};
std::atomic<int> peak{0};

struct counted {
  counted() {
    const int now = running.fetch_add(1) + 1;
    int seen = peak.load();
    while (seen < now && !peak.compare_exchange_weak(seen, now)) {
    }
  }
  ~counted() { running.fetch_sub(1); }
  counted(const counted&) = delete;
  counted& operator=(const counted&) = delete;
};

// One customer's orders on an open connection.
customer_total query_on(sqlite3* db, int customer) {
  counted in_flight;
  statement s = prepare(db, "SELECT count(*), total(amount) FROM orders WHERE customer = ?1");
  sqlite3_bind_int(s.get(), 1, customer);
  if (sqlite3_step(s.get()) != SQLITE_ROW) throw sqlite_error(sqlite3_errmsg(db));
  return {customer, sqlite3_column_int64(s.get(), 0), sqlite3_column_double(s.get(), 1)};
}

// One customer's orders: a connection of its own (used by this thread only), opened, used and
// closed within the call, like a driver's connect / query / disconnect.
customer_total query_customer(const std::string& path, int customer) {
  connection db = open_db(path, SQLITE_OPEN_READONLY | SQLITE_OPEN_FULLMUTEX);
  return query_on(db.get(), customer);
}

// A connection that lives on a thread of its own: opened by the thread's initializer, used by
// every call made through it, closed by a last call there. SQLITE_OPEN_NOMUTEX: SQLite does no
// locking for it, which is sound because only that thread ever touches it.
class pinned_connection {
 public:
  pinned_connection(const std::string& path, std::string thread_name)
      : thread_(options(path, std::move(thread_name))) {}

  // The query, with the id of the thread it ran on.
  offload::awaitable<std::pair<customer_total, std::thread::id>> query(int customer) {
    auto run = [this, customer] {
      return std::pair(query_on(db_.get(), customer), std::this_thread::get_id());
    };
    co_return co_await offload::run_in_executor(thread_, run);
  }

  offload::awaitable<void> close() {
    co_await offload::run_in_executor(thread_, [this] { db_.reset(); });
  }

  std::thread::id thread_id() const noexcept { return thread_.thread_id(); }

 private:
  offload::serial_thread_options options(const std::string& path, std::string thread_name) {
    offload::serial_thread_options o;
    o.thread_name = std::move(thread_name);
    o.initializer = [this, path] {
      db_ = open_db(path, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX);
    };
    return o;
  }

  connection db_;                  // written and read on thread_ only
  offload::serial_thread thread_;  // declared last: joined before db_ goes
};

// The same figures from one GROUP BY, to check the 24 separate queries against.
std::map<int, customer_total> all_customers(const std::string& path) {
  connection db = open_db(path, SQLITE_OPEN_READONLY | SQLITE_OPEN_FULLMUTEX);
  statement s =
      prepare(db.get(), "SELECT customer, count(*), total(amount) FROM orders GROUP BY customer");
  std::map<int, customer_total> out;
  int rc;
  while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) {
    const int c = sqlite3_column_int(s.get(), 0);
    out[c] = {c, sqlite3_column_int64(s.get(), 1), sqlite3_column_double(s.get(), 2)};
  }
  if (rc != SQLITE_DONE) throw sqlite_error(sqlite3_errmsg(db.get()));
  return out;
}

// -- the coroutine ----------------------------------------------------------------------------

struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    std::string name = (std::filesystem::temp_directory_path() / "offload-sqlite-XXXXXX").string();
    if (::mkdtemp(name.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path = name;
  }
  ~temp_dir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
};

void print(const char* when, const offload::capacity_limiter::stats_type& s) {
  std::cout << when << ": limiter.stats() = {total_tokens " << s.total_tokens
            << ", borrowed_tokens " << s.borrowed_tokens << ", waiting " << s.waiting << "}";
}

long long ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               start)
      .count();
}

offload::awaitable<bool> main_coro() {
  auto& loop = offload::get_running_loop();
  temp_dir dir;
  const std::string path = (dir.path / "orders.db").string();
  co_await offload::to_thread(create_database, path);
  std::cout << "database: " << rows << " orders of " << customers
            << " customers in a temporary file\n";

  offload::thread_pool_options options;
  options.max_workers = 8;
  options.thread_name_prefix = "db";
  offload::thread_pool pool{options};
  offload::capacity_limiter connections{2};  // the database takes 2 connections at a time

  // 24 queries, all started at once by gather; the limiter lets 2 at a time onto the pool.
  std::vector<offload::awaitable<customer_total>> queries;
  for (int c = 0; c < customers; ++c) {
    queries.push_back(
        offload::run_in_executor(pool, {.limiter = &connections}, query_customer, path, c));
  }
  const auto start = std::chrono::steady_clock::now();
  offload::task<std::vector<customer_total>> all =
      loop.create_task(offload::gather(std::move(queries)));

  // The loop is free meanwhile. 10 ms in, the first two queries (each a full scan of tens of
  // ms) hold both tokens and the others wait in the limiter's queue, holding no thread.
  // (stats() is a snapshot: at the instant one token is being handed on to a waiting call it
  // may show borrowed_tokens 1.)
  offload::net::steady_timer timer(co_await offload::net::this_coro::executor, 10ms);
  co_await timer.async_wait(offload::net::use_awaitable);
  print("while they run", connections.stats());
  std::cout << "\n";

  std::vector<customer_total> totals = co_await all.join();
  const long long took = ms_since(start);
  const int limited_peak = peak.load();
  std::cout << customers << " queries took " << took << " ms; the pool (at most "
            << options.max_workers << " threads) started " << pool.stats().peak_workers << "\n";
  std::cout << "peak concurrent queries: " << limited_peak << " (limiter allows "
            << connections.total_tokens() << ")\n";
  print("after gather", connections.stats());
  std::cout << "\n";

  // gather keeps argument order: totals[c] is customer c. Check them against one GROUP BY.
  const std::map<int, customer_total> expected = co_await offload::to_thread(all_customers, path);
  bool match = expected.size() == customers;
  std::int64_t orders = 0;
  for (int c = 0; c < customers; ++c) {
    const customer_total& t = totals[static_cast<std::size_t>(c)];
    const auto e = expected.find(c);
    match = match && t.customer == c && e != expected.end() && e->second.orders == t.orders &&
            e->second.amount == t.amount;
    orders += t.orders;
  }
  std::cout << "the " << customers
            << " results, in argument order, match one GROUP BY query: " << std::boolalpha
            << (match && orders == rows) << "\n";

  // For comparison, the same queries on the same pool without the limiter.
  peak = 0;
  std::vector<offload::awaitable<customer_total>> unlimited;
  for (int c = 0; c < customers; ++c) {
    unlimited.push_back(offload::run_in_executor(pool, query_customer, path, c));
  }
  std::vector<customer_total> again = co_await offload::gather(std::move(unlimited));
  std::cout << "without the limiter, the same pool ran up to " << peak.load()
            << " queries at once\n";

  // The same 24 queries on two long-lived connections, each on its own serial_thread: customer
  // c goes to connection c % 2. Two threads, two queries at a time, no limiter.
  peak = 0;
  const auto pinned_start = std::chrono::steady_clock::now();
  std::vector<std::unique_ptr<pinned_connection>> pinned;
  for (int i = 0; i < 2; ++i) {
    pinned.push_back(std::make_unique<pinned_connection>(path, "conn-" + std::to_string(i)));
  }
  std::vector<offload::awaitable<std::pair<customer_total, std::thread::id>>> on_pinned;
  for (int c = 0; c < customers; ++c) on_pinned.push_back(pinned[c % 2]->query(c));
  auto pinned_results = co_await offload::gather(std::move(on_pinned));
  bool pinned_ok = pinned_results.size() == customers;
  for (int c = 0; c < customers && pinned_ok; ++c) {
    const auto& [total, thread] = pinned_results[static_cast<std::size_t>(c)];
    pinned_ok = thread == pinned[c % 2]->thread_id() && total.orders == totals[c].orders &&
                total.amount == totals[c].amount;
  }
  for (auto& conn : pinned) co_await conn->close();
  std::cout << "on 2 connections, each opened once on its own serial_thread: " << customers
            << " queries took " << ms_since(pinned_start) << " ms, up to " << peak.load()
            << " at once\n";
  std::cout << "each ran on its connection's thread and matched the results above: " << pinned_ok
            << "\n";

  co_return match && orders == rows && again.size() == customers &&
      limited_peak == static_cast<int>(connections.total_tokens()) &&
      connections.borrowed_tokens() == 0 && pinned_ok && peak.load() <= 2;
}

}  // namespace

int main() {
  if (sqlite3_threadsafe() == 0) {  // a build without mutexes must not be used from threads
    std::cout << "this SQLite was built with SQLITE_THREADSAFE=0\n";
    return 1;
  }
  const bool ok = offload::run(main_coro());
  std::cout << (ok ? "done" : "unexpected result") << "\n";
  return ok ? 0 : 1;
}
