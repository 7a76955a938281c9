#include "aliyun/credentials.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "aliyun/errors.h"

namespace trellis::aliyun {
namespace {

CloudError CredError(const std::string& message) {
  return CloudError(CloudError::Kind::kCredentials, "credentials", "Credentials", 0, "", message);
}

std::string Trim(std::string s) {
  auto issp = [](unsigned char c) { return std::isspace(c); };
  while (!s.empty() && issp(s.back())) s.pop_back();
  size_t i = 0;
  while (i < s.size() && issp(s[i])) ++i;
  return s.substr(i);
}

class StaticProvider : public CredentialProvider {
 public:
  StaticProvider(Credentials c, std::string source) : c_(std::move(c)), source_(std::move(source)) {}
  Credentials Get() override { return c_; }
  std::string Source() const override { return source_; }

 private:
  Credentials c_;
  std::string source_;
};

// A mounted Secret (a directory of files) or a JSON file. Kubernetes updates
// a Secret volume by swapping a symlink, so the files are stat()ed (which
// follows links) on every Get() and re-read when their identity changes.
class FileProvider : public CredentialProvider {
 public:
  explicit FileProvider(std::string path) : path_(std::move(path)) {}

  Credentials Get() override {
    std::lock_guard lock(mu_);
    std::string stamp = Stamp();
    if (!cached_ || stamp != stamp_) {
      cached_ = Load();
      stamp_ = stamp;
    }
    return *cached_;
  }
  void Invalidate() override {
    std::lock_guard lock(mu_);
    cached_.reset();
  }
  std::string Source() const override { return "file " + path_; }

 private:
  bool IsDir() const {
    struct stat st {};
    return stat(path_.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  }
  std::string Stamp() const {
    std::string out;
    std::vector<std::string> files = {path_};
    if (IsDir()) {
      files = {path_ + "/access-key-id", path_ + "/access-key-secret", path_ + "/security-token"};
    }
    for (const auto& f : files) {
      struct stat st {};
      if (stat(f.c_str(), &st) == 0) {
        out += std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) + ":" +
               std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) + ";";
      } else {
        out += "-;";
      }
    }
    return out;
  }
  static std::optional<std::string> ReadFile(const std::string& p) {
    std::ifstream in(p);
    if (!in) return std::nullopt;
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  Credentials Load() const {
    Credentials c;
    if (IsDir()) {
      auto id = ReadFile(path_ + "/access-key-id");
      auto secret = ReadFile(path_ + "/access-key-secret");
      if (!id || !secret) {
        throw CredError("credential_path " + path_ +
                        ": a directory must hold the files access-key-id and access-key-secret");
      }
      c.access_key_id = Trim(*id);
      c.access_key_secret = Trim(*secret);
      if (auto token = ReadFile(path_ + "/security-token")) c.security_token = Trim(*token);
    } else {
      auto text = ReadFile(path_);
      if (!text) throw CredError("credential_path " + path_ + ": cannot read the file");
      auto j = nlohmann::json::parse(*text, nullptr, false);
      if (!j.is_object()) {
        throw CredError("credential_path " + path_ + ": expected a JSON object with "
                        "access_key_id and access_key_secret");
      }
      auto pick = [&](std::initializer_list<const char*> names) {
        for (const char* n : names) {
          if (j.contains(n) && j[n].is_string()) return j[n].get<std::string>();
        }
        return std::string();
      };
      c.access_key_id = pick({"access_key_id", "AccessKeyId", "access-key-id"});
      c.access_key_secret = pick({"access_key_secret", "AccessKeySecret", "access-key-secret"});
      c.security_token = pick({"security_token", "SecurityToken", "security-token"});
      std::string exp = pick({"expiration", "Expiration"});
      WallTime t;
      if (!exp.empty() && ParseIso8601(exp, &t)) c.expiration = t;
    }
    if (c.access_key_id.empty() || c.access_key_secret.empty()) {
      throw CredError("credential_path " + path_ + ": the access key id or secret is empty");
    }
    return c;
  }

  std::string path_;
  std::mutex mu_;
  std::optional<Credentials> cached_;
  std::string stamp_;
};

class RamRoleProvider : public CredentialProvider {
 public:
  RamRoleProvider(std::shared_ptr<MetadataClient> md, Clock* clock, std::string role,
                  std::chrono::seconds margin)
      : md_(std::move(md)), clock_(clock), role_(std::move(role)), margin_(margin) {}

  Credentials Get() override {
    std::lock_guard lock(mu_);
    WallTime now = clock_->WallNow();
    if (cached_ && !NeedsRefresh(now)) return *cached_;
    try {
      Fetch(now);
    } catch (const CloudError& e) {
      // Still valid: keep signing with them and try again on the next call.
      if (cached_ && cached_->expiration && now < *cached_->expiration) return *cached_;
      throw CredError("RAM role credentials from the metadata service: " + std::string(e.what()));
    }
    return *cached_;
  }
  void Invalidate() override {
    std::lock_guard lock(mu_);
    cached_.reset();
  }
  std::string Source() const override {
    std::lock_guard lock(mu_);
    return "RAM role " + (role_.empty() ? std::string("(not yet discovered)") : role_) +
           " (metadata service)";
  }

