#include "core/store.h"

#include <sqlite3.h>

#include <chrono>

namespace trellis {
namespace {

// Append-only: migration i brings the schema from version i to i + 1.
const char* const kMigrations[] = {
    R"(CREATE TABLE pods (
         container_id TEXT NOT NULL,
         ifname TEXT NOT NULL,
         state TEXT NOT NULL,
         record TEXT NOT NULL,
         updated_at INTEGER NOT NULL DEFAULT (strftime('%s','now')),
         PRIMARY KEY (container_id, ifname));
       CREATE TABLE kv (
         module TEXT NOT NULL,
         key TEXT NOT NULL,
         value BLOB NOT NULL,
         PRIMARY KEY (module, key)) WITHOUT ROWID;)",
};
constexpr int kMigrationCount = sizeof kMigrations / sizeof kMigrations[0];
static_assert(kMigrationCount == Store::kSchemaVersion);

struct Reset {
  sqlite3_stmt* s;
  ~Reset() {
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
  }
};

void Bind(sqlite3_stmt* s, int i, std::string_view v) {
  sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
}
std::string Column(sqlite3_stmt* s, int i) {
  const char* p = reinterpret_cast<const char*>(sqlite3_column_blob(s, i));
  return p == nullptr ? std::string() : std::string(p, sqlite3_column_bytes(s, i));
}

}  // namespace

StatusOr<std::unique_ptr<Store>> Store::Open(const std::filesystem::path& file) {
  std::error_code ec;
  std::filesystem::create_directories(file.parent_path(), ec);
  if (ec) {
    return absl::UnavailableError("cannot create state dir " + file.parent_path().string() + ": " +
                                  ec.message());
  }
  std::unique_ptr<Store> st(new Store(file));
  int rc = sqlite3_open_v2(file.c_str(), &st->db_,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) return st->Error("open");
  sqlite3_busy_timeout(st->db_, 5000);
  TRELLIS_RETURN_IF_ERROR(st->Exec("PRAGMA journal_mode=WAL"));
  TRELLIS_RETURN_IF_ERROR(st->Exec("PRAGMA synchronous=NORMAL"));
  TRELLIS_RETURN_IF_ERROR(st->Exec("PRAGMA foreign_keys=ON"));
  TRELLIS_RETURN_IF_ERROR(st->Migrate());
  // Checkpoints move to the checkpointer's connection (see store.h).
  sqlite3* cp = nullptr;
  if (sqlite3_open_v2(file.c_str(), &cp, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr) !=
      SQLITE_OK) {
    sqlite3_close(cp);
    return st->Error("open the checkpoint connection");
  }
  sqlite3_busy_timeout(cp, 5000);
  TRELLIS_RETURN_IF_ERROR(st->Exec("PRAGMA wal_autocheckpoint=0"));
  st->checkpointer_ = std::thread([s = st.get(), cp] { s->CheckpointLoop(cp); });
  return st;
}

void Store::CheckpointLoop(sqlite3* db) {
  std::unique_lock lock(checkpoint_mu_);
  while (!checkpoint_cv_.wait_for(lock, std::chrono::seconds(1), [&] { return checkpoint_stop_; })) {
    lock.unlock();
    // PASSIVE: copies what no reader still needs, never waits for writers.
    int rc = sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY) errors_.fetch_add(1);
    lock.lock();
  }
  sqlite3_close(db);
}

Store::~Store() {
  if (checkpointer_.joinable()) {
    {
      std::lock_guard lock(checkpoint_mu_);
      checkpoint_stop_ = true;
    }
    checkpoint_cv_.notify_all();
    checkpointer_.join();
  }
  for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
  // The last connection to close checkpoints the WAL and removes it.
  if (db_ != nullptr) sqlite3_close(db_);
}

Status Store::Error(const char* what) {
  errors_.fetch_add(1);
  return absl::UnavailableError(std::string("state store ") + path_.string() + ": " + what +
                                ": " + (db_ ? sqlite3_errmsg(db_) : "cannot open"));
}

Status Store::Exec(const char* sql) {
  char* msg = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &msg) != SQLITE_OK) {
    std::string m = msg ? msg : "unknown error";
    sqlite3_free(msg);
    errors_.fetch_add(1);
    return absl::UnavailableError("state store " + path_.string() + ": " + m);
  }
  return absl::OkStatus();
}

StatusOr<sqlite3_stmt*> Store::Prepare(const char* sql) {
  for (auto& [s, stmt] : cache_) {
    if (s == sql) return stmt;
  }
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr) != SQLITE_OK) {
    return Error("prepare");
  }
  cache_.emplace_back(sql, stmt);
  return stmt;
}

Status Store::Migrate() {
  TRELLIS_RETURN_IF_ERROR(
      Exec("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"));
  int version = 0;
  {
    TRELLIS_ASSIGN_OR_RETURN(sqlite3_stmt * s,
                             Prepare("SELECT value FROM meta WHERE key='schema_version'"));
    Reset r{s};
    if (sqlite3_step(s) == SQLITE_ROW) version = std::stoi(Column(s, 0));
  }
  if (version > kSchemaVersion) {
    return absl::FailedPreconditionError(
        "state store " + path_.string() + " has schema version " + std::to_string(version) +
        ", written by a newer trellisd; this one knows up to " + std::to_string(kSchemaVersion));
  }
  for (int v = version; v < kSchemaVersion; ++v) {
    TRELLIS_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    Status st = Exec(kMigrations[v]);
    if (st.ok()) {
      std::string set = "INSERT OR REPLACE INTO meta(key, value) VALUES('schema_version', '" +
                        std::to_string(v + 1) + "')";
      st = Exec(set.c_str());
    }
    if (!st.ok()) {
      Exec("ROLLBACK").IgnoreError();
      return Annotate(st, "migration to schema " + std::to_string(v + 1));
    }
    TRELLIS_RETURN_IF_ERROR(Exec("COMMIT"));
  }
  schema_version_ = kSchemaVersion;
  return absl::OkStatus();
}

