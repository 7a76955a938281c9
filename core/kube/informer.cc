#include "core/kube/informer.h"

#include <spdlog/spdlog.h>

#include <random>

namespace trellis::kube {
namespace {

std::string ResourceVersion(const Json& obj) {
  if (!obj.is_object() || !obj.contains("metadata") || !obj["metadata"].is_object()) return "";
  return obj["metadata"].value("resourceVersion", "");
}

double Jitter() {
  thread_local std::mt19937 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0, 1)(rng);
}

}  // namespace

std::string Informer::Key(const Json& obj) {
  const Json& m = obj.contains("metadata") ? obj["metadata"] : Json::object();
  std::string ns = m.value("namespace", "");
  std::string name = m.value("name", "");
  return ns.empty() ? name : ns + "/" + name;
}

Json Informer::Trim(Json obj) {
  if (obj.contains("metadata") && obj["metadata"].is_object()) {
    obj["metadata"].erase("managedFields");
  }
  return obj;
}

Informer::Informer(Client* client, InformerOptions options, InformerHandlers handlers)
    : client_(client),
      opts_(std::move(options)),
      handlers_(std::move(handlers)),
      backoff_(opts_.backoff_initial) {}

Informer::~Informer() { Stop(); }

void Informer::Start() {
  if (thread_.joinable()) return;
  stop_ = false;
  cancel_.Reset();
  thread_ = std::thread([this] { Loop(); });
}

void Informer::Stop() {
  stop_ = true;
  {
    std::lock_guard lock(mu_);
    cv_.notify_all();
  }
  if (!thread_.joinable()) return;
  // A watch still connecting when Cancel() runs only notices at its first
  // byte: cancel again until the thread is out.
  auto done = std::make_shared<std::atomic<bool>>(false);
  std::thread joiner([this, done] {
    thread_.join();
    *done = true;
  });
  while (!*done) {
    cancel_.Cancel();
    std::unique_lock lock(mu_);
    cv_.notify_all();
    cv_.wait_for(lock, std::chrono::milliseconds(20));
  }
  joiner.join();
}

bool Informer::WaitForSync(std::chrono::steady_clock::time_point deadline) const {
  std::unique_lock lock(mu_);
  return cv_.wait_until(lock, deadline, [&] { return synced_.load() || stop_.load(); }) &&
         synced_.load();
}

std::optional<Json> Informer::Get(const std::string& key) const {
  std::lock_guard lock(mu_);
  auto it = cache_.find(key);
  if (it == cache_.end()) return std::nullopt;
  return it->second;
}

std::vector<Json> Informer::List() const {
  std::lock_guard lock(mu_);
  std::vector<Json> out;
  out.reserve(cache_.size());
  for (const auto& [k, v] : cache_) out.push_back(v);
  return out;
}

Informer::Stats Informer::stats() const {
  std::lock_guard lock(mu_);
  Stats s = stats_;
  s.resource_version = rv_;
  s.objects = cache_.size();
  s.synced = synced_;
  return s;
}

void Informer::Resync() {
  if (!synced_) return;
  std::lock_guard dispatch(dispatch_mu_);
  for (const auto& obj : List()) {
    if (stop_) return;
    if (handlers_.on_update) handlers_.on_update(obj, obj);
  }
}

void Informer::Fail(const std::string& what, const Status& s) {
  {
    std::lock_guard lock(mu_);
    stats_.failures++;
    stats_.last_error = std::string(s.message());
  }
  if (handlers_.on_error) handlers_.on_error(what, s);
}

void Informer::BackOff() {
  // Full jitter on the upper half: concurrent informers (and nodes) that
  // failed together do not retry together.
  auto wait = Millis(static_cast<int64_t>(backoff_.count() * (0.5 + 0.5 * Jitter())));
  backoff_ = std::min(opts_.backoff_max, backoff_ * 2);
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, wait, [&] { return stop_.load(); });
}

Status Informer::ListAll() {
  std::map<std::string, Json> fresh;
  std::string rv, cont;
  do {
    std::string path = WithQuery(opts_.path, {{"limit", std::to_string(opts_.page_size)},
                                              {"continue", cont},
                                              {"fieldSelector", opts_.field_selector}});
    TRELLIS_ASSIGN_OR_RETURN(Json page, client_->List(path));
    if (!page.contains("items") || !(page["items"].is_array() || page["items"].is_null())) {
      return absl::DataLossError("LIST " + opts_.path + ": the answer has no items");
    }
    // The items of a list carry no kind and apiVersion (the API server
    // drops them; watch events keep them): they are put back from the
    // list's own, so that a cached object reads the same whichever way it
    // came. Consumers rely on them (the policy module refuses a
    // NetworkPolicy without apiVersion), and a relist would otherwise
    // report every watched object as changed.
    std::string kind =
        page.contains("kind") && page["kind"].is_string() ? page["kind"].get<std::string>() : "";
    kind = kind.size() > 4 && kind.ends_with("List") ? kind.substr(0, kind.size() - 4) : "";
    const std::string api_version = page.contains("apiVersion") && page["apiVersion"].is_string()
                                        ? page["apiVersion"].get<std::string>()
                                        : "";
    if (page["items"].is_array()) {
      for (auto& item : page["items"]) {
        Json obj = Trim(std::move(item));
        if (obj.is_object()) {
          if (!kind.empty() && !obj.contains("kind")) obj["kind"] = kind;
          if (!api_version.empty() && !obj.contains("apiVersion")) obj["apiVersion"] = api_version;
        }
        // The key first: json's operator= takes its argument by value, and
        // C++17 initialises it before the left side is evaluated.
        std::string key = Key(obj);
        fresh[key] = std::move(obj);
      }
    }
    const Json& meta = page.value("metadata", Json::object());
    rv = meta.value("resourceVersion", "");
    cont = meta.value("continue", "");
    if (stop_) return absl::CancelledError("stopping");
  } while (!cont.empty());

  std::map<std::string, Json> old;
  {
    std::lock_guard lock(mu_);
    old = cache_;
    cache_ = fresh;
    rv_ = rv;
    stats_.lists++;
  }
  {
    std::lock_guard dispatch(dispatch_mu_);
    for (const auto& [k, obj] : fresh) {
      auto it = old.find(k);
      if (it == old.end()) {
        if (handlers_.on_add) handlers_.on_add(obj);
      } else if (ResourceVersion(it->second) != ResourceVersion(obj) || it->second != obj) {
        if (handlers_.on_update) handlers_.on_update(it->second, obj);
      }
    }
    for (const auto& [k, obj] : old) {
      if (!fresh.contains(k) && handlers_.on_delete) handlers_.on_delete(obj);
    }
  }
  {
    std::lock_guard lock(mu_);
    synced_ = true;
    cv_.notify_all();
  }
  if (handlers_.on_list) handlers_.on_list();
  return absl::OkStatus();
}

