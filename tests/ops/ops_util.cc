#include "ops_util.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <fcntl.h>
#include <fstream>
#include <regex>
#include <sstream>

namespace trellis::test::ops {

std::optional<double> Scrape::Value(const std::string& name,
                                    const std::map<std::string, std::string>& labels) const {
  std::optional<double> found;
  for (const auto& s : samples) {
    if (s.name != name) continue;
    bool match = true;
    for (const auto& [k, v] : labels) {
      auto it = s.labels.find(k);
      match = match && it != s.labels.end() && it->second == v;
    }
    if (match) {
      if (found) return std::nullopt;  // ambiguous
      found = s.value;
    }
  }
  return found;
}

Scrape ParseScrape(const std::string& text) {
  Scrape out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream t(line.substr(7));
      std::string name;
      t >> name;
      out.families.insert(name);
      continue;
    }
    if (line.empty() || line[0] == '#') continue;
    Sample s;
    size_t i = line.find_first_of("{ ");
    s.name = line.substr(0, i);
    if (i != std::string::npos && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        size_t eq = line.find('=', i);
        std::string key = line.substr(i, eq - i);
        std::string value;
        size_t j = eq + 2;  // past ="
        for (; j < line.size() && line[j] != '"'; ++j) {
          if (line[j] == '\\' && j + 1 < line.size()) {
            ++j;
            value += line[j] == 'n' ? '\n' : line[j];
          } else {
            value += line[j];
          }
        }
        s.labels[key] = value;
        i = j + 1;
        if (i < line.size() && line[i] == ',') ++i;
      }
      ++i;
    }
    std::istringstream v(line.substr(i));
    std::string value;
    v >> value;
    s.value = value == "+Inf" ? INFINITY : value == "-Inf" ? -INFINITY : std::stod(value);
    out.samples.push_back(std::move(s));
  }
  return out;
}

namespace {
Json NodeToJson(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map: {
      Json j = Json::object();
      for (const auto& kv : n) j[kv.first.as<std::string>()] = NodeToJson(kv.second);
      return j;
    }
    case YAML::NodeType::Sequence: {
      Json j = Json::array();
      for (const auto& v : n) j.push_back(NodeToJson(v));
      return j;
    }
    case YAML::NodeType::Scalar: {
      // Quoted scalars stay strings; plain ones are typed as YAML 1.2 core.
      const std::string& s = n.Scalar();
      if (n.Tag() == "!") return s;
      if (s == "true" || s == "false") return s == "true";
      if (s == "null" || s == "~") return nullptr;
      static const std::regex kInt("^[-+]?[0-9]+$"),
          kFloat("^[-+]?[0-9]*\\.[0-9]+([eE][-+]?[0-9]+)?$");
      if (std::regex_match(s, kInt)) return std::stoll(s);
      if (std::regex_match(s, kFloat)) return std::stod(s);
      return s;
    }
    default:
      return nullptr;
  }
}

void Emit(YAML::Emitter& e, const Json& j) {
  if (j.is_object()) {
    e << YAML::BeginMap;
    for (const auto& [k, v] : j.items()) {
      e << YAML::Key << k << YAML::Value;
      Emit(e, v);
    }
    e << YAML::EndMap;
  } else if (j.is_array()) {
    e << YAML::BeginSeq;
    for (const auto& v : j) Emit(e, v);
    e << YAML::EndSeq;
  } else if (j.is_string()) {
    e << YAML::DoubleQuoted << j.get<std::string>();
  } else if (j.is_boolean()) {
    e << j.get<bool>();
  } else if (j.is_null()) {
    e << YAML::Null;
  } else {
    e << j.dump();
  }
}
}  // namespace

Json YamlToJson(const std::string& yaml) { return NodeToJson(YAML::Load(yaml)); }

std::vector<Json> YamlStreamToJson(const std::string& yaml) {
  std::vector<Json> out;
  for (const auto& n : YAML::LoadAll(yaml)) {
    if (!n.IsNull()) out.push_back(NodeToJson(n));
  }
  return out;
}

