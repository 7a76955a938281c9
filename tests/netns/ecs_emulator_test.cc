// The ECS emulator (tests/fixtures/ecs_emulator) against a minimal ECS
// OpenAPI client written here from Alibaba Cloud's documentation: signature
// version 1.0, ENI lifecycle and statuses, quotas, ClientToken, paging,
// eventual consistency, fault injection, security group rules, the metadata
// service, and the plumbing: ENI addresses of two nodes reach each other
// through the emulated VPC.
#include <fcntl.h>
#include <httplib.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cctype>
#include <chrono>
#include <ctime>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "ecs_emulator.h"
#include "harness.h"

namespace trellis::test {
namespace {

using Params = std::map<std::string, std::string>;

// RFC 3986 as Alibaba Cloud signs: unreserved characters kept, '~' too,
// everything else %XY of its bytes (so a space is %20, never '+').
std::string PercentEncode(std::string_view s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string CanonicalQuery(const Params& params) {
  std::string q;
  for (const auto& [k, v] : params) {  // std::map: sorted by name
    if (!q.empty()) q += '&';
    q += PercentEncode(k) + "=" + PercentEncode(v);
  }
  return q;
}

// Signature = Base64(HMAC-SHA1(secret + "&", METHOD&%2F&percentEncode(canonical)))
std::string Sign(const std::string& secret, const std::string& method, const Params& params) {
  std::string sts = method + "&%2F&" + PercentEncode(CanonicalQuery(params));
  std::string key = secret + "&";
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha1(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(sts.data()), sts.size(), md, &len);
  std::string b64(4 * ((len + 2) / 3), '\0');
  EVP_EncodeBlock(reinterpret_cast<unsigned char*>(b64.data()), md, static_cast<int>(len));
  return b64;
}

std::string IsoTime(std::chrono::system_clock::time_point t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string Nonce() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[40];
  snprintf(buf, sizeof buf, "%016lx%016lx", static_cast<unsigned long>(rng()),
           static_cast<unsigned long>(rng()));
  return buf;
}

// An HTTP request from inside network namespace `netns`: the socket is
// created on a thread that entered it.
std::pair<int, std::string> HttpIn(const std::string& netns, int port, const std::string& method,
                                   const std::string& target, const std::string& body = "") {
  std::pair<int, std::string> out{0, ""};
  std::thread t([&] {
    int fd = open(("/var/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
      out.second = "cannot enter " + netns;
      if (fd >= 0) close(fd);
      return;
    }
    close(fd);
    httplib::Client cli("127.0.0.1", port);
    cli.set_connection_timeout(2);
    cli.set_read_timeout(10);
    auto res = method == "GET" ? cli.Get(target)
                               : cli.Post(target, body, "application/x-www-form-urlencoded");
    if (res) {
      out = {res->status, res->body};
    } else {
      out.second = "request failed: " + httplib::to_string(res.error());
    }
  });
  t.join();
  return out;
}

struct Creds {
  std::string id, secret, token;
};

struct Reply {
  int status = 0;
  std::string raw;
  Json body;
  std::string Code() const { return body.is_object() ? body.value("Code", "") : ""; }
};

std::ostream& operator<<(std::ostream& os, const Reply& r) {
  return os << "HTTP " << r.status << " " << r.raw;
}

struct CallOptions {
  std::string method = "GET";
  std::string timestamp;  // default: now
  std::string nonce;      // default: random
  bool tamper = false;    // flip the signature
  std::string format = "JSON";

  CallOptions& Method(std::string m) {
    method = std::move(m);
    return *this;
  }
  CallOptions& Timestamp(std::string t) {
    timestamp = std::move(t);
    return *this;
  }
  CallOptions& Nonce(std::string n) {
    nonce = std::move(n);
    return *this;
  }
  CallOptions& Tamper() {
    tamper = true;
    return *this;
  }
  CallOptions& Format(std::string f) {
    format = std::move(f);
    return *this;
  }
};

// The minimal ECS client: RPC style, signature version 1.0.
class EcsClient {
 public:
  EcsClient() = default;
  EcsClient(std::string netns, int port, Creds creds)
      : netns_(std::move(netns)), port_(port), creds_(std::move(creds)) {}

  Reply Call(const std::string& action, Params params = {}, const CallOptions& o = {}) const {
    Params p = {{"Action", action},
                {"Version", "2014-05-26"},
                {"AccessKeyId", creds_.id},
                {"SignatureMethod", "HMAC-SHA1"},
                {"SignatureVersion", "1.0"},
                {"SignatureNonce", o.nonce.empty() ? Nonce() : o.nonce},
                {"Timestamp",
                 o.timestamp.empty() ? IsoTime(std::chrono::system_clock::now()) : o.timestamp},
                {"RegionId", kEcsRegion}};
    if (!o.format.empty()) p["Format"] = o.format;
    if (!creds_.token.empty()) p["SecurityToken"] = creds_.token;
    for (auto& [k, v] : params) p[k] = v;
    std::string sig = Sign(creds_.secret, o.method, p);
    if (o.tamper) sig[0] = sig[0] == 'A' ? 'B' : 'A';
    p["Signature"] = sig;
    std::string q = CanonicalQuery(p);
    auto [status, raw] = o.method == "GET" ? HttpIn(netns_, port_, "GET", "/?" + q)
                                           : HttpIn(netns_, port_, "POST", "/", q);
    return {status, raw, Json::parse(raw, nullptr, false)};
  }

  void set_creds(Creds c) { creds_ = std::move(c); }

 private:
  std::string netns_;
  int port_ = 0;
  Creds creds_;
};

std::vector<std::string> Ips(const Json& eni) {
  std::vector<std::string> out;
  for (const auto& s : eni["PrivateIpSets"]["PrivateIpSet"]) out.push_back(s["PrivateIpAddress"]);
  return out;
}

bool Contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

// The node's links other than lo.
std::string NonLoopbackLinks(const Netns& node) {
  std::string out;
  auto r = node.Exec("ip -o link show | cut -d: -f2 | cut -d@ -f1");
  std::istringstream in(r.out);
  std::string l;
  while (std::getline(in, l)) {
    l.erase(0, l.find_first_not_of(' '));
    if (!l.empty() && l != "lo") out += l + " ";
  }
  return out;
}

TEST(EcsSigner, MatchesAlibabaCloudsDocumentedExample) {
  // "Request signatures", ECS API reference: DescribeRegions with AccessKey
  // testid / testsecret.
  Params p = {{"Timestamp", "2016-02-23T12:46:24Z"},
              {"Format", "XML"},
              {"AccessKeyId", "testid"},
              {"Action", "DescribeRegions"},
              {"SignatureMethod", "HMAC-SHA1"},
              {"SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"},
              {"Version", "2014-05-26"},
              {"SignatureVersion", "1.0"}};
  EXPECT_EQ(Sign("testsecret", "GET", p), "OLeaidS1JvxuMvnyHOwuJ+uX5qY=");
  EXPECT_EQ(PercentEncode("a b*~/+"), "a%20b%2A~%2F%2B");
}

class EcsEmulatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    node1_ = std::make_unique<Netns>("ecsn1");
    node2_ = std::make_unique<Netns>("ecsn2");
  }
  void TearDown() override {
    emu_.reset();
    node1_.reset();
    node2_.reset();
  }

  Json Scenario() const {
    return DefaultEcsScenario(
        {{.id = "i-node1", .netns = node1_->name()}, {.id = "i-node2", .netns = node2_->name()}});
  }
  void Start(const Json& scenario) {
    emu_ = std::make_unique<EcsEmulator>(scenario);
    std::string why;
    ASSERT_TRUE(emu_->Start(&why)) << why;
    c1_ = EcsClient(node1_->name(), 18080, {kEcsAccessKeyId, kEcsAccessKeySecret, ""});
    c2_ = EcsClient(node2_->name(), 18080, {kEcsAccessKeyId, kEcsAccessKeySecret, ""});
  }
  void Start() { Start(Scenario()); }

  std::pair<int, std::string> Metadata(const Netns& node, const std::string& path) const {
    return HttpGet(18081, "/latest/meta-data/" + path, node.name());
  }

  // Creates an ENI; fails the test unless ECS says 200.
  Json CreateEni(const Params& extra = {}) {
    Params p = {{"VSwitchId", "vsw-a"}, {"SecurityGroupId", "sg-test"}};
    for (auto& [k, v] : extra) p[k] = v;
    Reply r = c1_.Call("CreateNetworkInterface", p);
    EXPECT_EQ(r.status, 200) << r;
    return r.body;
  }
  Json DescribeEni(const std::string& id) const {
    Reply r = c1_.Call("DescribeNetworkInterfaces", {{"NetworkInterfaceId.1", id}});
    EXPECT_EQ(r.status, 200) << r;
    const Json& set = r.body["NetworkInterfaceSets"]["NetworkInterfaceSet"];
    return set.empty() ? Json() : set[0];
  }
  std::string Status(const std::string& id) const {
    Json e = DescribeEni(id);
    return e.is_null() ? "" : e["Status"].get<std::string>();
  }
  Reply Attach(const std::string& eni, const std::string& instance = "i-node1") const {
    return c1_.Call("AttachNetworkInterface",
                    {{"NetworkInterfaceId", eni}, {"InstanceId", instance}});
  }
  int FreeIps(const std::string& vswitch) const {
    Reply r = c1_.Call("DescribeVSwitches", {{"VSwitchId", vswitch}});
    EXPECT_EQ(r.status, 200) << r;
    return r.body["VSwitches"]["VSwitch"][0]["AvailableIpAddressCount"];
  }
  // The node's link with `mac` ("" when there is none).
  static std::string LinkWithMac(const Netns& node, const std::string& mac) {
    auto r = node.Exec("ip -o link show | grep -i 'link/ether " + mac + "' | cut -d: -f2");
    std::string name = r.out;
    name.erase(0, name.find_first_not_of(' '));
    name = name.substr(0, name.find_first_of("@\n"));
    return name;
  }

  std::unique_ptr<Netns> node1_, node2_;
  std::unique_ptr<EcsEmulator> emu_;
  EcsClient c1_, c2_;
};

TEST_F(EcsEmulatorTest, SignedRequestsAreAcceptedOverGetAndPost) {
  ASSERT_NO_FATAL_FAILURE(Start());
  for (const char* method : {"GET", "POST"}) {
    Reply r = c1_.Call("DescribeInstanceTypes", {{"InstanceTypes.1", "ecs.g6.large"}},
                       CallOptions().Method(method));
    ASSERT_EQ(r.status, 200) << method << " " << r;
    EXPECT_FALSE(r.body["RequestId"].get<std::string>().empty());
    const Json& t = r.body["InstanceTypes"]["InstanceType"][0];
    EXPECT_EQ(t["InstanceTypeId"], "ecs.g6.large");
    EXPECT_EQ(t["EniQuantity"], 3);
    EXPECT_EQ(t["EniPrivateIpAddressQuantity"], 10);
  }
  // Without Format=JSON, ECS answers in XML.
  Reply xml = c1_.Call("DescribeInstanceTypes", {}, CallOptions().Format(""));
  ASSERT_EQ(xml.status, 200) << xml;
  EXPECT_TRUE(Contains(xml.raw, "<DescribeInstanceTypesResponse>")) << xml.raw;
  EXPECT_TRUE(Contains(xml.raw, "<EniQuantity>3</EniQuantity>")) << xml.raw;
}

TEST_F(EcsEmulatorTest, BadSignaturesAreRefusedWithEcsErrorShape) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Reply bad = c1_.Call("DescribeVSwitches", {}, CallOptions().Tamper());
  EXPECT_EQ(bad.status, 400) << bad;
  EXPECT_EQ(bad.Code(), "SignatureDoesNotMatch");
  for (const char* field : {"RequestId", "HostId", "Code", "Message", "Recommend"}) {
    EXPECT_TRUE(bad.body.contains(field)) << field << " missing: " << bad;
  }

