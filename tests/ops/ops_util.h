// Helpers shared by the operations tests: Prometheus text parsing, a
// Prometheus server process, YAML <-> JSON, the repository's deploy files.
#ifndef TRELLIS_TESTS_NETNS_OPS_OPS_UTIL_H_
#define TRELLIS_TESTS_NETNS_OPS_OPS_UTIL_H_

#include <sys/types.h>

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "harness.h"

namespace trellis::test::ops {

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// The samples of a Prometheus text exposition, and the families it declares.
struct Scrape {
  std::vector<Sample> samples;
  std::set<std::string> families;  // from # TYPE lines
  // The value of the one sample of `name` whose labels include `labels`.
  std::optional<double> Value(const std::string& name,
                              const std::map<std::string, std::string>& labels = {}) const;
};
Scrape ParseScrape(const std::string& text);

// YAML (one document, or every document of a stream) as JSON.
Json YamlToJson(const std::string& yaml);
std::vector<Json> YamlStreamToJson(const std::string& yaml);
std::string JsonToYaml(const Json& j);

std::string ReadFile(const fs::path& p);
void WriteFileAtomically(const fs::path& p, const std::string& content);

// The alert rules of deploy/monitoring/prometheusrule.yaml as a Prometheus
// rule file; with `for_override`, every rule's `for:` replaced by it.
std::string RulesFile(const std::string& for_override = "");

// Metric names a PromQL text mentions (trellis_* and process_* only, with a
// histogram's _bucket/_sum/_count suffix removed).
std::set<std::string> MetricNames(const std::string& promql);

std::string UrlEncode(const std::string& s);

// A Prometheus server (the Debian package) listening on 127.0.0.1:`port`
// inside network namespace `netns`, with its data in `dir`.
class Prometheus {
 public:
  Prometheus(std::string netns, fs::path dir, int port);
  ~Prometheus();
  bool Start(const std::string& config_yaml, std::string* why);
  // GET <path> on the server; {status, body}.
  std::pair<int, std::string> Get(const std::string& path) const;
  // /api/v1/query: the `data.result` array, or null on an error (in *error).
  Json Query(const std::string& expr, std::string* error = nullptr) const;
  std::string Log() const;

 private:
  std::string netns_;
  fs::path dir_;
  int port_;
  pid_t pid_ = -1;
};

}  // namespace trellis::test::ops

#endif  // TRELLIS_TESTS_NETNS_OPS_OPS_UTIL_H_
