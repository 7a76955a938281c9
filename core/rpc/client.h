// The client side of trellisd's API: unary gRPC calls over the daemon's unix
// socket. The CNI binary runs once per pod start, so this client is built for
// start-up cost: one blocking HTTP/2 connection driven by nghttp2 on the
// calling thread, no threads, no resolver, no channel state. trellisctl uses
// it too, so there is one client.
//
// The socket is connected here, so that a missing or dead daemon is known at
// once (no reconnect back-off) and a full listen backlog reads as "busy".
#ifndef TRELLIS_CORE_RPC_CLIENT_H_
#define TRELLIS_CORE_RPC_CLIENT_H_

#include <google/protobuf/message_lite.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "core/rpc/grpc_wire.h"

namespace trellis::rpc {

class Client {
 public:
  // Connects to `socket_path`; nullptr with `error` set when the daemon is
  // not there, refuses us, or its backlog stays full for `timeout`.
  static std::unique_ptr<Client> Connect(const std::string& socket_path,
                                         std::chrono::milliseconds timeout, std::string* error);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // One unary call of trellis.v1.Trellis/`method`; calls on one client run
  // one after the other on its connection. The daemon is told the deadline
  // (grpc-timeout) and the client stops waiting at it (kDeadlineExceeded). A
  // connection lost mid-call is kUnavailable, and so is every later call.
  RpcStatus Call(std::string_view method, const google::protobuf::MessageLite& request,
                 google::protobuf::MessageLite* response, std::chrono::milliseconds timeout);

 private:
  struct Session;
  explicit Client(int fd);
  std::unique_ptr<Session> s_;
};

}  // namespace trellis::rpc

#endif  // TRELLIS_CORE_RPC_CLIENT_H_