StatusOr<std::optional<std::string>> Store::KvGet(std::string_view module, std::string_view key) {
  std::lock_guard lock(mu_);
  TRELLIS_ASSIGN_OR_RETURN(sqlite3_stmt * s, Prepare("SELECT value FROM kv WHERE module=? AND key=?"));
  Reset r{s};
  Bind(s, 1, module);
  Bind(s, 2, key);
  int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) return std::optional<std::string>(Column(s, 0));
  if (rc == SQLITE_DONE) return std::optional<std::string>();
  return Error("kv get");
}

Status Store::KvPut(std::string_view module, std::string_view key, std::string_view value) {
  std::lock_guard lock(mu_);
  TRELLIS_ASSIGN_OR_RETURN(sqlite3_stmt * s,
                           Prepare("INSERT OR REPLACE INTO kv(module, key, value) VALUES(?,?,?)"));
  Reset r{s};
  Bind(s, 1, module);
  Bind(s, 2, key);
  sqlite3_bind_blob(s, 3, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT);
  if (sqlite3_step(s) != SQLITE_DONE) return Error("kv put");
  return absl::OkStatus();
}

Status Store::KvDelete(std::string_view module, std::string_view key) {
  std::lock_guard lock(mu_);
  TRELLIS_ASSIGN_OR_RETURN(sqlite3_stmt * s, Prepare("DELETE FROM kv WHERE module=? AND key=?"));
  Reset r{s};
  Bind(s, 1, module);
  Bind(s, 2, key);
  if (sqlite3_step(s) != SQLITE_DONE) return Error("kv delete");
  return absl::OkStatus();
}

Status Store::KvScan(std::string_view module, std::string_view prefix,
                     const std::function<bool(std::string_view, std::string_view)>& visit) {
  // Collect first: `visit` may call back into the store.
  std::vector<std::pair<std::string, std::string>> rows;
  {
    std::lock_guard lock(mu_);
    TRELLIS_ASSIGN_OR_RETURN(
        sqlite3_stmt * s,
        Prepare("SELECT key, value FROM kv WHERE module=? AND substr(key,1,?)=? ORDER BY key"));
    Reset r{s};
    Bind(s, 1, module);
    sqlite3_bind_int(s, 2, static_cast<int>(prefix.size()));
    Bind(s, 3, prefix);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) rows.emplace_back(Column(s, 0), Column(s, 1));
    if (rc != SQLITE_DONE) return Error("kv scan");
  }
  for (const auto& [k, v] : rows) {
    if (!visit(k, v)) break;
  }
  return absl::OkStatus();
}

Status Store::PutPod(const PodRow& row) {
  std::lock_guard lock(mu_);
  TRELLIS_ASSIGN_OR_RETURN(
      sqlite3_stmt * s,
      Prepare("INSERT OR REPLACE INTO pods(container_id, ifname, state, record, updated_at) "
              "VALUES(?,?,?,?,strftime('%s','now'))"));
  Reset r{s};
  Bind(s, 1, row.container_id);
  Bind(s, 2, row.ifname);
  Bind(s, 3, row.state);
  Bind(s, 4, row.record);
  if (sqlite3_step(s) != SQLITE_DONE) return Error("pod put");
  return absl::OkStatus();
}

Status Store::DeletePod(std::string_view container_id, std::string_view ifname) {
  std::lock_guard lock(mu_);
  TRELLIS_ASSIGN_OR_RETURN(sqlite3_stmt * s,
                           Prepare("DELETE FROM pods WHERE container_id=? AND ifname=?"));
  Reset r{s};
  Bind(s, 1, container_id);
  Bind(s, 2, ifname);
  if (sqlite3_step(s) != SQLITE_DONE) return Error("pod delete");
  return absl::OkStatus();
}

StatusOr<std::optional<PodRow>> Store::GetPod(std::string_view container_id,
                                              std::string_view ifname) {
  std::lock_guard lock(mu_);
  TRELLIS_ASSIGN_OR_RETURN(
      sqlite3_stmt * s,
      Prepare("SELECT state, record FROM pods WHERE container_id=? AND ifname=?"));
  Reset r{s};
  Bind(s, 1, container_id);
  Bind(s, 2, ifname);
  int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) {
    return std::optional<PodRow>(
        PodRow{std::string(container_id), std::string(ifname), Column(s, 0), Column(s, 1)});
  }
  if (rc == SQLITE_DONE) return std::optional<PodRow>();
  return Error("pod get");
}

StatusOr<std::vector<PodRow>> Store::ListPods() {
  std::lock_guard lock(mu_);
  TRELLIS_ASSIGN_OR_RETURN(
      sqlite3_stmt * s,
      Prepare("SELECT container_id, ifname, state, record FROM pods ORDER BY container_id, ifname"));
  Reset r{s};
  std::vector<PodRow> out;
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    out.push_back({Column(s, 0), Column(s, 1), Column(s, 2), Column(s, 3)});
  }
  if (rc != SQLITE_DONE) return Error("pod list");
  return out;
}

Status Store::CheckWritable() {
  std::lock_guard lock(mu_);
  TRELLIS_ASSIGN_OR_RETURN(
      sqlite3_stmt * s,
      Prepare("INSERT OR REPLACE INTO meta(key, value) VALUES('health_probe', strftime('%s','now'))"));
  Reset r{s};
  if (sqlite3_step(s) != SQLITE_DONE) return Error("health probe write");
  return absl::OkStatus();
}

}  // namespace trellis
