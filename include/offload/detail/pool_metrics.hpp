// offload: a pool's call counts, phase timings and observer, reached from each call's node on
// every thread the call passes through.
//
// Distributed under the Boost Software License, Version 1.0.
#pragma once

#include <offload/call_observer.hpp>
#include <offload/call_stats.hpp>
#include <offload/detail/histogram.hpp>
#include <offload/detail/op.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <utility>

namespace offload::detail {

/// What one worker thread records about the calls it runs. Only that thread writes.
struct worker_record {
  windowed_histogram queued;
  windowed_histogram running;
  std::atomic<std::uint64_t> completed{0};
  std::atomic<std::uint64_t> failed{0};
  std::atomic<std::uint64_t> cancelled_while_running{0};
};

/// A pool's figures read at one moment, before they become thread_pool_stats.
struct metrics_reading {
  histogram_snapshot queued_life, queued_recent;
  histogram_snapshot running_life, running_recent;
  histogram_snapshot handing_back_life, handing_back_recent;
  std::uint64_t completed = 0;
  std::uint64_t failed = 0;
  std::uint64_t cancelled_while_running = 0;
};

class pool_metrics;

/// An observer event told once the call's node has settled: the observer's code may take its
/// time, and a worker waiting for the node to leave a transient state must not wait for it.
class deferred_event {
 public:
  deferred_event() = default;
  deferred_event(std::shared_ptr<call_observer> observer, call_info info, bool finish,
                 call_durations durations) noexcept
      : observer_(std::move(observer)), info_(info), finish_(finish), durations_(durations) {}

  void send() noexcept {
    if (observer_ == nullptr) return;
    try {
      if (finish_) {
        observer_->on_finish(info_, call_end::cancelled_before_start, durations_);
      } else {
        observer_->on_abandon(info_);
      }
    } catch (...) {
      report_stray_exception("a call_observer");
    }
  }

 private:
  std::shared_ptr<call_observer> observer_;
  call_info info_;
  bool finish_ = false;  // on_finish(cancelled_before_start); else on_abandon
  call_durations durations_;
};

/// The pool whose worker this thread is, and where it records.
struct worker_binding {
  const pool_metrics* owner = nullptr;
  worker_record* record = nullptr;
};
inline thread_local worker_binding tl_worker;

/// Lives on the heap: a call handed back by a pool's worker reaches it when its awaiter is
/// resumed, which may be after the pool is gone. The pool's reference and one per call handed
/// back and not yet delivered keep it; the last to let go frees it.
class pool_metrics {
 public:
  static pool_metrics* create(bool timings, std::chrono::nanoseconds window,
                              std::shared_ptr<call_observer> observer) {
    return new pool_metrics(timings, window, std::move(observer));
  }

  /// The pool is gone and none of its threads runs a call: whoever delivers the last call it
  /// handed back frees this (or this call, if all were delivered).
  void release_pool() noexcept {
    std::int64_t handed_back = 0;  // without timings a call handed back holds no reference
    if (timings_) {
      // Every call that ran to its end was handed back unless its awaiter abandoned it; the
      // calls failed before they started were handed back too (they are in failed, or here).
      auto ended = [](const worker_record& r) {
        return r.completed.load(std::memory_order_relaxed) +
               r.failed.load(std::memory_order_relaxed);
      };
      handed_back = static_cast<std::int64_t>(
          ended(retired_) + ended(unbound_) - abandoned_.load(std::memory_order_relaxed) +
          cancelled_by_failing_.load(std::memory_order_relaxed));
    }
    const std::int64_t change = handed_back - pool_reference;
    if (undelivered_.fetch_add(change, std::memory_order_acq_rel) + change == 0) delete this;
  }

  call_observer* observer() const noexcept { return observer_.get(); }

  pool_metrics(const pool_metrics&) = delete;
  pool_metrics& operator=(const pool_metrics&) = delete;

  /// The worker thread that runs this pool's calls records into `record` from now on.
  void bind_worker(worker_record& record) noexcept { tl_worker = {this, &record}; }

  // -- on the submitting thread --------------------------------------------------------------

  /// Published last: a canceller that sees the metrics sees the stamp and id, and comes after
  /// on_submit.
  void submitted(op_base& op) noexcept {
    if (stamps_) {
      op.stamp_ns.store(steady_now_ns(), std::memory_order_relaxed);
      if (observer_ != nullptr) {
        op.call_id.store(next_id_.fetch_add(1, std::memory_order_relaxed) + 1,
                         std::memory_order_relaxed);
        notify([&] { observer_->on_submit(info(op)); });
      }
    }
    op.metrics.store(this, std::memory_order_release);
  }

  /// The pool did not take the call: its submitter fails it, uncounted from here on.
  void refused(op_base& op) noexcept {
    op.metrics.store(nullptr, std::memory_order_relaxed);
    refused_.fetch_add(1, std::memory_order_relaxed);
    if (observer_ != nullptr) {
      notify([&] { observer_->on_finish(info(op), call_end::refused, {}); });
    }
  }

