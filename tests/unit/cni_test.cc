// The CNI protocol edge: what the runtime passes is any bytes; what trellis
// prints and forwards must stay valid JSON/protobuf (UTF-8).
#include <gtest/gtest.h>

#include <map>

#include "core/cni/cni.h"
#include "core/utf8.h"

namespace trellis {
namespace {

std::optional<cni::Error> ReadEnv(const std::map<std::string, std::string>& vars,
                                  cni::Environment* env) {
  return cni::ReadEnvironment(
      [&](const char* k) -> const char* {
        auto it = vars.find(k);
        return it == vars.end() ? nullptr : it->second.c_str();
      },
      env);
}

TEST(Utf8, Validation) {
  EXPECT_TRUE(ValidUtf8("plain ascii"));
  EXPECT_TRUE(ValidUtf8("caf\xc3\xa9 \xe4\xb8\x96 \xf0\x9f\x98\x80"));
  EXPECT_FALSE(ValidUtf8("\xff"));
  EXPECT_FALSE(ValidUtf8("caf\xc3"));            // truncated
  EXPECT_FALSE(ValidUtf8("\xc0\xaf"));            // overlong '/'
  EXPECT_FALSE(ValidUtf8("\xe0\x80\xaf"));        // overlong
  EXPECT_FALSE(ValidUtf8("\xed\xa0\x80"));        // a surrogate
  EXPECT_FALSE(ValidUtf8("\xf4\x90\x80\x80"));    // above U+10FFFF
  EXPECT_EQ(SanitizeUtf8("a\xff" "b\xc3"), "a\xef\xbf\xbd" "b\xef\xbf\xbd");
  EXPECT_EQ(SanitizeUtf8("caf\xc3\xa9"), "caf\xc3\xa9");
}

TEST(CniEnvironment, NonUtf8VariablesAreRefusedByName) {
  cni::Environment env;
  auto e = ReadEnv({{"CNI_COMMAND", "ADD"},
                    {"CNI_CONTAINERID", "abc"},
                    {"CNI_NETNS", "/var/run/netns/x"},
                    {"CNI_IFNAME", "eth0"},
                    {"CNI_ARGS", "K8S_POD_NAME=caf\xc3"}},
                   &env);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code, cni::kInvalidEnvironment);
  EXPECT_EQ(e->msg, "CNI_ARGS is not valid UTF-8");
}

TEST(CniEnvironment, ErrorsQuotingInputPrintAsJson) {
  cni::Environment env;
  auto e = ReadEnv({{"CNI_COMMAND", "ADD\xff"}}, &env);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->msg, "CNI_COMMAND is not valid UTF-8");
  cni::Error quoting{cni::kInvalidEnvironment, "CNI_ARGS: 'x\xff' is not KEY=VALUE", "d\xc3"};
  cni::Json j = cni::ErrorJson(quoting, "1.0.0");
  EXPECT_NO_THROW((void)j.dump());
  EXPECT_EQ(j["msg"], "CNI_ARGS: 'x\xef\xbf\xbd' is not KEY=VALUE");
  EXPECT_EQ(j["details"], "d\xef\xbf\xbd");
}

TEST(CniArgs, NonUtf8IsRefused) {
  cni::PodArgs args;
  auto e = cni::ParseCniArgs("IgnoreUnknown=1;X=\xff", &args);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->msg, "CNI_ARGS is not valid UTF-8");
}

}  // namespace
}  // namespace trellis
