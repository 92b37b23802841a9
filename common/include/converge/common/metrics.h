// Prometheus metrics: counters, gauges and histograms with labels, callback metrics evaluated at
// scrape time, and the text exposition format 0.0.4.
//
//   metrics::Registry registry;
//   CONVERGE_ASSIGN_OR_RETURN(auto* published, registry.AddCounterFamily(
//       "converge_relay_published_total", "Rows published to the broker", {"topic"}));
//   CONVERGE_ASSIGN_OR_RETURN(metrics::Counter* orders, published->WithLabels({"orders"}));
//   orders->Inc();                                   // hot path: one relaxed atomic add
//   CONVERGE_ASSIGN_OR_RETURN(auto* latency, registry.AddHistogram(
//       "converge_relay_publish_seconds", "Publish latency", metrics::ExponentialBuckets(0.001, 2,
//       12)));
//   latency->ObserveDuration(elapsed);
//   CONVERGE_RETURN_IF_ERROR(registry.AddCallbackGauge(
//       "converge_outbox_oldest_unpublished_seconds", "Age of the oldest unpublished row",
//       [&] { return lag_tracker.OldestAgeSeconds(); }));
//   std::string text = registry.Expose();
//
// Children (one per label-value combination) are created on first use and live as long as the
// registry; callers look them up once and keep the pointer. Updating a child is lock-free.
//
// Thread safety: everything is safe for concurrent use. Expose() holds the registry lock while
// it runs callbacks, so a callback must be quick, must not block on I/O, and must not call back
// into the registry; after RemoveCallback returns, the callback is not running and will not run
// again. Expose() reads each child's atomics without stopping writers, so a histogram's _sum may
// lag its buckets by the observations in flight (its _count always equals its +Inf bucket).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "converge/common/status.h"

namespace converge::metrics {

// Content-Type of Registry::Expose() output.
inline constexpr std::string_view kExpositionContentType =
    "text/plain; version=0.0.4; charset=utf-8";

// A value that only goes up (restarts at 0 with the process).
class Counter {
 public:
  Counter() = default;
  void Inc(uint64_t n = 1) { whole_.fetch_add(n, std::memory_order_relaxed); }
  // Adds a non-negative amount; negative or NaN amounts are ignored (a counter never falls).
  void Add(double amount);
  double Value() const;

 private:
  std::atomic<uint64_t> whole_{0};
  std::atomic<double> fraction_{0.0};
};

// A value that goes up and down.
class Gauge {
 public:
  Gauge() = default;
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Inc(double d = 1) { value_.fetch_add(d, std::memory_order_relaxed); }
  void Dec(double d = 1) { value_.fetch_sub(d, std::memory_order_relaxed); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Observations counted into fixed buckets (upper bounds, `le`), plus their sum.
class Histogram {
 public:
  // `bounds` must be strictly increasing and finite; +Inf is implicit. Built by the registry.
  explicit Histogram(std::vector<double> bounds);
  // Counts v into the first bucket whose bound is >= v. NaN is ignored.
  void Observe(double v);
  // Observes a duration in seconds (the Prometheus base unit).
  void ObserveDuration(std::chrono::nanoseconds d) {
    Observe(std::chrono::duration<double>(d).count());
  }

  struct Snapshot {
    std::vector<double> bounds;        // without +Inf
    std::vector<uint64_t> cumulative;  // bounds.size() + 1 entries, the last is +Inf = count
    double sum = 0;
  };
  Snapshot Snap() const;

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // per bucket, not cumulative
  std::atomic<double> sum_{0.0};
};

// `count` bounds: start, start*factor, start*factor^2, ...
std::vector<double> ExponentialBuckets(double start, double factor, size_t count);
// `count` bounds: start, start+width, ...
std::vector<double> LinearBuckets(double start, double width, size_t count);
// Seconds from 1ms to ~16s, for latencies of database and broker calls.
std::vector<double> DefaultLatencyBuckets();

// All children of one metric name, one per combination of label values.
template <typename M>
class Family {
 public:
  // The child for these label values (in the order of the family's label names), created on
  // first use. The pointer stays valid for the registry's lifetime: look it up once, keep it.
  // InvalidArgument when the number of values is wrong; FailedPrecondition when the family
  // already has kMaxChildren children (a label with unbounded values is a bug).
  Result<M*> WithLabels(const std::vector<std::string>& values);

  const std::string& name() const { return name_; }
  const std::vector<std::string>& label_names() const { return label_names_; }

  static constexpr size_t kMaxChildren = 10000;

  // Built by Registry.
  Family(std::string name, std::vector<std::string> label_names, std::vector<double> bounds);
  // Calls fn(label_values, child) for each child in label-value order, under the family lock.
  void ForEach(const std::function<void(const std::vector<std::string>&, const M&)>& fn) const;

 private:
  const std::string name_;
  const std::vector<std::string> label_names_;
  const std::vector<double> bounds_;  // histograms only
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<M>> children_;  // guarded by mu_
};

using CounterFamily = Family<Counter>;
using GaugeFamily = Family<Gauge>;
using HistogramFamily = Family<Histogram>;

enum class MetricType { kCounter, kGauge, kHistogram };

// One value produced by a callback metric.
struct Sample {
  std::vector<std::string> label_values;
  double value = 0;
};

class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Names follow Prometheus rules ([a-zA-Z_:][a-zA-Z0-9_:]*; labels [a-zA-Z_][a-zA-Z0-9_]*, not
  // starting with "__", "le" reserved for histograms). Registering the same name again with the
  // same type, help, labels (and buckets) returns the existing family; a different definition
  // is AlreadyExists. Bad names or buckets are InvalidArgument.
  Result<CounterFamily*> AddCounterFamily(std::string name, std::string help,
                                          std::vector<std::string> label_names);
  Result<GaugeFamily*> AddGaugeFamily(std::string name, std::string help,
                                      std::vector<std::string> label_names);
  Result<HistogramFamily*> AddHistogramFamily(std::string name, std::string help,
                                              std::vector<std::string> label_names,
                                              std::vector<double> bounds);
  // Unlabeled shorthands: the family's single child.
  Result<Counter*> AddCounter(std::string name, std::string help);
  Result<Gauge*> AddGauge(std::string name, std::string help);
  Result<Histogram*> AddHistogram(std::string name, std::string help, std::vector<double> bounds);

  // A gauge computed at scrape time ("age of the oldest unpublished row").
  Status AddCallbackGauge(std::string name, std::string help, std::function<double()> fn);
  // A counter or gauge family computed at scrape time (e.g. per-partition lag read from the
  // client library's statistics). Samples with the wrong number of label values are skipped.
  Status AddCallback(std::string name, std::string help, MetricType type,
                     std::vector<std::string> label_names, std::function<std::vector<Sample>()> fn);
  // Unregisters a callback metric before what it captures is destroyed. NotFound if absent.
  Status RemoveCallback(std::string_view name);

  // The whole registry in text exposition format 0.0.4, families sorted by name.
  std::string Expose() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace converge::metrics
