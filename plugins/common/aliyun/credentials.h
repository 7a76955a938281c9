// Credentials for signing ECS requests, from (in the order an operator
// would expect the more explicit one to win):
//   1. inline access_key / secret_key in the module config (accepted; the
//      plugin warns, as a ConfigMap is no place for a secret),
//   2. credential_path: a mounted Secret directory (files access-key-id,
//      access-key-secret, optional security-token) or a JSON file; re-read
//      when it changes, so a rotated Secret takes effect without a restart,
//   3. the environment: ACCESS_KEY_ID / ACCESS_KEY_SECRET (what the
//      DaemonSet passes from a Secret), optional SECURITY_TOKEN,
//   4. the STS credentials of the instance's RAM role from the metadata
//      service, refreshed before they expire.
//
// Secrets never leave this module except inside a signed request: Source()
// and error messages name where credentials come from, never what they are.
#ifndef TRELLIS_PLUGINS_COMMON_ALIYUN_CREDENTIALS_H_
#define TRELLIS_PLUGINS_COMMON_ALIYUN_CREDENTIALS_H_

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "aliyun/clock.h"
#include "aliyun/metadata.h"

namespace trellis::aliyun {

struct Credentials {
  std::string access_key_id;
  std::string access_key_secret;
  std::string security_token;  // STS only
  std::optional<WallTime> expiration;
};

// THREADING: all methods may be called concurrently.
class CredentialProvider {
 public:
  virtual ~CredentialProvider() = default;
  // Throws CloudError(kCredentials) when no usable credentials can be had.
  virtual Credentials Get() = 0;
  // The service refused what Get() returned: fetch fresh ones next time.
  virtual void Invalidate() {}
  // Where the credentials come from, e.g. "environment (ACCESS_KEY_ID)"; no secret.
  virtual std::string Source() const = 0;
};

std::unique_ptr<CredentialProvider> MakeStaticCredentials(Credentials creds, std::string source);
std::unique_ptr<CredentialProvider> MakeFileCredentials(std::string path);
// `role` "" discovers the instance's role from the metadata service.
// Credentials are refreshed once less than `refresh_margin` (or a third of
// their lifetime, whichever is shorter) is left.
std::unique_ptr<CredentialProvider> MakeRamRoleCredentials(
    std::shared_ptr<MetadataClient> metadata, Clock* clock, std::string role = "",
    std::chrono::seconds refresh_margin = std::chrono::minutes(5));

struct CredentialSources {
  std::string inline_access_key, inline_secret_key;
  std::string credential_path;
  bool use_environment = true;
  bool use_ram_role = true;
  std::string ram_role;  // "" : discover
};
// The first configured source in the order above. Throws CloudError
// (kCredentials) when none is configured and no RAM role may be asked.
std::unique_ptr<CredentialProvider> MakeCredentialProvider(const CredentialSources& sources,
                                                           std::shared_ptr<MetadataClient> metadata,
                                                           Clock* clock);

// "LTAI5t****Xyz": enough to tell keys apart in status output, not a secret.
std::string MaskKeyId(const std::string& id);

// Replaces every occurrence of the given secrets in `text` with "<redacted>".
std::string ScrubSecrets(std::string text, const std::vector<std::string>& secrets);

}  // namespace trellis::aliyun

#endif  // TRELLIS_PLUGINS_COMMON_ALIYUN_CREDENTIALS_H_
