// The cloud clients of plugins/common/aliyun against fakes: the documented
// signature vector, request signing, retries and back-off, call timeouts,
// rate limits, concurrency bound, pagination, secrets in errors, metadata
// retries and caching, credential sources and STS refresh.
#include <gtest/gtest.h>
#include <httplib.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "aliyun/credentials.h"
#include "aliyun/ecs.h"
#include "aliyun/metadata.h"
#include "aliyun/rate_limiter.h"
#include "aliyun/rpc_client.h"
#include "aliyun/signer.h"
#include "fakes.h"
#include "harness.h"

namespace trellis::eni::testing {
namespace {

using aliyun::CloudError;
using aliyun::HttpRequest;
using aliyun::HttpResponse;
using aliyun::Params;
using std::chrono::milliseconds;
using Json = nlohmann::json;

HttpResponse Ok(const Json& body) { return {200, body.dump(), "", false}; }
HttpResponse Err(int status, const std::string& code, const std::string& message = "no") {
  return {status,
          Json{{"RequestId", "req-1"}, {"HostId", "ecs"}, {"Code", code}, {"Message", message},
               {"Recommend", "https://api.aliyun.com/troubleshoot"}}
              .dump(),
          "", false};
}

struct Recorder : aliyun::RpcObserver {
  void OnAttempt(const std::string& action, const std::string& code, double) override {
    std::lock_guard l(mu);
    attempts.push_back(action + ":" + code);
  }
  std::mutex mu;
  std::vector<std::string> attempts;
};

struct Rig {
  explicit Rig(FakeTransport::Handler h, aliyun::Credentials c = {"LTAI-test-key", "test-secret",
                                                                   "", std::nullopt}) {
    transport = std::make_shared<FakeTransport>(std::move(h));
    creds = aliyun::MakeStaticCredentials(c, "test");
    aliyun::RpcOptions o;
    o.endpoint = aliyun::Endpoint::Parse("http://127.0.0.1:18080", "ecs_endpoint",
                                         aliyun::Endpoint::PlainHttp::kLoopbackOnly);
    o.region = "cn-hangzhou";
    o.default_limit = {0, 1};  // unlimited unless a test says otherwise
    options = o;
  }
  aliyun::RpcClient& Client() {
    if (!client) client = std::make_unique<aliyun::RpcClient>(options, transport, creds, &clock, &rec);
    return *client;
  }
  FakeClock clock;
  Recorder rec;
  std::shared_ptr<FakeTransport> transport;
  std::shared_ptr<aliyun::CredentialProvider> creds;
  aliyun::RpcOptions options;
  std::unique_ptr<aliyun::RpcClient> client;
};

// ---------------------------------------------------------------- signature --

TEST(AliyunSigner, DocumentedExampleVector) {
  // The example of Alibaba Cloud's "Signature mechanism" (RPC, version 1.0):
  // AccessKeySecret "testsecret", DescribeRegions.
  Params p = {{"Timestamp", "2016-02-23T12:46:24Z"},
              {"Format", "XML"},
              {"AccessKeyId", "testid"},
              {"Action", "DescribeRegions"},
              {"SignatureMethod", "HMAC-SHA1"},
              {"SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"},
              {"Version", "2014-05-26"},
              {"SignatureVersion", "1.0"}};
  EXPECT_EQ(aliyun::StringToSign("GET", p),
            "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML"
            "%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-"
            "4e0ad82fd6cf%26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z"
            "%26Version%3D2014-05-26");
  EXPECT_EQ(aliyun::SignRpc("GET", p, "testsecret"), "OLeaidS1JvxuMvnyHOwuJ+uX5qY=");
  // The method is part of what is signed.
  EXPECT_NE(aliyun::SignRpc("POST", p, "testsecret"), "OLeaidS1JvxuMvnyHOwuJ+uX5qY=");
}

TEST(AliyunSigner, PercentEncodingIsRfc3986) {
  EXPECT_EQ(aliyun::PercentEncode("AZaz09-_.~"), "AZaz09-_.~");
  EXPECT_EQ(aliyun::PercentEncode("a b"), "a%20b");  // not '+'
  EXPECT_EQ(aliyun::PercentEncode("*"), "%2A");
  EXPECT_EQ(aliyun::PercentEncode("/=&+:"), "%2F%3D%26%2B%3A");
  EXPECT_EQ(aliyun::PercentEncode("\xc3\xa9"), "%C3%A9");  // UTF-8 bytes, upper-case hex
  // Sorting is by byte: upper case before lower case.
  EXPECT_EQ(aliyun::CanonicalQuery({{"b", "1"}, {"B", "2"}, {"a", "x y"}}), "B=2&a=x%20y&b=1");
}

TEST(AliyunRpc, RequestsAreSignedAndCarryTheCommonParameters) {
  Rig rig([](const HttpRequest&) { return Ok({{"RequestId", "r"}}); });
  rig.Client().Call("DescribeVSwitches", {{"VpcId", "vpc-test"}, {"Name", "a b*c"}},
                    aliyun::Idempotency::kRead);
  rig.Client().Call("DescribeVSwitches", {{"VpcId", "vpc-test"}}, aliyun::Idempotency::kRead);
  ASSERT_EQ(rig.transport->requests().size(), 2u);
  auto r = rig.transport->requests()[0];
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.scheme, "http");
  EXPECT_EQ(r.port, 18080);
  Params q = rig.transport->Query(0);
  EXPECT_EQ(q["Action"], "DescribeVSwitches");
  EXPECT_EQ(q["Version"], "2014-05-26");
  EXPECT_EQ(q["Format"], "JSON");
  EXPECT_EQ(q["AccessKeyId"], "LTAI-test-key");
  EXPECT_EQ(q["SignatureMethod"], "HMAC-SHA1");
  EXPECT_EQ(q["SignatureVersion"], "1.0");
  EXPECT_EQ(q["RegionId"], "cn-hangzhou");
  EXPECT_EQ(q["Name"], "a b*c");
  EXPECT_EQ(q["Timestamp"], "2023-11-14T22:13:20Z");  // the fake wall clock, ISO 8601 UTC
  EXPECT_FALSE(q.contains("SecurityToken"));
  EXPECT_FALSE(q.contains("ClientToken"));  // a read
  // The server's check: recompute over everything but Signature.
  std::string sig = q["Signature"];
  q.erase("Signature");
  EXPECT_EQ(aliyun::SignRpc("GET", q, "test-secret"), sig);
  // Every request has its own nonce.
  EXPECT_NE(rig.transport->Query(0)["SignatureNonce"], rig.transport->Query(1)["SignatureNonce"]);
  EXPECT_EQ(rig.transport->Query(0)["SignatureNonce"].size(), 36u);
}

TEST(AliyunRpc, WritesCarryOneClientTokenAcrossRetries) {
  int n = 0;
  Rig rig([&](const HttpRequest&) {
    return ++n < 3 ? Err(503, "ServiceUnavailable") : Ok({{"RequestId", "r"}});
  });
  rig.Client().Call("CreateNetworkInterface", {{"VSwitchId", "vsw-a"}},
                    aliyun::Idempotency::kWrite);
  ASSERT_EQ(rig.transport->requests().size(), 3u);
  std::string token = rig.transport->Query(0)["ClientToken"];
  EXPECT_EQ(token.size(), 36u);
  EXPECT_EQ(rig.transport->Query(1)["ClientToken"], token);
  EXPECT_EQ(rig.transport->Query(2)["ClientToken"], token);
  EXPECT_NE(rig.transport->Query(1)["SignatureNonce"], rig.transport->Query(2)["SignatureNonce"]);
  // A caller's token is kept as it is.
  rig.Client().Call("AttachNetworkInterface", {{"ClientToken", "mine-1"}},
                    aliyun::Idempotency::kWrite);
  EXPECT_EQ(rig.transport->Query(3)["ClientToken"], "mine-1");
}

TEST(AliyunRpc, ThrottlingIsRetriedWithExponentialBackoffAndJitter) {
  int n = 0;
  Rig rig([&](const HttpRequest&) {
    return ++n <= 3 ? Err(400, "Throttling.User", "Request was denied due to user flow control.")
                    : Ok({{"RequestId", "r"}, {"Value", 1}});
  });
  Json r = rig.Client().Call("DescribeNetworkInterfaces", {}, aliyun::Idempotency::kRead);
  EXPECT_EQ(r["Value"], 1);
  auto sleeps = rig.clock.sleeps();
  ASSERT_EQ(sleeps.size(), 3u);
  // Throttling waits from 1 s, doubling; jitter keeps each in [base/2, base].
  for (size_t i = 0; i < sleeps.size(); ++i) {
    auto base = milliseconds(1000) * (1 << i);
    EXPECT_GE(sleeps[i], base / 2) << i;
    EXPECT_LE(sleeps[i], base) << i;
  }
  EXPECT_EQ(rig.rec.attempts,
            (std::vector<std::string>{"DescribeNetworkInterfaces:Throttling.User",
                                      "DescribeNetworkInterfaces:Throttling.User",
                                      "DescribeNetworkInterfaces:Throttling.User",
                                      "DescribeNetworkInterfaces:OK"}));
}

TEST(AliyunRpc, RetriesBusyResourcesButNotClientErrors) {
  for (const char* code : {"OperationConflict", "IncorrectInstanceStatus", "ServiceUnavailable",
                           "InternalError", "LastTokenProcessing"}) {
    int n = 0;
    Rig rig([&](const HttpRequest&) { return ++n == 1 ? Err(400, code) : Ok({{"RequestId", "r"}}); });
    EXPECT_NO_THROW(rig.Client().Call("AttachNetworkInterface", {}, aliyun::Idempotency::kWrite))
        << code;
    EXPECT_EQ(n, 2) << code;
  }
  int n = 0;
  Rig rig([&](const HttpRequest&) {
    ++n;
    return Err(400, "InvalidVSwitchId.IpNotEnough", "The specified VSwitch has not enough IP.");
  });
  try {
    rig.Client().Call("AssignPrivateIpAddresses", {}, aliyun::Idempotency::kWrite);
    FAIL() << "no error";
  } catch (const CloudError& e) {
    EXPECT_EQ(e.kind(), CloudError::Kind::kApi);
    EXPECT_EQ(e.code(), "InvalidVSwitchId.IpNotEnough");
    EXPECT_EQ(e.http_status(), 400);
    EXPECT_EQ(e.request_id(), "req-1");
    EXPECT_TRUE(e.Is("InvalidVSwitchId"));
    std::string m = e.what();
    EXPECT_NE(m.find("AssignPrivateIpAddresses"), std::string::npos) << m;
    EXPECT_NE(m.find("InvalidVSwitchId.IpNotEnough"), std::string::npos) << m;
    EXPECT_NE(m.find("req-1"), std::string::npos) << m;
  }
  EXPECT_EQ(n, 1);
}

TEST(AliyunRpc, GivesUpAfterMaxAttemptsAndWithinTheCallTimeout) {
  {
    Rig rig([](const HttpRequest&) { return HttpResponse{0, "", "no answer within 10 ms", true}; });
    rig.options.max_attempts = 4;
    try {
      rig.Client().Call("DescribeInstanceTypes", {}, aliyun::Idempotency::kRead);
      FAIL();
    } catch (const CloudError& e) {
      EXPECT_EQ(e.kind(), CloudError::Kind::kTimeout);
      EXPECT_NE(std::string(e.what()).find("after 4 attempts"), std::string::npos) << e.what();
    }
    EXPECT_EQ(rig.transport->requests().size(), 4u);
  }
  {
    // Throttled for ever: the call's budget (3 s) ends the retries, not the
    // attempt count; every attempt's own timeout fits in what is left.
    Rig rig([](const HttpRequest&) { return Err(400, "Throttling"); });
    rig.options.call_timeout = milliseconds(3000);
    rig.options.max_attempts = 100;
    EXPECT_THROW(rig.Client().Call("DescribeInstanceTypes", {}, aliyun::Idempotency::kRead),
                 CloudError);
    EXPECT_LE(rig.transport->requests().size(), 3u);
    for (const auto& r : rig.transport->requests()) EXPECT_LE(r.timeout, milliseconds(3000));
  }
}

TEST(AliyunRpc, SecretsNeverAppearInErrors) {
  Rig rig(
      [](const HttpRequest&) {
        // A server quoting the request back (as SignatureDoesNotMatch does).
        return Err(400, "SignatureDoesNotMatch",
                   "string to sign: GET&%2F&SecurityToken%3Dsts-token-value%26... key "
                   "sts-secret-value&");
      },
      {"STS.key", "sts-secret-value", "sts-token-value", std::nullopt});
  try {
    rig.Client().Call("DescribeInstanceTypes", {}, aliyun::Idempotency::kRead);
    FAIL();
  } catch (const CloudError& e) {
    std::string m = e.what();
    EXPECT_EQ(m.find("sts-secret-value"), std::string::npos) << m;
    EXPECT_EQ(m.find("sts-token-value"), std::string::npos) << m;
    EXPECT_NE(m.find("<redacted>"), std::string::npos) << m;
  }
  EXPECT_EQ(rig.transport->Query(0)["SecurityToken"], "sts-token-value");
}

TEST(AliyunRpc, RefusedStsCredentialsAreRefreshedOnce) {
  struct Rotating : aliyun::CredentialProvider {
    aliyun::Credentials Get() override {
      return {"STS.k" + std::to_string(gen), "s" + std::to_string(gen), "t" + std::to_string(gen),
              std::nullopt};
    }
    void Invalidate() override { gen++; }
    std::string Source() const override { return "test"; }
    int gen = 1;
  };
  Rig rig([](const HttpRequest& r) {
    auto q = ParseQuery(r.target.substr(2));
    return q["SecurityToken"] == "t1" ? Err(400, "InvalidSecurityToken.Expired")
                                      : Ok({{"RequestId", "r"}});
  });
  auto rotating = std::make_shared<Rotating>();
  rig.creds = rotating;
  EXPECT_NO_THROW(rig.Client().Call("DescribeInstanceTypes", {}, aliyun::Idempotency::kRead));
  EXPECT_EQ(rotating->gen, 2);
  EXPECT_EQ(rig.transport->Query(1)["SecurityToken"], "t2");
  EXPECT_TRUE(rig.clock.sleeps().empty());  // no back-off for a refresh
}

TEST(AliyunRpc, PerActionRateLimitSpacesCalls) {
  Rig rig([](const HttpRequest&) { return Ok({{"RequestId", "r"}}); });
  rig.options.limits["CreateNetworkInterface"] = {2, 2};  // 2/s, burst 2
  for (int i = 0; i < 6; ++i) {
    rig.Client().Call("CreateNetworkInterface", {}, aliyun::Idempotency::kWrite);
  }
  // Burst of 2, then one every 500 ms: 4 waits of 500 ms.
  auto sleeps = rig.clock.sleeps();
  ASSERT_EQ(sleeps.size(), 4u);
  for (auto s : sleeps) EXPECT_EQ(std::chrono::duration_cast<milliseconds>(s).count(), 500);
  // Another action has its own bucket (the default: unlimited here).
  rig.Client().Call("DescribeVSwitches", {}, aliyun::Idempotency::kRead);
  EXPECT_EQ(rig.clock.sleeps().size(), 4u);
}

TEST(AliyunRateLimiter, RefusesAWaitPastTheDeadline) {
  FakeClock clock;
  aliyun::RateLimiter l(&clock, {1, 1}, {});
  EXPECT_TRUE(l.Acquire("A", clock.Now() + milliseconds(10)));
  EXPECT_FALSE(l.Acquire("A", clock.Now() + milliseconds(10)));  // next token in 1 s
  EXPECT_TRUE(l.Acquire("A", clock.Now() + std::chrono::seconds(2)));
  clock.Cancel();
  EXPECT_FALSE(l.Acquire("B", clock.Now() + std::chrono::seconds(2)));
}

TEST(AliyunRpc, ConcurrentCallsAreBounded) {
  std::atomic<int> in_flight{0}, peak{0};
  Rig rig([&](const HttpRequest&) {
    int now = ++in_flight;
    int p = peak.load();
    while (now > p && !peak.compare_exchange_weak(p, now)) {
    }
    std::this_thread::sleep_for(milliseconds(20));
    --in_flight;
    return Ok({{"RequestId", "r"}});
  });
  aliyun::RealClock real;
  rig.options.max_concurrent = 2;
  aliyun::RpcClient client(rig.options, rig.transport, rig.creds, &real);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] { client.Call("DescribeVSwitches", {}, aliyun::Idempotency::kRead); });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(rig.transport->requests().size(), 8u);
  EXPECT_LE(peak.load(), 2);
  EXPECT_GE(peak.load(), 1);
}

