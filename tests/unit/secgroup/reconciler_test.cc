// The reconciler against an in-memory ECS with ECS's rule semantics: what it
// plans, what it changes, and what it must never touch.
#include <trellis/abi.h>

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "config.h"
#include "fake_ecs.h"
#include "reconciler.h"

namespace trellis::secgroup {
namespace {

using testing::FakeEcs;

Json Rules(int n) {
  Json rules = Json::array();
  for (int i = 0; i < n; ++i) {
    int port = 8000 + i;
    rules.push_back({{"protocol", "tcp"},
                     {"port_range", std::to_string(port) + "/" + std::to_string(port)},
                     {"source_cidr", "10.0.0.0/8"},
                     {"description", "svc" + std::to_string(i)}});
  }
  return rules;
}

SecgroupConfig Config(const Json& rules, std::vector<std::string> groups = {"sg-a"}) {
  return SecgroupConfig::Parse({{"security_groups", groups}, {"rules", rules}});
}

aliyun::SecurityGroupRule Foreign(const std::string& ports, const std::string& cidr,
                                  const std::string& description = "ops") {
  aliyun::SecurityGroupRule r;
  r.direction = "ingress";
  r.ip_protocol = "TCP";  // as ECS reports it
  r.port_range = ports;
  r.cidr = cidr;
  r.policy = "Accept";
  r.priority = 1;
  r.description = description;
  return r;
}

struct Rig {
  explicit Rig(SecgroupConfig c, std::vector<std::string> groups = {"sg-a"})
      : cfg(std::move(c)), ecs(groups) {}
  SyncReport Sync(bool dry_run = false) {
    Reconciler rec(&ecs, cfg, [this](int level, const std::string& m) {
      logs.push_back({level, m});
    });
    SyncReport rep = rec.Plan();
    rep.leader = true;
    rep.dry_run = dry_run;
    if (!dry_run) rec.Apply(&rep, [this] { return go_on; });
    rep.Finish();
    return rep;
  }
  std::set<std::string> Descriptions(const std::string& sg = "sg-a") {
    std::set<std::string> out;
    for (const auto& r : ecs.Rules(sg)) out.insert(r.description);
    return out;
  }
  SecgroupConfig cfg;
  FakeEcs ecs;
  bool go_on = true;
  std::vector<std::pair<int, std::string>> logs;
};

TEST(SecgroupReconciler, FirstSyncAddsExactlyTheDesiredRulesThenIsInSync) {
  Rig rig(Config(Rules(3)));
  SyncReport rep = rig.Sync();
  EXPECT_EQ(rep.result, "applied");
  EXPECT_EQ(rep.Added(), 3);
  EXPECT_EQ(rep.Removed(), 0);
  EXPECT_EQ(rig.Descriptions(),
            (std::set<std::string>{"trellis/default svc0", "trellis/default svc1",
                                   "trellis/default svc2"}));
  for (const auto& r : rig.ecs.Rules("sg-a")) {
    EXPECT_EQ(r.ip_protocol, "tcp");
    EXPECT_EQ(r.cidr, "10.0.0.0/8");
  }
  rep = rig.Sync();
  EXPECT_EQ(rep.result, "in_sync");
  EXPECT_EQ(rep.groups[0].in_sync.size(), 3u);
  EXPECT_EQ(rig.ecs.Mutations(), 3);  // the second sync only read
}

TEST(SecgroupReconciler, ForeignRulesAreNeverRevokedAndSatisfyEqualDesiredRules) {
  Rig rig(Config(Rules(2)));
  // Someone else's rules: one unrelated, one equal to a desired rule (with
  // another description), one that merely looks like ours.
  rig.ecs.AddOutOfBand("sg-a", Foreign("22/22", "10.0.0.0/8"));
  rig.ecs.AddOutOfBand("sg-a", Foreign("8001/8001", "10.0.0.0/8", "hand-made"));
  rig.ecs.AddOutOfBand("sg-a", Foreign("9999/9999", "10.0.0.0/8", "trellis/defaultish"));
  SyncReport rep = rig.Sync();
  EXPECT_EQ(rep.result, "applied");
  EXPECT_EQ(rep.Added(), 1);  // svc1 is provided by the hand-made rule
  ASSERT_EQ(rep.groups[0].provided_by_foreign.size(), 1u);
  EXPECT_EQ(rep.groups[0].provided_by_foreign[0].first.description, "svc1");
  EXPECT_EQ(rep.groups[0].Foreign(), 3);
  // Whatever the config becomes, foreign rules stay.
  rig.cfg = Config(Json::array());
  rig.cfg.max_revoke_fraction = 1.0;
  rep = rig.Sync();
  EXPECT_EQ(rep.result, "applied");
  EXPECT_EQ(rep.Removed(), 1);  // only svc0, ours
  EXPECT_EQ(rig.Descriptions(), (std::set<std::string>{"ops", "hand-made", "trellis/defaultish"}));
  for (const auto& c : rig.ecs.calls()) {
    if (c.action.rfind("Revoke", 0) == 0) {
      EXPECT_FALSE(c.rule.rule_id.empty());  // by id: never an equal rule re-made by someone else
    }
  }
}

TEST(SecgroupReconciler, RemovingARuleFromTheConfigRevokesOnlyThatOne) {
  Rig rig(Config(Rules(4)));
  ASSERT_EQ(rig.Sync().result, "applied");
  rig.cfg = Config(Json::array({Rules(4)[0], Rules(4)[1], Rules(4)[3]}));
  SyncReport rep = rig.Sync();
  EXPECT_EQ(rep.result, "applied");
  EXPECT_EQ(rep.Removed(), 1);
  ASSERT_EQ(rep.groups[0].to_remove.size(), 1u);
  EXPECT_EQ(rep.groups[0].to_remove[0].rule.description, "svc2");
  EXPECT_EQ(rig.Descriptions(),
            (std::set<std::string>{"trellis/default svc0", "trellis/default svc1",
                                   "trellis/default svc3"}));
}

TEST(SecgroupReconciler, ChangedRulesAreAddedBeforeTheOldOnesGo) {
  Rig rig(Config(Rules(2)));
  ASSERT_EQ(rig.Sync().result, "applied");
  Json changed = Rules(2);
  changed[0]["source_cidr"] = "172.16.0.0/12";
  rig.cfg = Config(changed);
  size_t before = rig.ecs.calls().size();
  SyncReport rep = rig.Sync();
  EXPECT_EQ(rep.result, "applied");
  auto calls = rig.ecs.calls();
  std::vector<std::string> mutations;
  for (size_t i = before; i < calls.size(); ++i) {
    if (calls[i].action != "DescribeSecurityGroupAttribute") mutations.push_back(calls[i].action);
  }
  EXPECT_EQ(mutations, (std::vector<std::string>{"AuthorizeSecurityGroup", "RevokeSecurityGroup"}));
}

TEST(SecgroupReconciler, DryRunReadsOnly) {
  Rig rig(Config(Rules(3)));
  rig.cfg.max_revoke_fraction = 1;
  rig.ecs.AddOutOfBand("sg-a", Foreign("1/1", "10.0.0.0/8", "trellis/default stale"));
  SyncReport rep = rig.Sync(/*dry_run=*/true);
  EXPECT_EQ(rep.result, "dry_run");
  EXPECT_EQ(rep.ToAdd(), 3);
  EXPECT_EQ(rep.ToRemove(), 1);
  EXPECT_EQ(rig.ecs.Mutations(), 0);
  Json j = rep.ToJson();
  EXPECT_EQ(j["summary"]["to_add"], 3);
  EXPECT_EQ(j["summary"]["to_remove"], 1);
  EXPECT_EQ(j["security_groups"][0]["to_remove"][0]["owner"], "ours");
  EXPECT_NE(rep.ToText().find("  - ingress tcp 1/1 from 10.0.0.0/8"), std::string::npos);
  EXPECT_NE(rep.ToText().find("  + ingress tcp 8000/8000 from 10.0.0.0/8"), std::string::npos);
  // A dry run shows the guard as the real sync would meet it.
  rig.cfg.max_revoke_fraction = 0.5;
  rep = rig.Sync(/*dry_run=*/true);
  EXPECT_EQ(rep.result, "refused");
  EXPECT_EQ(rig.ecs.Mutations(), 0);
}

TEST(SecgroupReconciler, MassRevokeGuardRefusesTheWholePlan) {
  Rig rig(Config(Rules(4)));
  ASSERT_EQ(rig.Sync().result, "applied");
  int before = rig.ecs.Mutations();
  // A typo leaves one rule of four, and adds one: 3 of 4 revoked (75%).
  Json typo = Json::array({Rules(4)[0]});
  typo.push_back({{"protocol", "tcp"}, {"port_range", "443/443"}, {"source_cidr", "10.0.0.0/8"}});
  rig.cfg = Config(typo);
  SyncReport rep = rig.Sync();
  EXPECT_EQ(rep.result, "refused");
  EXPECT_TRUE(rep.guard.tripped);
  EXPECT_EQ(rep.guard.managed, 4);
  EXPECT_EQ(rep.guard.to_remove, 3);
  EXPECT_EQ(rig.ecs.Mutations(), before);  // not even the addition
  ASSERT_FALSE(rep.reasons.empty());
  EXPECT_NE(rep.reasons.back().find("would revoke 3 of the 4 rules"), std::string::npos);
  EXPECT_NE(rep.reasons.back().find("max_revoke_fraction"), std::string::npos);
  // At the limit (2 of 4 = 50%) it goes through; 0 forbids any revocation.
  rig.cfg = Config(Json::array({Rules(4)[0], Rules(4)[1]}));
  EXPECT_EQ(rig.Sync().result, "applied");
  rig.cfg = Config(Json::array({Rules(4)[0]}));
  rig.cfg.max_revoke_fraction = 0;
  EXPECT_EQ(rig.Sync().result, "refused");
  rig.cfg.max_revoke_fraction = 1;
  EXPECT_EQ(rig.Sync().result, "applied");
  EXPECT_EQ(rig.Descriptions(), std::set<std::string>{"trellis/default svc0"});
}

TEST(SecgroupReconciler, GuardCountsAcrossEveryGroup) {
  Rig rig(Config(Rules(2), {"sg-a", "sg-b"}), {"sg-a", "sg-b"});
  ASSERT_EQ(rig.Sync().result, "applied");
  EXPECT_EQ(rig.ecs.Rules("sg-b").size(), 2u);
  rig.cfg = Config(Json::array(), {"sg-a", "sg-b"});
  SyncReport rep = rig.Sync();
  EXPECT_EQ(rep.result, "refused");
  EXPECT_EQ(rep.guard.managed, 4);
  EXPECT_EQ(rep.guard.to_remove, 4);
}

TEST(SecgroupReconciler, WorldOpenRulesAreRefusedWithoutConsentAndWarnedWithIt) {
  Json rules = Json::parse(R"([
    {"protocol": "tcp", "port_range": "443/443", "source_cidr": "0.0.0.0/0"},
    {"protocol": "tcp", "port_range": "80/80", "source_cidr": "0.0.0.0/0", "allow_world_open": true},
    {"protocol": "tcp", "port_range": "22/22", "source_cidr": "0.0.0.0/0", "policy": "drop"}
  ])");
  Rig rig(Config(rules));
  SyncReport rep = rig.Sync();
  EXPECT_EQ(rep.result, "applied");
  ASSERT_EQ(rep.refused.size(), 1u);
  EXPECT_EQ(rep.refused[0].rule.index, 0);
  EXPECT_NE(rep.refused[0].reason.find("allow_world_open"), std::string::npos);
  EXPECT_EQ(rep.Added(), 2);
  std::set<std::string> ports;
  for (const auto& r : rig.ecs.Rules("sg-a")) ports.insert(r.port_range);
  EXPECT_EQ(ports, (std::set<std::string>{"80/80", "22/22"}));
  int warnings = 0;
  for (const auto& [level, m] : rig.logs) {
    if (level == TRELLIS_LOG_WARN && m.find("opening sg-a to every address") != std::string::npos) {
      warnings++;
      EXPECT_NE(m.find("80/80"), std::string::npos);
    }
  }
  EXPECT_EQ(warnings, 1);
  EXPECT_EQ(rep.ToJson()["refused"][0]["index"], 0);
}

TEST(SecgroupReconciler, AnOutOfBandDeletionIsRepaired) {
  Rig rig(Config(Rules(3)));
  ASSERT_EQ(rig.Sync().result, "applied");
  rig.ecs.DeleteOutOfBand("sg-a", rig.ecs.Rules("sg-a")[1].rule_id);
  SyncReport rep = rig.Sync();
  EXPECT_EQ(rep.result, "applied");
  EXPECT_EQ(rep.Added(), 1);
  EXPECT_EQ(rig.ecs.Rules("sg-a").size(), 3u);
}

TEST(SecgroupReconciler, ARuleGoneBeforeItsRevokeCountsAsRevoked) {
  Rig rig(Config(Rules(4)));
  ASSERT_EQ(rig.Sync().result, "applied");
  rig.cfg = Config(Json::array({Rules(4)[0], Rules(4)[1], Rules(4)[2]}));
  Reconciler rec(&rig.ecs, rig.cfg, [](int, const std::string&) {});
  SyncReport rep = rec.Plan();
  ASSERT_EQ(rep.groups[0].to_remove.size(), 1u);
  // Between the read and the revoke someone deleted it (or a lagging read
  // showed a rule already revoked).
  rig.ecs.DeleteOutOfBand("sg-a", rep.groups[0].to_remove[0].id);
  rec.Apply(&rep, [] { return true; });
  rep.Finish();
  EXPECT_EQ(rep.result, "applied");
  EXPECT_EQ(rep.Removed(), 1);
  EXPECT_TRUE(rep.failures.empty());
}

TEST(SecgroupReconciler, FailuresAreReportedAndTheRestGoesOn) {
  Rig rig(Config(Rules(3)));
  rig.ecs.Fail("AuthorizeSecurityGroup", "AuthorizationLimitExceed");
  SyncReport rep = rig.Sync();
  EXPECT_EQ(rep.result, "failed");
  ASSERT_EQ(rep.failures.size(), 1u);
  EXPECT_EQ(rep.failures[0].code, "AuthorizationLimitExceed");
  EXPECT_EQ(rep.failures[0].operation, "add");
  EXPECT_EQ(rep.Added(), 2);
  EXPECT_EQ(rig.Sync().result, "applied");  // the next sync finishes the job
  EXPECT_EQ(rig.ecs.Rules("sg-a").size(), 3u);
}

TEST(SecgroupReconciler, AGroupThatCannotBeReadIsLeftAloneAndReported) {
  Rig rig(Config(Rules(1), {"sg-a", "sg-missing"}), {"sg-a"});
  SyncReport rep = rig.Sync();
  EXPECT_EQ(rep.result, "failed");
  EXPECT_EQ(rep.groups[0].added, 1);
  EXPECT_NE(rep.groups[1].error.find("InvalidSecurityGroupId.NotFound"), std::string::npos);
  EXPECT_NE(rep.ToText().find("sg-missing: could not be read"), std::string::npos);
}

TEST(SecgroupReconciler, LosingLeadershipStopsBeforeTheNextChange) {
  Rig rig(Config(Rules(3)));
  Reconciler rec(&rig.ecs, rig.cfg, [](int, const std::string&) {});
  SyncReport rep = rec.Plan();
  int asked = 0;
  rec.Apply(&rep, [&] { return ++asked <= 1; });
  rep.Finish();
  EXPECT_EQ(rep.result, "stopped");
  EXPECT_EQ(rep.Added(), 1);
  EXPECT_EQ(rig.ecs.Mutations(), 1);
}

TEST(SecgroupReconciler, DescriptionDriftIsReportedNotActedOn) {
  Rig rig(Config(Rules(1)));
  ASSERT_EQ(rig.Sync().result, "applied");
  Json renamed = Rules(1);
  renamed[0]["description"] = "renamed";
  rig.cfg = Config(renamed);
  SyncReport rep = rig.Sync();
  EXPECT_EQ(rep.result, "in_sync");
  ASSERT_EQ(rep.groups[0].description_differs.size(), 1u);
  EXPECT_EQ(rep.groups[0].description_differs[0].second.description, "trellis/default svc0");
}

TEST(SecgroupReconciler, EgressAndIpv6RulesRoundTrip) {
  Json rules = Json::parse(R"([
    {"direction": "egress", "protocol": "udp", "port_range": "53/53", "dest_cidr": "10.0.0.53/32"},
    {"protocol": "tcp", "port_range": "80/80", "source_cidr": "fd00:10::/64"},
    {"protocol": "icmpv6", "source_cidr": "fd00::/8"}
  ])");
  Rig rig(Config(rules));
  ASSERT_EQ(rig.Sync().result, "applied");
  EXPECT_EQ(rig.Sync().result, "in_sync");
  bool egress = false;
  for (const auto& r : rig.ecs.Rules("sg-a")) egress |= r.direction == "egress";
  EXPECT_TRUE(egress);
}

}  // namespace
}  // namespace trellis::secgroup
