// The node config: YAML -> JSON, validation errors naming the key, the
// ConfigMap directory, the Terway key mapping (with the production guide's
// exact ConfigMaps) and the merge of trellis.yaml over it, Redact.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include "configmap.h"
#include "core/config.h"
#include "harness.h"

namespace trellis {
namespace {

Json Yaml(const std::string& text) { return YamlToJson(YAML::Load(text)); }

std::string ConfigError(const std::string& yaml) {
  auto cfg = ParseNodeConfig(yaml, "node.yaml");
  return cfg.ok() ? "(accepted)" : std::string(cfg.status().message());
}

// ------------------------------------------------------------ YAML -> JSON --

TEST(YamlToJson, PlainScalarsFollowTheYaml12CoreSchema) {
  Json j = Yaml(R"(
t1: true
t2: True
t3: TRUE
f1: false
yes_is_text: yes
on_is_text: on
n1: null
n2: ~
n3:
i1: 10
i2: -3
i3: +7
i4: 012
hex: 0x1F
oct: 0o17
f_1: 1.5
f_2: -.5
f_3: 1e3
f_4: 2.5E-1
version: 1.10
)");
  EXPECT_EQ(j["t1"], true);
  EXPECT_EQ(j["t2"], true);
  EXPECT_EQ(j["t3"], true);
  EXPECT_EQ(j["f1"], false);
  EXPECT_EQ(j["yes_is_text"], "yes");
  EXPECT_EQ(j["on_is_text"], "on");
  EXPECT_TRUE(j["n1"].is_null());
  EXPECT_TRUE(j["n2"].is_null());
  EXPECT_TRUE(j["n3"].is_null());
  EXPECT_EQ(j["i1"], 10);
  EXPECT_TRUE(j["i1"].is_number_integer());
  EXPECT_EQ(j["i2"], -3);
  EXPECT_EQ(j["i3"], 7);
  EXPECT_EQ(j["i4"], 12);  // 1.2 core schema: no implicit octal
  EXPECT_EQ(j["hex"], 31);
  EXPECT_EQ(j["oct"], 15);
  EXPECT_EQ(j["f_1"], 1.5);
  EXPECT_EQ(j["f_2"], -0.5);
  EXPECT_TRUE(j["f_3"].is_number_float());
  EXPECT_EQ(j["f_3"], 1000.0);
  EXPECT_EQ(j["f_4"], 0.25);
  EXPECT_EQ(j["version"], 1.1);
}

TEST(YamlToJson, QuotedAndTaggedScalarsStayStrings) {
  Json j = Yaml(R"(
a: "10"
b: '10'
c: !!str 10
d: "true"
e: ""
)");
  EXPECT_EQ(j["a"], "10");
  EXPECT_EQ(j["b"], "10");
  EXPECT_EQ(j["c"], "10");
  EXPECT_EQ(j["d"], "true");
  EXPECT_EQ(j["e"], "");
}

TEST(YamlToJson, NearMissNumbersStayStrings) {
  Json j = Yaml(R"(
h1: 0x1g
h2: 0x
h3: -0x5
o1: 0o8
n1: 1.2.3
n2: 10Mbps
n3: 1_000
n4: .
big: 99999999999999999999
inf: .inf
)");
  EXPECT_EQ(j["h1"], "0x1g");
  EXPECT_EQ(j["h2"], "0x");
  EXPECT_EQ(j["h3"], "-0x5");
  EXPECT_EQ(j["o1"], "0o8");
  EXPECT_EQ(j["n1"], "1.2.3");
  EXPECT_EQ(j["n2"], "10Mbps");
  EXPECT_EQ(j["n3"], "1_000");
  EXPECT_EQ(j["n4"], ".");
  // Never rounded silently: a validator then says what it expected.
  EXPECT_EQ(j["big"], "99999999999999999999");
  EXPECT_EQ(j["inf"], ".inf");  // JSON has no infinity
}

TEST(YamlToJson, LargestIntegersKeepTheirExactValue) {
  Json j = Yaml("a: 9223372036854775807\nb: -9223372036854775808\nc: 18446744073709551615\n");
  EXPECT_EQ(j["a"].get<int64_t>(), INT64_MAX);
  EXPECT_EQ(j["b"].get<int64_t>(), INT64_MIN);
  EXPECT_EQ(j["c"].get<uint64_t>(), UINT64_MAX);
}

TEST(YamlToJson, SequencesMapsAndNesting) {
  Json j = Yaml("a: [1, x, {b: [true]}]\nc: {}\nd: []\n");
  EXPECT_EQ(j, Json::parse(R"({"a":[1,"x",{"b":[true]}],"c":{},"d":[]})"));
}

TEST(ParseNodeConfig, DuplicateKeysAreRefusedWithTheirLine) {
  EXPECT_EQ(ConfigError("modules:\n  qos: {enabled: true}\n  qos: {enabled: false}\n"),
            "node.yaml: invalid YAML at line 3, column 3: duplicate key 'qos'");
}

// Every string a config holds is later serialised as JSON, which needs UTF-8.
TEST(ParseNodeConfig, InvalidUtf8IsRefusedWithItsPosition) {
  EXPECT_EQ(ConfigError("modules:\n  qos:\n    config: {name: \"caf\xc3\"}\n"),
            "node.yaml: invalid YAML at line 3, column 20: invalid UTF-8");
  EXPECT_EQ(ConfigError("modules: {\xff: true}\n"),
            "node.yaml: invalid YAML at line 1, column 11: invalid UTF-8");
  auto ok = ParseNodeConfig("modules: {qos: {config: {name: caf\xc3\xa9}}}\n", "x");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->modules.at("qos").config["name"], "caf\xc3\xa9");
}

// ------------------------------------------------------------ node config --

TEST(ParseNodeConfig, EmbeddedDefaultParses) {
  auto cfg = ParseNodeConfig(EmbeddedDefaultConfigYaml(), "embedded default");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_TRUE(cfg->Enabled("ipam"));
  EXPECT_TRUE(cfg->Enabled("qos"));
  EXPECT_TRUE(cfg->Enabled("policy"));
  EXPECT_FALSE(cfg->Enabled("eni"));
  EXPECT_FALSE(cfg->Enabled("secgroup"));
  EXPECT_EQ(cfg->modules.at("ipam").config["ranges"].size(), 2u);
}

TEST(ParseNodeConfig, ModuleForms) {
  auto cfg = ParseNodeConfig(R"(
log_level: debug
datapath: {mtu: 9000}
modules:
  ipam: {config: {ranges: [{subnet: 10.0.0.0/24}]}}
  qos: false
  policy:
  eni: {enabled: false, config: {region: cn-hangzhou}}
  mine: {plugin: static-pool.so}
)",
                             "node.yaml");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->log_level, "debug");
  EXPECT_EQ(cfg->datapath.mtu, 9000u);
  EXPECT_TRUE(cfg->Enabled("ipam"));  // a module named with settings is on unless said otherwise
  EXPECT_FALSE(cfg->Enabled("qos"));
  EXPECT_TRUE(cfg->Enabled("policy"));  // `policy:` alone: on, default config
  EXPECT_EQ(cfg->modules.at("policy").config, Json::object());
  EXPECT_FALSE(cfg->Enabled("eni"));
  EXPECT_EQ(cfg->modules.at("eni").config["region"], "cn-hangzhou");
  EXPECT_EQ(cfg->modules.at("mine").plugin, "static-pool");  // the .so is optional
  EXPECT_EQ(cfg->modules.at("ipam").plugin, "ipam");
  EXPECT_EQ(cfg->origin, "node.yaml");
}