// ---------------------------------------------------------------- ECS API --

TEST(AliyunEcs, DescribeNetworkInterfacesFollowsEveryPage) {
  auto eni = [](int i) {
    return Json{{"NetworkInterfaceId", "eni-" + std::to_string(i)},
                {"Status", "InUse"},
                {"MacAddress", "00:16:3E:00:00:01"},
                {"PrivateIpAddress", "10.0.0.1"},
                {"PrivateIpSets",
                 {{"PrivateIpSet",
                   {{{"PrivateIpAddress", "10.0.0.1"}, {"Primary", true}},
                    {{"PrivateIpAddress", "10.0.0.2"}, {"Primary", false}}}}}},
                {"Tags", {{"Tag", {{{"TagKey", "k"}, {"TagValue", "v"}}}}}}};
  };
  Rig rig([&](const HttpRequest& r) {
    auto q = ParseQuery(r.target.substr(2));
    int page = std::stoi(q["PageNumber"]);
    int size = std::stoi(q["PageSize"]);
    Json list = Json::array();
    for (int i = (page - 1) * size; i < std::min(250, page * size); ++i) list.push_back(eni(i));
    return Ok({{"RequestId", "r"},
               {"TotalCount", 250},
               {"PageNumber", page},
               {"PageSize", size},
               {"NetworkInterfaceSets", {{"NetworkInterfaceSet", list}}}});
  });
  aliyun::EcsClient ecs(std::shared_ptr<aliyun::RpcClient>(&rig.Client(), [](auto*) {}));
  aliyun::EniQuery q = aliyun::EniQuery::ByTags({{"trellis.io/cluster", "c1"}});
  q.instance_id = "i-1";
  auto all = ecs.DescribeNetworkInterfaces(q);
  ASSERT_EQ(all.size(), 250u);
  EXPECT_EQ(rig.transport->requests().size(), 3u);
  EXPECT_EQ(all[0].mac, "00:16:3e:00:00:01");  // lower case
  EXPECT_EQ(all[0].private_ips, (std::vector<std::string>{"10.0.0.1", "10.0.0.2"}));
  EXPECT_EQ(all[0].tags.at("k"), "v");
  auto q0 = rig.transport->Query(0);
  EXPECT_EQ(q0["Tag.1.Key"], "trellis.io/cluster");
  EXPECT_EQ(q0["Tag.1.Value"], "c1");
  EXPECT_EQ(q0["InstanceId"], "i-1");
}