  // -- on the worker -------------------------------------------------------------------------

  /// f is about to run: returns when it started (0 without timings or an observer).
  std::int64_t started(op_base& op) noexcept {
    if (!stamps_) return 0;
    const std::int64_t now = steady_now_ns();
    if (timings_) {
      const std::uint64_t queued = elapsed_ns(op.stamp_ns.load(std::memory_order_relaxed), now);
      if (worker_record* mine = own_record()) {
        mine->queued.add_owned(queued, epoch_of(now));
      } else {
        unbound_.queued.add_shared(queued, epoch_of(now));
      }
    }
    return now;
  }

  /// In the call's context, just before f.
  void starting(op_base& op) noexcept {
    if (observer_ != nullptr) notify([&] { observer_->on_start(info(op)); });
  }

  /// f returned or threw, and the call's fate is settled: abandoned, or about to be handed
  /// back (then, without timings, the node lets go of the figures: its delivery, perhaps after
  /// the pool is gone, must not reach them).
  void finished(op_base& op, call_end end, std::int64_t started_ns, bool abandoned) noexcept {
    worker_record* mine = own_record();
    worker_record& record = mine != nullptr ? *mine : unbound_;
    add(record, end == call_end::returned ? &worker_record::completed : &worker_record::failed,
        mine != nullptr);
    if (!abandoned && op.cancel_requested.load(std::memory_order_acquire)) {
      add(record, &worker_record::cancelled_while_running, mine != nullptr);
      if (op.cancelled_by_deadline.load(std::memory_order_relaxed)) {
        timed_out_.fetch_add(1, std::memory_order_relaxed);
      }
    }
    if (!abandoned && !timings_) op.metrics.store(nullptr, std::memory_order_relaxed);
    if (!stamps_) return;
    const std::int64_t now = steady_now_ns();
    const std::int64_t queued_since = op.stamp_ns.load(std::memory_order_relaxed);
    op.stamp_ns.store(now, std::memory_order_relaxed);  // for the hand-back's duration
    if (timings_) {
      const std::uint64_t running = elapsed_ns(started_ns, now);
      if (mine != nullptr) {
        mine->running.add_owned(running, epoch_of(now));
      } else {
        unbound_.running.add_shared(running, epoch_of(now));
      }
    }
    if (observer_ != nullptr) {
      const call_durations durations{std::chrono::nanoseconds(started_ns - queued_since),
                                     std::chrono::nanoseconds(now - started_ns)};
      notify([&] { observer_->on_finish(info(op), end, durations); });
    }
  }

  // -- on the awaiter's thread (or a thread shutting the pool down) ---------------------------

  /// Once per call (op_base::cancel_counted), by its canceller or the holder that finds it.
  [[nodiscard]] deferred_event cancelled_before_start(op_base& op, bool by_deadline) noexcept {
    cancelled_before_start_.fetch_add(1, std::memory_order_relaxed);
    if (by_deadline) timed_out_.fetch_add(1, std::memory_order_relaxed);
    if (observer_ == nullptr) return {};
    const std::int64_t queued = steady_now_ns() - op.stamp_ns.load(std::memory_order_relaxed);
    return {observer_, info(op), true, {std::chrono::nanoseconds(queued), {}}};
  }

  /// The pool failed the queued call (cancel_pending, or no thread could be started for it):
  /// it is handed back with its error.
  void failed_before_start(op_base& op, bool cancelled) noexcept {
    if (cancelled) {
      cancelled_by_failing_.fetch_add(1, std::memory_order_relaxed);
      cancelled_before_start(op, false).send();
    } else {
      unbound_.failed.fetch_add(1, std::memory_order_relaxed);
      if (observer_ != nullptr) {
        const std::int64_t queued = steady_now_ns() - op.stamp_ns.load(std::memory_order_relaxed);
        notify([&] {
          observer_->on_finish(info(op), call_end::threw, {std::chrono::nanoseconds(queued), {}});
        });
      }
    }
    if (timings_) {
      op.stamp_ns.store(steady_now_ns(), std::memory_order_relaxed);  // its hand-back starts now
    } else {
      op.metrics.store(nullptr, std::memory_order_relaxed);
    }
  }

  [[nodiscard]] deferred_event abandoned(op_base& op, bool by_deadline) noexcept {
    abandoned_.fetch_add(1, std::memory_order_relaxed);
    if (by_deadline) timed_out_.fetch_add(1, std::memory_order_relaxed);
    if (observer_ == nullptr) return {};
    return {observer_, info(op), false, {}};
  }