TEST(ParseNodeConfig, ErrorsNameTheKey) {
  EXPECT_EQ(ConfigError("modules: {qos: {enabled: yes}}"),
            "node.yaml: modules.qos.enabled: expected a boolean, got a string");
  EXPECT_EQ(ConfigError("modules: {qos: {enable: true}}"),
            "node.yaml: modules.qos.enable: unknown key (known: enabled, plugin, config)");
  EXPECT_EQ(ConfigError("modules: {qos: {plugin: ../evil}}"),
            "node.yaml: modules.qos.plugin: expected a plugin file name inside the plugin "
            "directory (no '/', no '..')");
  EXPECT_EQ(ConfigError("modules: {qos: {plugin: /usr/lib/evil.so}}"),
            "node.yaml: modules.qos.plugin: expected a plugin file name inside the plugin "
            "directory (no '/', no '..')");
  EXPECT_EQ(ConfigError("modules: {QoS: true}"),
            "node.yaml: modules.QoS: module names are lower-case letters, digits, '-' and '_'");
  EXPECT_EQ(ConfigError("modules: {qos: {config: [1]}}"),
            "node.yaml: modules.qos.config: expected a map, got a list");
  EXPECT_EQ(ConfigError("modules: {qos: 5}"),
            "node.yaml: modules.qos: expected a map, got a number");
  EXPECT_EQ(ConfigError("modules: [ipam]"),
            "node.yaml: modules: expected a map of module name to settings");
  EXPECT_EQ(ConfigError("datapath: {mtu: 100}"),
            "node.yaml: datapath.mtu: expected an integer from 576 to 65535");
  EXPECT_EQ(ConfigError("datapath: {mtu: \"1500\"}"),
            "node.yaml: datapath.mtu: expected an integer from 576 to 65535");
  EXPECT_EQ(ConfigError("datapath: {mut: 1500}"),
            "node.yaml: datapath.mut: unknown key (known: mtu)");
  EXPECT_EQ(ConfigError("log_level: loud"),
            "node.yaml: log_level: expected one of trace, debug, info, warn, error");
  EXPECT_EQ(ConfigError("colour: blue"),
            "node.yaml: colour: unknown key (known: modules, log_level, log_file, datapath, kubernetes)");
  EXPECT_EQ(ConfigError("- a\n- b\n"), "node.yaml: expected a map at the top, got a list");
  EXPECT_EQ(ConfigError(""), "node.yaml: the config is empty");
  std::string unclosed = ConfigError("modules: {qos: {enabled: true}");
  EXPECT_EQ(unclosed.rfind("node.yaml: invalid YAML at line 1, column ", 0), 0u) << unclosed;
  EXPECT_NE(unclosed.find(": end of map flow not found"), std::string::npos) << unclosed;
}