  EcsClient wrong_secret(node1_->name(), 18080, {kEcsAccessKeyId, "not-the-secret", ""});
  Reply r = wrong_secret.Call("DescribeVSwitches");
  EXPECT_EQ(r.status, 400) << r;
  EXPECT_EQ(r.Code(), "SignatureDoesNotMatch");
  // The secret never appears in the answer.
  EXPECT_FALSE(Contains(r.raw, kEcsAccessKeySecret)) << r;

  EcsClient unknown_key(node1_->name(), 18080, {"LTAI-nobody", kEcsAccessKeySecret, ""});
  r = unknown_key.Call("DescribeVSwitches");
  EXPECT_EQ(r.status, 404) << r;
  EXPECT_EQ(r.Code(), "InvalidAccessKeyId.NotFound");

  std::string nonce = Nonce();
  r = c1_.Call("DescribeVSwitches", {}, CallOptions().Nonce(nonce));
  EXPECT_EQ(r.status, 200) << r;
  r = c1_.Call("DescribeVSwitches", {}, CallOptions().Nonce(nonce));
  EXPECT_EQ(r.status, 400) << r;
  EXPECT_EQ(r.Code(), "SignatureNonceUsed");

  auto stale = IsoTime(std::chrono::system_clock::now() - std::chrono::minutes(20));
  r = c1_.Call("DescribeVSwitches", {}, CallOptions().Timestamp(stale));
  EXPECT_EQ(r.status, 400) << r;
  EXPECT_EQ(r.Code(), "InvalidTimeStamp.Expired");

  r = c1_.Call("DescribeVSwitches", {}, CallOptions().Timestamp("yesterday"));
  EXPECT_EQ(r.Code(), "InvalidTimeStamp.Format") << r;

  r = c1_.Call("DescribeEverything");
  EXPECT_EQ(r.status, 404) << r;
  EXPECT_EQ(r.Code(), "InvalidAction.NotFound");

  r = c1_.Call("DescribeVSwitches", {{"Version", "2099-01-01"}});
  EXPECT_EQ(r.Code(), "InvalidVersion") << r;

