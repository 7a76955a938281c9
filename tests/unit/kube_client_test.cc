// The Kubernetes client, informer, leader election and event recorder against
// the fake API server (tests/fixtures/kube_apiserver): real HTTPS with a
// self-signed CA on a loopback port, the real list/watch protocol.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "core/kube/client.h"
#include "core/kube/events.h"
#include "core/kube/informer.h"
#include "core/kube/leader.h"
#include "fake_apiserver.h"
#include "harness.h"

namespace trellis::kube {
namespace {

using test::FakeApiServer;
using test::WaitFor;

class KubeClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = api_.Listen();
    ASSERT_GT(port_, 0);
    token_file_ = dir_ / "token";
    WriteToken("token-1");
    api_.AddToken("token-1");
    client_ = MakeClient();
    ASSERT_NE(client_, nullptr);
  }
  void WriteToken(const std::string& t) {
    // As the kubelet does: a new file renamed over the old one.
    auto tmp = dir_ / "token.tmp";
    std::ofstream(tmp) << t << "\n";
    std::filesystem::rename(tmp, token_file_);
  }
  std::unique_ptr<Client> MakeClient(const std::string& ca = "", double qps = 1000,
                                     uint32_t burst = 1000) {
    Connection c;
    c.host = "127.0.0.1";
    c.port = port_;
    c.ca_pem = ca.empty() ? api_.ca_pem() : ca;
    c.token_file = token_file_.string();
    c.origin = "test";
    ClientOptions o;
    o.connection = c;
    o.qps = qps;
    o.burst = burst;
    o.request_timeout = Millis(5000);
    auto r = Client::Create(o);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *std::move(r) : nullptr;
  }
  // Records what an informer dispatched.
  struct Seen {
    std::mutex mu;
    std::vector<std::string> log;  // "add ns/x", "update x", "delete x"
    void Add(const std::string& s) {
      std::lock_guard lock(mu);
      log.push_back(s);
    }
    bool Has(const std::string& s) {
      std::lock_guard lock(mu);
      return std::find(log.begin(), log.end(), s) != log.end();
    }
    size_t Count(const std::string& s) {
      std::lock_guard lock(mu);
      return std::count(log.begin(), log.end(), s);
    }
  };
  std::unique_ptr<Informer> MakeInformer(const std::string& path, Seen* seen,
                                         const std::string& selector = "") {
    InformerOptions o;
    o.name = path;
    o.path = path;
    o.field_selector = selector;
    o.backoff_initial = Millis(20);
    o.backoff_max = Millis(200);
    InformerHandlers h;
    h.on_add = [seen](const Json& obj) { seen->Add("add " + Informer::Key(obj)); };
    h.on_update = [seen](const Json& old, const Json& obj) {
      seen->Add(std::string(old == obj ? "resync " : "update ") + Informer::Key(obj));
    };
    h.on_delete = [seen](const Json& obj) { seen->Add("delete " + Informer::Key(obj)); };
    return std::make_unique<Informer>(client_.get(), o, h);
  }
  static bool Synced(Informer& i) {
    return i.WaitForSync(std::chrono::steady_clock::now() + std::chrono::seconds(10));
  }

  test::TempDir tmp_;
  std::filesystem::path dir_ = tmp_.path();
  std::filesystem::path token_file_;
  FakeApiServer api_;
  int port_ = 0;
  std::unique_ptr<Client> client_;
};