TEST(LoadNodeConfig, FileErrorsNameTheFile) {
  test::TempDir tmp;
  auto missing = LoadNodeConfig(tmp / "absent.yaml");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message(),
            "cannot read " + (tmp / "absent.yaml").string() + ": No such file or directory");
  auto empty_dir = LoadNodeConfig(tmp.path());
  ASSERT_FALSE(empty_dir.ok());
  EXPECT_EQ(empty_dir.status().message(),
            tmp.path().string() +
                ": no trellis.yaml and no Terway keys (eni_conf, qos_conf, security_conf, "
                "network_policy, cni_conf)");
}

// ------------------------------------------------------------------ Terway --
// The ConfigMaps of the Terway production guide, verbatim.

const char* kEniConf = R"({
  "version": "1",
  "access_key": "",
  "secret_key": "",
  "region": "cn-hangzhou",
  "vswitches": ["vsw-xxxxxxxxx", "vsw-yyyyyyyyy"],
  "security_group": "sg-xxxxxxxxx",
  "eni_tags": {
    "KubernetesCluster": "prod-cluster",
    "Environment": "production"
  },
  "eni_count_max": 5,
  "eni_count_min": 1,
  "eni_gc_threshold": 3,
  "eni_gc_interval": 300,
  "eni_create_retry": 3,
  "eni_create_timeout": 300
}
)";

const char* kCniConf = R"({
  "cniVersion": "0.3.1",
  "name": "terway",
  "type": "terway",
  "eni_conf": "/etc/eni/eni_conf",
  "log_level": "info",
  "log_file": "/var/log/terway/cni.log",
  "eni_gc_enable": true,
  "eni_gc_interval": 3600
}
)";

const char* kNetworkPolicy = R"({
  "default_policy": "accept",
  "policies": [
    {
      "name": "allow-internal",
      "selector": {
        "namespace": "production"
      },
      "ingress": [
        {
          "from": [
            {
              "namespaceSelector": {
                "matchLabels": {
                  "name": "frontend"
                }
              }
            }
          ],
          "ports": [
            {
              "protocol": "TCP",
              "port": 80
            }
          ]
        }
      ]
    }
  ]
}
)";

const char* kQosConf = R"({
  "bandwidth_limit": {
    "default_egress_bandwidth": "100Mbps",
    "default_ingress_bandwidth": "100Mbps"
  },
  "priority_classes": {
    "high_priority": {
      "egress_bandwidth": "1Gbps",
      "ingress_bandwidth": "1Gbps",
      "tc_class_id": 1
    },
    "medium_priority": {
      "egress_bandwidth": "500Mbps",
      "ingress_bandwidth": "500Mbps",
      "tc_class_id": 2
    },
    "low_priority": {
      "egress_bandwidth": "100Mbps",
      "ingress_bandwidth": "100Mbps",
      "tc_class_id": 3
    }
  }
}
)";

