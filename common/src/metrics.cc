#include "converge/common/metrics.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <variant>

#include "obs_text.h"

namespace converge::metrics {

// ---- Counter, Histogram ----

void Counter::Add(double amount) {
  if (!(amount >= 0)) return;  // negative or NaN
  fraction_.fetch_add(amount, std::memory_order_relaxed);
}

double Counter::Value() const {
  return static_cast<double>(whole_.load(std::memory_order_relaxed)) +
         fraction_.load(std::memory_order_relaxed);
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      counts_(std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1)) {}

void Histogram::Observe(double v) {
  if (std::isnan(v)) return;
  const size_t i =
      static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Snap() const {
  Snapshot s;
  s.bounds = bounds_;
  s.cumulative.resize(bounds_.size() + 1);
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += counts_[i].load(std::memory_order_relaxed);
    s.cumulative[i] = running;
  }
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

std::vector<double> ExponentialBuckets(double start, double factor, size_t count) {
  std::vector<double> b;
  double v = start;
  for (size_t i = 0; i < count; ++i, v *= factor) b.push_back(v);
  return b;
}

std::vector<double> LinearBuckets(double start, double width, size_t count) {
  std::vector<double> b;
  for (size_t i = 0; i < count; ++i) b.push_back(start + width * static_cast<double>(i));
  return b;
}

std::vector<double> DefaultLatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 16};
}

// ---- Family ----

template <typename M>
Family<M>::Family(std::string name, std::vector<std::string> label_names,
                  std::vector<double> bounds)
    : name_(std::move(name)), label_names_(std::move(label_names)), bounds_(std::move(bounds)) {}

template <typename M>
Result<M*> Family<M>::WithLabels(const std::vector<std::string>& values) {
  if (values.size() != label_names_.size()) {
    return Status::InvalidArgument("metric " + name_ + " has " +
                                   std::to_string(label_names_.size()) + " labels, got " +
                                   std::to_string(values.size()) + " values");
  }
  std::lock_guard lock(mu_);
  auto it = children_.find(values);
  if (it != children_.end()) return it->second.get();
  if (children_.size() >= kMaxChildren) {
    return Status::FailedPrecondition("metric " + name_ + " has too many label combinations (" +
                                      std::to_string(kMaxChildren) + ")");
  }
  std::unique_ptr<M> child;
  if constexpr (std::is_same_v<M, Histogram>) {
    child = std::make_unique<Histogram>(bounds_);
  } else {
    child = std::make_unique<M>();
  }
  M* raw = child.get();
  children_.emplace(values, std::move(child));
  return raw;
}