  Json state = emu_->State();
  EXPECT_EQ(state["errors"]["DescribeVSwitches"]["SignatureDoesNotMatch"], 2) << state.dump();
  EXPECT_EQ(state["errors"]["DescribeVSwitches"]["SignatureNonceUsed"], 1);
}

TEST_F(EcsEmulatorTest, RamRoleCredentialsFromMetadataSignRequests) {
  ASSERT_NO_FATAL_FAILURE(Start());
  auto [status, role] = Metadata(*node1_, "ram/security-credentials/");
  ASSERT_EQ(status, 200) << role;
  EXPECT_EQ(role, kEcsRamRole);
  auto [s2, body] = Metadata(*node1_, std::string("ram/security-credentials/") + kEcsRamRole);
  ASSERT_EQ(s2, 200) << body;
  Json creds = Json::parse(body);
  EXPECT_EQ(creds["Code"], "Success");
  for (const char* f :
       {"AccessKeyId", "AccessKeySecret", "SecurityToken", "Expiration", "LastUpdated"}) {
    EXPECT_TRUE(creds.contains(f)) << f << " missing: " << body;
  }

  EcsClient sts(node1_->name(), 18080,
                {creds["AccessKeyId"], creds["AccessKeySecret"], creds["SecurityToken"]});
  Reply r = sts.Call("DescribeVSwitches");
  EXPECT_EQ(r.status, 200) << r;

  sts.set_creds({creds["AccessKeyId"], creds["AccessKeySecret"], ""});
  r = sts.Call("DescribeVSwitches");
  EXPECT_EQ(r.Code(), "InvalidSecurityToken.Malformed") << r;
  sts.set_creds({creds["AccessKeyId"], creds["AccessKeySecret"], "another-token"});
  r = sts.Call("DescribeVSwitches");
  EXPECT_EQ(r.Code(), "InvalidSecurityToken.MismatchWithAccessKey") << r;
  EXPECT_EQ(Metadata(*node1_, "ram/security-credentials/some-other-role").first, 404);
}

TEST_F(EcsEmulatorTest, RamRoleCredentialsAreReissuedBeforeTheyExpire) {
  Json scenario = Scenario();
  scenario["ram_role"]["expiry_seconds"] = 2;
  ASSERT_NO_FATAL_FAILURE(Start(scenario));
  std::string path = std::string("ram/security-credentials/") + kEcsRamRole;
  Json first = Json::parse(Metadata(*node1_, path).second);
  // Half-way through their lifetime the service hands out new credentials...
  Json second;
  ASSERT_TRUE(WaitFor(
      [&] {
        second = Json::parse(Metadata(*node1_, path).second, nullptr, false);
        return second.is_object() && second["AccessKeyId"] != first["AccessKeyId"];
      },
      std::chrono::seconds(5)));
  EcsClient fresh(node1_->name(), 18080,
                  {second["AccessKeyId"], second["AccessKeySecret"], second["SecurityToken"]});
  EXPECT_EQ(fresh.Call("DescribeVSwitches").status, 200);
  // ...while the old ones work until their Expiration, then are refused.
  EcsClient old(node1_->name(), 18080,
                {first["AccessKeyId"], first["AccessKeySecret"], first["SecurityToken"]});
  Reply r;
  ASSERT_TRUE(WaitFor(
      [&] {
        r = old.Call("DescribeVSwitches");
        return r.status != 200;
      },
      std::chrono::seconds(5)));
  EXPECT_EQ(r.Code(), "InvalidSecurityToken.Expired") << r;
}

TEST_F(EcsEmulatorTest, EniWalksThroughEcsStatusesAndItsLinkFollows) {
  ASSERT_NO_FATAL_FAILURE(Start());
  int free_before = FreeIps("vsw-a");
  ASSERT_TRUE(emu_->SetAttachDelay(400));
  Json eni =
      CreateEni({{"Tag.1.Key", "cluster"}, {"Tag.1.Value", "c1"}, {"Description", "trellis test"}});
  std::string id = eni["NetworkInterfaceId"];
  std::string mac = eni["MacAddress"];
  EXPECT_EQ(id.rfind("eni-", 0), 0u) << id;
  EXPECT_EQ(mac.rfind("00:16:3e:", 0), 0u) << mac;
  EXPECT_EQ(eni["Status"], "Available");
  EXPECT_EQ(eni["Type"], "Secondary");
  EXPECT_EQ(eni["VSwitchId"], "vsw-a");
  EXPECT_EQ(eni["SecurityGroupIds"]["SecurityGroupId"], Json::array({"sg-test"}));
  EXPECT_EQ(eni["Tags"]["Tag"][0]["TagKey"], "cluster");
  EXPECT_EQ(eni["Tags"]["Tag"][0]["TagValue"], "c1");
  EXPECT_TRUE(eni["PrivateIpAddress"].get<std::string>().rfind("192.168.10.", 0) == 0);
  EXPECT_EQ(FreeIps("vsw-a"), free_before - 1);

  // Attaching -> InUse after the attach delay; the link appears, down.
  Reply r = Attach(id);
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(Status(id), "Attaching");
  ASSERT_TRUE(WaitFor([&] { return Status(id) == "InUse"; }));
  Json described = DescribeEni(id);
  EXPECT_EQ(described["InstanceId"], "i-node1");
  EXPECT_EQ(described["Attachment"]["DeviceIndex"], 1);
  std::string link = LinkWithMac(*node1_, mac);
  EXPECT_EQ(link.rfind("eni", 0), 0u) << "link " << link;
  EXPECT_TRUE(Contains(node1_->Exec("ip -o link show " + link).out, "state DOWN"));
  EXPECT_TRUE(LinkWithMac(*node2_, mac).empty());
  EXPECT_TRUE(Contains(Metadata(*node1_, "network/interfaces/macs/").second, mac + "/"));

  // Secondary IPs: assigned, described, in the metadata, unassigned.
  r = c1_.Call("AssignPrivateIpAddresses",
               {{"NetworkInterfaceId", id}, {"SecondaryPrivateIpAddressCount", "3"}});
  ASSERT_EQ(r.status, 200) << r;
  Json assigned = r.body["AssignedPrivateIpAddressesSet"];
  EXPECT_EQ(assigned["NetworkInterfaceId"], id);
  ASSERT_EQ(assigned["PrivateIpSet"]["PrivateIpAddress"].size(), 3u);
  std::vector<std::string> ips = Ips(DescribeEni(id));
  EXPECT_EQ(ips.size(), 4u);
  Json md =
      Json::parse(Metadata(*node1_, "network/interfaces/macs/" + mac + "/private-ipv4s").second);
  EXPECT_EQ(md.get<std::vector<std::string>>(), ips);
  std::string gone = assigned["PrivateIpSet"]["PrivateIpAddress"][0];
  r = c1_.Call("UnassignPrivateIpAddresses",
               {{"NetworkInterfaceId", id}, {"PrivateIpAddress.1", gone}});
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(Ips(DescribeEni(id)).size(), 3u);
  r = c1_.Call("UnassignPrivateIpAddresses",
               {{"NetworkInterfaceId", id}, {"PrivateIpAddress.1", gone}});
  EXPECT_EQ(r.Code(), "InvalidIp.IpUnassigned") << r;

  // Only an Available ENI can be deleted; the primary ENI cannot be detached.
  r = c1_.Call("DeleteNetworkInterface", {{"NetworkInterfaceId", id}});
  EXPECT_EQ(r.status, 400) << r;
  EXPECT_EQ(r.Code(), "InvalidOperation.InvalidEniState");
  std::string primary = emu_->State()["instances"][0]["primary_eni"];
  r = c1_.Call("DetachNetworkInterface",
               {{"NetworkInterfaceId", primary}, {"InstanceId", "i-node1"}});
  EXPECT_EQ(r.Code(), "InvalidOperation.DetachPrimaryEniNotAllowed") << r;
  r = Attach(id, "i-node2");
  EXPECT_EQ(r.Code(), "InvalidOperation.InvalidEniState") << r;

  // Detaching -> Available; the link is gone at once.
  r = c1_.Call("DetachNetworkInterface", {{"NetworkInterfaceId", id}, {"InstanceId", "i-node1"}});
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(Status(id), "Detaching");
  EXPECT_TRUE(LinkWithMac(*node1_, mac).empty());
  EXPECT_FALSE(Contains(Metadata(*node1_, "network/interfaces/macs/").second, mac));
  ASSERT_TRUE(WaitFor([&] { return Status(id) == "Available"; }));
  EXPECT_EQ(DescribeEni(id)["InstanceId"], "");

  r = c1_.Call("DeleteNetworkInterface", {{"NetworkInterfaceId", id}});
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_TRUE(DescribeEni(id).is_null());
  EXPECT_EQ(FreeIps("vsw-a"), free_before);
  r = c1_.Call("DeleteNetworkInterface", {{"NetworkInterfaceId", id}});
  EXPECT_EQ(r.status, 404) << r;
  EXPECT_EQ(r.Code(), "InvalidEniId.NotFound");
}

TEST_F(EcsEmulatorTest, InstanceTypeQuotasAreEnforced) {
  ASSERT_NO_FATAL_FAILURE(Start());
  // ecs.g6.large: 3 ENIs per instance, the primary included.
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(CreateEni()["NetworkInterfaceId"]);
  ASSERT_EQ(Attach(ids[0]).status, 200);
  ASSERT_EQ(Attach(ids[1]).status, 200);
  Reply r = Attach(ids[2]);
  EXPECT_EQ(r.status, 403) << r;
  EXPECT_EQ(r.Code(), "EniPerInstanceLimitExceeded");
  EXPECT_EQ(Status(ids[2]), "Available");

  // 10 IPv4 addresses per ENI, the primary included.
  r = c1_.Call("AssignPrivateIpAddresses",
               {{"NetworkInterfaceId", ids[0]}, {"SecondaryPrivateIpAddressCount", "9"}});
  ASSERT_EQ(r.status, 200) << r;
  r = c1_.Call("AssignPrivateIpAddresses",
               {{"NetworkInterfaceId", ids[0]}, {"SecondaryPrivateIpAddressCount", "1"}});
  EXPECT_EQ(r.status, 403) << r;
  EXPECT_EQ(r.Code(), "InvalidOperation.Ipv4CountExceeded");
  // At most 10 addresses per call.
  r = c1_.Call("AssignPrivateIpAddresses",
               {{"NetworkInterfaceId", ids[1]}, {"SecondaryPrivateIpAddressCount", "11"}});
  EXPECT_EQ(r.status, 400) << r;
  EXPECT_EQ(r.Code(), "InvalidParameter");
  EXPECT_TRUE(Contains(r.body["Message"], "SecondaryPrivateIpAddressCount")) << r;
  EXPECT_EQ(Ips(DescribeEni(ids[1])).size(), 1u);
}

TEST_F(EcsEmulatorTest, ExhaustedVSwitchRefusesAddresses) {
  ASSERT_NO_FATAL_FAILURE(Start());
  // vsw-b is a /28: 16 addresses, 4 reserved.
  EXPECT_EQ(FreeIps("vsw-b"), 12);
  Json a = CreateEni({{"VSwitchId", "vsw-b"}, {"SecondaryPrivateIpAddressCount", "9"}});
  EXPECT_EQ(Ips(a).size(), 10u);
  Json b = CreateEni({{"VSwitchId", "vsw-b"}});
  EXPECT_EQ(FreeIps("vsw-b"), 1);
  Reply r = c1_.Call("AssignPrivateIpAddresses", {{"NetworkInterfaceId", b["NetworkInterfaceId"]},
                                                  {"SecondaryPrivateIpAddressCount", "2"}});
  EXPECT_EQ(r.status, 403) << r;
  EXPECT_EQ(r.Code(), "InvalidVSwitchId.IpNotEnough");
  EXPECT_EQ(FreeIps("vsw-b"), 1);
  CreateEni({{"VSwitchId", "vsw-b"}});
  EXPECT_EQ(FreeIps("vsw-b"), 0);
  r = c1_.Call("CreateNetworkInterface", {{"VSwitchId", "vsw-b"}, {"SecurityGroupId", "sg-test"}});
  EXPECT_EQ(r.Code(), "InvalidVSwitchId.IpNotEnough") << r;
  // The gateway and the reserved addresses are never handed out.
  Json state = emu_->State();
  for (const auto& eni : state["enis"]) {
    for (const auto& ip : eni["ips"]) {
      EXPECT_NE(ip, "192.168.20.0");
      EXPECT_NE(ip, "192.168.20.13");
      EXPECT_NE(ip, "192.168.20.14");
      EXPECT_NE(ip, "192.168.20.15");
    }
  }
}

TEST_F(EcsEmulatorTest, ClientTokenMakesMutationsIdempotent) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Params create = {{"VSwitchId", "vsw-a"},
                   {"SecurityGroupId", "sg-test"},
                   {"ClientToken", "token-1"},
                   {"Description", "first"}};
  Reply first = c1_.Call("CreateNetworkInterface", create);
  ASSERT_EQ(first.status, 200) << first;
  Reply again = c1_.Call("CreateNetworkInterface", create);
  ASSERT_EQ(again.status, 200) << again;
  EXPECT_EQ(again.body["NetworkInterfaceId"], first.body["NetworkInterfaceId"]);
  EXPECT_NE(again.body["RequestId"], first.body["RequestId"]);
  EXPECT_EQ(emu_->State()["enis"].size(), 3u);  // two primaries and this one
  create["Description"] = "second";
  Reply mismatch = c1_.Call("CreateNetworkInterface", create);
  EXPECT_EQ(mismatch.status, 400) << mismatch;
  EXPECT_EQ(mismatch.Code(), "IdempotentParameterMismatch");