const char* kSecurityConf = R"({
  "network_isolation": {
    "enable": true,
    "default_policy": "drop",
    "allowed_cidrs": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
  },
  "security_group_sync": {
    "enable": true,
    "sync_interval": 300,
    "rules": [
      {
        "direction": "ingress",
        "protocol": "tcp",
        "port_range": "80/80",
        "source_cidr": "0.0.0.0/0"
      },
      {
        "direction": "ingress",
        "protocol": "tcp",
        "port_range": "443/443",
        "source_cidr": "0.0.0.0/0"
      }
    ]
  }
}
)";

std::map<std::string, std::string> GuideKeys() {
  return {{"eni_conf", kEniConf},
          {"cni_conf", kCniConf},
          {"network_policy", kNetworkPolicy},
          {"qos_conf", kQosConf},
          {"security_conf", kSecurityConf}};
}

TEST(Terway, GuideConfigMapsMapOntoModules) {
  test::TempDir tmp;
  test::ConfigMapDir cm(tmp / "config");
  cm.Write(GuideKeys());
  auto cfg = LoadNodeConfig(cm.path());
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->origin, cm.path().string());
  EXPECT_TRUE(cfg->warnings.empty());  // the guide's access keys are empty: nothing inline

  // eni_conf -> the eni module, and ipam takes its addresses from it.
  ASSERT_TRUE(cfg->Enabled("eni"));
  Json eni = Json::parse(kEniConf);
  eni.erase("version");
  eni.erase("access_key");
  eni.erase("secret_key");
  EXPECT_EQ(cfg->modules.at("eni").config, eni);
  ASSERT_TRUE(cfg->Enabled("ipam"));
  EXPECT_EQ(cfg->modules.at("ipam").config, Json({{"source", "eni"}}));

  // qos_conf -> qos: bandwidth_limit's keys at the top, the classes as they are.
  ASSERT_TRUE(cfg->Enabled("qos"));
  Json qos = Json::parse(kQosConf);
  EXPECT_EQ(cfg->modules.at("qos").config,
            Json({{"default_egress_bandwidth", "100Mbps"},
                  {"default_ingress_bandwidth", "100Mbps"},
                  {"priority_classes", qos["priority_classes"]}}));

  // network_policy and security_conf.network_isolation -> policy.
  ASSERT_TRUE(cfg->Enabled("policy"));
  Json sec = Json::parse(kSecurityConf);
  EXPECT_EQ(cfg->modules.at("policy").config,
            Json({{"terway_network_policy", Json::parse(kNetworkPolicy)},
                  {"network_isolation", sec["network_isolation"]}}));

  // security_conf.security_group_sync -> secgroup, enabled by its `enable`;
  // the group and the region come from eni_conf, where Terway names them.
  ASSERT_TRUE(cfg->Enabled("secgroup"));
  EXPECT_EQ(cfg->modules.at("secgroup").config,
            Json({{"sync_interval", 300},
                  {"rules", sec["security_group_sync"]["rules"]},
                  {"security_groups", {eni["security_group"]}},
                  {"region", eni["region"]}}));

  // cni_conf: the log settings.
  EXPECT_EQ(cfg->log_level, "info");
  EXPECT_EQ(cfg->log_file, "/var/log/terway/cni.log");
  EXPECT_EQ(cfg->modules.size(), 5u);
}

TEST(Terway, SecurityGroupSyncDisabledByItsEnableFlag) {
  Json sec = Json::parse(kSecurityConf);
  sec["security_group_sync"]["enable"] = false;
  std::vector<std::string> warnings;
  auto doc = TerwayToNodeConfig({{"security_conf", sec.dump()}}, &warnings);
  ASSERT_TRUE(doc.ok()) << doc.status();
  EXPECT_EQ((*doc)["modules"]["secgroup"]["enabled"], false);
  EXPECT_FALSE((*doc)["modules"].contains("eni"));
}

TEST(Terway, InlineAccessKeysAreKeptWithAWarning) {
  Json eni = Json::parse(kEniConf);
  eni["access_key"] = "LTAI-not-a-real-key";
  eni["secret_key"] = "not-a-real-secret";
  std::vector<std::string> warnings;
  auto doc = TerwayToNodeConfig({{"eni_conf", eni.dump()}}, &warnings);
  ASSERT_TRUE(doc.ok()) << doc.status();
  EXPECT_EQ((*doc)["modules"]["eni"]["config"]["access_key"], "LTAI-not-a-real-key");
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(warnings[0],
            "eni_conf carries inline access_key/secret_key; prefer ACCESS_KEY_ID/ACCESS_KEY_SECRET "
            "from a Secret");
  EXPECT_EQ(warnings[0].find("not-a-real"), std::string::npos);
}