  /// With timings, the awaiter of a call handed back is being resumed with its outcome.
  /// `this` may be freed on return.
  void delivered(op_base& op) noexcept {
    const std::int64_t now = steady_now_ns();
    handing_back_.add_shared(elapsed_ns(op.stamp_ns.load(std::memory_order_relaxed), now),
                             epoch_of(now));
    release_delivered();
  }

  /// A call handed back was destroyed without being delivered (its io_context went away).
  /// `this` may be freed on return.
  void dropped() noexcept { release_delivered(); }

  // -- reading, and workers leaving (under the pool's lock) -----------------------------------

  void read_worker(const worker_record& record, metrics_reading& into) const noexcept {
    if (timings_) {
      const std::int64_t epoch = epoch_of(steady_now_ns());
      record.queued.read(into.queued_life, into.queued_recent, epoch);
      record.running.read(into.running_life, into.running_recent, epoch);
    }
    into.completed += record.completed.load(std::memory_order_relaxed);
    into.failed += record.failed.load(std::memory_order_relaxed);
    into.cancelled_while_running += record.cancelled_while_running.load(std::memory_order_relaxed);
  }

  /// A worker's thread is exiting: what it recorded stays in the pool's figures.
  void retire(const worker_record& record) noexcept {
    record.queued.add_into_owned(retired_.queued);
    record.running.add_into_owned(retired_.running);
    for (auto count : {&worker_record::completed, &worker_record::failed,
                       &worker_record::cancelled_while_running}) {
      owned_add(retired_.*count, (record.*count).load(std::memory_order_relaxed));
    }
  }

  /// Adds what no worker holds (retired workers, calls run elsewhere, the hand-back) and
  /// turns the reading into the public figures.
  void finish_reading(metrics_reading& r, call_counts& counts, call_timings& life,
                      call_timings& recent) const noexcept {
    read_worker(retired_, r);
    read_worker(unbound_, r);
    if (timings_) {
      handing_back_.read(r.handing_back_life, r.handing_back_recent, epoch_of(steady_now_ns()));
    }
    counts.completed = r.completed;
    counts.failed = r.failed;
    counts.cancelled_before_start = cancelled_before_start_.load(std::memory_order_relaxed);
    counts.cancelled_while_running = r.cancelled_while_running;
    counts.abandoned = abandoned_.load(std::memory_order_relaxed);
    counts.timed_out = timed_out_.load(std::memory_order_relaxed);
    counts.refused = refused_.load(std::memory_order_relaxed);
    life = {r.queued_life.summary(), r.running_life.summary(), r.handing_back_life.summary()};
    recent = {r.queued_recent.summary(), r.running_recent.summary(),
              r.handing_back_recent.summary()};
  }

 private:
  pool_metrics(bool timings, std::chrono::nanoseconds window,
               std::shared_ptr<call_observer> observer)
      : stamps_(timings || observer != nullptr),
        timings_(timings),
        window_ns_(std::max<std::int64_t>(1, window.count())),
        observer_(std::move(observer)) {}

  // Counts the pool as this many calls not yet delivered, so deliveries made while the pool
  // lives (each takes one) never bring the count to zero.
  static constexpr std::int64_t pool_reference = std::int64_t{1} << 62;

  void release_delivered() noexcept {
    if (undelivered_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  worker_record* own_record() const noexcept {
    return tl_worker.owner == this ? tl_worker.record : nullptr;
  }

  std::int64_t epoch_of(std::int64_t now) const noexcept { return now / window_ns_; }

  // One writer (the worker that owns the record) or several (the shared record).
  static void add(worker_record& record, std::atomic<std::uint64_t> worker_record::*count,
                  bool owned) noexcept {
    if (owned) {
      owned_add(record.*count);
    } else {
      (record.*count).fetch_add(1, std::memory_order_relaxed);
    }
  }

  static call_info info(const op_base& op) noexcept {
    return {op.call_id.load(std::memory_order_relaxed), op.callable_name};
  }

  template <typename Event>
  static void notify(Event&& event) noexcept {
    try {
      event();
    } catch (...) {
      report_stray_exception("a call_observer");
    }
  }

  const bool stamps_;   // clock reads at submit, start and end: for timings or an observer
  const bool timings_;  // histograms
  const std::int64_t window_ns_;
  const std::shared_ptr<call_observer> observer_;
  std::atomic<std::uint64_t> next_id_{0};
  std::atomic<std::uint64_t> cancelled_before_start_{0};
  std::atomic<std::uint64_t> abandoned_{0};
  std::atomic<std::uint64_t> timed_out_{0};
  std::atomic<std::uint64_t> refused_{0};
  std::atomic<std::uint64_t> cancelled_by_failing_{0};  // the pool failed them as cancelled
  std::atomic<std::int64_t> undelivered_{pool_reference};
  windowed_histogram handing_back_;  // written by whichever threads resume awaiters
  worker_record retired_;            // written under the pool's lock
  worker_record unbound_;            // calls finished off the pool's threads: shared writes
};

}  // namespace offload::detail