TEST(AliyunEcs, DescribeNetworkInterfacesFollowsNextToken) {
  Rig rig([&](const HttpRequest& r) {
    auto q = ParseQuery(r.target.substr(2));
    std::string token = q.contains("NextToken") ? q["NextToken"] : "";
    int start = token.empty() ? 0 : std::stoi(token);
    Json list = Json::array();
    for (int i = start; i < std::min(start + 100, 130); ++i) {
      list.push_back({{"NetworkInterfaceId", "eni-" + std::to_string(i)}});
    }
    return Ok({{"RequestId", "r"},
               {"NextToken", start + 100 < 130 ? std::to_string(start + 100) : ""},
               {"NetworkInterfaceSets", {{"NetworkInterfaceSet", list}}}});
  });
  aliyun::EcsClient ecs(std::shared_ptr<aliyun::RpcClient>(&rig.Client(), [](auto*) {}));
  EXPECT_EQ(ecs.DescribeNetworkInterfaces({}).size(), 130u);
  EXPECT_EQ(rig.transport->requests().size(), 2u);
  EXPECT_EQ(rig.transport->Query(1)["NextToken"], "100");
}

TEST(AliyunEcs, RequestParametersUseEcsNames) {
  Rig rig([](const HttpRequest& r) {
    auto q = ParseQuery(r.target.substr(2));
    if (q["Action"] == "CreateNetworkInterface") {
      return Ok({{"RequestId", "r"},
                 {"NetworkInterfaceId", "eni-1"},
                 {"MacAddress", "00:16:3E:AA:BB:CC"},
                 {"PrivateIpAddress", "192.168.10.5"},
                 {"Status", "Available"}});
    }
    if (q["Action"] == "AssignPrivateIpAddresses") {
      return Ok({{"RequestId", "r"},
                 {"AssignedPrivateIpAddressesSet",
                  {{"NetworkInterfaceId", "eni-1"},
                   {"PrivateIpSet", {{"PrivateIpAddress", {"192.168.10.6", "192.168.10.7"}}}}}}});
    }
    return Ok({{"RequestId", "r"}});
  });
  aliyun::EcsClient ecs(std::shared_ptr<aliyun::RpcClient>(&rig.Client(), [](auto*) {}));
  aliyun::CreateEniRequest req;
  req.vswitch_id = "vsw-a";
  req.security_groups = {"sg-1", "sg-2"};
  req.tags = {{"trellis.io/cluster", "c"}, {"team", "net"}};
  req.client_token = "tok-1";
  auto n = ecs.CreateNetworkInterface(req);
  EXPECT_EQ(n.id, "eni-1");
  EXPECT_EQ(n.mac, "00:16:3e:aa:bb:cc");
  EXPECT_EQ(n.primary_ip, "192.168.10.5");
  auto q = rig.transport->Query(0);
  EXPECT_EQ(q["VSwitchId"], "vsw-a");
  EXPECT_EQ(q["SecurityGroupIds.1"], "sg-1");
  EXPECT_EQ(q["SecurityGroupIds.2"], "sg-2");
  EXPECT_EQ(q["Tag.1.Key"], "team");  // sorted by key: "team" < "trellis.io/cluster"
  EXPECT_EQ(q["Tag.2.Key"], "trellis.io/cluster");
  EXPECT_EQ(q["ClientToken"], "tok-1");
  auto ips = ecs.AssignPrivateIpAddresses("eni-1", 2, "tok-2");
  EXPECT_EQ(ips, (std::vector<std::string>{"192.168.10.6", "192.168.10.7"}));
  q = rig.transport->Query(1);
  EXPECT_EQ(q["SecondaryPrivateIpAddressCount"], "2");
  EXPECT_EQ(q["ClientToken"], "tok-2");
  EXPECT_THROW(ecs.AssignPrivateIpAddresses("eni-1", 11, "t"), CloudError);  // ECS's limit
  ecs.UnassignPrivateIpAddresses("eni-1", {"192.168.10.6", "192.168.10.7"}, "");
  q = rig.transport->Query(2);
  EXPECT_EQ(q["PrivateIpAddress.1"], "192.168.10.6");
  EXPECT_EQ(q["PrivateIpAddress.2"], "192.168.10.7");
  EXPECT_EQ(q["ClientToken"].size(), 36u);  // every write carries one
  aliyun::SecurityGroupRule rule;
  rule.direction = "egress";
  rule.ip_protocol = "TCP";
  rule.port_range = "443/443";
  rule.cidr = "10.0.0.0/8";
  ecs.AuthorizeSecurityGroupRule("sg-1", rule, "tok-3");
  q = rig.transport->Query(3);
  EXPECT_EQ(q["Action"], "AuthorizeSecurityGroupEgress");
  EXPECT_EQ(q["DestCidrIp"], "10.0.0.0/8");
  EXPECT_EQ(q["IpProtocol"], "tcp");
  EXPECT_EQ(q["Policy"], "accept");
}