TEST(Terway, MalformedKeysAreNamed) {
  std::vector<std::string> w;
  auto bad_json = TerwayToNodeConfig({{"qos_conf", "{\"bandwidth_limit\": "}}, &w);
  ASSERT_FALSE(bad_json.ok());
  EXPECT_EQ(std::string(bad_json.status().message()).rfind("qos_conf: invalid JSON: ", 0), 0u)
      << bad_json.status();
  auto not_object = TerwayToNodeConfig({{"eni_conf", "[1, 2]"}}, &w);
  EXPECT_EQ(not_object.status().message(), "eni_conf: expected a JSON object");
  auto unknown = TerwayToNodeConfig({{"security_conf", R"({"firewall": {}})"}}, &w);
  EXPECT_EQ(unknown.status().message(),
            "security_conf.firewall: unknown key (known: network_isolation, security_group_sync)");
  auto bad_enable = TerwayToNodeConfig(
      {{"security_conf", R"({"security_group_sync": {"enable": "yes"}})"}}, &w);
  EXPECT_EQ(bad_enable.status().message(),
            "security_conf.security_group_sync.enable: expected a boolean");
  auto bad_limit = TerwayToNodeConfig({{"qos_conf", R"({"bandwidth_limit": "100Mbps"})"}}, &w);
  EXPECT_EQ(bad_limit.status().message(), "qos_conf.bandwidth_limit: expected an object");
}

TEST(Terway, ErrorsInADirectoryNameTheDirectoryAndTheKey) {
  test::TempDir tmp;
  test::ConfigMapDir cm(tmp / "config");
  cm.Write({{"eni_conf", "{not json"}});
  auto cfg = LoadNodeConfig(cm.path());
  ASSERT_FALSE(cfg.ok());
  EXPECT_EQ(std::string(cfg.status().message()).rfind(cm.path().string() + ": eni_conf: invalid JSON", 0),
            0u)
      << cfg.status();
}

// trellis.yaml is an RFC 7396 merge patch over what the Terway keys map to:
// maps merge, other values replace, null deletes.
TEST(Terway, TrellisYamlIsMergedOverTheTerwayKeys) {
  test::TempDir tmp;
  test::ConfigMapDir cm(tmp / "config");
  auto keys = GuideKeys();
  keys["trellis.yaml"] = R"(
log_level: warn
modules:
  ipam:
    config:
      source: local
      ranges: [{subnet: 10.244.0.0/24}]
  secgroup: {enabled: false}
  qos:
    config:
      priority_classes: null
      default_egress_bandwidth: 200Mbps
  static:
    plugin: static-pool
)";
  cm.Write(keys);
  auto cfg = LoadNodeConfig(cm.path());
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->log_level, "warn");
  EXPECT_EQ(cfg->log_file, "/var/log/terway/cni.log");
  EXPECT_EQ(cfg->modules.at("ipam").config,
            Json::parse(R"({"source":"local","ranges":[{"subnet":"10.244.0.0/24"}]})"));
  EXPECT_FALSE(cfg->Enabled("secgroup"));
  EXPECT_EQ(cfg->modules.at("secgroup").config["sync_interval"], 300);
  EXPECT_EQ(cfg->modules.at("qos").config,
            Json({{"default_egress_bandwidth", "200Mbps"},
                  {"default_ingress_bandwidth", "100Mbps"}}));
  EXPECT_TRUE(cfg->Enabled("eni"));
  EXPECT_TRUE(cfg->Enabled("static"));
  EXPECT_EQ(cfg->modules.at("static").plugin, "static-pool");
}

TEST(Terway, TrellisYamlErrorsNameTheKeyFile) {
  test::TempDir tmp;
  test::ConfigMapDir cm(tmp / "config");
  cm.Write({{"qos_conf", kQosConf}, {"trellis.yaml", "modules: {qos: {enabled: maybe}}\n"}});
  auto cfg = LoadNodeConfig(cm.path());
  ASSERT_FALSE(cfg.ok());
  EXPECT_EQ(cfg.status().message(),
            cm.path().string() + ": modules.qos.enabled: expected a boolean, got a string");
  cm.Write({{"trellis.yaml", "modules: [\n"}});
  cfg = LoadNodeConfig(cm.path());
  ASSERT_FALSE(cfg.ok());
  EXPECT_EQ(std::string(cfg.status().message())
                .rfind((cm.path() / "trellis.yaml").string() + ": invalid YAML at line 2", 0),
            0u)
      << cfg.status();
}

