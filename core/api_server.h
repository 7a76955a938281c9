// The gRPC API on trellisd's unix socket.
//
// The socket is created with mode 0600 (root only) and every accepted
// connection is checked with SO_PEERCRED before gRPC sees it: a peer that is
// not uid 0 is closed at once. The accept loop is ours; each accepted fd is
// handed to gRPC (AddInsecureChannelFromFd).
#ifndef TRELLIS_CORE_API_SERVER_H_
#define TRELLIS_CORE_API_SERVER_H_

#include <grpcpp/server.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "core/proto/trellis.grpc.pb.h"
#include "core/status.h"

namespace trellis {

class ApiServer {
 public:
  ApiServer(std::string socket_path, v1::Trellis::Service* service);
  ~ApiServer();

  // Refuses to start when another live daemon serves the socket.
  Status Start();
  void Stop();
  uint64_t refused_peers() const { return refused_.load(); }

 private:
  void AcceptLoop();

  std::string path_;
  v1::Trellis::Service* service_;
  std::unique_ptr<grpc::Server> server_;
  int listen_fd_ = -1;
  int stop_fd_ = -1;
  std::thread accept_thread_;
  std::atomic<uint64_t> refused_{0};
};

}  // namespace trellis

#endif  // TRELLIS_CORE_API_SERVER_H_
