// Request/response latency between two pods, netperf-style (netperf is not in
// Debian main): TCP_RR on one connection, TCP_CRR with a new connection per
// transaction (every transaction's first packet walks the whole policy path).
//
//   policy_rr server PORT
//   policy_rr rr|crr HOST PORT SECONDS     -> "<mode> <transactions/s> <mean us> <p50 us> <p99 us>"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

bool ReadFull(int fd, char* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, buf + got, n - got);
    if (r <= 0) return false;
    got += r;
  }
  return true;
}

int Server(int port) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  if (bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(s, 1024) != 0) {
    std::perror("bind/listen");
    return 1;
  }
  while (true) {
    int c = accept(s, nullptr, nullptr);
    if (c < 0) continue;
    std::thread([c] {
      int one = 1;
      setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      char b;
      while (ReadFull(c, &b, 1) && write(c, &b, 1) == 1) {
      }
      close(c);
    }).detach();
  }
}

int Connect(const sockaddr_in& a) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "server") == 0) return Server(std::atoi(argv[2]));
  if (argc != 5) {
    std::fprintf(stderr, "usage: policy_rr server PORT | policy_rr rr|crr HOST PORT SECONDS\n");
    return 2;
  }
  bool crr = std::strcmp(argv[1], "crr") == 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(std::atoi(argv[3]));
  inet_pton(AF_INET, argv[2], &a.sin_addr);
  double seconds = std::atof(argv[4]);
  std::vector<double> lat;
  auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int fd = crr ? -1 : Connect(a);
  if (!crr && fd < 0) {
    std::perror("connect");
    return 1;
  }
  while (std::chrono::steady_clock::now() < end) {
    auto t0 = std::chrono::steady_clock::now();
    if (crr) fd = Connect(a);
    char b = 'x';
    if (fd < 0 || write(fd, &b, 1) != 1 || !ReadFull(fd, &b, 1)) {
      std::fprintf(stderr, "transaction failed\n");
      return 1;
    }
    if (crr) close(fd);
    lat.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  if (!crr) close(fd);
  std::sort(lat.begin(), lat.end());
  double sum = 0;
  for (double v : lat) sum += v;
  std::printf("%s %.0f %.1f %.1f %.1f\n", crr ? "TCP_CRR" : "TCP_RR", lat.size() / seconds,
              sum / lat.size(), lat[lat.size() / 2], lat[lat.size() * 99 / 100]);
  return 0;
}
