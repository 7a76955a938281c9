// The state store: one SQLite database (WAL) under the state dir, holding pod
// records and each module's key/value data. Schema-versioned with migrations.
//
// Durability: synchronous=NORMAL in WAL mode — a commit survives a crash of the
// process (kill -9) at any moment; a power loss may lose the last commits.
// Checkpoints (copying the WAL into the database, with an fsync) run on a
// thread of their own, once a second, on a second connection: a commit on a
// pod's ADD path never pays for one.
// THREADING: every method may be called from any thread; calls are serialised.
#ifndef TRELLIS_CORE_STORE_H_
#define TRELLIS_CORE_STORE_H_

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "core/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace trellis {

struct PodRow {
  std::string container_id;
  std::string ifname;
  std::string state;   // "intent" (side effects may be half done) or "ready"
  std::string record;  // JSON, owned by the pod pipeline
};

class Store {
 public:
  static constexpr int kSchemaVersion = 1;

  static StatusOr<std::unique_ptr<Store>> Open(const std::filesystem::path& file);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  int schema_version() const { return schema_version_; }
  const std::filesystem::path& path() const { return path_; }
  uint64_t error_count() const { return errors_.load(); }

  // Module key/value data; `module` is the namespace, never shared.
  StatusOr<std::optional<std::string>> KvGet(std::string_view module, std::string_view key);
  Status KvPut(std::string_view module, std::string_view key, std::string_view value);
  Status KvDelete(std::string_view module, std::string_view key);
  // Visits keys of `module` starting with `prefix`, in key order, until
  // `visit` returns false.
  Status KvScan(std::string_view module, std::string_view prefix,
                const std::function<bool(std::string_view, std::string_view)>& visit);

  Status PutPod(const PodRow& row);
  Status DeletePod(std::string_view container_id, std::string_view ifname);
  StatusOr<std::optional<PodRow>> GetPod(std::string_view container_id, std::string_view ifname);
  StatusOr<std::vector<PodRow>> ListPods();

  // Proves the database takes a write (for /healthz).
  Status CheckWritable();

 private:
  explicit Store(std::filesystem::path path) : path_(std::move(path)) {}
  Status Migrate();
  Status Exec(const char* sql);
  StatusOr<sqlite3_stmt*> Prepare(const char* sql);
  Status Error(const char* what);
  void CheckpointLoop(sqlite3* db);

  std::filesystem::path path_;
  sqlite3* db_ = nullptr;
  std::mutex mu_;
  std::mutex checkpoint_mu_;
  std::condition_variable checkpoint_cv_;
  bool checkpoint_stop_ = false;
  std::thread checkpointer_;
  int schema_version_ = 0;
  std::atomic<uint64_t> errors_{0};
  std::vector<std::pair<const char*, sqlite3_stmt*>> cache_;
};

}  // namespace trellis

#endif  // TRELLIS_CORE_STORE_H_