TEST_F(KubeClientTest, GetCreateUpdateAndErrors) {
  api_.Apply(FakeApiServer::Namespace("alpha", {{"team", "a"}}));
  auto ns = client_->Get("/api/v1/namespaces/alpha");
  ASSERT_TRUE(ns.ok()) << ns.status();
  EXPECT_EQ((*ns)["metadata"]["labels"]["team"], "a");

  auto missing = client_->Get("/api/v1/namespaces/nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
  EXPECT_NE(missing.status().message().find("GET /api/v1/namespaces/nope: HTTP 404"),
            std::string::npos)
      << missing.status();

  Json lease = {{"metadata", {{"name", "l"}}}, {"spec", {{"holderIdentity", "x"}}}};
  auto created = client_->Create("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases", lease);
  ASSERT_TRUE(created.ok()) << created.status();
  auto again = client_->Create("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases", lease);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists) << again.status();
  Json stale = *created;
  (*created)["spec"]["holderIdentity"] = "y";
  auto updated = client_->Update("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l", *created);
  ASSERT_TRUE(updated.ok()) << updated.status();
  stale["spec"]["holderIdentity"] = "z";
  auto conflict = client_->Update("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l", stale);
  EXPECT_EQ(conflict.status().code(), absl::StatusCode::kAborted) << conflict.status();
}

TEST_F(KubeClientTest, RefusesAServerItCannotVerify) {
  FakeApiServer other;  // another CA
  auto c = MakeClient(other.ca_pem());
  auto r = c->Get("/api/v1/namespaces");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_EQ(api_.Count("GET", "/api/v1/namespaces"), 0) << "no request may reach an unverified peer";
}

TEST_F(KubeClientTest, TokenRotation) {
  ASSERT_TRUE(client_->Get("/api/v1/namespaces").ok());
  // The kubelet writes a new token; the server stops taking the old one.
  api_.AddToken("token-2");
  api_.RevokeToken("token-1");
  WriteToken("token-2");
  auto r = client_->Get("/api/v1/namespaces");
  EXPECT_TRUE(r.ok()) << r.status();
  // Revoked before the new file exists: 401, the token is never in the message.
  api_.RevokeToken("token-2");
  r = client_->Get("/api/v1/namespaces");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated) << r.status();
  EXPECT_EQ(r.status().message().find("token-2"), std::string::npos);
  api_.AddToken("token-3");
  WriteToken("token-3");
  EXPECT_TRUE(client_->Get("/api/v1/namespaces").ok());

  // A watch opened with an old token reconnects with the new one.
  Seen seen;
  auto inf = MakeInformer("/api/v1/namespaces", &seen);
  inf->Start();
  ASSERT_TRUE(Synced(*inf));
  api_.AddToken("token-4");
  api_.RevokeToken("token-3");
  WriteToken("token-4");
  api_.DropWatches();
  api_.Apply(FakeApiServer::Namespace("after-rotation"));
  EXPECT_TRUE(WaitFor([&] { return seen.Has("add after-rotation"); })) << inf->stats().last_error;
  EXPECT_EQ(inf->stats().lists, 1u);
}

TEST_F(KubeClientTest, DeadlineBoundsASlowServer) {
  api_.Apply(FakeApiServer::Pod("default", "slow", "n1"));
  api_.SetLatency("/pods/slow", std::chrono::seconds(30));
  auto r = client_->Get("/api/v1/namespaces/default/pods/slow", Millis(200));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  api_.SetLatency("/pods/slow", Millis(0));
  EXPECT_TRUE(client_->Get("/api/v1/namespaces/default/pods/slow", Millis(2000)).ok());
}

TEST_F(KubeClientTest, RateLimitRefusesWhatWouldMissItsDeadline) {
  auto c = MakeClient("", /*qps=*/0.01, /*burst=*/2);
  EXPECT_TRUE(c->Get("/api/v1/namespaces").ok());
  EXPECT_TRUE(c->Get("/api/v1/namespaces").ok());
  // The third token comes in 100 s; a 300 ms deadline cannot wait for it.
  auto r = c->Get("/api/v1/namespaces", Millis(300));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_NE(r.status().message().find("rate limit"), std::string::npos) << r.status();
  EXPECT_EQ(api_.Count("GET", "/api/v1/namespaces"), 2) << "the refused request must not be sent";
}

