// The qos module's config and per-pod limits: units, precedence, and every
// refusal naming its field.
#include <gtest/gtest.h>

#include "spec.h"

namespace trellis::qos {
namespace {

using sdk::Json;

std::string ErrorOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const sdk::Error& e) {
    EXPECT_EQ(e.code(), TRELLIS_E_INVALID) << e.what();
    return e.what();
  }
  return "";
}

TEST(QosBandwidth, Units) {
  EXPECT_EQ(ParseBandwidth(Json("100Mbps"), "f"), 100'000'000u);
  EXPECT_EQ(ParseBandwidth(Json("1Gbps"), "f"), 1'000'000'000u);
  EXPECT_EQ(ParseBandwidth(Json("500M"), "f"), 500'000'000u);
  EXPECT_EQ(ParseBandwidth(Json("10mbit"), "f"), 10'000'000u);
  EXPECT_EQ(ParseBandwidth(Json("1.5G"), "f"), 1'500'000'000u);
  EXPECT_EQ(ParseBandwidth(Json("64k"), "f"), 64'000u);
  EXPECT_EQ(ParseBandwidth(Json("1Mi"), "f"), 1'048'576u);
  EXPECT_EQ(ParseBandwidth(Json("2 Gbit/s"), "f"), 2'000'000'000u);
  EXPECT_EQ(ParseBandwidth(Json("4Tbps"), "f"), 4'000'000'000'000u);
  EXPECT_EQ(ParseBandwidth(Json(25'000'000), "f"), 25'000'000u);
  EXPECT_EQ(ParseBandwidth(Json("1000"), "f"), 1000u);
}

TEST(QosBandwidth, RefusalsNameTheField) {
  auto err = [](const Json& v) { return ErrorOf([&] { ParseBandwidth(v, "my_field"); }); };
  EXPECT_EQ(err(Json("-5Mbps")).rfind("my_field: '-5Mbps' is negative", 0), 0u)
      << err(Json("-5Mbps"));
  EXPECT_NE(err(Json("fast")).find("my_field: 'fast' is not a bandwidth"), std::string::npos);
  EXPECT_NE(err(Json("5Tbps")).find("above the maximum of 4Tbps"), std::string::npos);
  EXPECT_NE(err(Json("4.1T")).find("my_field"), std::string::npos);
  EXPECT_NE(err(Json("0")).find("not a positive bandwidth"), std::string::npos);
  EXPECT_NE(err(Json("100")).find("below the minimum"), std::string::npos);
  EXPECT_NE(err(Json("10m")).find("ambiguous"), std::string::npos);
  EXPECT_NE(err(Json("10MBps")).find("bytes per second"), std::string::npos);
  EXPECT_NE(err(Json("10 Mfoo")).find("not a bandwidth"), std::string::npos);
  EXPECT_NE(err(Json(-3)).find("not a positive"), std::string::npos);
  EXPECT_NE(err(Json(true)).find("my_field"), std::string::npos);
}

TEST(QosConfig, TerwayQosConfParses) {
  // Terway's qos_conf, with bandwidth_limit flattened by the host.
  Json j = Json::parse(R"({
    "default_egress_bandwidth": "100Mbps", "default_ingress_bandwidth": "100Mbps",
    "priority_classes": {
      "high_priority": {"egress_bandwidth": "1Gbps", "ingress_bandwidth": "1Gbps", "tc_class_id": 1},
      "medium_priority": {"egress_bandwidth": "500Mbps", "ingress_bandwidth": "500Mbps", "tc_class_id": 2},
      "low_priority": {"egress_bandwidth": "100Mbps", "ingress_bandwidth": "100Mbps", "tc_class_id": 3}
    }})");
  Config c = Config::Parse(j);
  EXPECT_EQ(c.default_rate[kEgress], 100'000'000u);
  EXPECT_EQ(c.default_rate[kIngress], 100'000'000u);
  ASSERT_EQ(c.classes.size(), 3u);
  EXPECT_EQ(c.FindClass("medium_priority")->tc_class_id, 2u);
  EXPECT_EQ(c.FindClass("high_priority")->rate[kEgress], 1'000'000'000u);
  EXPECT_FALSE(c.node_rate[kEgress]);
  EXPECT_FALSE(c.DefaultClassRate(kEgress));
  EXPECT_EQ(Config::Parse(Json::object()).classes.size(), 0u);
}

TEST(QosConfig, Refusals) {
  auto err = [](const char* text) { return ErrorOf([&] { Config::Parse(Json::parse(text)); }); };
  EXPECT_NE(err(R"({"default_egress_bandwidth": "-5Mbps"})").find("default_egress_bandwidth: "),
            std::string::npos);
  EXPECT_NE(
      err(R"({"default_ingress_bandwidth": "fast"})").find("default_ingress_bandwidth: 'fast'"),
      std::string::npos);
  EXPECT_NE(err(R"({"node_egress_bandwidth": "5Tbps"})").find("node_egress_bandwidth"),
            std::string::npos);
  EXPECT_NE(err(R"({"bandwidth": "1G"})").find("bandwidth: unknown key"), std::string::npos);
  EXPECT_NE(err(R"({"priority_classes": {"a": {"egress_bandwidth": "1G"}}})")
                .find("priority_classes.a.tc_class_id: required"),
            std::string::npos);
  EXPECT_NE(err(R"({"priority_classes": {"a": {"egress_bandwidth": "1G", "tc_class_id": 0}}})")
                .find("priority_classes.a.tc_class_id"),
            std::string::npos);
  EXPECT_NE(err(R"({"priority_classes": {"a": {"egress_bandwidth": "1G", "tc_class_id": 256}}})")
                .find("from 1 to 255"),
            std::string::npos);
  EXPECT_NE(err(R"({"priority_classes": {"a": {"egress_bandwidth": "1G", "tc_class_id": 1},
                                         "b": {"egress_bandwidth": "1G", "tc_class_id": 1}}})")
                .find("priority_classes.b.tc_class_id: 1 is already used by class a"),
            std::string::npos);
  EXPECT_NE(
      err(R"({"priority_classes": {"a": {"tc_class_id": 1}}})").find("needs egress_bandwidth"),
      std::string::npos);
  EXPECT_NE(err(R"({"priority_classes": {"a": {"egress_bandwidth": "fast", "tc_class_id": 1}}})")
                .find("priority_classes.a.egress_bandwidth: 'fast'"),
            std::string::npos);
  EXPECT_NE(err(R"({"priority_classes": {"a b": {"egress_bandwidth": "1G", "tc_class_id": 1}}})")
                .find("priority_classes.a b"),
            std::string::npos);
  EXPECT_NE(err(R"({"priority_classes": {"a": {"egress_bandwidth": "1G", "tc_class_id": 1,
                                               "priority": 9}}})")
                .find("priority_classes.a.priority"),
            std::string::npos);
  EXPECT_NE(err(R"({"node_egress_bandwidth": "1G",
                    "priority_classes": {"a": {"egress_bandwidth": "800M", "tc_class_id": 1},
                                         "b": {"egress_bandwidth": "400M", "tc_class_id": 2}}})")
                .find("egress rates of the classes add up to 1.2Gbit, more than "
                      "node_egress_bandwidth (1Gbit)"),
            std::string::npos);
  EXPECT_NE(err(R"({"queue_latency": "0ms"})").find("queue_latency"), std::string::npos);
  EXPECT_NE(err(R"({"stats_interval": "soon"})").find("stats_interval"), std::string::npos);
}

