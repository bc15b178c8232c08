// A pool's metrics in Prometheus' text exposition format, with no client library: a
// call_observer counts how calls ended and which callables ran, thread_pool::stats() gives the
// phase timings, and render() turns both into what a /metrics endpoint would return.
//
// The calls are blocking sleeps standing in for a driver or an SDK: most take a few ms, some
// throw, and one runs past report_calls_longer_than so that on_long_call reports it.
//
// Distributed under the Boost Software License, Version 1.0.
#include <offload/offload.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#if __has_include(<cxxabi.h>)
#include <cxxabi.h>
#endif

using namespace std::chrono_literals;

// -- the blocking calls -------------------------------------------------------------------------

// call_info::callable names the callable's type, so each kind of call is a function object of
// its own: plain functions of one signature would all share one function-pointer type.
struct load_profile {
  int operator()(int user) const {
    // 2 to 6 ms, so that the quantiles below differ.
    std::this_thread::sleep_for(std::chrono::milliseconds(2 + user % 5));
    return user;
  }
};

struct charge_card {
  int operator()(int attempt) const {
    std::this_thread::sleep_for(3ms);  // a quick call, like load_profile's
    if (attempt % 3 == 2) throw std::runtime_error("card declined");  // every third charge
    return attempt;
  }
};

// Eight times the longest quick call (6 ms): only build_report crosses it, even on a busy
// machine.
constexpr auto long_call_threshold = 50ms;
struct build_report {
  int operator()(int) const {
    std::this_thread::sleep_for(120ms);  // well past long_call_threshold: reported once
    return 0;
  }
};

// -- the exporter -------------------------------------------------------------------------------

// The callable's type as the compiler spells it in source ("charge_card"), not mangled.
std::string demangle(const char* name) {
#if __has_include(<cxxabi.h>)
  int status = 0;
  std::unique_ptr<char, decltype(&std::free)> readable(
      abi::__cxa_demangle(name, nullptr, nullptr, &status), &std::free);
  if (status == 0) return readable.get();
#endif
  return name;
}

// Prometheus label values escape backslash, double quote and newline.
std::string escape_label(std::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// In the order of offload::call_end's enumerators, which index exporter's counters.
constexpr std::array<const char*, 4> outcome_names = {"returned", "threw", "cancelled_before_start",
                                                      "refused"};
static_assert(static_cast<std::size_t>(offload::call_end::refused) + 1 == outcome_names.size());

// Observer events arrive on the workers, the watchdog and the awaiters' threads at once, and
// hold up the call they are about: the counters are atomics, and the map is behind a mutex
// held for one lookup.
class exporter final : public offload::call_observer {
 public:
  explicit exporter(std::string pool) : pool_(std::move(pool)) {}

  void on_finish(const offload::call_info& call, offload::call_end end,
                 const offload::call_durations&) override {
    outcomes_[static_cast<std::size_t>(end)].fetch_add(1, std::memory_order_relaxed);
    std::lock_guard<std::mutex> lock(mutex_);
    // Keyed by the mangled name, demangled only when scraped: no allocation after a
    // callable's first call.
    auto it = by_callable_.find(std::string_view(call.callable));
    if (it == by_callable_.end()) it = by_callable_.emplace(call.callable, 0).first;
    ++it->second;
  }

  void on_long_call(const offload::running_call& call) override {
    long_calls_.fetch_add(1, std::memory_order_relaxed);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(call.running_for);
    std::ostringstream line;  // built first, then written in one piece
    line << "long call reported: " << demangle(call.callable.c_str()) << " has run " << ms.count()
         << " ms on thread " << call.thread_name << "\n";
    std::cout << line.str() << std::flush;
  }

  const std::string& pool() const { return pool_; }
  std::uint64_t ended(offload::call_end end) const {
    return outcomes_[static_cast<std::size_t>(end)].load(std::memory_order_relaxed);
  }
  std::uint64_t long_calls() const { return long_calls_.load(std::memory_order_relaxed); }
  // Demangled, so sorted as they will be printed.
  std::map<std::string, std::uint64_t> calls_by_callable() const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::map<std::string, std::uint64_t> out;
    for (const auto& [name, count] : by_callable_) out[demangle(name.c_str())] += count;
    return out;
  }

 private:
  const std::string pool_;
  std::array<std::atomic<std::uint64_t>, outcome_names.size()> outcomes_{};
  std::atomic<std::uint64_t> long_calls_{0};
  mutable std::mutex mutex_;
  std::map<std::string, std::uint64_t, std::less<>> by_callable_;  // less<>: find by string_view
};

// -- the scrape ---------------------------------------------------------------------------------

double seconds(std::chrono::nanoseconds d) { return std::chrono::duration<double>(d).count(); }

// One latency_summary as a Prometheus summary. As Prometheus' own clients do, the quantiles
// cover a recent window (stats().recent) and _sum and _count the pool's whole life
// (stats().timings), so rate(_sum) / rate(_count) works across scrapes. The max is the
// 1-quantile.
void render_summary(std::ostream& out, const std::string& labels, const char* name,
                    const char* help, const offload::latency_summary& recent,
                    const offload::latency_summary& life) {
  out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " summary\n";
  const std::pair<const char*, std::chrono::nanoseconds> quantiles[] = {
      {"0.5", recent.p50}, {"0.9", recent.p90}, {"0.99", recent.p99}, {"1", recent.max}};
  for (const auto& [q, value] : quantiles) {
    out << name << '{' << labels << ",quantile=\"" << q << "\"} ";
    // No call in the window: no quantile to give, which Prometheus spells NaN.
    if (recent.count == 0)
      out << "NaN\n";
    else
      out << seconds(value) << '\n';
  }
  out << name << "_sum{" << labels << "} " << seconds(life.sum) << '\n';
  out << name << "_count{" << labels << "} " << life.count << '\n';
}