TEST_F(KubeClientTest, InformerListsPagesAndFollowsTheWatch) {
  for (int i = 0; i < 5; ++i) api_.Apply(FakeApiServer::Namespace("ns-" + std::to_string(i)));
  api_.SetMaxPage(2);
  Seen seen;
  auto inf = MakeInformer("/api/v1/namespaces", &seen);
  inf->Start();
  ASSERT_TRUE(Synced(*inf));
  EXPECT_EQ(inf->List().size(), 5u);
  EXPECT_GE(api_.Count("GET", "/api/v1/namespaces", false), 3) << "5 objects in pages of 2";
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(seen.Has("add ns-" + std::to_string(i)));

  api_.Apply(FakeApiServer::Namespace("ns-new", {{"a", "b"}}));
  EXPECT_TRUE(WaitFor([&] { return seen.Has("add ns-new"); }));
  api_.Apply(FakeApiServer::Namespace("ns-new", {{"a", "c"}}));
  EXPECT_TRUE(WaitFor([&] { return seen.Has("update ns-new"); }));
  EXPECT_EQ((*inf->Get("ns-new"))["metadata"]["labels"]["a"], "c");
  api_.Delete("Namespace", "", "ns-0");
  EXPECT_TRUE(WaitFor([&] { return seen.Has("delete ns-0"); }));
  EXPECT_FALSE(inf->Get("ns-0").has_value());
  EXPECT_EQ(inf->stats().lists, 1u);

  inf->Resync();
  EXPECT_TRUE(seen.Has("resync ns-new"));
  EXPECT_FALSE(seen.Has("resync ns-0"));
  EXPECT_TRUE(inf->stats().resource_version == std::to_string(api_.resource_version()));
}

// A list's items come without kind and apiVersion; the cache has them as a
// watch event would (the policy module refuses a NetworkPolicy without
// them), and a relist of unchanged objects reports no update.
TEST_F(KubeClientTest, ListedObjectsKeepTheirKindAndApiVersion) {
  api_.Apply(FakeApiServer::NetworkPolicy("shop", "listed", {{"podSelector", Json::object()}}));
  Seen seen;
  auto inf = MakeInformer("/apis/networking.k8s.io/v1/networkpolicies", &seen);
  inf->Start();
  ASSERT_TRUE(Synced(*inf));
  auto listed = inf->Get("shop/listed");
  ASSERT_TRUE(listed.has_value());
  EXPECT_EQ((*listed)["kind"], "NetworkPolicy");
  EXPECT_EQ((*listed)["apiVersion"], "networking.k8s.io/v1");
  api_.Apply(FakeApiServer::NetworkPolicy("shop", "watched", {{"podSelector", Json::object()}}));
  ASSERT_TRUE(WaitFor([&] { return seen.Has("add shop/watched"); }));
  EXPECT_EQ((*inf->Get("shop/watched"))["kind"], "NetworkPolicy");
  // A relist (410) of objects the watch delivered: nothing changed.
  api_.PauseWatches(true);
  api_.Apply(FakeApiServer::Namespace("elsewhere"));  // the watch falls behind...
  api_.Compact();                                     // ... past the compaction
  api_.PauseWatches(false);
  ASSERT_TRUE(WaitFor([&] { return inf->stats().lists >= 2; }));
  EXPECT_FALSE(seen.Has("update shop/watched"));
  EXPECT_FALSE(seen.Has("update shop/listed"));
}

