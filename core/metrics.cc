#include "core/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <regex>

namespace trellis {
namespace {

const std::regex kMetricName("^[a-zA-Z_:][a-zA-Z0-9_:]*$");
const std::regex kLabelName("^[a-zA-Z_][a-zA-Z0-9_]*$");

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  // Shortest exact form, in %g style as Prometheus' own clients write it:
  // le="0.0005", not le="5e-04" (a bucket's le is matched as a string).
  auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::general);
  return std::string(buf, r.ptr);
}

std::string EscapeHelp(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '\\') o += "\\\\";
    else if (c == '\n') o += "\\n";
    else o += c;
  }
  return o;
}

std::string EscapeLabel(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '\\') o += "\\\\";
    else if (c == '\n') o += "\\n";
    else if (c == '"') o += "\\\"";
    else o += c;
  }
  return o;
}

std::string LabelSet(const std::vector<std::string>& names, const std::vector<std::string>& values,
                     const std::string& extra = "") {
  std::string o;
  for (size_t i = 0; i < names.size(); ++i) {
    if (!o.empty()) o += ",";
    o += names[i] + "=\"" + EscapeLabel(values[i]) + "\"";
  }
  if (!extra.empty()) {
    if (!o.empty()) o += ",";
    o += extra;
  }
  return o.empty() ? "" : "{" + o + "}";
}

}  // namespace

const std::vector<double>& MetricsRegistry::LatencyBuckets() {
  static const std::vector<double> b = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                        0.1,    0.25,  0.5,    1,     2.5,  5,     10};
  return b;
}

StatusOr<uint32_t> MetricsRegistry::Register(MetricType type, const std::string& name,
                                             const std::string& help,
                                             const std::vector<std::string>& labels,
                                             const std::vector<double>& buckets,
                                             const std::string& owner) {
  if (!std::regex_match(name, kMetricName)) {
    return absl::InvalidArgumentError("metric name '" + name + "' is not a Prometheus name");
  }
  if (type == MetricType::kCounter && !name.ends_with("_total")) {
    return absl::InvalidArgumentError("counter '" + name + "' must end in _total");
  }
  for (const auto& l : labels) {
    if (!std::regex_match(l, kLabelName) || l.starts_with("__") ||
        (type == MetricType::kHistogram && l == "le")) {
      return absl::InvalidArgumentError("metric '" + name + "': bad label name '" + l + "'");
    }
  }
  std::vector<double> b = buckets;
  if (type == MetricType::kHistogram) {
    if (b.empty()) b = LatencyBuckets();
    for (size_t i = 1; i < b.size(); ++i) {
      if (!(b[i] > b[i - 1])) {
        return absl::InvalidArgumentError("histogram '" + name + "': buckets must ascend");
      }
    }
  }
  std::lock_guard lock(mu_);
  for (const auto& [id, f] : families_) {
    if (f.name == name) return absl::AlreadyExistsError("metric '" + name + "' is registered already");
  }
  uint32_t id = next_id_++;
  families_[id] = Family{type, name, help, owner, labels, std::move(b), {}};
  return id;
}

void MetricsRegistry::UnregisterOwner(const std::string& owner) {
  std::lock_guard lock(mu_);
  std::erase_if(families_, [&](const auto& kv) { return kv.second.owner == owner; });
}

MetricsRegistry::Series* MetricsRegistry::Find(uint32_t id, const std::vector<std::string>& labels) {
  auto it = families_.find(id);
  if (it == families_.end() || it->second.labels.size() != labels.size()) return nullptr;
  Series& s = it->second.series[labels];
  if (it->second.type == MetricType::kHistogram && s.buckets.empty()) {
    s.buckets.assign(it->second.buckets.size(), 0);
  }
  return &s;
}

void MetricsRegistry::Set(uint32_t id, const std::vector<std::string>& labels, double value) {
  std::lock_guard lock(mu_);
  if (Series* s = Find(id, labels)) s->value = value;
}

void MetricsRegistry::Add(uint32_t id, const std::vector<std::string>& labels, double delta) {
  std::lock_guard lock(mu_);
  if (Series* s = Find(id, labels)) s->value += delta;
}

void MetricsRegistry::Observe(uint32_t id, const std::vector<std::string>& labels, double value) {
  std::lock_guard lock(mu_);
  auto it = families_.find(id);
  if (it == families_.end() || it->second.type != MetricType::kHistogram) return;
  Series* s = Find(id, labels);
  if (s == nullptr) return;
  const auto& b = it->second.buckets;
  for (size_t i = 0; i < b.size(); ++i) {
    if (value <= b[i]) s->buckets[i]++;
  }
  s->sum += value;
  s->count++;
}

void MetricsRegistry::Forget(uint32_t id, const std::vector<std::string>& labels) {
  std::lock_guard lock(mu_);
  auto it = families_.find(id);
  if (it != families_.end()) it->second.series.erase(labels);
}

void MetricsRegistry::Clear(uint32_t id) {
  std::lock_guard lock(mu_);
  auto it = families_.find(id);
  if (it != families_.end()) it->second.series.clear();
}

std::string MetricsRegistry::Render() const {
  std::lock_guard lock(mu_);
  std::vector<const Family*> sorted;
  for (const auto& [id, f] : families_) sorted.push_back(&f);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->name < b->name; });
  std::string out;
  for (const Family* f : sorted) {
    const char* type = f->type == MetricType::kCounter ? "counter"
                       : f->type == MetricType::kGauge ? "gauge"
                                                       : "histogram";
    out += "# HELP " + f->name + " " + EscapeHelp(f->help) + "\n";
    out += "# TYPE " + f->name + " " + type + "\n";
    for (const auto& [values, s] : f->series) {
      if (f->type != MetricType::kHistogram) {
        out += f->name + LabelSet(f->labels, values) + " " + FormatValue(s.value) + "\n";
        continue;
      }
      for (size_t i = 0; i < f->buckets.size(); ++i) {
        out += f->name + "_bucket" +
               LabelSet(f->labels, values, "le=\"" + FormatValue(f->buckets[i]) + "\"") + " " +
               std::to_string(s.buckets[i]) + "\n";
      }
      out += f->name + "_bucket" + LabelSet(f->labels, values, "le=\"+Inf\"") + " " +
             std::to_string(s.count) + "\n";
      out += f->name + "_sum" + LabelSet(f->labels, values) + " " + FormatValue(s.sum) + "\n";
      out += f->name + "_count" + LabelSet(f->labels, values) + " " + std::to_string(s.count) + "\n";
    }
  }
  return out;
}

}  // namespace trellis