TEST(AliyunEndpoint, PlainHttpOnlyForLoopback) {
  using P = aliyun::Endpoint::PlainHttp;
  auto e = aliyun::Endpoint::Parse("ecs-vpc.cn-hangzhou.aliyuncs.com", "ecs_endpoint", P::kLoopbackOnly);
  EXPECT_EQ(e.scheme, "https");
  EXPECT_EQ(e.port, 443);
  EXPECT_EQ(aliyun::Endpoint::Parse("http://127.0.0.1:18080/", "x", P::kLoopbackOnly).port, 18080);
  EXPECT_NO_THROW(aliyun::Endpoint::Parse("http://[::1]:80", "x", P::kLoopbackOnly));
  try {
    aliyun::Endpoint::Parse("http://ecs.cn-hangzhou.aliyuncs.com", "ecs_endpoint", P::kLoopbackOnly);
    FAIL();
  } catch (const CloudError& err) {
    EXPECT_NE(std::string(err.what()).find("ecs_endpoint"), std::string::npos);
    EXPECT_NE(std::string(err.what()).find("loopback"), std::string::npos);
  }
  EXPECT_THROW(aliyun::Endpoint::Parse("http://100.100.100.200", "x", P::kLoopbackOnly), CloudError);
  EXPECT_NO_THROW(aliyun::Endpoint::Parse("http://100.100.100.200", "x", P::kLoopbackOrMetadata));
  EXPECT_THROW(aliyun::Endpoint::Parse("ftp://a", "x", P::kLoopbackOnly), CloudError);
  EXPECT_THROW(aliyun::Endpoint::Parse("https://a:99999", "x", P::kLoopbackOnly), CloudError);
  EXPECT_THROW(aliyun::Endpoint::Parse("https://a/path", "x", P::kLoopbackOnly), CloudError);
}

