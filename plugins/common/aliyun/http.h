// HTTP for the cloud clients: an abstract transport (tests fake it) and the
// real one on cpp-httplib. HTTPS always verifies the server certificate and
// host name against the system CA bundle; plain HTTP is allowed only where
// Endpoint::Parse allows it.
#ifndef TRELLIS_PLUGINS_COMMON_ALIYUN_HTTP_H_
#define TRELLIS_PLUGINS_COMMON_ALIYUN_HTTP_H_

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace trellis::aliyun {

struct HttpRequest {
  std::string method = "GET";
  std::string scheme = "https";  // "https" or "http"
  std::string host;
  int port = 443;
  std::string target = "/";  // path and query, already encoded
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string content_type;
  std::chrono::milliseconds timeout{10000};  // connect + read, each
};

struct HttpResponse {
  int status = 0;  // 0: no response (see error)
  std::string body;
  std::string error;       // transport failure, when status == 0
  bool timed_out = false;  // the failure was a timeout
};

class HttpTransport {
 public:
  virtual ~HttpTransport() = default;
  // THREADING: may be called concurrently.
  virtual HttpResponse Send(const HttpRequest& request) = 0;
};

// The real transport. `ca_file` overrides the CA bundle (tests, private CAs).
class HttplibTransport : public HttpTransport {
 public:
  explicit HttplibTransport(std::string ca_file = "");
  HttpResponse Send(const HttpRequest& request) override;

 private:
  std::string ca_file_;
};

// Where a service lives.
struct Endpoint {
  std::string scheme = "https";
  std::string host;
  int port = 443;

  enum class PlainHttp {
    kLoopbackOnly,     // the ECS API: signed requests and tokens never cross a
                       // network in clear text
    kLoopbackOrMetadata,  // the metadata service, which only speaks HTTP at
                          // 100.100.100.200
  };
  // Parses "https://host[:port]", "http://127.0.0.1:18080" or a bare
  // "host[:port]" (https). Throws CloudError(kInvalid) naming `field` when the
  // text is not an endpoint or asks for plain HTTP where it is not allowed.
  static Endpoint Parse(const std::string& text, const std::string& field, PlainHttp plain);
  bool IsLoopback() const;
  std::string ToString() const;
};

}  // namespace trellis::aliyun

#endif  // TRELLIS_PLUGINS_COMMON_ALIYUN_HTTP_H_