TEST(QosConfig, DefaultClassGetsWhatTheClassesLeave) {
  Config c = Config::Parse(Json::parse(R"({"node_egress_bandwidth": "1G",
      "priority_classes": {"a": {"egress_bandwidth": "600M", "tc_class_id": 1},
                           "b": {"egress_bandwidth": "400M", "ingress_bandwidth": "1M", "tc_class_id": 2}}})"));
  EXPECT_EQ(c.DefaultClassRate(kEgress), 10'000'000u);  // nothing left: the 1% floor
  EXPECT_FALSE(c.DefaultClassRate(kIngress));           // no node limit for ingress
  Config d = Config::Parse(Json::parse(R"({"node_egress_bandwidth": "1G",
      "priority_classes": {"a": {"egress_bandwidth": "300M", "tc_class_id": 1}}})"));
  EXPECT_EQ(d.DefaultClassRate(kEgress), 700'000'000u);
}

PodInputs Inputs(const Json& bandwidth, std::map<std::string, std::string> annotations = {},
                 std::string args_class = "") {
  PodInputs in;
  in.bandwidth = bandwidth;
  in.annotations = std::move(annotations);
  in.args_class = std::move(args_class);
  return in;
}

const char* kConfig = R"({"default_egress_bandwidth": "100Mbps", "default_ingress_bandwidth": "50M",
  "priority_classes": {"high": {"egress_bandwidth": "1Gbps", "tc_class_id": 1},
                       "low": {"egress_bandwidth": "10M", "ingress_bandwidth": "10M", "tc_class_id": 3}}})";

