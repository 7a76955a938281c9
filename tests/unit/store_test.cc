// The state store: WAL, schema migrations, a newer schema refused, pod rows,
// and module key/value data namespaced per module.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <fstream>

#include "core/store.h"
#include "harness.h"

namespace trellis {
namespace {

// Runs SQL on the database file directly, as another process would.
std::string Sql(const std::filesystem::path& db, const std::string& sql) {
  sqlite3* h = nullptr;
  EXPECT_EQ(sqlite3_open(db.c_str(), &h), SQLITE_OK);
  std::string out;
  char* err = nullptr;
  sqlite3_exec(
      h, sql.c_str(),
      [](void* o, int n, char** v, char**) {
        auto* s = static_cast<std::string*>(o);
        for (int i = 0; i < n; ++i) *s += (i ? "|" : "") + std::string(v[i] ? v[i] : "NULL");
        *s += "\n";
        return 0;
      },
      &out, &err);
  if (err != nullptr) {
    out += std::string("ERROR: ") + err;
    sqlite3_free(err);
  }
  sqlite3_close(h);
  return out;
}

class StoreTest : public ::testing::Test {
 protected:
  std::filesystem::path db() const { return tmp_ / "state" / "trellis.db"; }
  std::unique_ptr<Store> Open() {
    auto s = Store::Open(db());
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *std::move(s) : nullptr;
  }
  test::TempDir tmp_;
};

TEST_F(StoreTest, FreshDatabaseIsMigratedToTheCurrentSchemaInWalMode) {
  auto s = Open();
  ASSERT_TRUE(s);
  EXPECT_EQ(s->schema_version(), Store::kSchemaVersion);
  EXPECT_EQ(s->path(), db());
  EXPECT_EQ(Sql(db(), "PRAGMA journal_mode"), "wal\n");
  EXPECT_EQ(Sql(db(), "SELECT value FROM meta WHERE key='schema_version'"),
            std::to_string(Store::kSchemaVersion) + "\n");
  EXPECT_EQ(Sql(db(), "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"),
            "kv\nmeta\npods\n");
}

// A database left at an older schema (here: version 0, as an interrupted
// first start leaves it) is brought forward, and reopening migrates nothing.
TEST_F(StoreTest, OlderSchemaIsMigratedOnceAndDataSurvivesReopen) {
  std::filesystem::create_directories(db().parent_path());
  Sql(db(), "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "INSERT INTO meta VALUES('schema_version', '0')");
  {
    auto s = Open();
    ASSERT_TRUE(s);
    EXPECT_EQ(s->schema_version(), 1);
    ASSERT_TRUE(s->KvPut("ipam", "a/10.0.0.1", "x").ok());
    ASSERT_TRUE(s->PutPod({"c1", "eth0", "ready", "{}"}).ok());
  }
  auto s = Open();
  ASSERT_TRUE(s);
  EXPECT_EQ(**s->KvGet("ipam", "a/10.0.0.1"), "x");
  auto pod = s->GetPod("c1", "eth0");
  ASSERT_TRUE(pod.ok() && pod->has_value());
  EXPECT_EQ((*pod)->state, "ready");
}

TEST_F(StoreTest, NewerSchemaIsRefused) {
  { ASSERT_TRUE(Open()); }
  Sql(db(), "UPDATE meta SET value='7' WHERE key='schema_version'");
  auto s = Store::Open(db());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.status().message(),
            "state store " + db().string() +
                " has schema version 7, written by a newer trellisd; this one knows up to " +
                std::to_string(Store::kSchemaVersion));
  // Refusing left it alone: the newer daemon still finds its data.
  EXPECT_EQ(Sql(db(), "SELECT value FROM meta WHERE key='schema_version'"), "7\n");
}

TEST_F(StoreTest, KeyValueDataIsNamespacedPerModule) {
  auto s = Open();
  ASSERT_TRUE(s);
  ASSERT_TRUE(s->KvPut("ipam", "k", "ipam's").ok());
  ASSERT_TRUE(s->KvPut("qos", "k", "qos's").ok());
  ASSERT_TRUE(s->KvPut("qos", "k2", "more").ok());
  EXPECT_EQ(**s->KvGet("ipam", "k"), "ipam's");
  EXPECT_EQ(**s->KvGet("qos", "k"), "qos's");
  EXPECT_FALSE(s->KvGet("ipam", "k2")->has_value());
  EXPECT_FALSE(s->KvGet("policy", "k")->has_value());

  std::vector<std::string> seen;
  ASSERT_TRUE(s->KvScan("ipam", "", [&](std::string_view k, std::string_view v) {
                 seen.push_back(std::string(k) + "=" + std::string(v));
                 return true;
               }).ok());
  EXPECT_EQ(seen, std::vector<std::string>{"k=ipam's"});

  ASSERT_TRUE(s->KvDelete("qos", "k").ok());
  EXPECT_FALSE(s->KvGet("qos", "k")->has_value());
  EXPECT_EQ(**s->KvGet("ipam", "k"), "ipam's");
  // A module name that looks like a prefix of another is still its own.
  ASSERT_TRUE(s->KvPut("ipam2", "k", "other").ok());
  EXPECT_EQ(**s->KvGet("ipam", "k"), "ipam's");
}

// Prefixes are literal: SQL wildcards in them match only themselves.
TEST_F(StoreTest, ScanPrefixIsLiteralAndOrdered) {
  auto s = Open();
  ASSERT_TRUE(s);
  for (const char* k : {"a_b", "axb", "a%", "a%z", "a_a", "b", "a"}) {
    ASSERT_TRUE(s->KvPut("m", k, "v").ok());
  }
  auto scan = [&](const std::string& prefix) {
    std::vector<std::string> keys;
    EXPECT_TRUE(s->KvScan("m", prefix, [&](std::string_view k, std::string_view) {
                   keys.emplace_back(k);
                   return true;
                 }).ok());
    return keys;
  };
  EXPECT_EQ(scan("a_"), (std::vector<std::string>{"a_a", "a_b"}));
  EXPECT_EQ(scan("a%"), (std::vector<std::string>{"a%", "a%z"}));
  EXPECT_EQ(scan(""), (std::vector<std::string>{"a", "a%", "a%z", "a_a", "a_b", "axb", "b"}));
  // The visitor stops the scan by returning false.
  int visits = 0;
  ASSERT_TRUE(s->KvScan("m", "", [&](std::string_view, std::string_view) { return ++visits < 2; }).ok());
  EXPECT_EQ(visits, 2);
}

TEST_F(StoreTest, ValuesAreBinarySafe) {
  auto s = Open();
  ASSERT_TRUE(s);
  const std::string value("a\0b\xff\n", 5);
  ASSERT_TRUE(s->KvPut("m", "bin", value).ok());
  EXPECT_EQ(**s->KvGet("m", "bin"), value);
  ASSERT_TRUE(s->KvPut("m", "empty", "").ok());
  auto empty = s->KvGet("m", "empty");
  ASSERT_TRUE(empty.ok() && empty->has_value());
  EXPECT_EQ(**empty, "");
}

TEST_F(StoreTest, PodRows) {
  auto s = Open();
  ASSERT_TRUE(s);
  ASSERT_TRUE(s->PutPod({"c2", "eth0", "intent", R"({"a":1})"}).ok());
  ASSERT_TRUE(s->PutPod({"c1", "eth0", "ready", "{}"}).ok());
  ASSERT_TRUE(s->PutPod({"c1", "net1", "ready", "{}"}).ok());
  ASSERT_TRUE(s->PutPod({"c2", "eth0", "ready", R"({"a":2})"}).ok());  // replaces
  auto rows = s->ListPods();
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 3u);
  EXPECT_EQ((*rows)[0].container_id + "/" + (*rows)[0].ifname, "c1/eth0");
  EXPECT_EQ((*rows)[1].container_id + "/" + (*rows)[1].ifname, "c1/net1");
  EXPECT_EQ((*rows)[2].state, "ready");
  EXPECT_EQ((*rows)[2].record, R"({"a":2})");
  ASSERT_TRUE(s->DeletePod("c1", "eth0").ok());
  ASSERT_TRUE(s->DeletePod("c1", "eth0").ok());  // already gone: fine
  EXPECT_FALSE(s->GetPod("c1", "eth0")->has_value());
  EXPECT_TRUE(s->GetPod("c1", "net1")->has_value());
  EXPECT_TRUE(s->CheckWritable().ok());
  EXPECT_EQ(s->error_count(), 0u);
}

TEST_F(StoreTest, UnusableStateDirIsNamed) {
  std::filesystem::path file = tmp_ / "file";
  std::ofstream(file) << "x";
  auto s = Store::Open(file / "trellis.db");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(std::string(s.status().message()).rfind("cannot create state dir " + file.string(), 0),
            0u)
      << s.status();
}

}  // namespace
}  // namespace trellis
