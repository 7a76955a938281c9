// nghttp2 helpers shared by the API client and server (core/rpc): both drive
// a session on a blocking-style loop over a non-blocking socket.
#ifndef TRELLIS_CORE_RPC_H2_H_
#define TRELLIS_CORE_RPC_H2_H_

#include <nghttp2/nghttp2.h>

#include <chrono>
#include <string_view>

namespace trellis::rpc::h2 {

// A header for nghttp2_submit_*, which copies it; `n` and `v` need only
// outlive that call.
inline nghttp2_nv Header(std::string_view n, std::string_view v) {
  return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(n.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(v.data())), n.size(), v.size(),
                    NGHTTP2_NV_FLAG_NONE};
}

enum class FlushResult { kOk, kFailed, kTimedOut };

// Writes everything the session has queued, in as few send() calls as the
// socket takes (the frames of a call are one write, not one per frame),
// waiting for the socket to drain until `deadline`. kFailed: the session or
// the peer failed (errno tells which for the latter, 0 for the former). After
// kFailed or kTimedOut a frame may be half written: the connection is unusable.
FlushResult Flush(nghttp2_session* session, int fd, std::chrono::steady_clock::time_point deadline);

}  // namespace trellis::rpc::h2

#endif  // TRELLIS_CORE_RPC_H2_H_
