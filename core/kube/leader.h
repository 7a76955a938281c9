// Leader election on a coordination.k8s.io/v1 Lease, as client-go's
// leaderelection does it:
//   - the holder renews spec.renewTime every retry_period;
//   - a candidate takes the Lease when its holder is empty or has not renewed
//     within leaseDurationSeconds, judged by this process's own clock from
//     when it last saw the record change (no trust in other nodes' clocks);
//   - every write is an update with the resourceVersion read (optimistic
//     concurrency): of two candidates exactly one wins, the other gets 409;
//   - a leader that cannot renew within renew_deadline steps down before the
//     Lease can expire for the others (renew_deadline < lease_duration);
//   - Stop() releases a held Lease (holder "" and a 1 s duration) so that a
//     successor need not wait for it to expire.
// THREADING: all methods may be called from any thread; `on_change` runs on
// the elector's thread, never with an elector lock held.
#ifndef TRELLIS_CORE_KUBE_LEADER_H_
#define TRELLIS_CORE_KUBE_LEADER_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "core/kube/client.h"

namespace trellis::kube {

struct LeaderElectionOptions {
  std::string lease_namespace;
  std::string lease_name;
  std::string identity;
  Millis lease_duration{15000};
  Millis renew_deadline{10000};
  Millis retry_period{2000};
};

class LeaderElector {
 public:
  LeaderElector(Client* client, LeaderElectionOptions options,
                std::function<void(bool leader)> on_change);
  ~LeaderElector();  // Stop()

  void Start();
  // Releases the Lease if held and joins the thread. on_change(false) runs
  // first when this process was the leader.
  void Stop();
  // Campaign or not: a node without the module that needs a leader must not
  // hold the Lease. Not campaigning releases a held Lease.
  void SetCampaigning(bool campaign);

  bool leader() const { return leader_.load(); }
  struct Observed {
    std::string holder;
    std::string renew_time;
    uint64_t transitions = 0;
    std::string last_error;
  };
  Observed observed() const;

 private:
  void Loop();
  // One round: create, renew or take over. True when this process holds the
  // Lease afterwards.
  bool TryAcquireOrRenew();
  void Release();
  void SetLeader(bool leader);
  std::string LeasePath(bool item) const;

  Client* client_;
  const LeaderElectionOptions opts_;
  std::function<void(bool)> on_change_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool campaign_ = true;
  std::atomic<bool> leader_{false};
  // The record as last seen and when this process saw it change.
  std::string seen_holder_, seen_renew_;
  std::chrono::steady_clock::time_point seen_at_{};
  Observed observed_;
  std::thread thread_;
};

}  // namespace trellis::kube

#endif  // TRELLIS_CORE_KUBE_LEADER_H_