 private:
  bool NeedsRefresh(WallTime now) const {
    if (!cached_->expiration) return false;
    auto margin = std::chrono::duration_cast<WallTime::duration>(margin_);
    auto third = (*cached_->expiration - fetched_at_) / 3;
    return now >= *cached_->expiration - std::min(margin, third);
  }
  void Fetch(WallTime now) {
    if (role_.empty()) {
      role_ = md_->RamRole();
      if (role_.empty()) {
        throw CloudError(CloudError::Kind::kCredentials, "credentials", "Credentials", 0, "",
                         "the instance has no RAM role attached");
      }
    }
    std::string body = md_->Get("ram/security-credentials/" + role_);
    auto j = nlohmann::json::parse(body, nullptr, false);
    if (!j.is_object() || j.value("Code", "") != "Success") {
      throw CloudError(CloudError::Kind::kCredentials, "credentials", "Credentials", 0, "",
                       "the metadata service returned no credentials for role " + role_);
    }
    Credentials c;
    c.access_key_id = j.value("AccessKeyId", "");
    c.access_key_secret = j.value("AccessKeySecret", "");
    c.security_token = j.value("SecurityToken", "");
    WallTime exp;
    if (ParseIso8601(j.value("Expiration", ""), &exp)) c.expiration = exp;
    if (c.access_key_id.empty() || c.access_key_secret.empty()) {
      throw CloudError(CloudError::Kind::kCredentials, "credentials", "Credentials", 0, "",
                       "the metadata service returned incomplete credentials for role " + role_);
    }
    cached_ = std::move(c);
    fetched_at_ = now;
  }

  std::shared_ptr<MetadataClient> md_;
  Clock* clock_;
  mutable std::mutex mu_;
  std::string role_;
  std::chrono::seconds margin_;
  std::optional<Credentials> cached_;
  WallTime fetched_at_{};
};

}  // namespace

std::unique_ptr<CredentialProvider> MakeStaticCredentials(Credentials creds, std::string source) {
  return std::make_unique<StaticProvider>(std::move(creds), std::move(source));
}

std::unique_ptr<CredentialProvider> MakeFileCredentials(std::string path) {
  return std::make_unique<FileProvider>(std::move(path));
}

std::unique_ptr<CredentialProvider> MakeRamRoleCredentials(std::shared_ptr<MetadataClient> metadata,
                                                           Clock* clock, std::string role,
                                                           std::chrono::seconds refresh_margin) {
  return std::make_unique<RamRoleProvider>(std::move(metadata), clock, std::move(role),
                                           refresh_margin);
}

std::unique_ptr<CredentialProvider> MakeCredentialProvider(const CredentialSources& s,
                                                           std::shared_ptr<MetadataClient> metadata,
                                                           Clock* clock) {
  if (!s.inline_access_key.empty() || !s.inline_secret_key.empty()) {
    if (s.inline_access_key.empty() || s.inline_secret_key.empty()) {
      throw CredError("access_key and secret_key must be given together");
    }
    return MakeStaticCredentials({s.inline_access_key, s.inline_secret_key, "", std::nullopt},
                                 "config (access_key)");
  }
  if (!s.credential_path.empty()) return MakeFileCredentials(s.credential_path);
  if (s.use_environment) {
    const char* id = std::getenv("ACCESS_KEY_ID");
    const char* secret = std::getenv("ACCESS_KEY_SECRET");
    if (id != nullptr && *id != '\0' && secret != nullptr && *secret != '\0') {
      const char* token = std::getenv("SECURITY_TOKEN");
      return MakeStaticCredentials({id, secret, token != nullptr ? token : "", std::nullopt},
                                   "environment (ACCESS_KEY_ID)");
    }
  }
  if (s.use_ram_role && metadata) {
    return MakeRamRoleCredentials(std::move(metadata), clock, s.ram_role);
  }
  throw CredError(
      "no credentials: set ACCESS_KEY_ID/ACCESS_KEY_SECRET, credential_path, or attach a RAM role");
}

std::string MaskKeyId(const std::string& id) {
  if (id.size() <= 8) return "****";
  return id.substr(0, 4) + "****" + id.substr(id.size() - 3);
}

std::string ScrubSecrets(std::string text, const std::vector<std::string>& secrets) {
  for (const auto& s : secrets) {
    if (s.size() < 4) continue;  // too short to search for without mangling text
    for (size_t p = text.find(s); p != std::string::npos; p = text.find(s, p)) {
      text.replace(p, s.size(), "<redacted>");
      p += 10;
    }
  }
  return text;
}

}  // namespace trellis::aliyun