std::string JsonToYaml(const Json& j) {
  YAML::Emitter e;
  Emit(e, j);
  return std::string(e.c_str()) + "\n";
}

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFileAtomically(const fs::path& p, const std::string& content) {
  fs::path tmp = p;
  tmp += ".tmp";
  std::ofstream(tmp) << content;
  fs::rename(tmp, p);
}

std::string RulesFile(const std::string& for_override) {
  Json rule = YamlToJson(ReadFile(SourceDir() / "deploy/monitoring/prometheusrule.yaml"));
  Json spec = rule.at("spec");
  if (!for_override.empty()) {
    for (auto& g : spec["groups"]) {
      for (auto& r : g["rules"]) {
        if (r.contains("for")) r["for"] = for_override;
      }
    }
  }
  return JsonToYaml(spec);
}

std::set<std::string> MetricNames(const std::string& promql) {
  static const std::regex kName("\\b((trellis|process)_[a-zA-Z0-9_]+)");
  std::set<std::string> out;
  for (auto it = std::sregex_iterator(promql.begin(), promql.end(), kName);
       it != std::sregex_iterator(); ++it) {
    std::string n = (*it)[1];
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      std::string s = suffix;
      if (n.size() > s.size() && n.ends_with(s)) {
        n.resize(n.size() - s.size());
        break;
      }
    }
    out.insert(n);
  }
  return out;
}

std::string UrlEncode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string o;
  for (unsigned char c : s) {
    if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      o += static_cast<char>(c);
    } else {
      o += '%';
      o += hex[c >> 4];
      o += hex[c & 15];
    }
  }
  return o;
}

Prometheus::Prometheus(std::string netns, fs::path dir, int port)
    : netns_(std::move(netns)), dir_(std::move(dir)), port_(port) {}

Prometheus::~Prometheus() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    if (!WaitFor([&] { return waitpid(pid_, nullptr, WNOHANG) == pid_; },
                 std::chrono::seconds(20))) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
}

bool Prometheus::Start(const std::string& config_yaml, std::string* why) {
  fs::create_directories(dir_ / "data");
  std::ofstream(dir_ / "prometheus.yml") << config_yaml;
  std::vector<std::string> argv = {"ip",
                                   "netns",
                                   "exec",
                                   netns_,
                                   "prometheus",
                                   "--config.file=" + (dir_ / "prometheus.yml").string(),
                                   "--storage.tsdb.path=" + (dir_ / "data").string(),
                                   "--web.listen-address=127.0.0.1:" + std::to_string(port_),
                                   "--log.level=warn"};
  // Everything the child needs is prepared before fork(): between fork and
  // exec a multi-threaded process may only make async-signal-safe calls.
  std::vector<char*> a;
  for (auto& s : argv) a.push_back(s.data());
  a.push_back(nullptr);
  std::string log = (dir_ / "prometheus.log").string();
  pid_ = fork();
  if (pid_ == 0) {
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 1);
    dup2(fd, 2);
    execvp(a[0], a.data());
    _exit(127);
  }
  bool ready = WaitFor(
      [&] {
        if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
          pid_ = -1;
          return true;
        }
        return Get("/-/ready").first == 200;
      },
      std::chrono::seconds(60));
  if (!ready || pid_ < 0) {
    *why = "prometheus did not become ready; log:\n" + Log();
    return false;
  }
  return true;
}

std::pair<int, std::string> Prometheus::Get(const std::string& path) const {
  return HttpGet(port_, path, netns_);
}

Json Prometheus::Query(const std::string& expr, std::string* error) const {
  auto [status, body] = Get("/api/v1/query?query=" + UrlEncode(expr));
  Json j = Json::parse(body, nullptr, false);
  if (status != 200 || !j.is_object() || j.value("status", "") != "success") {
    if (error != nullptr) *error = std::to_string(status) + " " + body;
    return nullptr;
  }
  return j["data"]["result"];
}

std::string Prometheus::Log() const { return ReadFile(dir_ / "prometheus.log"); }

}  // namespace trellis::test::ops
