// Reachability probes for the policy tests: echo servers and TCP/UDP clients
// that run inside network namespaces (a thread enters the namespace; sockets
// keep the namespace they were created in).
#ifndef TRELLIS_TESTS_NETNS_POLICY_PROBE_H_
#define TRELLIS_TESTS_NETNS_POLICY_PROBE_H_

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace trellis::test {

enum class L4 { kTcp, kUdp };
const char* L4Name(L4 p);

// Runs `fn` on a thread that entered the network namespace at `netns_path`.
// Returns false when the namespace could not be entered.
bool InNetns(const std::string& netns_path, const std::function<void()>& fn);

// Echo servers on every address of a namespace: TCP (accepts, echoes what it
// reads, keeps connections open) and UDP (echoes datagrams).
class EchoServer {
 public:
  EchoServer(const std::string& netns_path, const std::vector<int>& tcp_ports,
             const std::vector<int>& udp_ports);
  ~EchoServer();
  EchoServer(const EchoServer&) = delete;
  EchoServer& operator=(const EchoServer&) = delete;
  bool ok() const { return ok_; }

 private:
  void Loop(std::vector<int> listeners, std::vector<int> udp);
  int stop_fd_ = -1;
  bool ok_ = false;
  std::thread thread_;
};

// A new connection (TCP: the handshake completes; UDP: the echo comes back)
// from inside `netns_path`, optionally from source address `src`, within
// `timeout_ms`. A dropped packet shows as a timeout.
bool Probe(const std::string& netns_path, const std::string& src, const std::string& dst, int port,
           L4 proto, int timeout_ms);

// A TCP connection kept open across policy changes.
class Connection {
 public:
  Connection(const std::string& netns_path, const std::string& dst, int port, int timeout_ms);
  ~Connection();
  bool connected() const { return fd_ >= 0; }
  // Sends a few bytes and waits for the echo.
  bool Echo(int timeout_ms);

 private:
  int fd_ = -1;
};

}  // namespace trellis::test

#endif  // TRELLIS_TESTS_NETNS_POLICY_PROBE_H_