TEST_F(KubeClientTest, FieldSelectorScopesTheCacheAndTheWatch) {
  api_.Apply(FakeApiServer::Pod("default", "mine", "node-a"));
  api_.Apply(FakeApiServer::Pod("default", "theirs", "node-b"));
  Seen seen;
  auto inf = MakeInformer("/api/v1/pods", &seen, "spec.nodeName=node-a");
  inf->Start();
  ASSERT_TRUE(Synced(*inf));
  EXPECT_TRUE(inf->Get("default/mine").has_value());
  EXPECT_FALSE(inf->Get("default/theirs").has_value());
  api_.Apply(FakeApiServer::Pod("default", "later", "node-b"));
  api_.Apply(FakeApiServer::Pod("default", "later-mine", "node-a"));
  EXPECT_TRUE(WaitFor([&] { return seen.Has("add default/later-mine"); }));
  EXPECT_FALSE(seen.Has("add default/later"));
  auto reqs = api_.Requests();
  bool selected = std::any_of(reqs.begin(), reqs.end(), [](const auto& r) {
    return r.watch && r.query.find("fieldSelector=spec.nodeName=node-a") != std::string::npos;
  });
  EXPECT_TRUE(selected) << "the watch itself must carry the field selector";
}

TEST_F(KubeClientTest, ReconnectsAfterADroppedStreamWithoutRelisting) {
  api_.Apply(FakeApiServer::Namespace("one"));
  Seen seen;
  auto inf = MakeInformer("/api/v1/namespaces", &seen);
  inf->Start();
  ASSERT_TRUE(Synced(*inf));
  ASSERT_TRUE(WaitFor([&] { return api_.OpenWatches("namespaces") == 1; }));
  for (int round = 0; round < 3; ++round) {
    api_.DropWatches();
    const std::string name = "after-drop-" + std::to_string(round);
    api_.Apply(FakeApiServer::Namespace(name));
    EXPECT_TRUE(WaitFor([&] { return seen.Has("add " + name); })) << round;
  }
  auto s = inf->stats();
  EXPECT_EQ(s.lists, 1u) << "a broken stream resumes from its resourceVersion";
  EXPECT_GE(s.watches, 4u);
  EXPECT_GE(s.failures, 3u);
  EXPECT_EQ(seen.Count("add one"), 1u) << "nothing is delivered twice";
}

TEST_F(KubeClientTest, RelistsAfterGoneErrorEvent) {
  api_.Apply(FakeApiServer::Namespace("stays"));
  api_.Apply(FakeApiServer::Namespace("goes"));
  Seen seen;
  auto inf = MakeInformer("/api/v1/namespaces", &seen);
  inf->Start();
  ASSERT_TRUE(Synced(*inf));
  ASSERT_TRUE(WaitFor([&] { return api_.OpenWatches("namespaces") == 1; }));
  // Changes the watch never delivered, then the history is compacted away.
  api_.PauseWatches(true);
  api_.Apply(FakeApiServer::Namespace("comes"));
  api_.Delete("Namespace", "", "goes");
  api_.Compact();
  api_.PauseWatches(false);
  EXPECT_TRUE(WaitFor([&] { return seen.Has("add comes") && seen.Has("delete goes"); }));
  auto s = inf->stats();
  EXPECT_EQ(s.gone, 1u);
  EXPECT_EQ(s.lists, 2u);
  EXPECT_TRUE(inf->Get("stays").has_value());
  EXPECT_FALSE(inf->Get("goes").has_value());
}

TEST_F(KubeClientTest, RelistsAfterGoneHttpStatus) {
  api_.SetGoneAsHttpStatus(true);
  Seen seen;
  auto inf = MakeInformer("/api/v1/namespaces", &seen);
  inf->Start();
  ASSERT_TRUE(Synced(*inf));
  ASSERT_TRUE(WaitFor([&] { return api_.OpenWatches("namespaces") == 1; }));
  api_.PauseWatches(true);
  api_.Apply(FakeApiServer::Namespace("missed"));
  api_.Compact();
  api_.DropWatches();  // the re-watch from the old resourceVersion gets HTTP 410
  EXPECT_TRUE(WaitFor([&] { return seen.Has("add missed"); }));
  api_.PauseWatches(false);
  EXPECT_EQ(inf->stats().gone, 1u);
  EXPECT_EQ(inf->stats().lists, 2u);
}