// ------------------------------------------------------------------- HTTPS --

// A TLS server on loopback with a certificate made for the test.
class TlsServer {
 public:
  TlsServer(const trellis::test::TempDir& dir, const std::string& san) {
    cert_ = (dir / (san.substr(0, 3) + "-cert.pem")).string();
    key_ = (dir / (san.substr(0, 3) + "-key.pem")).string();
    auto r = trellis::test::Sh(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
        "-subj /CN=trellis-test -addext subjectAltName=" + san + " -keyout " + key_ +
        " -out " + cert_ + " 2>&1");
    EXPECT_EQ(r.exit_code, 0) << r.out;
    server_ = std::make_unique<httplib::SSLServer>(cert_.c_str(), key_.c_str());
    server_->Get("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(R"({"RequestId":"tls"})", "application/json");
    });
    port_ = server_->bind_to_any_port("127.0.0.1");
    // Bound and listening already: connections wait in the backlog.
    thread_ = std::thread([this] { server_->listen_after_bind(); });
  }
  ~TlsServer() {
    // stop() before the accept loop runs would leave the loop running.
    trellis::test::WaitFor([&] { return server_->is_running(); });
    server_->stop();
    thread_.join();
  }
  int port() const { return port_; }
  const std::string& cert() const { return cert_; }

 private:
  std::string cert_, key_;
  std::unique_ptr<httplib::SSLServer> server_;
  int port_ = 0;
  std::thread thread_;
};

