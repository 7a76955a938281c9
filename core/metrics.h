// Metrics registry with Prometheus text exposition (format 0.0.4).
// THREADING: every method may be called from any thread.
#ifndef TRELLIS_CORE_METRICS_H_
#define TRELLIS_CORE_METRICS_H_

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/status.h"

namespace trellis {

enum class MetricType { kCounter, kGauge, kHistogram };

class MetricsRegistry {
 public:
  // Default latency buckets (seconds), fine-grained below 100 ms where CNI
  // requests live.
  static const std::vector<double>& LatencyBuckets();

  // Registers a family. Names follow Prometheus rules; counters end in _total.
  // `owner` groups families so that UnregisterOwner() drops a module's metrics.
  StatusOr<uint32_t> Register(MetricType type, const std::string& name, const std::string& help,
                              const std::vector<std::string>& labels,
                              const std::vector<double>& buckets = {},
                              const std::string& owner = "");
  void UnregisterOwner(const std::string& owner);

  // `labels` must have as many values as the family has label names; calls
  // with a wrong count or an unknown id are ignored.
  void Set(uint32_t id, const std::vector<std::string>& labels, double value);
  void Add(uint32_t id, const std::vector<std::string>& labels, double delta);
  void Observe(uint32_t id, const std::vector<std::string>& labels, double value);
  void Forget(uint32_t id, const std::vector<std::string>& labels);
  // Drops every series of the family (for gauges rebuilt from scratch).
  void Clear(uint32_t id);

  std::string Render() const;

 private:
  struct Series {
    double value = 0;
    std::vector<uint64_t> buckets;
    double sum = 0;
    uint64_t count = 0;
  };
  struct Family {
    MetricType type;
    std::string name, help, owner;
    std::vector<std::string> labels;
    std::vector<double> buckets;
    std::map<std::vector<std::string>, Series> series;
  };
  Series* Find(uint32_t id, const std::vector<std::string>& labels);

  mutable std::mutex mu_;
  std::map<uint32_t, Family> families_;
  uint32_t next_id_ = 1;
};

// Convenience handle for one family.
class Metric {
 public:
  Metric() = default;
  Metric(MetricsRegistry* r, uint32_t id) : r_(r), id_(id) {}
  void Set(const std::vector<std::string>& l, double v) const { if (r_) r_->Set(id_, l, v); }
  void Add(const std::vector<std::string>& l, double v = 1) const { if (r_) r_->Add(id_, l, v); }
  void Observe(const std::vector<std::string>& l, double v) const { if (r_) r_->Observe(id_, l, v); }
  void Forget(const std::vector<std::string>& l) const { if (r_) r_->Forget(id_, l); }
  void Clear() const { if (r_) r_->Clear(id_); }

 private:
  MetricsRegistry* r_ = nullptr;
  uint32_t id_ = 0;
};

}  // namespace trellis

#endif  // TRELLIS_CORE_METRICS_H_
