// The server side of trellisd's API: unary gRPC calls over HTTP/2 (nghttp2)
// on a unix socket. Any gRPC client can call it (tests/netns/api_test.cc
// calls it with grpc++); streaming calls are not offered.
//
// Access: the socket is created with mode 0600 (root only) and every
// accepted connection is checked with SO_PEERCRED: a peer that is not uid 0
// is closed at once.
//
// Threads (leader/followers): one thread waits for a connection. When it
// accepts one it passes the wait to an idle thread (starting one when none is
// idle, up to max_threads) and serves the connection itself: reads the
// request, runs the handler and writes the answer. A CNI call crosses no
// thread between the socket and its handler, which matters on a pod's start
// path. Handlers may block (an ADD waiting for the cloud); up to max_threads
// connections are served at once, further ones wait in the listen backlog.
// Calls on one connection run one after the other.
#ifndef TRELLIS_CORE_RPC_SERVER_H_
#define TRELLIS_CORE_RPC_SERVER_H_

#include <google/protobuf/message_lite.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "core/rpc/grpc_wire.h"
#include "core/status.h"

namespace trellis::rpc {

class Server {
 public:
  // Serialized request in, serialized response out.
  using Handler = std::function<RpcStatus(std::string_view request, std::string* response)>;

  struct Options {
    std::string socket_path;
    int max_threads = 64;
    // A connection that sends nothing for this long is closed.
    std::chrono::milliseconds idle_timeout{60000};
  };

  explicit Server(Options o);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Before Start(): trellis.v1.Trellis/`method` answers with `fn`.
  template <class Req, class Resp>
  void Register(const std::string& method, std::function<RpcStatus(const Req&, Resp*)> fn) {
    handlers_[method] = [fn = std::move(fn)](std::string_view in, std::string* out) {
      Req req;
      if (!req.ParseFromArray(in.data(), static_cast<int>(in.size()))) {
        return RpcStatus{Code::kInvalidArgument, "the request does not decode"};
      }
      Resp resp;
      RpcStatus st = fn(req, &resp);
      if (st.ok() && !resp.SerializeToString(out)) return RpcStatus{Code::kInternal, "cannot encode the answer"};
      return st;
    };
  }

  // Refuses to start when another live daemon serves the socket.
  Status Start();
  // Stops accepting, finishes the calls in flight, closes every connection.
  void Stop();
  uint64_t refused_peers() const { return refused_.load(); }

 private:
  void Loop();
  int Accept();  // the next root peer's fd, or -1 when stopping
  void Serve(int fd);

  Options o_;
  std::map<std::string, Handler, std::less<>> handlers_;
  int listen_fd_ = -1;
  int stop_fd_ = -1;  // eventfd: readable once Stop() began
  std::atomic<uint64_t> refused_{0};

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool leader_ = false;  // a thread waits for the next connection
  int idle_ = 0;         // threads waiting to become the leader
  std::vector<std::thread> threads_;
};

}  // namespace trellis::rpc

#endif  // TRELLIS_CORE_RPC_SERVER_H_