TEST(AliyunHttps, TheServerCertificateAndNameAreVerified) {
  trellis::test::TempDir dir;
  aliyun::HttpRequest req;
  req.scheme = "https";
  req.host = "127.0.0.1";
  req.timeout = milliseconds(5000);
  {
    TlsServer server(dir, "IP:127.0.0.1");
    req.port = server.port();
    // Trusted (its certificate is the CA file) and issued for 127.0.0.1.
    auto ok = aliyun::HttplibTransport(server.cert()).Send(req);
    EXPECT_EQ(ok.status, 200) << ok.error;
    // Not in the system's CA bundle: refused.
    auto untrusted = aliyun::HttplibTransport().Send(req);
    EXPECT_EQ(untrusted.status, 0);
    EXPECT_NE(untrusted.error.find("did not verify"), std::string::npos) << untrusted.error;
  }
  {
    // Trusted, but issued for another name.
    TlsServer server(dir, "DNS:ecs.example.com");
    req.port = server.port();
    auto wrong_name = aliyun::HttplibTransport(server.cert()).Send(req);
    EXPECT_EQ(wrong_name.status, 0) << "a certificate for another host was accepted";
  }
}

// ---------------------------------------------------------------- metadata --

TEST(AliyunMetadata, RetriesTransientFailuresAndCachesStaticValues) {
  int n = 0;
  auto transport = std::make_shared<FakeTransport>([&](const HttpRequest& r) -> HttpResponse {
    if (r.target == "/latest/meta-data/instance-id") {
      return ++n == 1 ? HttpResponse{500, "", "", false} : HttpResponse{200, "i-node1\n", "", false};
    }
    if (r.target == "/latest/meta-data/network/interfaces/macs/") {
      return {200, "00:16:3E:00:00:01/\n00:16:3e:00:00:02/\n", "", false};
    }
    return {404, "", "", false};
  });
  FakeClock clock;
  aliyun::MetadataClient md(aliyun::Endpoint::Parse("http://127.0.0.1:18081", "m",
                                                    aliyun::Endpoint::PlainHttp::kLoopbackOrMetadata),
                            transport, &clock);
  EXPECT_EQ(md.InstanceId(), "i-node1");
  EXPECT_EQ(md.InstanceId(), "i-node1");
  EXPECT_EQ(n, 2);  // one failure, one answer, then the cache
  EXPECT_EQ(clock.sleeps().size(), 1u);
  EXPECT_EQ(md.Macs(), (std::vector<std::string>{"00:16:3e:00:00:01", "00:16:3e:00:00:02"}));
  try {
    md.ZoneId();
    FAIL();
  } catch (const CloudError& e) {
    EXPECT_EQ(e.code(), "NotFound");  // a 404 is an answer: no retry
  }
  EXPECT_EQ(transport->requests().size(), 4u);
  EXPECT_EQ(transport->requests()[0].timeout, milliseconds(2000));
  EXPECT_EQ(aliyun::MetadataClient::ParseList("[\"10.0.0.1\",\"10.0.0.2\"]"),
            (std::vector<std::string>{"10.0.0.1", "10.0.0.2"}));
}

