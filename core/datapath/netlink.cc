#include "core/datapath/netlink.h"

#include <fcntl.h>
#include <net/if.h>
#include <netlink/errno.h>
#include <sched.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <thread>

namespace trellis::nl {

Status Error(int nl_err, const std::string& what) {
  int e = nl_err < 0 ? -nl_err : nl_err;
  std::string msg = what + ": " + nl_geterror(e);
  switch (e) {
    case NLE_OBJ_NOTFOUND:
    case NLE_NODEV:
      return absl::NotFoundError(msg);
    case NLE_EXIST:
      return absl::AlreadyExistsError(msg);
    case NLE_PERM:
      return absl::PermissionDeniedError(msg);
    case NLE_INVAL:
    case NLE_RANGE:
      return absl::InvalidArgumentError(msg);
    case NLE_BUSY:
    case NLE_AGAIN:
    case NLE_DUMP_INTR:
      return absl::UnavailableError(msg);
    default:
      return absl::InternalError(msg);
  }
}

StatusOr<Socket> OpenRouteSocket() {
  Socket sk(nl_socket_alloc());
  if (!sk) return absl::ResourceExhaustedError("nl_socket_alloc failed");
  int err = nl_connect(sk.get(), NETLINK_ROUTE);
  if (err < 0) return Error(err, "netlink connect");
  return sk;
}

namespace {

// The one thread that enters other network namespaces (issue contract: never
// setns() on a shared worker thread). It runs nothing but these tasks, so the
// namespace it was left in never matters; it lives as long as the process.
class NetnsThread {
 public:
  static NetnsThread& Get() {
    static NetnsThread* t = new NetnsThread();  // never destroyed: its thread is detached
    return *t;
  }
  StatusOr<Socket> Open(const std::string& netns_path, int fd) {
    std::packaged_task<StatusOr<Socket>()> task([&] () -> StatusOr<Socket> {
      if (setns(fd, CLONE_NEWNET) != 0) {
        return absl::UnavailableError("setns " + netns_path + ": " + std::strerror(errno));
      }
      return OpenRouteSocket();
    });
    auto result = task.get_future();
    {
      std::lock_guard lock(mu_);
      queue_.push_back(std::move(task));
    }
    cv_.notify_one();
    return result.get();
  }

 private:
  NetnsThread() {
    std::thread([this] {
      while (true) {
        std::packaged_task<StatusOr<Socket>()> task;
        {
          std::unique_lock lock(mu_);
          cv_.wait(lock, [&] { return !queue_.empty(); });
          task = std::move(queue_.front());
          queue_.pop_front();
        }
        task();
      }
    }).detach();
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::packaged_task<StatusOr<Socket>()>> queue_;
};

}  // namespace

StatusOr<Socket> OpenRouteSocketIn(const std::string& netns_path) {
  int fd = open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    std::string msg = "network namespace " + netns_path + ": " + std::strerror(e);
    return e == ENOENT ? absl::NotFoundError(msg) : absl::UnavailableError(msg);
  }
  StatusOr<Socket> result = NetnsThread::Get().Open(netns_path, fd);
  close(fd);
  return result;
}

StatusOr<Addr> ParseAddr(const std::string& text, int family) {
  nl_addr* a = nullptr;
  int err = nl_addr_parse(text.c_str(), family, &a);
  if (err < 0) return Error(err, "address " + text);
  return Addr(a);
}

std::string FormatAddr(nl_addr* a) {
  char buf[128];
  return nl_addr2str(a, buf, sizeof buf);
}

StatusOr<Link> GetLink(nl_sock* sk, const std::string& name) {
  rtnl_link* l = nullptr;
  int err = rtnl_link_get_kernel(sk, 0, name.c_str(), &l);
  if (err < 0) {
    if (err == -NLE_OBJ_NOTFOUND || err == -NLE_NODEV) {
      return absl::NotFoundError("interface " + name + " not found");
    }
    return Error(err, "get link " + name);
  }
  return Link(l);
}

namespace {
template <class Alloc>
StatusOr<Cache> Dump(Alloc&& alloc, const char* what) {
  for (int attempt = 0; attempt < 10; ++attempt) {
    nl_cache* c = nullptr;
    int err = alloc(&c);
    if (err == 0) return Cache(c);
    if (err != -NLE_DUMP_INTR) return Error(err, what);
  }
  return absl::UnavailableError(std::string(what) + ": dump interrupted 10 times in a row");
}
}  // namespace

StatusOr<Cache> LinkCache(nl_sock* sk) {
  return Dump([&](nl_cache** c) { return rtnl_link_alloc_cache(sk, AF_UNSPEC, c); }, "link dump");
}
StatusOr<Cache> AddrCache(nl_sock* sk) {
  return Dump([&](nl_cache** c) { return rtnl_addr_alloc_cache(sk, c); }, "address dump");
}
StatusOr<Cache> RouteCache(nl_sock* sk) {
  return Dump([&](nl_cache** c) { return rtnl_route_alloc_cache(sk, AF_UNSPEC, 0, c); },
              "route dump");
}
StatusOr<Cache> NeighCache(nl_sock* sk) {
  return Dump([&](nl_cache** c) { return rtnl_neigh_alloc_cache(sk, c); }, "neighbour dump");
}
StatusOr<Cache> RuleCache(nl_sock* sk, int family) {
  return Dump([&](nl_cache** c) { return rtnl_rule_alloc_cache(sk, family, c); }, "rule dump");
}

Status SetUp(nl_sock* sk, rtnl_link* link) {
  Link change(rtnl_link_alloc());
  rtnl_link_set_flags(change.get(), IFF_UP);
  int err = rtnl_link_change(sk, link, change.get(), 0);
  if (err < 0) return Error(err, std::string("set ") + rtnl_link_get_name(link) + " up");
  return absl::OkStatus();
}

}  // namespace trellis::nl