template <typename M>
void Family<M>::ForEach(
    const std::function<void(const std::vector<std::string>&, const M&)>& fn) const {
  std::lock_guard lock(mu_);
  for (const auto& [values, child] : children_) fn(values, *child);
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

// ---- Registry ----

namespace {

struct CallbackMetric {
  MetricType type;
  std::vector<std::string> label_names;
  std::function<std::vector<Sample>()> fn;
};

struct FamilyRecord {
  MetricType type;
  std::string help;
  std::vector<std::string> label_names;
  std::vector<double> bounds;
  std::variant<std::unique_ptr<CounterFamily>, std::unique_ptr<GaugeFamily>,
               std::unique_ptr<HistogramFamily>, CallbackMetric>
      family;
  bool is_callback() const { return std::holds_alternative<CallbackMetric>(family); }
};

bool IsMetricName(std::string_view n) {
  if (n.empty()) return false;
  for (size_t i = 0; i < n.size(); ++i) {
    const char c = n[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                    (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

bool IsLabelName(std::string_view n) {
  if (n.empty() || n.substr(0, 2) == "__") return false;
  for (size_t i = 0; i < n.size(); ++i) {
    const char c = n[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                    (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

std::string_view TypeName(MetricType t) {
  switch (t) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

// HELP text: backslash and newline escaped.
void AppendHelp(std::string& out, std::string_view help) {
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
}

// Label values: backslash, double quote and newline escaped; bytes that are not UTF-8 become
// U+FFFD so that the exposition stays valid UTF-8.
void AppendLabelValue(std::string& out, std::string_view v) {
  for (size_t i = 0; i < v.size();) {
    const unsigned char c = static_cast<unsigned char>(v[i]);
    if (c >= 0x80) {
      const size_t n = obs_internal::Utf8SequenceLength(v, i);
      if (n == 0) {
        out += "\xEF\xBF\xBD";
        ++i;
      } else {
        out.append(v.substr(i, n));
        i += n;
      }
      continue;
    }
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(static_cast<char>(c));
    }
    ++i;
  }
}

// name{a="x",b="y"[,le="0.5"]} value
void AppendSample(std::string& out, std::string_view name, const std::vector<std::string>& names,
                  const std::vector<std::string>& values, const std::string* le, double value) {
  out.append(name);
  if (!names.empty() || le) {
    out.push_back('{');
    for (size_t i = 0; i < names.size(); ++i) {
      if (i) out.push_back(',');
      out += names[i];
      out += "=\"";
      AppendLabelValue(out, values[i]);
      out.push_back('"');
    }
    if (le) {
      if (!names.empty()) out.push_back(',');
      out += "le=\"";
      out += *le;
      out.push_back('"');
    }
    out.push_back('}');
  }
  out.push_back(' ');
  out += obs_internal::FormatDouble(value);
  out.push_back('\n');
}

}  // namespace

struct Registry::Impl {
  mutable std::mutex mu;  // guards families; held for the whole of Expose()
  std::map<std::string, FamilyRecord, std::less<>> families;

  Status CheckNames(const std::string& name, const std::vector<std::string>& labels,
                    MetricType type) const {
    if (!IsMetricName(name)) return Status::InvalidArgument("invalid metric name '" + name + "'");
    std::set<std::string> seen;
    for (const std::string& l : labels) {
      if (!IsLabelName(l)) {
        return Status::InvalidArgument("metric " + name + ": invalid label name '" + l + "'");
      }
      if (type == MetricType::kHistogram && l == "le") {
        return Status::InvalidArgument("metric " + name + ": label 'le' is reserved");
      }
      if (!seen.insert(l).second) {
        return Status::InvalidArgument("metric " + name + ": label '" + l + "' repeated");
      }
    }
    return Status::Ok();
  }

  // Registers (or finds an identical) family of type M.
  template <typename M>
  Result<Family<M>*> Add(std::string name, std::string help, MetricType type,
                         std::vector<std::string> labels, std::vector<double> bounds) {
    CONVERGE_RETURN_IF_ERROR(CheckNames(name, labels, type));
    std::lock_guard lock(mu);
    auto it = families.find(name);
    if (it != families.end()) {
      FamilyRecord& r = it->second;
      auto* existing = std::get_if<std::unique_ptr<Family<M>>>(&r.family);
      if (!existing || r.type != type || r.help != help || r.label_names != labels ||
          r.bounds != bounds) {
        return Status::AlreadyExists("metric " + name + " is already registered differently");
      }
      return existing->get();
    }
    auto family = std::make_unique<Family<M>>(name, labels, bounds);
    Family<M>* raw = family.get();
    families.emplace(std::move(name), FamilyRecord{type, std::move(help), std::move(labels),
                                                   std::move(bounds), std::move(family)});
    return raw;
  }
};

Registry::Registry() : impl_(std::make_unique<Impl>()) {}
Registry::~Registry() = default;

Result<CounterFamily*> Registry::AddCounterFamily(std::string name, std::string help,
                                                  std::vector<std::string> label_names) {
  return impl_->Add<Counter>(std::move(name), std::move(help), MetricType::kCounter,
                             std::move(label_names), {});
}

Result<GaugeFamily*> Registry::AddGaugeFamily(std::string name, std::string help,
                                              std::vector<std::string> label_names) {
  return impl_->Add<Gauge>(std::move(name), std::move(help), MetricType::kGauge,
                           std::move(label_names), {});
}

Result<HistogramFamily*> Registry::AddHistogramFamily(std::string name, std::string help,
                                                      std::vector<std::string> label_names,
                                                      std::vector<double> bounds) {
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1]))) {
      return Status::InvalidArgument("histogram " + name +
                                     ": bucket bounds must be finite and strictly increasing");
    }
  }
  return impl_->Add<Histogram>(std::move(name), std::move(help), MetricType::kHistogram,
                               std::move(label_names), std::move(bounds));
}

Result<Counter*> Registry::AddCounter(std::string name, std::string help) {
  CONVERGE_ASSIGN_OR_RETURN(CounterFamily * f,
                            AddCounterFamily(std::move(name), std::move(help), {}));
  return f->WithLabels({});
}

Result<Gauge*> Registry::AddGauge(std::string name, std::string help) {
  CONVERGE_ASSIGN_OR_RETURN(GaugeFamily * f, AddGaugeFamily(std::move(name), std::move(help), {}));
  return f->WithLabels({});
}

Result<Histogram*> Registry::AddHistogram(std::string name, std::string help,
                                          std::vector<double> bounds) {
  CONVERGE_ASSIGN_OR_RETURN(
      HistogramFamily * f,
      AddHistogramFamily(std::move(name), std::move(help), {}, std::move(bounds)));
  return f->WithLabels({});
}

Status Registry::AddCallbackGauge(std::string name, std::string help, std::function<double()> fn) {
  if (!fn) return Status::InvalidArgument("metric " + name + ": empty callback");
  return AddCallback(std::move(name), std::move(help), MetricType::kGauge, {},
                     [fn = std::move(fn)] {
                       return std::vector<Sample>{{{}, fn()}};
                     });
}

Status Registry::AddCallback(std::string name, std::string help, MetricType type,
                             std::vector<std::string> label_names,
                             std::function<std::vector<Sample>()> fn) {
  if (type == MetricType::kHistogram) {
    return Status::InvalidArgument("metric " + name + ": callback histograms are not supported");
  }
  if (!fn) return Status::InvalidArgument("metric " + name + ": empty callback");
  CONVERGE_RETURN_IF_ERROR(impl_->CheckNames(name, label_names, type));
  std::lock_guard lock(impl_->mu);
  if (impl_->families.count(name)) {
    return Status::AlreadyExists("metric " + name + " is already registered");
  }
  std::vector<std::string> labels_copy = label_names;
  impl_->families.emplace(
      name, FamilyRecord{type,
                         std::move(help),
                         std::move(label_names),
                         {},
                         CallbackMetric{type, std::move(labels_copy), std::move(fn)}});
  return Status::Ok();
}

Status Registry::RemoveCallback(std::string_view name) {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->families.find(name);
  if (it == impl_->families.end() || !it->second.is_callback()) {
    return Status::NotFound("no callback metric " + std::string(name));
  }
  impl_->families.erase(it);
  return Status::Ok();
}

std::string Registry::Expose() const {
  std::string out;
  std::lock_guard lock(impl_->mu);
  for (const auto& [name, r] : impl_->families) {
    out += "# HELP " + name + " ";
    AppendHelp(out, r.help);
    out += "\n# TYPE " + name + " ";
    out += TypeName(r.type);
    out += "\n";
    std::visit(
        [&, &name = name, &r = r](const auto& f) {
          using F = std::decay_t<decltype(f)>;
          if constexpr (std::is_same_v<F, CallbackMetric>) {
            std::vector<Sample> samples = f.fn();
            std::sort(samples.begin(), samples.end(), [](const Sample& a, const Sample& b) {
              return a.label_values < b.label_values;
            });
            for (const Sample& s : samples) {
              if (s.label_values.size() != r.label_names.size()) continue;
              AppendSample(out, name, r.label_names, s.label_values, nullptr, s.value);
            }
          } else if constexpr (std::is_same_v<F, std::unique_ptr<HistogramFamily>>) {
            const std::string bucket = name + "_bucket";
            f->ForEach([&](const std::vector<std::string>& values, const Histogram& h) {
              const Histogram::Snapshot s = h.Snap();
              for (size_t i = 0; i <= s.bounds.size(); ++i) {
                const std::string le =
                    i < s.bounds.size() ? obs_internal::FormatDouble(s.bounds[i]) : "+Inf";
                AppendSample(out, bucket, r.label_names, values, &le,
                             static_cast<double>(s.cumulative[i]));
              }
              AppendSample(out, name + "_sum", r.label_names, values, nullptr, s.sum);
              AppendSample(out, name + "_count", r.label_names, values, nullptr,
                           static_cast<double>(s.cumulative.back()));
            });
          } else {
            f->ForEach([&](const std::vector<std::string>& values, const auto& m) {
              AppendSample(out, name, r.label_names, values, nullptr, m.Value());
            });
          }
        },
        r.family);
  }
  return out;
}

}  // namespace converge::metrics