TEST(AliyunMetadata, UnreachableServiceFailsAfterItsAttempts) {
  auto transport = std::make_shared<FakeTransport>(
      [](const HttpRequest&) { return HttpResponse{0, "", "Connection", false}; });
  FakeClock clock;
  aliyun::MetadataClient md(aliyun::Endpoint::Parse("http://127.0.0.1:1", "m",
                                                    aliyun::Endpoint::PlainHttp::kLoopbackOrMetadata),
                            transport, &clock);
  try {
    md.RegionId();
    FAIL();
  } catch (const CloudError& e) {
    EXPECT_EQ(e.kind(), CloudError::Kind::kTransport);
    EXPECT_NE(std::string(e.what()).find("region-id"), std::string::npos) << e.what();
  }
  EXPECT_EQ(transport->requests().size(), 3u);
}

// -------------------------------------------------------------- credentials --

TEST(AliyunCredentials, RamRoleCredentialsAreRefreshedBeforeTheyExpire) {
  FakeClock clock;
  int fetches = 0;
  bool fail = false;
  auto transport = std::make_shared<FakeTransport>([&](const HttpRequest& r) -> HttpResponse {
    if (r.target == "/latest/meta-data/ram/security-credentials/") {
      return {200, "trellis-node", "", false};
    }
    if (r.target == "/latest/meta-data/ram/security-credentials/trellis-node") {
      if (fail) return {500, "", "", false};
      fetches++;
      auto exp = clock.WallNow() + std::chrono::hours(1);
      return {200,
              Json{{"Code", "Success"},
                   {"AccessKeyId", "STS.k" + std::to_string(fetches)},
                   {"AccessKeySecret", "secret"},
                   {"SecurityToken", "token" + std::to_string(fetches)},
                   {"Expiration", aliyun::FormatIso8601(exp)},
                   {"LastUpdated", aliyun::FormatIso8601(clock.WallNow())}}
                  .dump(),
              "", false};
    }
    return {404, "", "", false};
  });
  auto md = std::make_shared<aliyun::MetadataClient>(
      aliyun::Endpoint::Parse("http://127.0.0.1:18081", "m",
                              aliyun::Endpoint::PlainHttp::kLoopbackOrMetadata),
      transport, &clock);
  auto p = aliyun::MakeRamRoleCredentials(md, &clock);
  EXPECT_EQ(p->Get().security_token, "token1");
  clock.Advance(std::chrono::minutes(50));
  EXPECT_EQ(p->Get().security_token, "token1");  // 10 min left > 5 min margin
  clock.Advance(std::chrono::minutes(6));
  EXPECT_EQ(p->Get().security_token, "token2");  // 4 min left: refreshed
  EXPECT_EQ(fetches, 2);
  EXPECT_NE(p->Source().find("trellis-node"), std::string::npos);
  // The service is down but the credentials still hold: keep using them.
  fail = true;
  clock.Advance(std::chrono::minutes(56));
  EXPECT_EQ(p->Get().security_token, "token2");
  clock.Advance(std::chrono::minutes(5));  // expired now
  EXPECT_THROW(p->Get(), CloudError);
}

