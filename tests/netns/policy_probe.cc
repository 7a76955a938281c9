#include "policy_probe.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <future>
#include <map>

namespace trellis::test {
namespace {

sockaddr_in Addr(const std::string& ip, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
  return a;
}

int Socket(L4 proto, const std::string& src) {
  int fd = socket(AF_INET,
                  (proto == L4::kTcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (!src.empty()) {
    sockaddr_in s = Addr(src, 0);
    if (bind(fd, reinterpret_cast<sockaddr*>(&s), sizeof s) != 0) {
      close(fd);
      return -1;
    }
  }
  return fd;
}

// Connects a non-blocking TCP socket; -1 unless the handshake completed.
int TcpConnect(const std::string& src, const std::string& dst, int port, int timeout_ms) {
  int fd = Socket(L4::kTcp, src);
  if (fd < 0) return -1;
  sockaddr_in d = Addr(dst, port);
  if (connect(fd, reinterpret_cast<sockaddr*>(&d), sizeof d) != 0 && errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  pollfd p{fd, POLLOUT, 0};
  int err = 0;
  socklen_t len = sizeof err;
  if (poll(&p, 1, timeout_ms) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 ||
      err != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

const char* L4Name(L4 p) { return p == L4::kTcp ? "TCP" : "UDP"; }

bool InNetns(const std::string& netns_path, const std::function<void()>& fn) {
  bool entered = false;
  std::thread t([&] {
    int fd = open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    entered = setns(fd, CLONE_NEWNET) == 0;
    close(fd);
    if (entered) fn();
  });
  t.join();
  return entered;
}

EchoServer::EchoServer(const std::string& netns_path, const std::vector<int>& tcp_ports,
                       const std::vector<int>& udp_ports) {
  stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  std::promise<bool> ready;
  thread_ = std::thread([&, netns_path, tcp_ports, udp_ports] {
    int fd = open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
    bool in = fd >= 0 && setns(fd, CLONE_NEWNET) == 0;
    if (fd >= 0) close(fd);
    std::vector<int> listeners, udp;
    int one = 1;
    for (int port : tcp_ports) {
      int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      sockaddr_in a = Addr("0.0.0.0", port);
      if (bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(s, 128) != 0)
        in = false;
      listeners.push_back(s);
    }
    for (int port : udp_ports) {
      int s = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      // Replies leave from the address the datagram was sent to (a namespace
      // may have several), which a connected UDP client insists on.
      setsockopt(s, IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
      sockaddr_in a = Addr("0.0.0.0", port);
      if (bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) in = false;
      udp.push_back(s);
    }
    ready.set_value(in);
    Loop(std::move(listeners), std::move(udp));
  });
  ok_ = ready.get_future().get();
}

void EchoServer::Loop(std::vector<int> listeners, std::vector<int> udp) {
  std::vector<int> conns;
  while (true) {
    std::vector<pollfd> fds = {{stop_fd_, POLLIN, 0}};
    for (int s : listeners) fds.push_back({s, POLLIN, 0});
    for (int s : udp) fds.push_back({s, POLLIN, 0});
    for (int s : conns) fds.push_back({s, POLLIN, 0});
    if (poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) break;
    if (fds[0].revents & POLLIN) break;
    size_t i = 1;
    for (int s : listeners) {
      if (fds[i++].revents & POLLIN) {
        int c;
        while ((c = accept4(s, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0)
          conns.push_back(c);
      }
    }
    for (int s : udp) {
      if (fds[i++].revents & POLLIN) {
        while (true) {
          char buf[512];
          alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(in_pktinfo))];
          sockaddr_in from{};
          iovec iov{buf, sizeof buf};
          msghdr m{};
          m.msg_name = &from;
          m.msg_namelen = sizeof from;
          m.msg_iov = &iov;
          m.msg_iovlen = 1;
          m.msg_control = ctl;
          m.msg_controllen = sizeof ctl;
          ssize_t n = recvmsg(s, &m, 0);
          if (n <= 0) break;
          iov.iov_len = n;
          for (cmsghdr* c = CMSG_FIRSTHDR(&m); c != nullptr; c = CMSG_NXTHDR(&m, c)) {
            if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
              auto* pi = reinterpret_cast<in_pktinfo*>(CMSG_DATA(c));
              pi->ipi_spec_dst = pi->ipi_addr;
              pi->ipi_ifindex = 0;
            }
          }
          sendmsg(s, &m, 0);
        }
      }
    }
    std::vector<int> keep;
    for (int s : conns) {
      short ev = fds[i++].revents;
      if (ev & (POLLIN | POLLHUP | POLLERR)) {
        char buf[512];
        ssize_t n = read(s, buf, sizeof buf);
        if (n <= 0 && !(n < 0 && errno == EAGAIN)) {
          close(s);
          continue;
        }
        if (n > 0) (void)!write(s, buf, n);
      }
      keep.push_back(s);
    }
    conns = std::move(keep);
  }
  for (int s : listeners) close(s);
  for (int s : udp) close(s);
  for (int s : conns) close(s);
}

EchoServer::~EchoServer() {
  uint64_t one = 1;
  (void)!write(stop_fd_, &one, sizeof one);
  if (thread_.joinable()) thread_.join();
  close(stop_fd_);
}

bool Probe(const std::string& netns_path, const std::string& src, const std::string& dst, int port,
           L4 proto, int timeout_ms) {
  bool ok = false;
  InNetns(netns_path, [&] {
    if (proto == L4::kTcp) {
      int fd = TcpConnect(src, dst, port, timeout_ms);
      ok = fd >= 0;
      if (fd >= 0) close(fd);
      return;
    }
    int fd = Socket(L4::kUdp, src);
    if (fd < 0) return;
    sockaddr_in d = Addr(dst, port);
    if (connect(fd, reinterpret_cast<sockaddr*>(&d), sizeof d) == 0 &&
        send(fd, "probe", 5, 0) == 5) {
      pollfd p{fd, POLLIN, 0};
      char buf[16];
      ok = poll(&p, 1, timeout_ms) == 1 && recv(fd, buf, sizeof buf, 0) == 5;
    }
    close(fd);
  });
  return ok;
}

Connection::Connection(const std::string& netns_path, const std::string& dst, int port,
                       int timeout_ms) {
  InNetns(netns_path, [&] { fd_ = TcpConnect("", dst, port, timeout_ms); });
}

Connection::~Connection() {
  if (fd_ >= 0) close(fd_);
}

bool Connection::Echo(int timeout_ms) {
  if (fd_ < 0 || send(fd_, "hello", 5, MSG_NOSIGNAL) != 5) return false;
  pollfd p{fd_, POLLIN, 0};
  char buf[16];
  return poll(&p, 1, timeout_ms) == 1 && recv(fd_, buf, sizeof buf, 0) == 5;
}

}  // namespace trellis::test