  std::string id = first.body["NetworkInterfaceId"];
  Params assign = {{"NetworkInterfaceId", id},
                   {"SecondaryPrivateIpAddressCount", "2"},
                   {"ClientToken", "token-2"}};
  Reply a1 = c1_.Call("AssignPrivateIpAddresses", assign);
  Reply a2 = c1_.Call("AssignPrivateIpAddresses", assign);
  ASSERT_EQ(a1.status, 200) << a1;
  ASSERT_EQ(a2.status, 200) << a2;
  EXPECT_EQ(a1.body["AssignedPrivateIpAddressesSet"], a2.body["AssignedPrivateIpAddressesSet"]);
  EXPECT_EQ(Ips(DescribeEni(id)).size(), 3u);

  // The reply is lost after ECS did the work: the retry with the same
  // token gets that ENI, not a second one.
  AdminReply fault = emu_->AddFault({{"action", "CreateNetworkInterface"},
                                     {"error", "InternalError"},
                                     {"count", 1},
                                     {"phase", "after"}});
  ASSERT_TRUE(fault.ok()) << fault.body.dump();
  Params lost = {{"VSwitchId", "vsw-a"},
                 {"SecurityGroupId", "sg-test"},
                 {"ClientToken", "token-3"},
                 {"Tag.1.Key", "run"},
                 {"Tag.1.Value", "lost"}};
  Reply failed = c1_.Call("CreateNetworkInterface", lost);
  EXPECT_EQ(failed.status, 500) << failed;
  Reply retried = c1_.Call("CreateNetworkInterface", lost);
  ASSERT_EQ(retried.status, 200) << retried;
  Reply tagged =
      c1_.Call("DescribeNetworkInterfaces", {{"Tag.1.Key", "run"}, {"Tag.1.Value", "lost"}});
  ASSERT_EQ(tagged.body["TotalCount"], 1) << tagged;
  EXPECT_EQ(tagged.body["NetworkInterfaceSets"]["NetworkInterfaceSet"][0]["NetworkInterfaceId"],
            retried.body["NetworkInterfaceId"]);
}

