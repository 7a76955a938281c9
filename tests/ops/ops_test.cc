// Operations, against live daemons: the health endpoints while a daemon
// starts, runs and has a failed module; the live scrape under promtool; a
// real Prometheus scraping the daemon and evaluating the alert rules; logs,
// log levels and trellisctl's exit codes and JSON output.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <regex>

#include "harness.h"
#include "ops_util.h"

namespace trellis::test::ops {
namespace {

const fs::path kProbePlugin = OPS_PROBE_PLUGIN;

std::string Metrics(const Daemon& d) {
  return HttpGet(d.metrics_port(), "/metrics", d.node()->name()).second;
}
std::pair<int, std::string> Get(const Daemon& d, const std::string& path) {
  return HttpGet(d.metrics_port(), path, d.node()->name());
}
RunResult CniCall(const Daemon& d, const std::string& cmd, const std::string& id,
                  const std::string& netns, const std::string& pod) {
  return Cni({.command = cmd,
              .container_id = id,
              .netns = netns,
              .args = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + pod,
              .config = d.NetConf("1.1.0")});
}

// ------------------------------------------------------------- probes --

class OpsProbes : public ::testing::Test {
 protected:
  TempDir ctl_;  // gate and health files the probe plugin watches
  std::string secret_ = "s3cr3t-ops-" + std::to_string(getpid());
  std::string Config(const std::string& extra_modules = "", const std::string& probe_extra = "") {
    return "modules:\n"
           "  ipam:\n"
           "    config: {ranges: [{subnet: 10.251.0.0/24}]}\n"
           "  qos: {enabled: false}\n"
           "  policy: {enabled: false}\n"
           "  probe:\n"
           "    plugin: opsprobe\n"
           "    config:\n"
           "      gate: " +
           (ctl_ / "gate").string() +
           "\n"
           "      unhealthy_file: " +
           (ctl_ / "unhealthy").string() +
           "\n"
           "      secret_key: " +
           secret_ + "\n" + probe_extra + extra_modules;
  }
};

TEST_F(OpsProbes, StartingRunningUnhealthyAndFailedModule) {
  PluginDir plugins({kProbePlugin});
  Daemon d({.config_yaml = Config(),
            .plugin_dir = plugins.path(),
            .metrics_addr = "auto",
            .wait = false});
  std::string why;
  ASSERT_TRUE(d.Start(&why)) << why;

  // Starting: the probe module's create() waits on the gate. Live, not ready.
  ASSERT_TRUE(WaitFor([&] { return Get(d, "/healthz").first == 200; }, std::chrono::seconds(30)))
      << d.Log();
  auto ready = Get(d, "/readyz");
  EXPECT_EQ(ready.first, 503);
  EXPECT_NE(ready.second.find("startup reconcile is not done"), std::string::npos) << ready.second;
  EXPECT_EQ(ParseScrape(Metrics(d)).Value("trellis_ready"), 0.0);
  // The API (and CNI) starts only once the modules run: exec probes say
  // "unreachable", which is why the DaemonSet probes over HTTP.
  EXPECT_EQ(d.Ctl({"health"}).exit_code, 3);
  EXPECT_TRUE(d.Running());

  // Running.
  std::ofstream(ctl_ / "gate") << "open";
  ASSERT_TRUE(WaitFor([&] { return Get(d, "/readyz").first == 200; }, std::chrono::seconds(30)))
      << d.Log();
  EXPECT_EQ(Get(d, "/readyz").second, "ok\n");
  auto health = d.Ctl({"-o", "json", "health", "--ready"});
  EXPECT_EQ(health.exit_code, 0) << health.out << health.err;
  EXPECT_EQ(health.json().value("live", false), true);
  EXPECT_EQ(health.json().value("ready", false), true);
  Scrape m = ParseScrape(Metrics(d));
  EXPECT_EQ(m.Value("trellis_ready"), 1.0);
  EXPECT_EQ(m.Value("trellis_module_healthy", {{"module", "probe"}}), 1.0);

  // A module turns unhealthy: not ready, still live.
  std::ofstream(ctl_ / "unhealthy") << "x";
  ASSERT_TRUE(WaitFor([&] { return Get(d, "/readyz").first == 503; }));
  EXPECT_NE(Get(d, "/readyz").second.find("module probe"), std::string::npos);
  EXPECT_EQ(Get(d, "/healthz").first, 200);
  EXPECT_EQ(d.Ctl({"health"}).exit_code, 0);
  auto not_ready = d.Ctl({"health", "--ready"});
  EXPECT_EQ(not_ready.exit_code, 1);
  EXPECT_NE(not_ready.out.find("not ready: module probe"), std::string::npos) << not_ready.out;
  m = ParseScrape(Metrics(d));
  EXPECT_EQ(m.Value("trellis_ready"), 0.0);
  EXPECT_EQ(m.Value("trellis_module_healthy", {{"module", "probe"}}), 0.0);
  auto status = d.Ctl({"-o", "json", "status"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  EXPECT_EQ(status.json().value("live", false), true);
  EXPECT_EQ(status.json().value("ready", true), false);
  fs::remove(ctl_ / "unhealthy");
  ASSERT_TRUE(WaitFor([&] { return Get(d, "/readyz").first == 200; }));

  // A module that fails to start (enabled live): not ready, still live, and
  // the failure is in trellisctl and the metrics.
  const fs::path config = d.dir() / "trellis.yaml";
  WriteFileAtomically(config,
                      Config("  broken:\n    plugin: opsprobe\n    config: {fail_create: true}\n"));
  ASSERT_TRUE(WaitFor([&] { return Get(d, "/readyz").first == 503; }, std::chrono::seconds(10)))
      << d.Log();
  EXPECT_NE(Get(d, "/readyz").second.find("module broken is failed"), std::string::npos)
      << Get(d, "/readyz").second;
  EXPECT_EQ(Get(d, "/healthz").first, 200);
  EXPECT_EQ(d.Ctl({"health"}).exit_code, 0);
  EXPECT_EQ(d.Ctl({"health", "--ready"}).exit_code, 1);
  auto mods = d.Ctl({"-o", "json", "modules"});
  ASSERT_EQ(mods.exit_code, 0) << mods.err;
  bool seen = false;
  Json listed = mods.json();
  for (const auto& mod : listed["modules"]) {
    if (mod["name"] != "broken") continue;
    seen = true;
    EXPECT_EQ(mod["state"], "failed");
    EXPECT_NE(mod["last_error"].get<std::string>().find("fail_create"), std::string::npos) << mod;
  }
  EXPECT_TRUE(seen) << mods.out;
  m = ParseScrape(Metrics(d));
  EXPECT_EQ(m.Value("trellis_module_last_reload_failed", {{"module", "broken"}}), 1.0);
  EXPECT_EQ(m.Value("trellis_module_reloads_total", {{"module", "broken"}, {"result", "failed"}}),
            1.0);
  EXPECT_EQ(m.Value("trellis_module_healthy", {{"module", "broken"}}), 0.0);
  EXPECT_EQ(m.Value("trellis_config_last_reload_successful"), 0.0);

  // A config the probe's validate() refuses: the running module keeps its
  // config and carries the refusal as its last reload error.
  WriteFileAtomically(config, Config("", "      bogus_key: 1\n"));
  ASSERT_TRUE(WaitFor([&] {
    auto s = d.Ctl({"-o", "json", "status"});
    return s.json().value("last_config_error", "").find("bogus_key") != std::string::npos;
  })) << d.Log();
  m = ParseScrape(Metrics(d));
  EXPECT_EQ(m.Value("trellis_module_last_reload_failed", {{"module", "probe"}}), 1.0);
  EXPECT_EQ(m.Value("trellis_module_healthy", {{"module", "probe"}}), 1.0);
  auto text = d.Ctl({"modules"});
  EXPECT_NE(text.out.find("last reload failed: modules.probe.config: bogus_key: unknown key"),
            std::string::npos)
      << text.out;

  // Back to a good config: everything clears.
  WriteFileAtomically(config, Config());
  ASSERT_TRUE(WaitFor([&] { return Get(d, "/readyz").first == 200; }, std::chrono::seconds(10)))
      << d.Log();
  m = ParseScrape(Metrics(d));
  EXPECT_EQ(m.Value("trellis_config_last_reload_successful"), 1.0);
  EXPECT_EQ(m.Value("trellis_module_last_reload_failed", {{"module", "probe"}}), 0.0);
  EXPECT_FALSE(m.Value("trellis_module_enabled", {{"module", "broken"}}).has_value());

  // The probe's status echoes its config, secret included: the host shows it
  // redacted wherever statuses appear, and never logs it.
  auto state = Get(d, "/debug/state");
  ASSERT_EQ(state.first, 200);
  Json js = Json::parse(state.second, nullptr, false);
  ASSERT_TRUE(js.is_object()) << state.second;
  for (const char* key : {"daemon", "modules", "pods", "pool"})
    EXPECT_TRUE(js.contains(key)) << key;
  EXPECT_NE(state.second.find("<redacted>"), std::string::npos);
  for (const std::string& shown :
       {state.second, Metrics(d), d.Ctl({"-o", "json", "modules"}).out, d.Ctl({"modules"}).out,
        d.Ctl({"-o", "json", "status"}).out, d.Log()}) {
    EXPECT_EQ(shown.find(secret_), std::string::npos) << shown;
  }
}

// ------------------------------------------------- metrics, logs, ctl --

const char* kIpamOnly = R"(
modules:
  ipam:
    config:
      ranges:
        - subnet: 10.252.0.0/24
      reuse_delay: 0
  qos: {enabled: false}
  policy: {enabled: false}
)";

TEST(OpsDaemon, LiveScrapePassesPromtoolAndCarriesEveryFamily) {
  Daemon d({.config_yaml = kIpamOnly, .metrics_addr = "auto"});
  std::string why;
  ASSERT_TRUE(d.Start(&why)) << why;
  Netns pod("opsm");
  ASSERT_EQ(CniCall(d, "ADD", "ops-m-1", pod.path(), "m-1").exit_code, 0);
  ASSERT_EQ(CniCall(d, "CHECK", "ops-m-1", pod.path(), "m-1").exit_code, 0);
  EXPECT_NE(CniCall(d, "CHECK", "ops-m-unknown", pod.path(), "m-2").exit_code, 0);

  std::string text = Metrics(d);
  auto lint = test::Run({"promtool", "check", "metrics"}, {}, text);
  EXPECT_EQ(lint.exit_code, 0) << lint.out << lint.err << "\n" << text;
  EXPECT_EQ(lint.out + lint.err, "");

  Scrape m = ParseScrape(text);
  for (const char* family :
       {"trellis_cni_requests_total", "trellis_cni_request_duration_seconds", "trellis_pods",
        "trellis_module_enabled", "trellis_module_healthy", "trellis_module_reloads_total",
        "trellis_module_last_reload_failed", "trellis_plugin_load_failures_total",
        "trellis_store_errors_total", "trellis_config_reloads_total",
        "trellis_config_last_reload_successful", "trellis_build_info", "trellis_ready",
        "process_cpu_seconds_total", "process_resident_memory_bytes", "process_start_time_seconds",
        "process_open_fds"}) {
    EXPECT_TRUE(m.families.contains(family)) << family;
  }
  EXPECT_EQ(m.Value("trellis_cni_requests_total", {{"command", "ADD"}, {"result", "ok"}}), 1.0);
  EXPECT_EQ(m.Value("trellis_cni_requests_total", {{"command", "CHECK"}, {"result", "error"}}),
            1.0);
  EXPECT_EQ(
      m.Value("trellis_cni_request_duration_seconds_count", {{"command", "ADD"}, {"result", "ok"}}),
      1.0);
  EXPECT_EQ(m.Value("trellis_cni_request_duration_seconds_bucket",
                    {{"command", "ADD"}, {"result", "ok"}, {"le", "+Inf"}}),
            1.0);
  EXPECT_TRUE(m.Value("trellis_cni_request_duration_seconds_bucket",
                      {{"command", "ADD"}, {"result", "ok"}, {"le", "0.0005"}})
                  .has_value());
  EXPECT_EQ(m.Value("trellis_pods", {{"state", "ready"}}), 1.0);
  EXPECT_EQ(m.Value("trellis_ipam_addresses", {{"range", "10.252.0.0/24"}, {"state", "in_use"}}), 1.0);
  EXPECT_EQ(m.Value("trellis_module_enabled", {{"module", "ipam"}}), 1.0);
  EXPECT_EQ(m.Value("trellis_module_enabled", {{"module", "qos"}}), 0.0);
  EXPECT_EQ(m.Value("trellis_module_healthy", {{"module", "ipam"}}), 1.0);
  EXPECT_EQ(m.Value("trellis_module_reloads_total", {{"module", "ipam"}, {"result", "ok"}}), 1.0);
  EXPECT_EQ(m.Value("trellis_store_errors_total"), 0.0);
  EXPECT_GT(m.Value("process_resident_memory_bytes").value_or(0), 1e6);
  EXPECT_NEAR(m.Value("process_start_time_seconds").value_or(0), static_cast<double>(time(nullptr)),
              600);
  EXPECT_EQ(CniCall(d, "DEL", "ops-m-1", pod.path(), "m-1").exit_code, 0);
}

TEST(OpsDaemon, LogsLogLevelsAndTrellisctl) {
  Daemon d({.config_yaml = kIpamOnly, .metrics_addr = ":9190"});
  std::string why;
  ASSERT_TRUE(d.Start(&why)) << why;
  Netns pod("opsl");

  // One line per CNI request: command, container, pod, result, duration.
  ASSERT_EQ(CniCall(d, "ADD", "ops-log-1", pod.path(), "web-1").exit_code, 0);
  EXPECT_NE(CniCall(d, "CHECK", "ops-log-x", pod.path(), "web-x").exit_code, 0);
  ASSERT_TRUE(WaitFor([&] {
    return std::regex_search(d.Log(), std::regex("CNI ADD container=ops-log-1 ifname=eth0 "
                                                 "pod=default/web-1 result=ok duration=[0-9.]+ms"));
  })) << d.Log();
  EXPECT_TRUE(std::regex_search(d.Log(), std::regex("CNI CHECK container=ops-log-x ifname=eth0 "
                                                    "pod=default/web-x result=error code=[0-9]+ "
                                                    "duration=[0-9.]+ms: ")))
      << d.Log();

  // pods: pod, addresses, interfaces, modules applied.
  auto pods = d.Ctl({"-o", "json", "pods"});
  ASSERT_EQ(pods.exit_code, 0) << pods.err;
  ASSERT_EQ(pods.json()["pods"].size(), 1u) << pods.out;
  Json p = pods.json()["pods"][0];
  EXPECT_EQ(p["k8s_name"], "web-1");
  EXPECT_EQ(p["ifname"], "eth0");
  EXPECT_FALSE(p["host_ifname"].get<std::string>().empty());
  EXPECT_EQ(p["addresses"].size(), 1u);
  EXPECT_NE(p["modules"].dump().find("ipam"), std::string::npos) << p;
  auto pods_text = d.Ctl({"pods"});
  EXPECT_NE(pods_text.out.find("default/web-1"), std::string::npos) << pods_text.out;

  // Log level at runtime through trellisctl; a bad level is a usage error.
  auto set = d.Ctl({"log-level", "debug"});
  EXPECT_EQ(set.exit_code, 0) << set.err;
  EXPECT_EQ(set.out, "log level: info -> debug\n");
  EXPECT_EQ(d.Ctl({"-o", "json", "status"}).json().value("log_level", ""), "debug");
  auto bad = d.Ctl({"-o", "json", "log-level", "loud"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_EQ(bad.json()["error"]["code"], "invalid_argument") << bad.out;
  EXPECT_NE(bad.err.find("'loud'"), std::string::npos);

  // Log level and file through the node config, live.
  fs::path log_file = d.dir() / "logs" / "trellisd.log";
  WriteFileAtomically(d.dir() / "trellis.yaml", std::string("log_level: warn\nlog_file: ") +
                                                    log_file.string() + "\n" + kIpamOnly);
  ASSERT_TRUE(WaitFor([&] {
    return d.Ctl({"-o", "json", "status"}).json().value("log_level", "") == "warn";
  })) << d.Log();
  EXPECT_EQ(d.Ctl({"log-level", "info"}).exit_code, 0);
  ASSERT_EQ(CniCall(d, "DEL", "ops-log-1", pod.path(), "web-1").exit_code, 0);
  EXPECT_TRUE(WaitFor([&] {
    return ReadFile(log_file).find("CNI DEL container=ops-log-1") != std::string::npos;
  })) << ReadFile(log_file);

  // Exit codes and JSON errors.
  EXPECT_EQ(d.Ctl({"frobnicate"}).exit_code, 2);
  auto usage_json = d.Ctl({"-o", "json", "frobnicate"});
  EXPECT_EQ(usage_json.json()["error"]["code"], "invalid_argument") << usage_json.out;
  std::vector<std::string> gone = {(BinDir() / "trellisctl").string(), "--socket",
                                   (d.dir() / "nothing.sock").string(), "--timeout", "2000"};
  auto unreachable = test::Run([&] {
    auto a = gone;
    a.push_back("status");
    return a;
  }());
  EXPECT_EQ(unreachable.exit_code, 3) << unreachable.err;
  auto unreachable_json = test::Run([&] {
    auto a = gone;
    a.insert(a.end(), {"-o", "json", "status"});
    return a;
  }());
  EXPECT_EQ(unreachable_json.exit_code, 3);
  EXPECT_EQ(unreachable_json.json()["error"]["code"], "unavailable") << unreachable_json.out;
  auto health_gone = test::Run([&] {
    auto a = gone;
    a.insert(a.end(), {"-o", "json", "health"});
    return a;
  }());
  EXPECT_EQ(health_gone.exit_code, 3);
  EXPECT_EQ(health_gone.json().value("live", true), false) << health_gone.out;

  // /debug/* on loopback only; /metrics and the probes on every address.
  ASSERT_EQ(d.NodeExec("ip addr add 10.77.0.1/32 dev lo").exit_code, 0);
  auto code = [&](const std::string& url) {
    return d.NodeExec("curl -s -o /dev/null -w '%{http_code}' " + url).out;
  };
  EXPECT_EQ(code("http://10.77.0.1:9190/debug/state"), "403");
  EXPECT_EQ(code("http://10.77.0.1:9190/metrics"), "200");
  EXPECT_EQ(code("http://10.77.0.1:9190/healthz"), "200");
  EXPECT_EQ(code("http://127.0.0.1:9190/debug/state"), "200");
  EXPECT_EQ(code("http://127.0.0.1:9190/debug/nothing"), "404");
}

// ---------------------------------------------------------- prometheus --

TEST(OpsPrometheus, ScrapesTheDaemonAndEvaluatesTheAlertRules) {
  Daemon d({.config_yaml = kIpamOnly, .metrics_addr = "auto"});
  std::string why;
  ASSERT_TRUE(d.Start(&why)) << why;
  Netns pod("opsp");
  ASSERT_EQ(CniCall(d, "ADD", "ops-p-1", pod.path(), "p-1").exit_code, 0);

  // The real rules, with every `for:` shortened so the test need not wait
  // minutes; scraped and evaluated every second.
  TempDir dir;
  std::ofstream(dir / "rules.yaml") << RulesFile("1s");
  const std::string config =
      "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
      "rule_files: [" +
      (dir / "rules.yaml").string() +
      "]\n"
      "scrape_configs:\n"
      "  - job_name: trellisd\n"
      "    static_configs: [{targets: ['127.0.0.1:" +
      std::to_string(d.metrics_port()) + "']}]\n";
  // Inside the daemon's own node namespace: the port is free by construction.
  Prometheus prom(d.node()->name(), dir.path() / "prometheus", 9090);
  ASSERT_TRUE(prom.Start(config, &why)) << why;

  auto value = [&](const std::string& expr) -> std::optional<double> {
    Json r = prom.Query(expr);
    if (!r.is_array() || r.size() != 1) return std::nullopt;
    return std::stod(r[0]["value"][1].get<std::string>());
  };
  ASSERT_TRUE(
      WaitFor([&] { return value("up{job=\"trellisd\"}") == 1.0; }, std::chrono::seconds(30)))
      << prom.Log();
  ASSERT_TRUE(WaitFor([&] {
    return value("trellis_cni_requests_total{job=\"trellisd\",command=\"ADD\",result=\"ok\"}") ==
           1.0;
  })) << prom.Log();
  auto targets = Json::parse(prom.Get("/api/v1/targets").second, nullptr, false);
  ASSERT_EQ(targets["data"]["activeTargets"].size(), 1u) << targets;
  EXPECT_EQ(targets["data"]["activeTargets"][0]["health"], "up") << targets;
  EXPECT_EQ(targets["data"]["activeTargets"][0]["lastError"], "") << targets;

  // Every rule of the PrometheusRule is loaded and evaluates without error
  // against the live series.
  Json spec = YamlToJson(RulesFile());
  std::set<std::string> want;
  for (const auto& g : spec["groups"]) {
    for (const auto& r : g["rules"]) want.insert(r["alert"].get<std::string>());
  }
  Json rules;
  ASSERT_TRUE(WaitFor([&] {
    rules = Json::parse(prom.Get("/api/v1/rules").second, nullptr, false);
    if (!rules.is_object()) return false;
    for (const auto& g : rules["data"]["groups"]) {
      for (const auto& r : g["rules"]) {
        if (r["health"] != "ok") return false;
      }
    }
    return !rules["data"]["groups"].empty();
  })) << rules.dump(2);
  std::set<std::string> loaded;
  for (const auto& g : rules["data"]["groups"]) {
    for (const auto& r : g["rules"]) loaded.insert(r["name"].get<std::string>());
  }
  EXPECT_EQ(loaded, want);

  auto firing = [&](const std::string& name) -> Json {
    Json a = Json::parse(prom.Get("/api/v1/alerts").second, nullptr, false);
    for (const auto& alert : a["data"]["alerts"]) {
      if (alert["labels"]["alertname"] == name && alert["state"] == "firing") return alert;
    }
    return nullptr;
  };
  // A healthy daemon trips nothing.
  ASSERT_TRUE(WaitFor([&] {
    for (const auto& name : want) {
      if (!firing(name).is_null()) return false;
    }
    return true;
  })) << prom.Get("/api/v1/alerts").second;

  // The dashboard's queries are valid PromQL on the live data, and every
  // metric the dashboard and the rules name is one the daemon exports (or,
  // for the eni module's own, one it registers when enabled).
  Scrape live = ParseScrape(Metrics(d));
  const std::set<std::string> from_modules = {"trellis_eni_creation_failures_total"};
  Json dash = Json::parse(ReadFile(SourceDir() / "deploy/monitoring/grafana-dashboard.json"));
  std::vector<std::string> exprs;
  for (const auto& panel : dash["panels"]) {
    for (const auto& t : panel.value("targets", Json::array())) exprs.push_back(t["expr"]);
  }
  for (const auto& g : spec["groups"]) {
    for (const auto& r : g["rules"]) exprs.push_back(r["expr"]);
  }
  ASSERT_GT(exprs.size(), 20u);
  for (std::string e : exprs) {
    for (auto n : MetricNames(e)) {
      EXPECT_TRUE(live.families.contains(n) || from_modules.contains(n)) << n << " in " << e;
    }
    e = std::regex_replace(e, std::regex("\\$__rate_interval"), "1m");
    e = std::regex_replace(e, std::regex("\\$instance"), ".*");
    std::string error;
    EXPECT_FALSE(prom.Query(e, &error).is_null()) << e << ": " << error;
  }

  // The daemon stops: TrellisDown fires for its instance.
  ASSERT_EQ(CniCall(d, "DEL", "ops-p-1", pod.path(), "p-1").exit_code, 0);
  d.Stop();
  Json down;
  ASSERT_TRUE(
      WaitFor([&] { return !(down = firing("TrellisDown")).is_null(); }, std::chrono::seconds(30)))
      << prom.Get("/api/v1/alerts").second;
  EXPECT_EQ(down["labels"]["severity"], "critical");
  EXPECT_EQ(down["labels"]["job"], "trellisd");
  EXPECT_EQ(down["labels"]["instance"], "127.0.0.1:" + std::to_string(d.metrics_port()));
}

}  // namespace
}  // namespace trellis::test::ops
