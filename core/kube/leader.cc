#include "core/kube/leader.h"

#include <spdlog/spdlog.h>

namespace trellis::kube {

using SteadyClock = std::chrono::steady_clock;

LeaderElector::LeaderElector(Client* client, LeaderElectionOptions options,
                             std::function<void(bool)> on_change)
    : client_(client), opts_(std::move(options)), on_change_(std::move(on_change)) {}

LeaderElector::~LeaderElector() { Stop(); }

std::string LeaderElector::LeasePath(bool item) const {
  std::string p = "/apis/coordination.k8s.io/v1/namespaces/" + opts_.lease_namespace + "/leases";
  return item ? p + "/" + opts_.lease_name : p;
}

void LeaderElector::Start() {
  std::lock_guard lock(mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { Loop(); });
}

void LeaderElector::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void LeaderElector::SetCampaigning(bool campaign) {
  {
    std::lock_guard lock(mu_);
    campaign_ = campaign;
  }
  cv_.notify_all();
}

LeaderElector::Observed LeaderElector::observed() const {
  std::lock_guard lock(mu_);
  return observed_;
}

void LeaderElector::SetLeader(bool leader) {
  if (leader_.exchange(leader) == leader) return;
  spdlog::info("lease {}/{}: {} ({})", opts_.lease_namespace, opts_.lease_name,
               leader ? "this node is now the leader" : "this node is no longer the leader",
               opts_.identity);
  if (on_change_) on_change_(leader);
}

bool LeaderElector::TryAcquireOrRenew() {
  auto now = SteadyClock::now();
  const std::string now_text = MicroTimeNow();
  const int64_t duration_s = std::chrono::duration_cast<std::chrono::seconds>(opts_.lease_duration).count();
  auto record_error = [&](const Status& s) {
    std::lock_guard lock(mu_);
    observed_.last_error = std::string(s.message());
  };
  auto got = client_->Get(LeasePath(true));
  if (!got.ok() && got.status().code() == absl::StatusCode::kNotFound) {
    Json lease = {{"apiVersion", "coordination.k8s.io/v1"},
                  {"kind", "Lease"},
                  {"metadata", {{"name", opts_.lease_name}, {"namespace", opts_.lease_namespace}}},
                  {"spec",
                   {{"holderIdentity", opts_.identity},
                    {"leaseDurationSeconds", duration_s},
                    {"acquireTime", now_text},
                    {"renewTime", now_text},
                    {"leaseTransitions", 0}}}};
    auto created = client_->Create(LeasePath(false), lease);
    if (!created.ok()) {
      record_error(created.status());
      return false;
    }
    std::lock_guard lock(mu_);
    seen_holder_ = opts_.identity;
    seen_renew_ = now_text;
    seen_at_ = now;
    observed_ = {opts_.identity, now_text, 0, ""};
    return true;
  }
  if (!got.ok()) {
    record_error(got.status());
    return false;
  }
  Json lease = *std::move(got);
  Json spec = lease.value("spec", Json::object());
  std::string holder = spec.value("holderIdentity", "");
  std::string renew = spec.value("renewTime", "");
  int64_t their_duration = spec.value("leaseDurationSeconds", duration_s);
  uint64_t transitions = spec.value("leaseTransitions", uint64_t{0});
  bool expired;
  {
    std::lock_guard lock(mu_);
    if (holder != seen_holder_ || renew != seen_renew_ || seen_at_ == SteadyClock::time_point{}) {
      seen_holder_ = holder;
      seen_renew_ = renew;
      seen_at_ = now;
    }
    expired = now >= seen_at_ + std::chrono::seconds(their_duration);
    observed_.holder = holder;
    observed_.renew_time = renew;
    observed_.transitions = transitions;
  }
  if (!holder.empty() && holder != opts_.identity && !expired) return false;

  if (holder != opts_.identity) {
    spec["acquireTime"] = now_text;
    spec["leaseTransitions"] = transitions + 1;
  }
  spec["holderIdentity"] = opts_.identity;
  spec["leaseDurationSeconds"] = duration_s;
  spec["renewTime"] = now_text;
  lease["spec"] = spec;
  // metadata.resourceVersion stays as read: the update fails with 409 if
  // anyone wrote the Lease in between.
  auto updated = client_->Update(LeasePath(true), lease);
  if (!updated.ok()) {
    record_error(updated.status());
    return false;
  }
  std::lock_guard lock(mu_);
  seen_holder_ = opts_.identity;
  seen_renew_ = now_text;
  seen_at_ = now;
  observed_ = {opts_.identity, now_text, spec.value("leaseTransitions", uint64_t{0}), ""};
  return true;
}

void LeaderElector::Release() {
  auto got = client_->Get(LeasePath(true));
  if (!got.ok()) return;
  Json lease = *std::move(got);
  Json& spec = lease["spec"];
  if (!spec.is_object() || spec.value("holderIdentity", "") != opts_.identity) return;
  spec["holderIdentity"] = "";
  spec["leaseDurationSeconds"] = 1;
  spec["renewTime"] = MicroTimeNow();
  if (auto s = client_->Update(LeasePath(true), lease); !s.ok()) {
    spdlog::warn("lease {}/{}: releasing it failed, it expires on its own: {}",
                 opts_.lease_namespace, opts_.lease_name, s.status().message());
  } else {
    spdlog::info("lease {}/{}: released", opts_.lease_namespace, opts_.lease_name);
  }
}

void LeaderElector::Loop() {
  SteadyClock::time_point last_renew{};
  while (true) {
    bool campaign;
    {
      std::lock_guard lock(mu_);
      if (stop_) break;
      campaign = campaign_;
    }
    if (!campaign) {
      if (leader_) {
        SetLeader(false);
        Release();
      }
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stop_ || campaign_; });
      continue;
    }
    bool ok = TryAcquireOrRenew();
    auto now = SteadyClock::now();
    if (ok) {
      last_renew = now;
      SetLeader(true);
    } else if (leader_ && now - last_renew >= opts_.renew_deadline) {
      // Step down before the others may take over: they wait a whole
      // lease_duration from our last renewal, we only renew_deadline.
      spdlog::warn("lease {}/{}: not renewed for {}ms ({}), stepping down",
                   opts_.lease_namespace, opts_.lease_name, opts_.renew_deadline.count(),
                   observed().last_error);
      SetLeader(false);
    }
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, opts_.retry_period, [&] { return stop_ || !campaign_; });
  }
  if (leader_) {
    SetLeader(false);
    Release();
  }
}

}  // namespace trellis::kube