TEST_F(EcsEmulatorTest, DescribeNetworkInterfacesFiltersAndPages) {
  ASSERT_NO_FATAL_FAILURE(Start());
  std::set<std::string> ours;
  for (int i = 0; i < 7; ++i) {
    ours.insert(CreateEni({{"Tag.1.Key", "cluster"}, {"Tag.1.Value", "c1"}})["NetworkInterfaceId"]
                    .get<std::string>());
  }
  for (int i = 0; i < 2; ++i) CreateEni({{"Tag.1.Key", "cluster"}, {"Tag.1.Value", "c2"}});

  // PageNumber / PageSize.
  std::set<std::string> seen;
  std::vector<size_t> sizes;
  for (int page = 1; page <= 3; ++page) {
    Reply r = c1_.Call("DescribeNetworkInterfaces", {{"Tag.1.Key", "cluster"},
                                                     {"Tag.1.Value", "c1"},
                                                     {"PageNumber", std::to_string(page)},
                                                     {"PageSize", "3"}});
    ASSERT_EQ(r.status, 200) << r;
    EXPECT_EQ(r.body["TotalCount"], 7);
    EXPECT_EQ(r.body["PageNumber"], page);
    const Json& set = r.body["NetworkInterfaceSets"]["NetworkInterfaceSet"];
    sizes.push_back(set.size());
    for (const auto& e : set) seen.insert(e["NetworkInterfaceId"].get<std::string>());
  }
  EXPECT_EQ(sizes, (std::vector<size_t>{3, 3, 1}));
  EXPECT_EQ(seen, ours);

  // NextToken / MaxResults.
  seen.clear();
  std::string token;
  int calls = 0;
  do {
    Params p = {{"Tag.1.Key", "cluster"}, {"Tag.1.Value", "c1"}, {"MaxResults", "3"}};
    if (!token.empty()) p["NextToken"] = token;
    Reply r = c1_.Call("DescribeNetworkInterfaces", p);
    ASSERT_EQ(r.status, 200) << r;
    for (const auto& e : r.body["NetworkInterfaceSets"]["NetworkInterfaceSet"]) {
      seen.insert(e["NetworkInterfaceId"].get<std::string>());
    }
    token = r.body["NextToken"];
    ASSERT_LT(++calls, 5);
  } while (!token.empty());
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(seen, ours);

  // Filters.
  Reply r = c1_.Call("DescribeNetworkInterfaces", {{"Tag.1.Key", "cluster"}});
  EXPECT_EQ(r.body["TotalCount"], 9) << r;
  auto it = ours.begin();
  std::string a = *it++, b = *it;
  r = c1_.Call("DescribeNetworkInterfaces",
               {{"NetworkInterfaceId.1", a}, {"NetworkInterfaceId.2", b}});
  EXPECT_EQ(r.body["TotalCount"], 2) << r;
  r = c1_.Call("DescribeNetworkInterfaces", {{"Type", "Primary"}});
  EXPECT_EQ(r.body["TotalCount"], 2) << r;
  r = c1_.Call("DescribeNetworkInterfaces", {{"InstanceId", "i-node2"}});
  EXPECT_EQ(r.body["TotalCount"], 1) << r;
  ASSERT_EQ(Attach(a).status, 200);
  r = c1_.Call("DescribeNetworkInterfaces", {{"InstanceId", "i-node1"}, {"Type", "Secondary"}});
  EXPECT_EQ(r.body["TotalCount"], 1) << r;
  r = c1_.Call("DescribeNetworkInterfaces", {{"Status", "Available"}, {"VSwitchId", "vsw-a"}});
  EXPECT_EQ(r.body["TotalCount"], 8) << r;
  r = c1_.Call("DescribeNetworkInterfaces",
               {{"PrivateIpAddress.1", DescribeEni(b)["PrivateIpAddress"]}});
  EXPECT_EQ(r.body["TotalCount"], 1) << r;

  r = c1_.Call("DescribeNetworkInterfaces", {{"PageSize", "101"}});
  EXPECT_EQ(r.Code(), "InvalidParameter") << r;
  r = c1_.Call("DescribeNetworkInterfaces", {{"NextToken", "not-a-token"}});
  EXPECT_EQ(r.Code(), "InvalidParameter") << r;
}

TEST_F(EcsEmulatorTest, DescribeCallsLagBehindWritesWithAConsistencyDelay) {
  ASSERT_NO_FATAL_FAILURE(Start());
  int free_before = FreeIps("vsw-a");
  ASSERT_TRUE(emu_->SetConsistencyDelay(3000));
  std::string id = CreateEni()["NetworkInterfaceId"];
  // The write is done (the admin view has it), Describe does not show it yet.
  bool in_state = false;
  Json state = emu_->State();
  for (const auto& e : state["enis"]) in_state |= e["id"] == id;
  EXPECT_TRUE(in_state);
  EXPECT_TRUE(DescribeEni(id).is_null());
  EXPECT_EQ(FreeIps("vsw-a"), free_before);
  ASSERT_TRUE(WaitFor([&] { return !DescribeEni(id).is_null(); }));
  EXPECT_EQ(FreeIps("vsw-a"), free_before - 1);

  ASSERT_TRUE(emu_->SetConsistencyDelay(0));
  std::string id2 = CreateEni()["NetworkInterfaceId"];
  EXPECT_FALSE(DescribeEni(id2).is_null());
}

TEST_F(EcsEmulatorTest, FaultsAreInjectedAndCounted) {
  ASSERT_NO_FATAL_FAILURE(Start());
  ASSERT_TRUE(emu_->ResetCounts());
  AdminReply f = emu_->AddFault({{"action", "CreateNetworkInterface"},
                                 {"error", "Throttling.User"},
                                 {"http_status", 400},
                                 {"count", 2}});
  ASSERT_TRUE(f.ok()) << f.body.dump();
  std::vector<int> statuses;
  for (int i = 0; i < 3; ++i) {
    Reply r = c1_.Call("CreateNetworkInterface",
                       {{"VSwitchId", "vsw-a"}, {"SecurityGroupId", "sg-test"}});
    statuses.push_back(r.status);
    if (i < 2) {
      EXPECT_EQ(r.Code(), "Throttling.User") << r;
    }
  }
  EXPECT_EQ(statuses, (std::vector<int>{400, 400, 200}));
  Json state = emu_->State();
  EXPECT_EQ(state["calls"]["CreateNetworkInterface"], 3) << state["calls"].dump();
  EXPECT_EQ(state["errors"]["CreateNetworkInterface"]["Throttling.User"], 2);
  EXPECT_EQ(state["calls_by_instance"]["i-node1"]["CreateNetworkInterface"], 3);
  EXPECT_EQ(state["enis"].size(), 3u);  // the throttled calls created nothing

  // "*" until cleared.
  emu_->AddFault(
      {{"action", "*"}, {"error", "ServiceUnavailable"}, {"http_status", 503}, {"count", -1}});
  for (const char* action : {"DescribeVSwitches", "DescribeInstanceTypes"}) {
    Reply r = c2_.Call(action);
    EXPECT_EQ(r.status, 503) << action << " " << r;
    EXPECT_EQ(r.Code(), "ServiceUnavailable");
  }
  ASSERT_TRUE(emu_->ClearFaults());
  EXPECT_EQ(c2_.Call("DescribeVSwitches").status, 200);

  // Latency.
  emu_->AddFault({{"action", "DescribeVSwitches"}, {"latency_ms", 300}, {"count", 1}});
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(c1_.Call("DescribeVSwitches").status, 200);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(300));

  // The metadata service fails too, when asked to.
  emu_->AddFault(
      {{"action", "metadata"}, {"error", "unavailable"}, {"http_status", 500}, {"count", 1}});
  EXPECT_EQ(Metadata(*node1_, "instance-id").first, 500);
  EXPECT_EQ(Metadata(*node1_, "instance-id").first, 200);

  AdminReply bad = emu_->AddFault({{"action", "*"}});
  EXPECT_EQ(bad.status, 400) << bad.body.dump();
  EXPECT_TRUE(Contains(bad.body["error"], "latency_ms")) << bad.body.dump();
}