TEST(QosResolve, Precedence) {
  Config c = Config::Parse(Json::parse(kConfig));
  // Nothing: the defaults.
  PodSpec s = Resolve(Inputs(nullptr), c);
  EXPECT_EQ(s.limit[kEgress]->rate, 100'000'000u);
  EXPECT_EQ(s.limit[kEgress]->source, "default");
  EXPECT_EQ(s.limit[kIngress]->rate, 50'000'000u);
  // Annotations over defaults.
  s = Resolve(Inputs(nullptr, {{"kubernetes.io/egress-bandwidth", "10M"}}), c);
  EXPECT_EQ(s.limit[kEgress]->rate, 10'000'000u);
  EXPECT_EQ(s.limit[kEgress]->source, "annotation");
  EXPECT_EQ(s.limit[kIngress]->source, "default");
  // The capability over annotations; one direction only falls through.
  s = Resolve(Inputs(Json{{"egressRate", 20'000'000}, {"egressBurst", 800'000}},
                     {{"kubernetes.io/egress-bandwidth", "10M"},
                      {"kubernetes.io/ingress-bandwidth", "5M"}}),
              c);
  EXPECT_EQ(s.limit[kEgress]->rate, 20'000'000u);
  EXPECT_EQ(s.limit[kEgress]->burst, 100'000u);
  EXPECT_EQ(s.limit[kEgress]->source, "runtimeConfig.bandwidth");
  EXPECT_EQ(s.limit[kIngress]->rate, 5'000'000u);
  // kubelet's "no burst" (MaxInt32 bits) gets the default burst.
  s = Resolve(Inputs(Json{{"ingressRate", 10'000'000}, {"ingressBurst", 2147483647}}), c);
  EXPECT_EQ(s.limit[kIngress]->burst, DefaultBurst(10'000'000));
  // A class bounds its pods itself: no default in the directions it covers.
  s = Resolve(Inputs(nullptr, {{"trellis.io/qos-class", "high"}}), c);
  EXPECT_EQ(s.class_name, "high");
  EXPECT_FALSE(s.limit[kEgress]);
  EXPECT_EQ(s.limit[kIngress]->source, "default");  // high has no ingress rate
  // Args over the annotation.
  s = Resolve(Inputs(nullptr, {{"trellis.io/qos-class", "high"}}, "low"), c);
  EXPECT_EQ(s.class_name, "low");
  EXPECT_FALSE(s.limit[kIngress]);
  // A pod limit inside a class stays.
  s = Resolve(
      Inputs(nullptr, {{"trellis.io/qos-class", "low"}, {"kubernetes.io/egress-bandwidth", "1M"}}),
      c);
  EXPECT_EQ(s.limit[kEgress]->rate, 1'000'000u);
}

TEST(QosResolve, RefusalsNameTheField) {
  Config c = Config::Parse(Json::parse(kConfig));
  auto err = [&](const PodInputs& in) { return ErrorOf([&] { Resolve(in, c); }); };
  EXPECT_NE(err(Inputs(Json{{"ingressRate", -5}}))
                .find("runtimeConfig.bandwidth.ingressRate: -5 is negative"),
            std::string::npos);
  EXPECT_NE(err(Inputs(Json{{"egressRate", "fast"}})).find("runtimeConfig.bandwidth.egressRate"),
            std::string::npos);
  EXPECT_NE(err(Inputs(Json{{"egressRate", 5e12}})).find("above the maximum of 4Tbps"),
            std::string::npos);
  std::string small = err(Inputs(Json{{"ingressRate", 10'000'000}, {"ingressBurst", 8000}}));
  EXPECT_NE(small.find("runtimeConfig.bandwidth.ingressBurst: 8000 bits (1000 bytes) is smaller "
                       "than one full-size packet (MTU 1500"),
            std::string::npos)
      << small;
  EXPECT_NE(err(Inputs(Json{{"ingressBurst", 80000}})).find("ingressBurst: is set but ingressRate"),
            std::string::npos);
  EXPECT_NE(err(Inputs(Json{{"egressRate", 1'000'000}, {"egressBurst", 2'000'000'000}}))
                .find("egressBurst"),
            std::string::npos);
  EXPECT_NE(err(Inputs(nullptr, {{"kubernetes.io/ingress-bandwidth", "-5Mbps"}}))
                .find("annotation kubernetes.io/ingress-bandwidth: '-5Mbps' is negative"),
            std::string::npos);
  EXPECT_NE(
      err(Inputs(nullptr, {{"trellis.io/qos-class", "gold"}}))
          .find(
              "annotation trellis.io/qos-class: unknown priority class 'gold' (known: high, low)"),
      std::string::npos);
  EXPECT_NE(err(Inputs(nullptr, {}, "gold")).find("args.trellis.io/qos-class"), std::string::npos);
  EXPECT_NE(err(Inputs(Json("10M"))).find("runtimeConfig.bandwidth: expected an object"),
            std::string::npos);
  // The MTU decides what is too small.
  PodInputs jumbo = Inputs(Json{{"ingressRate", 10'000'000}, {"ingressBurst", 8000 * 8}});
  EXPECT_EQ(Resolve(jumbo, c).limit[kIngress]->burst, 8000u);
  jumbo.mtu = 9000;
  EXPECT_NE(err(jumbo).find("MTU 9000"), std::string::npos);
}

TEST(QosResolve, InputsComeFromThePod) {
  Config c = Config::Parse(Json::parse(kConfig));
  sdk::Pod pod;
  pod.runtime_config = R"({"bandwidth": {"egressRate": 1000000, "egressBurst": 100000},
                           "io.kubernetes.cri.pod-annotations": {"x": "y"}})";
  pod.annotations = {{"trellis.io/qos-class", "high"}, {"unrelated", "z"}};
  pod.cni_args = R"({"cni": {"trellis.io/qos-class": "low"}})";
  pod.mtu = 1450;
  PodInputs in = PodInputs::FromPod(pod, c);
  EXPECT_EQ(in.bandwidth["egressRate"], 1000000);
  EXPECT_EQ(in.annotations.size(), 1u);
  EXPECT_EQ(in.args_class, "low");
  EXPECT_EQ(in.mtu, 1450u);
  PodInputs back = PodInputs::FromJson(Json::parse(in.ToJson().dump()));
  EXPECT_EQ(back.args_class, "low");
  EXPECT_EQ(back.bandwidth, in.bandwidth);
  EXPECT_EQ(Resolve(back, c).class_name, "low");
}

}  // namespace
}  // namespace trellis::qos
