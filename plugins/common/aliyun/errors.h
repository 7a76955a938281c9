// The one error type of the cloud clients. Library code throws it and never
// logs; the plugin that knows the context logs once.
//
// Messages never carry secrets: everything a server sent back goes through
// Redactor::Scrub before it becomes part of a message.
#ifndef TRELLIS_PLUGINS_COMMON_ALIYUN_ERRORS_H_
#define TRELLIS_PLUGINS_COMMON_ALIYUN_ERRORS_H_

#include <stdexcept>
#include <string>

namespace trellis::aliyun {

class CloudError : public std::runtime_error {
 public:
  enum class Kind {
    kApi,          // the service answered with an error code
    kTransport,    // no answer: connection refused, reset, TLS failure, bad body
    kTimeout,      // no answer within the call's timeout
    kCredentials,  // no usable credentials
    kInvalid,      // the request itself is wrong (bad endpoint, bad argument)
    kCancelled,    // the owner is shutting down
  };

  CloudError(Kind kind, std::string action, std::string code, int http_status,
             std::string request_id, const std::string& message)
      : std::runtime_error(message),
        kind_(kind),
        action_(std::move(action)),
        code_(std::move(code)),
        http_status_(http_status),
        request_id_(std::move(request_id)) {}

  Kind kind() const { return kind_; }
  // The API action ("CreateNetworkInterface"), or the metadata path.
  const std::string& action() const { return action_; }
  // The service's error code ("Throttling.User"); for other kinds a fixed
  // word: "Transport", "Timeout", "Credentials", "Invalid", "Cancelled".
  const std::string& code() const { return code_; }
  int http_status() const { return http_status_; }
  const std::string& request_id() const { return request_id_; }

  bool IsThrottling() const { return code_.rfind("Throttling", 0) == 0; }
  // True when the code names `prefix` ("InvalidVSwitchId.IpNotEnough" matches
  // "InvalidVSwitchId.IpNotEnough" and "InvalidVSwitchId").
  bool Is(const std::string& prefix) const { return code_.rfind(prefix, 0) == 0; }

 private:
  Kind kind_;
  std::string action_, code_;
  int http_status_;
  std::string request_id_;
};

}  // namespace trellis::aliyun

#endif  // TRELLIS_PLUGINS_COMMON_ALIYUN_ERRORS_H_