TEST_F(EcsEmulatorTest, FlowControlThrottlesPerAction) {
  ASSERT_NO_FATAL_FAILURE(Start());
  // A burst of 2, then one call every 2 s.
  ASSERT_TRUE(emu_->SetRateLimit("DescribeVSwitches", 0.5, 2));
  EXPECT_EQ(c1_.Call("DescribeVSwitches").status, 200);
  EXPECT_EQ(c2_.Call("DescribeVSwitches").status, 200);
  Reply r = c1_.Call("DescribeVSwitches");
  EXPECT_EQ(r.status, 400) << r;
  EXPECT_EQ(r.Code(), "Throttling.User");
  EXPECT_EQ(c1_.Call("DescribeInstanceTypes").status, 200);  // other actions are not limited
  ASSERT_TRUE(WaitFor([&] { return c1_.Call("DescribeVSwitches").status == 200; },
                      std::chrono::seconds(10)));
  ASSERT_TRUE(emu_->SetRateLimit("DescribeVSwitches", 0, 0));
  for (int i = 0; i < 4; ++i) EXPECT_EQ(c1_.Call("DescribeVSwitches").status, 200);
  EXPECT_GE(emu_->State()["errors"]["DescribeVSwitches"]["Throttling.User"], 1);
}

TEST_F(EcsEmulatorTest, SecurityGroupRulesAreAuthorizedDescribedAndRevoked) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Params http = {{"SecurityGroupId", "sg-test"}, {"IpProtocol", "tcp"}, {"PortRange", "80/80"},
                 {"SourceCidrIp", "10.0.0.0/8"}, {"Policy", "accept"},  {"Priority", "5"},
                 {"Description", "web"}};
  Reply r = c1_.Call("AuthorizeSecurityGroup", http);
  ASSERT_EQ(r.status, 200) << r;
  // ECS: an identical rule succeeds and creates nothing.
  r = c1_.Call("AuthorizeSecurityGroup", http);
  ASSERT_EQ(r.status, 200) << r;
  r = c1_.Call("AuthorizeSecurityGroupEgress", {{"SecurityGroupId", "sg-test"},
                                                {"IpProtocol", "udp"},
                                                {"PortRange", "53/53"},
                                                {"DestCidrIp", "0.0.0.0/0"},
                                                {"Policy", "drop"}});
  ASSERT_EQ(r.status, 200) << r;

  auto rules = [&](const std::string& direction) {
    Reply d = c1_.Call("DescribeSecurityGroupAttribute",
                       {{"SecurityGroupId", "sg-test"}, {"Direction", direction}});
    EXPECT_EQ(d.status, 200) << d;
    return d.body["Permissions"]["Permission"];
  };
  Json ingress = rules("ingress");
  ASSERT_EQ(ingress.size(), 1u) << ingress.dump();
  EXPECT_EQ(ingress[0]["Direction"], "ingress");
  EXPECT_EQ(ingress[0]["IpProtocol"], "TCP");
  EXPECT_EQ(ingress[0]["PortRange"], "80/80");
  EXPECT_EQ(ingress[0]["SourceCidrIp"], "10.0.0.0/8");
  EXPECT_EQ(ingress[0]["Policy"], "Accept");
  EXPECT_EQ(ingress[0]["Priority"], "5");
  EXPECT_EQ(ingress[0]["Description"], "web");
  EXPECT_EQ(ingress[0]["NicType"], "intranet");
  EXPECT_EQ(ingress[0]["SecurityGroupRuleId"].get<std::string>().rfind("sgr-", 0), 0u);
  Json egress = rules("egress");
  ASSERT_EQ(egress.size(), 1u);
  EXPECT_EQ(egress[0]["DestCidrIp"], "0.0.0.0/0");
  EXPECT_EQ(egress[0]["Policy"], "Drop");
  EXPECT_EQ(rules("all").size(), 2u);

  // Bad values, with ECS's codes.
  auto with = [&](Params p, const std::string& k, const std::string& v) {
    p[k] = v;
    return c1_.Call("AuthorizeSecurityGroup", p).Code();
  };
  EXPECT_EQ(with(http, "IpProtocol", "sctp"), "InvalidIpProtocol.ValueNotSupported");
  EXPECT_EQ(with(http, "PortRange", "80"), "InvalidIpProtocol.Malformed");
  EXPECT_EQ(with(http, "PortRange", "90/80"), "InvalidIpProtocol.Malformed");
  Params icmp = http;
  icmp["IpProtocol"] = "icmp";
  EXPECT_EQ(with(icmp, "PortRange", "80/80"), "OperationDenied");
  EXPECT_EQ(with(http, "SourceCidrIp", "10.0.0.0/33"), "InvalidSourceCidrIp.Malformed");
  EXPECT_EQ(with(http, "Policy", "allow"), "InvalidPolicy.Malformed");
  EXPECT_EQ(with(http, "Priority", "101"), "InvalidPriority.ValueNotSupported");
  EXPECT_EQ(with(http, "SourceCidrIp", ""), "MissingParameter.Source");
  Reply nosg = c1_.Call("DescribeSecurityGroupAttribute", {{"SecurityGroupId", "sg-nope"}});
  EXPECT_EQ(nosg.status, 404) << nosg;
  EXPECT_EQ(nosg.Code(), "InvalidSecurityGroupId.NotFound");
  EXPECT_EQ(rules("all").size(), 2u);

  // Revoke: a rule that differs (priority) is not touched; the exact one
  // goes; revoking it again succeeds and changes nothing.
  Params other = http;
  other["Priority"] = "6";
  ASSERT_EQ(c1_.Call("RevokeSecurityGroup", other).status, 200);
  EXPECT_EQ(rules("ingress").size(), 1u);
  ASSERT_EQ(c1_.Call("RevokeSecurityGroup", http).status, 200);
  EXPECT_EQ(rules("ingress").size(), 0u);
  ASSERT_EQ(c1_.Call("RevokeSecurityGroup", http).status, 200);
  r = c1_.Call("RevokeSecurityGroupEgress", {{"SecurityGroupId", "sg-test"},
                                             {"IpProtocol", "udp"},
                                             {"PortRange", "53/53"},
                                             {"DestCidrIp", "0.0.0.0/0"},
                                             {"Policy", "drop"}});
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(rules("all").size(), 0u);

  // A rule someone else added.
  AdminReply added = emu_->AddRule("sg-test", {{"Direction", "ingress"},
                                               {"IpProtocol", "icmp"},
                                               {"PortRange", "-1/-1"},
                                               {"SourceCidrIp", "0.0.0.0/0"}});
  ASSERT_TRUE(added.ok()) << added.body.dump();
  AdminReply refused = emu_->AddRule("sg-test", {{"Direction", "ingress"},
                                                 {"IpProtocol", "tcp"},
                                                 {"PortRange", "1/2/3"},
                                                 {"SourceCidrIp", "0.0.0.0/0"}});
  EXPECT_EQ(refused.status, 400) << refused.body.dump();
  ingress = rules("ingress");
  ASSERT_EQ(ingress.size(), 1u);
  EXPECT_EQ(ingress[0]["IpProtocol"], "ICMP");
  EXPECT_EQ(emu_->State()["security_groups"][0]["rules"].size(), 1u);
}