void Informer::Apply(const std::string& type, Json obj) {
  obj = Trim(std::move(obj));
  const std::string key = Key(obj);
  std::optional<Json> old;
  {
    std::lock_guard lock(mu_);
    auto it = cache_.find(key);
    if (it != cache_.end()) old = it->second;
    if (type == "DELETED") {
      if (it != cache_.end()) cache_.erase(it);
    } else {
      cache_[key] = obj;
    }
    if (auto rv = ResourceVersion(obj); !rv.empty()) rv_ = rv;
    stats_.events++;
  }
  std::lock_guard dispatch(dispatch_mu_);
  if (type == "DELETED") {
    if (handlers_.on_delete) handlers_.on_delete(old ? *old : obj);
  } else if (old) {
    if (handlers_.on_update) handlers_.on_update(*old, obj);
  } else if (handlers_.on_add) {
    handlers_.on_add(obj);
  }
}

Status Informer::WatchOnce(bool* gone) {
  std::string rv;
  {
    std::lock_guard lock(mu_);
    rv = rv_;
    stats_.watches++;
  }
  auto timeout = std::chrono::duration_cast<std::chrono::seconds>(opts_.watch_timeout);
  int64_t secs = std::max<int64_t>(1, timeout.count() + static_cast<int64_t>(timeout.count() * Jitter()));
  std::string path = WithQuery(opts_.path, {{"watch", "1"},
                                            {"resourceVersion", rv},
                                            {"allowWatchBookmarks", "true"},
                                            {"timeoutSeconds", std::to_string(secs)},
                                            {"fieldSelector", opts_.field_selector}});
  size_t delivered = 0;
  Status from_event = absl::OkStatus();
  Status s = client_->Watch(
      path,
      [&](WatchEvent ev) {
        if (stop_) return false;
        if (ev.type == "BOOKMARK") {
          std::lock_guard lock(mu_);
          if (auto r = ResourceVersion(ev.object); !r.empty()) rv_ = r;
          stats_.bookmarks++;
          return true;
        }
        if (ev.type == "ERROR") {
          int code = ev.object.value("code", 0);
          std::string msg = ev.object.value("message", "");
          from_event = HttpStatus(code == 0 ? 500 : code, "WATCH " + opts_.path, ev.object.dump());
          return false;
        }
        if (ev.type != "ADDED" && ev.type != "MODIFIED" && ev.type != "DELETED") {
          from_event = absl::DataLossError("WATCH " + opts_.path + ": unknown event type " + ev.type);
          return false;
        }
        Apply(ev.type, std::move(ev.object));
        delivered++;
        return true;
      },
      &cancel_, Millis((secs + 30) * 1000));
  if (!from_event.ok()) s = from_event;
  if (delivered > 0) backoff_ = opts_.backoff_initial;
  *gone = IsGone(s);
  return s;
}

void Informer::Loop() {
  bool need_list = true;
  while (!stop_) {
    if (need_list) {
      Status s = ListAll();
      if (stop_) break;
      if (!s.ok()) {
        Fail("list " + opts_.name, s);
        BackOff();
        continue;
      }
      need_list = false;
      backoff_ = opts_.backoff_initial;
    }
    bool gone = false;
    auto started = std::chrono::steady_clock::now();
    uint64_t events_before = stats().events;
    Status s = WatchOnce(&gone);
    if (stop_) break;
    if (gone) {
      {
        std::lock_guard lock(mu_);
        stats_.gone++;
      }
      if (handlers_.on_error) handlers_.on_error("watch " + opts_.name, s);
      need_list = true;  // at once: the server said exactly what to do
      continue;
    }
    if (s.ok()) {
      // The server ended the stream (timeoutSeconds): watch again at once,
      // unless it ends streams at once for nothing (a misbehaving proxy).
      if (std::chrono::steady_clock::now() - started > std::chrono::seconds(1) ||
          stats().events > events_before) {
        continue;
      }
      s = absl::UnavailableError("WATCH " + opts_.path + ": the server ended the stream at once");
    }
    Fail("watch " + opts_.name, s);
    BackOff();
  }
}

}  // namespace trellis::kube
