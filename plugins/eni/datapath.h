// The node datapath of ENI addresses, on libnl (the daemon's network
// namespace: the node's):
//
//   link (found by the ENI's MAC)   up; <ENI primary ip>/32 on it, so the
//                                   kernel's ARP for the gateway leaves with
//                                   an address of this ENI
//   table <base + device index>     <gateway>/32 dev <link> scope link
//                                   default via <gateway> dev <link>
//                                   <policy destination> via <gw> dev <link'>
//                                   (+ on-link routes for every other gateway)
//
// The rule "from <pod ip> lookup <table>" of each pod is the host's (it
// installs it with the pod's address); the table is this module's. The
// table's content is owned wholesale: Setup rewrites it to exactly what the
// ENI needs, Teardown empties it.
#ifndef TRELLIS_PLUGINS_ENI_DATAPATH_H_
#define TRELLIS_PLUGINS_ENI_DATAPATH_H_

#include "pool.h"

namespace trellis::eni {

class NetlinkEniDatapath : public EniDatapath {
 public:
  explicit NetlinkEniDatapath(aliyun::Clock* clock) : clock_(clock) {}
  std::string Setup(const EniLink& link, aliyun::SteadyTime deadline) override;
  void Teardown(const EniLink& link) override;
  bool LinkPresent(const std::string& mac) override;

 private:
  aliyun::Clock* clock_;
};

}  // namespace trellis::eni

#endif  // TRELLIS_PLUGINS_ENI_DATAPATH_H_