std::string render(const offload::thread_pool_stats& stats, const exporter& e) {
  std::ostringstream out;
  const std::string pool = "pool=\"" + escape_label(e.pool()) + "\"";

  out << "# HELP offload_calls_total Calls the pool finished, by how they ended.\n"
         "# TYPE offload_calls_total counter\n";
  for (std::size_t i = 0; i < outcome_names.size(); ++i) {
    out << "offload_calls_total{" << pool << ",outcome=\"" << outcome_names[i] << "\"} "
        << e.ended(static_cast<offload::call_end>(i)) << '\n';
  }
  out << "# HELP offload_callable_calls_total Calls the pool finished, by the callable's type.\n"
         "# TYPE offload_callable_calls_total counter\n";
  for (const auto& [callable, count] : e.calls_by_callable()) {
    out << "offload_callable_calls_total{" << pool << ",callable=\"" << escape_label(callable)
        << "\"} " << count << '\n';
  }
  out << "# HELP offload_long_calls_total Calls reported still running past the threshold.\n"
         "# TYPE offload_long_calls_total counter\n"
      << "offload_long_calls_total{" << pool << "} " << e.long_calls() << '\n';

  render_summary(out, pool, "offload_call_queued_seconds",
                 "Time from submission until a worker started the call.", stats.recent.queued,
                 stats.timings.queued);
  render_summary(out, pool, "offload_call_running_seconds", "Time the callable ran.",
                 stats.recent.running, stats.timings.running);
  render_summary(out, pool, "offload_call_handing_back_seconds",
                 "Time from the callable's end until its awaiter resumed.",
                 stats.recent.handing_back, stats.timings.handing_back);

  struct gauge {
    const char* name;
    const char* help;
    std::size_t value;
  };
  const gauge gauges[] = {
      {"offload_workers", "Threads alive in the pool.", stats.workers},
      {"offload_queued_calls", "Calls submitted and not started.", stats.queued},
      {"offload_running_calls", "Calls running now.", stats.running},
  };
  for (const gauge& g : gauges) {
    out << "# HELP " << g.name << ' ' << g.help << "\n# TYPE " << g.name << " gauge\n"
        << g.name << '{' << pool << "} " << g.value << '\n';
  }
  return out.str();
}

// -- the coroutine ------------------------------------------------------------------------------

constexpr int profile_loads = 30;
constexpr int card_charges = 9;  // every third is declined: 3 throw
constexpr int reports = 1;
constexpr int total_calls = profile_loads + card_charges + reports;

offload::awaitable<bool> main_coro() {
  auto& loop = offload::get_running_loop();
  const std::string pool_name = "demo";
  auto metrics = std::make_shared<exporter>(pool_name);

  offload::thread_pool_options options;
  options.max_workers = 4;
  options.thread_name_prefix = pool_name;  // threads demo-1 ... demo-4: named in the reports
  options.observer = metrics;
  options.report_calls_longer_than = long_call_threshold;
  options.timings = true;  // off by default: a few clock reads per call
  // The quantiles cover the last 30 to 60 s: about what a scrape interval or two sees.
  options.stats_window = 30s;
  offload::thread_pool pool{options};
  std::cout << "pool \"" << pool_name << "\": " << options.max_workers
            << " threads, calls running past " << long_call_threshold.count()
            << " ms are reported\n";

  // All started at once, so calls queue behind the 4 threads and the queued summary has
  // something to show. The long one goes first and holds a thread while the rest flow past.
  std::vector<offload::task<int>> tasks;
  for (int i = 0; i < reports; ++i)
    tasks.push_back(loop.create_task(offload::run_in_executor(pool, build_report{}, i)));
  for (int i = 0; i < profile_loads; ++i)
    tasks.push_back(loop.create_task(offload::run_in_executor(pool, load_profile{}, i)));
  for (int i = 0; i < card_charges; ++i)
    tasks.push_back(loop.create_task(offload::run_in_executor(pool, charge_card{}, i)));

  std::uint64_t returned = 0;
  std::uint64_t threw = 0;
  for (auto& t : tasks) {
    try {
      co_await t.join();
      ++returned;
    } catch (const std::runtime_error&) {
      ++threw;
    }
  }
  std::cout << total_calls << " calls awaited: " << returned << " returned, " << threw
            << " threw\n";

  // Every call has ended: the scrape's counters are final, only its timings vary by run.
  const offload::thread_pool_stats stats = pool.stats();
  std::cout << "GET /metrics:\n" << render(stats, *metrics);

  // The observer saw what the awaiters saw, and the pool's own counts agree.
  const bool ok = metrics->ended(offload::call_end::returned) == returned &&
                  metrics->ended(offload::call_end::threw) == threw &&
                  stats.calls.completed == returned && stats.calls.failed == threw &&
                  metrics->long_calls() == 1;
  co_return ok;
}

int main() {
  const bool ok = offload::run(main_coro());
  std::cout << (ok ? "done" : "unexpected result") << "\n";
  return ok ? 0 : 1;
}