TEST(AliyunCredentials, SourcesInOrderAndFilesFollowRotation) {
  trellis::test::TempDir dir;
  std::filesystem::create_directory(dir / "secret");
  std::ofstream(dir / "secret" / "access-key-id") << "LTAI-file-key\n";
  std::ofstream(dir / "secret" / "access-key-secret") << "file-secret\n";
  setenv("ACCESS_KEY_ID", "LTAI-env-key", 1);
  setenv("ACCESS_KEY_SECRET", "env-secret", 1);
  FakeClock clock;
  {
    aliyun::CredentialSources s;
    s.credential_path = (dir / "secret").string();
    auto p = aliyun::MakeCredentialProvider(s, nullptr, &clock);
    EXPECT_EQ(p->Get().access_key_id, "LTAI-file-key");
    EXPECT_EQ(p->Get().access_key_secret, "file-secret");  // trimmed
    // A rotated Secret (kubelet swaps the files) is picked up.
    std::filesystem::remove(dir / "secret" / "access-key-secret");
    std::ofstream(dir / "secret" / "access-key-secret") << "rotated-secret";
    EXPECT_EQ(p->Get().access_key_secret, "rotated-secret");
    EXPECT_EQ(p->Source().find("secret-"), std::string::npos);
  }
  {
    std::ofstream(dir / "creds.json") << R"({"AccessKeyId":"LTAI-json","AccessKeySecret":"js"})";
    aliyun::CredentialSources s;
    s.credential_path = (dir / "creds.json").string();
    EXPECT_EQ(aliyun::MakeCredentialProvider(s, nullptr, &clock)->Get().access_key_id, "LTAI-json");
  }
  {
    aliyun::CredentialSources s;  // nothing configured: the environment
    auto p = aliyun::MakeCredentialProvider(s, nullptr, &clock);
    EXPECT_EQ(p->Get().access_key_id, "LTAI-env-key");
    EXPECT_EQ(p->Source(), "environment (ACCESS_KEY_ID)");
  }
  {
    aliyun::CredentialSources s;  // inline wins over the environment
    s.inline_access_key = "LTAI-inline";
    s.inline_secret_key = "inline-secret";
    EXPECT_EQ(aliyun::MakeCredentialProvider(s, nullptr, &clock)->Get().access_key_id, "LTAI-inline");
  }
  unsetenv("ACCESS_KEY_ID");
  unsetenv("ACCESS_KEY_SECRET");
  {
    aliyun::CredentialSources s;
    s.use_ram_role = false;
    EXPECT_THROW(aliyun::MakeCredentialProvider(s, nullptr, &clock), CloudError);
    s.credential_path = (dir / "missing").string();
    EXPECT_THROW(aliyun::MakeCredentialProvider(s, nullptr, &clock)->Get(), CloudError);
  }
  EXPECT_EQ(aliyun::MaskKeyId("LTAI5tAbCdEfGhXyz"), "LTAI****Xyz");
  EXPECT_EQ(aliyun::MaskKeyId("short"), "****");
}

}  // namespace
}  // namespace trellis::eni::testing