TEST_F(EcsEmulatorTest, MetadataDescribesTheInstanceThatAsks) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Json state = emu_->State();
  Json primary1;
  for (const auto& e : state["enis"]) {
    if (e["instance"] == "i-node1" && e["type"] == "Primary") primary1 = e;
  }
  ASSERT_FALSE(primary1.is_null()) << state.dump();
  std::string mac = primary1["mac"];
  auto md = [&](const std::string& path) {
    auto [status, body] = Metadata(*node1_, path);
    EXPECT_EQ(status, 200) << path << ": " << body;
    return body;
  };
  EXPECT_EQ(md("instance-id"), "i-node1");
  EXPECT_EQ(Metadata(*node2_, "instance-id").second, "i-node2");
  EXPECT_EQ(md("region-id"), "cn-hangzhou");
  EXPECT_EQ(md("zone-id"), "cn-hangzhou-a");
  EXPECT_EQ(md("vpc-id"), "vpc-test");
  EXPECT_EQ(md("vswitch-id"), "vsw-a");
  EXPECT_EQ(md("vpc-cidr-block"), "192.168.0.0/16");
  EXPECT_EQ(md("instance/instance-type"), "ecs.g6.large");
  EXPECT_EQ(md("mac"), mac);
  EXPECT_EQ(md("network/interfaces/macs/"), mac + "/");
  std::string base = "network/interfaces/macs/" + mac + "/";
  EXPECT_EQ(md(base + "network-interface-id"), primary1["id"]);
  EXPECT_EQ(md(base + "gateway"), "192.168.10.253");
  EXPECT_EQ(md(base + "netmask"), "255.255.255.0");
  EXPECT_EQ(md(base + "vswitch-id"), "vsw-a");
  EXPECT_EQ(md(base + "vswitch-cidr-block"), "192.168.10.0/24");
  EXPECT_EQ(md(base + "vpc-cidr-block"), "192.168.0.0/16");
  EXPECT_EQ(md(base + "primary-ip-address"), primary1["primary_ip"]);
  EXPECT_EQ(Json::parse(md(base + "private-ipv4s")), Json::array({primary1["primary_ip"]}));
  EXPECT_EQ(Metadata(*node1_, "network/interfaces/macs/00:16:3e:00:00:00/gateway").first, 404);
  EXPECT_EQ(Metadata(*node1_, "no-such-item").first, 404);

  // eth0 is the primary ENI: its MAC, its address, the gateway.
  EXPECT_EQ(LinkWithMac(*node1_, mac), "eth0");
  EXPECT_TRUE(Contains(node1_->Exec("ip -4 -o addr show eth0").out,
                       primary1["primary_ip"].get<std::string>() + "/24"));
  EXPECT_TRUE(Contains(node1_->Exec("ip route show default").out, "via 192.168.10.253 dev eth0"));
  Json after = emu_->State();
  EXPECT_GE(after["metadata_calls"]["i-node1"], 15);
  EXPECT_EQ(after["metadata_calls"]["i-node2"], 1);
}

TEST_F(EcsEmulatorTest, NodesReachEachOthersEniAddressesThroughTheVpc) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Json state = emu_->State();
  std::string primary2;
  for (const auto& e : state["enis"]) {
    if (e["instance"] == "i-node2") primary2 = e["primary_ip"];
  }
  auto ping = node1_->Exec("ping -c1 -W2 " + primary2);
  EXPECT_EQ(ping.exit_code, 0) << ping.out << ping.err;

  // An ENI per node, on different vSwitches, one secondary IP each.
  struct Side {
    Netns* node;
    EcsClient* client;
    std::string instance, vswitch, gateway, eni, mac, ip, link;
  };
  Side sides[2] = {{node1_.get(), &c1_, "i-node1", "vsw-a", "192.168.10.253", "", "", "", ""},
                   {node2_.get(), &c2_, "i-node2", "vsw-b", "192.168.20.13", "", "", "", ""}};
  for (auto& s : sides) {
    Reply r = s.client->Call("CreateNetworkInterface",
                             {{"VSwitchId", s.vswitch}, {"SecurityGroupId", "sg-test"}});
    ASSERT_EQ(r.status, 200) << r;
    s.eni = r.body["NetworkInterfaceId"];
    s.mac = r.body["MacAddress"];
    r = s.client->Call("AttachNetworkInterface",
                       {{"NetworkInterfaceId", s.eni}, {"InstanceId", s.instance}});
    ASSERT_EQ(r.status, 200) << r;
    r = s.client->Call("AssignPrivateIpAddresses",
                       {{"NetworkInterfaceId", s.eni}, {"SecondaryPrivateIpAddressCount", "1"}});
    ASSERT_EQ(r.status, 200) << r;
    s.ip = r.body["AssignedPrivateIpAddressesSet"]["PrivateIpSet"]["PrivateIpAddress"][0];
    ASSERT_TRUE(WaitFor([&] { return !LinkWithMac(*s.node, s.mac).empty(); }));
    s.link = LinkWithMac(*s.node, s.mac);
    // What the eni plugin does for a pod address: the link up, a source
    // rule into a table whose default route leaves by the ENI. The node
    // never answers ARP on it (arp_ignore 8), like a pod address behind
    // the node: the VPC must know the address's MAC by itself.
    auto cfg = s.node->Exec("ip link set " + s.link + " up && ip addr add " + s.ip + "/32 dev " +
                            s.link + " && sysctl -qw net.ipv4.conf." + s.link + ".arp_ignore=8" +
                            " && ip rule add from " + s.ip + " lookup 100 && " +
                            "ip route add default via " + s.gateway + " dev " + s.link +
                            " onlink table 100");
    ASSERT_EQ(cfg.exit_code, 0) << cfg.err;
  }
  std::string neigh = Sh("ip -n " + emu_->vpc_netns() + " neigh show dev br0 nud permanent").out;
  for (const auto& s : sides) {
    EXPECT_TRUE(Contains(neigh, s.ip + " lladdr " + s.mac)) << neigh;
  }
  auto ping_both = [&] {
    auto p = node1_->Exec("ping -c1 -W2 -I " + sides[0].ip + " " + sides[1].ip);
    EXPECT_EQ(p.exit_code, 0) << p.out << p.err;
    p = node2_->Exec("ping -c1 -W2 -I " + sides[1].ip + " " + sides[0].ip);
    EXPECT_EQ(p.exit_code, 0) << p.out << p.err;
  };
  ping_both();
  // The gateway answers with Alibaba Cloud's gateway MAC, whatever ports
  // the VPC bridge has.
  EXPECT_TRUE(Contains(node1_->Exec("ip neigh show 192.168.10.253").out, "ee:ff:ff:ff:ff:ff"));

  // Other ENIs coming and going change the VPC's bridge ports; the routes
  // and neighbours of the others stay.
  Json other = CreateEni();
  ASSERT_EQ(Attach(other["NetworkInterfaceId"]).status, 200);
  Reply r = c1_.Call("DetachNetworkInterface", {{"NetworkInterfaceId", other["NetworkInterfaceId"]},
                                                {"InstanceId", "i-node1"}});
  ASSERT_EQ(r.status, 200) << r;
  ping_both();

  // An address the cloud did not assign is not routed back to node1.
  // (The emulator assigns addresses at random: the rogue one is any other.)
  state = emu_->State();
  std::set<std::string> assigned;
  for (const auto& e : state["enis"]) {
    for (const auto& ip : e["ips"]) assigned.insert(ip.get<std::string>());
  }
  std::string rogue;
  for (int last = 252; last > 1 && rogue.empty(); --last) {
    std::string candidate = "192.168.10." + std::to_string(last);
    if (!assigned.contains(candidate)) rogue = candidate;
  }
  ASSERT_FALSE(rogue.empty());
  node1_->Exec("ip addr add " + rogue + "/32 dev " + sides[0].link + " && ip rule add from " +
               rogue + " lookup 100");
  ping = node1_->Exec("ping -c1 -W1 -I " + rogue + " " + sides[1].ip);
  EXPECT_NE(ping.exit_code, 0) << ping.out;

  // Once unassigned, node2's address is gone from the VPC.
  r = c2_.Call("UnassignPrivateIpAddresses",
               {{"NetworkInterfaceId", sides[1].eni}, {"PrivateIpAddress.1", sides[1].ip}});
  ASSERT_EQ(r.status, 200) << r;
  ping = node1_->Exec("ping -c1 -W1 -I " + sides[0].ip + " " + sides[1].ip);
  EXPECT_NE(ping.exit_code, 0) << ping.out;
}