TEST_F(KubeClientTest, BookmarksSpareARelist) {
  Seen seen;
  auto inf = MakeInformer("/api/v1/namespaces", &seen);
  inf->Start();
  ASSERT_TRUE(Synced(*inf));
  ASSERT_TRUE(WaitFor([&] { return api_.OpenWatches("namespaces") == 1; }));
  // Other resources move the resourceVersion; the namespaces watch sees
  // nothing but the bookmark.
  for (int i = 0; i < 3; ++i) api_.Apply(FakeApiServer::Pod("default", "p" + std::to_string(i), "n"));
  api_.SendBookmarks();
  const std::string now = std::to_string(api_.resource_version());
  ASSERT_TRUE(WaitFor([&] { return inf->stats().resource_version == now; }));
  EXPECT_EQ(inf->stats().bookmarks, 1u);
  api_.Compact();
  api_.DropWatches();
  api_.Apply(FakeApiServer::Namespace("after"));
  EXPECT_TRUE(WaitFor([&] { return seen.Has("add after"); }));
  EXPECT_EQ(inf->stats().gone, 0u) << "the bookmark moved the watch past the compaction";
  EXPECT_EQ(inf->stats().lists, 1u);
}

TEST_F(KubeClientTest, StopEndsAnOpenWatch) {
  Seen seen;
  auto inf = MakeInformer("/api/v1/namespaces", &seen);
  inf->Start();
  ASSERT_TRUE(Synced(*inf));
  ASSERT_TRUE(WaitFor([&] { return api_.OpenWatches("namespaces") == 1; }));
  inf->Stop();
  EXPECT_TRUE(WaitFor([&] { return api_.OpenWatches("namespaces") == 0; }));
}

// ---------------------------------------------------------------- leases --

struct Candidate {
  std::atomic<bool> leader{false};
  std::atomic<int> changes{0};
  std::unique_ptr<LeaderElector> elector;
};

std::unique_ptr<Candidate> MakeCandidate(Client* c, const std::string& id) {
  auto cand = std::make_unique<Candidate>();
  LeaderElectionOptions o{"kube-system", "trellis-secgroup", id, Millis(2000), Millis(1500),
                          Millis(100)};
  Candidate* p = cand.get();
  cand->elector = std::make_unique<LeaderElector>(c, o, [p](bool l) {
    p->leader = l;
    p->changes++;
  });
  return cand;
}

TEST_F(KubeClientTest, OneLeaderAmongCandidatesAndHandoverOnRelease) {
  std::vector<std::unique_ptr<Candidate>> c;
  for (const char* id : {"node-a", "node-b", "node-c"}) c.push_back(MakeCandidate(client_.get(), id));
  for (auto& x : c) x->elector->Start();
  auto leaders = [&] {
    int n = 0;
    for (auto& x : c) n += x->leader ? 1 : 0;
    return n;
  };
  ASSERT_TRUE(WaitFor([&] { return leaders() == 1; }));
  for (int i = 0; i < 20; ++i) {
    ASSERT_LE(leaders(), 1);
    std::this_thread::sleep_for(Millis(50));  // sampling, not waiting for a condition
  }
  auto lease = api_.Get("Lease", "kube-system", "trellis-secgroup");
  ASSERT_TRUE(lease.has_value());
  size_t first = 0;
  while (!c[first]->leader) first++;
  EXPECT_EQ((*lease)["spec"]["holderIdentity"], c[first]->elector->observed().holder);
  EXPECT_EQ((*lease)["spec"]["leaseDurationSeconds"], 2);

  // A graceful stop releases the Lease: another candidate takes it without
  // waiting for it to expire.
  c[first]->elector->Stop();
  EXPECT_FALSE(c[first]->leader);
  ASSERT_TRUE(WaitFor([&] { return leaders() == 1; }));
  auto after = api_.Get("Lease", "kube-system", "trellis-secgroup");
  EXPECT_NE((*after)["spec"]["holderIdentity"], (*lease)["spec"]["holderIdentity"]);
  EXPECT_EQ((*after)["spec"]["leaseTransitions"], 1);
}