// What is read is what `..data` points at after the swap.
TEST(ConfigMapDirectory, FollowsTheDataSymlinkSwap) {
  test::TempDir tmp;
  test::ConfigMapDir cm(tmp / "config");
  cm.Write({{"trellis.yaml", "modules: {qos: true}\n"}});
  std::string first = cm.current();
  ASSERT_TRUE(LoadNodeConfig(cm.path())->Enabled("qos"));
  cm.Write({{"trellis.yaml", "modules: {qos: false}\n"}});
  EXPECT_NE(cm.current(), first);
  EXPECT_FALSE(std::filesystem::exists(cm.path() / first));
  EXPECT_TRUE(std::filesystem::is_symlink(cm.path() / "trellis.yaml"));
  EXPECT_EQ(std::filesystem::read_symlink(cm.path() / "..data"), cm.current());
  EXPECT_FALSE(LoadNodeConfig(cm.path())->Enabled("qos"));
}

// ------------------------------------------------------------------ Redact --

TEST(Redact, HidesSecretValuesAndNothingElse) {
  Json in = {
      {"access_key", "LTAI-key"},
      {"secret_key", "s3cr3t"},
      {"AccessKeyId", "LTAI-key"},
      {"ACCESS_KEY_SECRET", "s3cr3t"},
      {"nested", {{"password", "pw"}, {"sts_token", "tok"}, {"private_key", "-----BEGIN"},
                  {"credentials", {{"id", "x"}}}}},
      {"list", Json::array({{{"secret", "s"}, {"name", "n"}}})},
      {"credential_path", "/etc/trellis/cred"},
      {"token_file", "/var/run/token"},
      {"use_token", true},
      {"secret_key_unset", ""},
      {"password_none", nullptr},
      {"private_ip", "10.0.0.5"},
      {"region", "cn-hangzhou"},
      {"security_group", "sg-1"},
  };
  Json out = Redact(in);
  EXPECT_EQ(out["access_key"], "<redacted>");
  EXPECT_EQ(out["secret_key"], "<redacted>");
  EXPECT_EQ(out["AccessKeyId"], "<redacted>");
  EXPECT_EQ(out["ACCESS_KEY_SECRET"], "<redacted>");
  EXPECT_EQ(out["nested"]["password"], "<redacted>");
  EXPECT_EQ(out["nested"]["sts_token"], "<redacted>");
  EXPECT_EQ(out["nested"]["private_key"], "<redacted>");
  EXPECT_EQ(out["nested"]["credentials"], "<redacted>");  // a whole secret object goes
  EXPECT_EQ(out["list"][0]["secret"], "<redacted>");
  EXPECT_EQ(out["list"][0]["name"], "n");
  // Locations of secrets, flags about them and absent values are not secrets.
  EXPECT_EQ(out["credential_path"], "/etc/trellis/cred");
  EXPECT_EQ(out["token_file"], "/var/run/token");
  EXPECT_EQ(out["use_token"], true);
  EXPECT_EQ(out["secret_key_unset"], "");
  EXPECT_TRUE(out["password_none"].is_null());
  EXPECT_EQ(out["private_ip"], "10.0.0.5");
  EXPECT_EQ(out["region"], "cn-hangzhou");
  EXPECT_EQ(out["security_group"], "sg-1");
  EXPECT_EQ(out.dump().find("s3cr3t"), std::string::npos);
  EXPECT_EQ(out.dump().find("LTAI"), std::string::npos);
}

TEST(Redact, TheGuidesEniConfWithKeysFilledIn) {
  Json eni = Json::parse(kEniConf);
  eni["access_key"] = "LTAI5tExampleKey";
  eni["secret_key"] = "ExampleSecretValue";
  std::vector<std::string> w;
  auto doc = TerwayToNodeConfig({{"eni_conf", eni.dump()}}, &w);
  ASSERT_TRUE(doc.ok());
  auto cfg = NodeConfigFromJson(*doc, "x");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  std::string shown = Redact(NodeConfigToJson(*cfg)).dump();
  EXPECT_EQ(shown.find("LTAI5tExampleKey"), std::string::npos);
  EXPECT_EQ(shown.find("ExampleSecretValue"), std::string::npos);
  EXPECT_NE(shown.find("vsw-xxxxxxxxx"), std::string::npos);
}

}  // namespace
}  // namespace trellis