TEST_F(EcsEmulatorTest, ConcurrentCallersLeaveAConsistentCloud) {
  Json scenario = Scenario();
  scenario["instance_types"]["ecs.g6.large"]["eni_quota"] = 8;
  ASSERT_NO_FATAL_FAILURE(Start(scenario));
  int free_before = FreeIps("vsw-a");
  std::string vpc = emu_->vpc_netns();
  std::string routes_before = Sh("ip -n " + vpc + " route").out;
  std::string neigh_before = Sh("ip -n " + vpc + " neigh show nud permanent").out;
  // Each worker runs ENI lifecycles; every step must succeed.
  std::vector<std::string> failures[6];
  std::vector<std::thread> workers;
  for (int w = 0; w < 6; ++w) {
    workers.emplace_back([&, w] {
      EcsClient c = w % 2 ? c2_ : c1_;
      std::string instance = w % 2 ? "i-node2" : "i-node1";
      for (int round = 0; round < 2; ++round) {
        Reply r = c.Call("CreateNetworkInterface",
                         {{"VSwitchId", "vsw-a"},
                          {"SecurityGroupId", "sg-test"},
                          {"ClientToken", "w" + std::to_string(w) + "-" + std::to_string(round)}});
        if (r.status != 200) {
          failures[w].push_back("create: " + r.raw);
          continue;
        }
        std::string id = r.body["NetworkInterfaceId"];
        std::vector<std::pair<std::string, Params>> steps = {
            {"AttachNetworkInterface", {{"InstanceId", instance}}},
            {"AssignPrivateIpAddresses", {{"SecondaryPrivateIpAddressCount", "4"}}},
            {"DetachNetworkInterface", {{"InstanceId", instance}}},
            {"DeleteNetworkInterface", {}}};
        for (auto& [action, p] : steps) {
          p["NetworkInterfaceId"] = id;
          r = c.Call(action, p);
          if (r.status != 200) failures[w].push_back(action + ": " + r.raw);
        }
      }
    });
  }
  for (auto& t : workers) t.join();
  for (const auto& f : failures) EXPECT_TRUE(f.empty()) << f.front();
  Json state = emu_->State();
  EXPECT_EQ(state["enis"].size(), 2u) << state["enis"].dump();
  EXPECT_EQ(FreeIps("vsw-a"), free_before);
  EXPECT_EQ(state["calls"]["DeleteNetworkInterface"], 12);
  EXPECT_EQ(Sh("ip -n " + vpc + " route").out, routes_before);
  EXPECT_EQ(Sh("ip -n " + vpc + " neigh show nud permanent").out, neigh_before);
  EXPECT_EQ(NonLoopbackLinks(*node1_), "eth0 ");
  EXPECT_EQ(NonLoopbackLinks(*node2_), "eth0 ");
}

TEST_F(EcsEmulatorTest, OutOfBandEnisAreVisibleAndAttached) {
  ASSERT_NO_FATAL_FAILURE(Start());
  AdminReply added = emu_->AddEni({{"vswitch", "vsw-a"},
                                   {"tags", {{"creator", "someone-else"}}},
                                   {"secondary_ip_count", 2},
                                   {"instance", "i-node2"}});
  ASSERT_TRUE(added.ok()) << added.body.dump();
  Json eni = added.body;
  EXPECT_EQ(eni["status"], "InUse");
  EXPECT_FALSE(LinkWithMac(*node2_, eni["mac"]).empty());
  Reply r = c1_.Call("DescribeNetworkInterfaces",
                     {{"Tag.1.Key", "creator"}, {"Tag.1.Value", "someone-else"}});
  ASSERT_EQ(r.body["TotalCount"], 1) << r;
  const Json& d = r.body["NetworkInterfaceSets"]["NetworkInterfaceSet"][0];
  EXPECT_EQ(d["InstanceId"], "i-node2");
  EXPECT_EQ(Ips(d).size(), 3u);

  AdminReply del = emu_->Admin("DELETE", "/enis/" + eni["id"].get<std::string>());
  EXPECT_TRUE(del.ok()) << del.body.dump();
  EXPECT_TRUE(LinkWithMac(*node2_, eni["mac"]).empty());
  AdminReply bad = emu_->AddEni({{"vswitch", "vsw-nope"}});
  EXPECT_EQ(bad.status, 404) << bad.body.dump();
  EXPECT_TRUE(Contains(bad.body["error"], "vsw-nope")) << bad.body.dump();
}

bool NetnsExists(const std::string& name) { return fs::exists("/var/run/netns/" + name); }

TEST_F(EcsEmulatorTest, StopRemovesEveryNamespaceAndLink) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Json eni = CreateEni();
  ASSERT_EQ(Attach(eni["NetworkInterfaceId"]).status, 200);
  std::string vpc = emu_->vpc_netns();
  ASSERT_TRUE(NetnsExists(vpc));
  ASSERT_FALSE(NonLoopbackLinks(*node1_).empty());
  emu_->Stop();
  EXPECT_FALSE(NetnsExists(vpc));
  EXPECT_EQ(NonLoopbackLinks(*node1_), "");
  EXPECT_EQ(NonLoopbackLinks(*node2_), "");

  // Killed without a chance to clean up: the fixture does it.
  ASSERT_NO_FATAL_FAILURE(Start());
  vpc = emu_->vpc_netns();
  ASSERT_TRUE(NetnsExists(vpc));
  kill(emu_->pid(), SIGKILL);
  ASSERT_TRUE(WaitFor([&] { return !emu_->Running(); }));
  EXPECT_TRUE(NetnsExists(vpc));
  emu_->Stop();
  EXPECT_FALSE(NetnsExists(vpc));
  EXPECT_EQ(NonLoopbackLinks(*node1_), "");
  EXPECT_EQ(NonLoopbackLinks(*node2_), "");
}

TEST_F(EcsEmulatorTest, ScenarioErrorsNameTheField) {
  Json s = Scenario();
  s["instances"][1]["netns"] = "no-such-netns-" + std::to_string(getpid());
  EcsEmulator bad(s);
  std::string why;
  EXPECT_FALSE(bad.Start(&why));
  EXPECT_TRUE(Contains(why, "instances[1].netns")) << why;
  EXPECT_TRUE(Contains(why, "no-such-netns-")) << why;

  s = Scenario();
  s["instances"][0]["type"] = "ecs.nope";
  EcsEmulator bad_type(s);
  EXPECT_FALSE(bad_type.Start(&why));
  EXPECT_TRUE(Contains(why, "instances[0].type")) << why;
  EXPECT_EQ(NonLoopbackLinks(*node1_), "");

  // The primary ENI becomes eth0: a node that has one already is refused.
  ASSERT_EQ(node2_->Exec("ip link add eth0 type veth peer name eth0-peer").exit_code, 0);
  EcsEmulator taken(Scenario());
  EXPECT_FALSE(taken.Start(&why));
  EXPECT_TRUE(Contains(why, "instances[1].netns")) << why;
  EXPECT_TRUE(Contains(why, "eth0")) << why;
  EXPECT_EQ(NonLoopbackLinks(*node1_), "");
}

}  // namespace
}  // namespace trellis::test
