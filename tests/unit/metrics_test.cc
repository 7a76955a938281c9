// Prometheus text exposition of the metrics registry: names, escaping,
// histograms; the output is checked by promtool as Prometheus reads it.
#include <gtest/gtest.h>

#include "core/metrics.h"
#include "harness.h"

namespace trellis {
namespace {

// `promtool check metrics` parses and lints exposition text; exit 0: clean.
void ExpectPromtoolAccepts(const std::string& text) {
  auto r = test::Run({"promtool", "check", "metrics"}, {}, text);
  EXPECT_EQ(r.exit_code, 0) << "promtool: " << r.out << r.err << "\n--- text ---\n" << text;
}

TEST(Metrics, RegistrationRulesNameTheProblem) {
  MetricsRegistry m;
  auto msg = [](const StatusOr<uint32_t>& r) {
    return r.ok() ? std::string("(accepted)") : std::string(r.status().message());
  };
  EXPECT_EQ(msg(m.Register(MetricType::kGauge, "bad-name", "h", {})),
            "metric name 'bad-name' is not a Prometheus name");
  EXPECT_EQ(msg(m.Register(MetricType::kGauge, "1st", "h", {})),
            "metric name '1st' is not a Prometheus name");
  EXPECT_EQ(msg(m.Register(MetricType::kCounter, "trellis_things", "h", {})),
            "counter 'trellis_things' must end in _total");
  EXPECT_EQ(msg(m.Register(MetricType::kGauge, "g", "h", {"bad-label"})),
            "metric 'g': bad label name 'bad-label'");
  EXPECT_EQ(msg(m.Register(MetricType::kGauge, "g", "h", {"__reserved"})),
            "metric 'g': bad label name '__reserved'");
  EXPECT_EQ(msg(m.Register(MetricType::kHistogram, "h_seconds", "h", {"le"})),
            "metric 'h_seconds': bad label name 'le'");
  EXPECT_EQ(msg(m.Register(MetricType::kHistogram, "h_seconds", "h", {}, {1, 1})),
            "histogram 'h_seconds': buckets must ascend");
  ASSERT_TRUE(m.Register(MetricType::kGauge, "g", "h", {}).ok());
  EXPECT_EQ(msg(m.Register(MetricType::kCounter, "g_total", "h", {})), "(accepted)");
  EXPECT_EQ(msg(m.Register(MetricType::kGauge, "g", "other help", {})),
            "metric 'g' is registered already");
}

TEST(Metrics, RendersCountersAndGaugesSortedByName) {
  MetricsRegistry m;
  auto b = m.Register(MetricType::kGauge, "trellis_things", "Things.", {"kind"});
  auto a = m.Register(MetricType::kCounter, "trellis_a_total", "A events.", {});
  ASSERT_TRUE(a.ok() && b.ok());
  m.Add(*a, {}, 1);
  m.Add(*a, {}, 2.5);
  m.Set(*b, {"y"}, 2);
  m.Set(*b, {"x"}, -1);
  m.Set(*b, {"z"}, 1e21);
  EXPECT_EQ(m.Render(),
            "# HELP trellis_a_total A events.\n"
            "# TYPE trellis_a_total counter\n"
            "trellis_a_total 3.5\n"
            "# HELP trellis_things Things.\n"
            "# TYPE trellis_things gauge\n"
            "trellis_things{kind=\"x\"} -1\n"
            "trellis_things{kind=\"y\"} 2\n"
            "trellis_things{kind=\"z\"} 1e+21\n");
  ExpectPromtoolAccepts(m.Render());
}

TEST(Metrics, EscapesLabelValuesAndHelp) {
  MetricsRegistry m;
  auto g = m.Register(MetricType::kGauge, "trellis_g", "Help with \\ and\nnewline \"quotes\".",
                      {"path", "msg"});
  ASSERT_TRUE(g.ok());
  m.Set(*g, {"C:\\dir", "say \"hi\"\nbye"}, 1);
  EXPECT_EQ(m.Render(),
            "# HELP trellis_g Help with \\\\ and\\nnewline \"quotes\".\n"
            "# TYPE trellis_g gauge\n"
            "trellis_g{path=\"C:\\\\dir\",msg=\"say \\\"hi\\\"\\nbye\"} 1\n");
  ExpectPromtoolAccepts(m.Render());
}

TEST(Metrics, SpecialValues) {
  MetricsRegistry m;
  auto g = m.Register(MetricType::kGauge, "trellis_g", "h", {"v"});
  m.Set(*g, {"nan"}, std::nan(""));
  m.Set(*g, {"pinf"}, INFINITY);
  m.Set(*g, {"ninf"}, -INFINITY);
  m.Set(*g, {"small"}, 0.001);
  EXPECT_EQ(m.Render(),
            "# HELP trellis_g h\n# TYPE trellis_g gauge\n"
            "trellis_g{v=\"nan\"} NaN\n"
            "trellis_g{v=\"ninf\"} -Inf\n"
            "trellis_g{v=\"pinf\"} +Inf\n"
            "trellis_g{v=\"small\"} 0.001\n");
  ExpectPromtoolAccepts(m.Render());
}

// Buckets are cumulative and inclusive of their bound (le = "less or equal").
TEST(Metrics, HistogramBucketsSumAndCount) {
  MetricsRegistry m;
  auto h = m.Register(MetricType::kHistogram, "trellis_op_seconds", "Op time.", {"op"},
                      {0.1, 0.5, 1});
  ASSERT_TRUE(h.ok());
  for (double v : {0.05, 0.1, 0.3, 2.0}) m.Observe(*h, {"add"}, v);
  EXPECT_EQ(m.Render(),
            "# HELP trellis_op_seconds Op time.\n"
            "# TYPE trellis_op_seconds histogram\n"
            "trellis_op_seconds_bucket{op=\"add\",le=\"0.1\"} 2\n"
            "trellis_op_seconds_bucket{op=\"add\",le=\"0.5\"} 3\n"
            "trellis_op_seconds_bucket{op=\"add\",le=\"1\"} 3\n"
            "trellis_op_seconds_bucket{op=\"add\",le=\"+Inf\"} 4\n"
            "trellis_op_seconds_sum{op=\"add\"} 2.45\n"
            "trellis_op_seconds_count{op=\"add\"} 4\n");
  ExpectPromtoolAccepts(m.Render());
}

TEST(Metrics, HistogramWithoutLabelsUsesTheLatencyBuckets) {
  MetricsRegistry m;
  auto h = m.Register(MetricType::kHistogram, "trellis_x_seconds", "X.", {});
  m.Observe(*h, {}, 0.003);
  std::string text = m.Render();
  EXPECT_NE(text.find("trellis_x_seconds_bucket{le=\"0.0025\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("trellis_x_seconds_bucket{le=\"0.005\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("trellis_x_seconds_bucket{le=\"+Inf\"} 1\n"), std::string::npos) << text;
  size_t buckets = 0;
  for (size_t p = 0; (p = text.find("_bucket{", p)) != std::string::npos; ++p) buckets++;
  EXPECT_EQ(buckets, MetricsRegistry::LatencyBuckets().size() + 1);
  ExpectPromtoolAccepts(text);
}

TEST(Metrics, WrongLabelCountsAndUnknownIdsAreIgnored) {
  MetricsRegistry m;
  auto g = m.Register(MetricType::kGauge, "trellis_g", "h", {"a", "b"});
  m.Set(*g, {"only-one"}, 1);
  m.Set(*g + 100, {"x", "y"}, 1);
  m.Observe(*g, {"x", "y"}, 1);  // not a histogram
  EXPECT_EQ(m.Render(), "# HELP trellis_g h\n# TYPE trellis_g gauge\n");
  ExpectPromtoolAccepts(m.Render());
}

TEST(Metrics, ForgetClearAndUnregisterOwner) {
  MetricsRegistry m;
  auto g = m.Register(MetricType::kGauge, "trellis_g", "h", {"k"});
  auto mine = m.Register(MetricType::kGauge, "trellis_qos_classes", "h", {}, {}, "qos");
  m.Set(*g, {"a"}, 1);
  m.Set(*g, {"b"}, 2);
  m.Set(*mine, {}, 3);
  m.Forget(*g, {"a"});
  std::string text = m.Render();
  EXPECT_EQ(text.find("k=\"a\""), std::string::npos);
  EXPECT_NE(text.find("trellis_g{k=\"b\"} 2"), std::string::npos);
  EXPECT_NE(text.find("trellis_qos_classes 3"), std::string::npos);
  m.UnregisterOwner("qos");
  EXPECT_EQ(m.Render().find("trellis_qos_classes"), std::string::npos);
  // The name is free again: a module enabled anew registers it again.
  EXPECT_TRUE(m.Register(MetricType::kGauge, "trellis_qos_classes", "h", {}, {}, "qos").ok());
  m.Clear(*g);
  EXPECT_EQ(m.Render().find("trellis_g{"), std::string::npos);
}

}  // namespace
}  // namespace trellis