TEST_F(KubeClientTest, TakesOverAnExpiredLeaseOnly) {
  // A holder that died without releasing: its renewals stop.
  api_.Apply({{"kind", "Lease"},
              {"metadata", {{"name", "trellis-secgroup"}, {"namespace", "kube-system"}}},
              {"spec",
               {{"holderIdentity", "ghost"},
                {"leaseDurationSeconds", 2},
                {"renewTime", MicroTimeNow()},
                {"leaseTransitions", 4}}}});
  auto cand = MakeCandidate(client_.get(), "node-a");
  cand->elector->Start();
  ASSERT_TRUE(WaitFor([&] { return cand->elector->observed().holder == "ghost"; }));
  EXPECT_FALSE(cand->leader) << "the Lease has not expired yet";
  ASSERT_TRUE(WaitFor([&] { return cand->leader.load(); }));
  auto lease = api_.Get("Lease", "kube-system", "trellis-secgroup");
  EXPECT_EQ((*lease)["spec"]["holderIdentity"], "node-a");
  EXPECT_EQ((*lease)["spec"]["leaseTransitions"], 5);

  // Not campaigning any more (its module stopped): the Lease is released.
  cand->elector->SetCampaigning(false);
  ASSERT_TRUE(WaitFor([&] { return !cand->leader; }));
  ASSERT_TRUE(WaitFor([&] {
    auto l = api_.Get("Lease", "kube-system", "trellis-secgroup");
    return l && (*l)["spec"]["holderIdentity"] == "";
  }));
}

TEST_F(KubeClientTest, LeaderStepsDownWhenItCannotRenew) {
  auto cand = MakeCandidate(client_.get(), "node-a");
  cand->elector->Start();
  ASSERT_TRUE(WaitFor([&] { return cand->leader.load(); }));
  api_.RevokeToken("token-1");  // every renewal fails from now on
  ASSERT_TRUE(WaitFor([&] { return !cand->leader; }));
  EXPECT_NE(cand->elector->observed().last_error.find("401"), std::string::npos)
      << cand->elector->observed().last_error;
}

// ---------------------------------------------------------------- events --

TEST_F(KubeClientTest, EventsArePostedOnceAndDescribeThePod) {
  EventRecorder rec(client_.get(), "trellis", "node-a");
  rec.Start();
  PodRef pod{"shop", "cart-1", "uid-1"};
  rec.Post({pod, "Warning", "IPAllocationFailed", "no free IPv4 address"});
  rec.Post({pod, "Warning", "IPAllocationFailed", "no free IPv4 address"});  // kubelet retry
  rec.Post({pod, "Warning", "NetworkPolicySetupFailed", "policy refused"});
  ASSERT_TRUE(WaitFor([&] { return rec.posted() == 2; }));
  auto events = api_.List("Event", "shop");
  ASSERT_EQ(events.size(), 2u);
  std::set<std::string> reasons;
  for (const auto& e : events) {
    reasons.insert(e["reason"].get<std::string>());
    EXPECT_EQ(e["involvedObject"]["kind"], "Pod");
    EXPECT_EQ(e["involvedObject"]["name"], "cart-1");
    EXPECT_EQ(e["involvedObject"]["uid"], "uid-1");
    EXPECT_EQ(e["type"], "Warning");
    EXPECT_EQ(e["source"]["component"], "trellis");
    EXPECT_EQ(e["source"]["host"], "node-a");
    EXPECT_EQ(e["count"], 1);
  }
  EXPECT_EQ(reasons, (std::set<std::string>{"IPAllocationFailed", "NetworkPolicySetupFailed"}));
  rec.Stop();
}

}  // namespace
}  // namespace trellis::kube
