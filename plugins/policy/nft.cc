#include "nft.h"

#include <endian.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <nftables/libnftables.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

namespace trellis::policy {
namespace {

constexpr size_t kElementsPerCommand = 2048;

std::string Obj(const std::string& name) { return std::string("inet ") + kTable + " " + name; }

bool IsMap(const NftSet& s) { return s.spec.find(" : ") != std::string::npos; }

void AddSet(std::ostringstream& o, const std::string& name, const NftSet& s) {
  o << "add " << (IsMap(s) ? "map " : "set ") << Obj(name) << " { " << s.spec << " }\n";
}

void AddChain(std::ostringstream& o, const std::string& name, const NftChain& c) {
  o << "add chain " << Obj(name);
  if (!c.spec.empty()) o << " { " << c.spec << " }";
  o << "\n";
}

void AddRules(std::ostringstream& o, const std::string& name, const NftChain& c) {
  for (const auto& r : c.rules) o << "add rule " << Obj(name) << " " << r << "\n";
}

template <class It, class Fn>
void Elements(std::ostringstream& o, const char* verb, const std::string& set, It begin, It end,
              Fn&& text) {
  size_t n = 0;
  for (It it = begin; it != end; ++it) {
    if (n % kElementsPerCommand == 0) {
      if (n > 0) o << " }\n";
      o << verb << " element " << Obj(set) << " { ";
    } else {
      o << ", ";
    }
    o << text(*it);
    ++n;
  }
  if (n > 0) o << " }\n";
}

std::string ElementText(const std::pair<const std::string, std::string>& e) {
  return e.second.empty() ? e.first : e.first + " : " + e.second;
}

}  // namespace

size_t NftTable::ElementCount() const {
  size_t n = 0;
  for (const auto& [name, s] : sets) n += s.elements.size();
  return n;
}

size_t NftTable::RuleCount() const {
  size_t n = 0;
  for (const auto& [name, c] : chains) n += c.rules.size();
  return n;
}

void Touched::Merge(const Touched& o) {
  sets.insert(o.sets.begin(), o.sets.end());
  chains.insert(o.chains.begin(), o.chains.end());
  counters.insert(o.counters.begin(), o.counters.end());
}

std::string RenderReplace(const NftTable& t, const std::map<std::string, CounterValue>& counters,
                          const std::string& extra) {
  std::ostringstream o;
  o << "add table inet " << kTable << "\n";
  o << "delete table inet " << kTable << "\n";
  o << "add table inet " << kTable << "\n";
  for (const auto& name : t.counters) {
    o << "add counter " << Obj(name);
    if (auto it = counters.find(name); it != counters.end()) {
      o << " { packets " << it->second.packets << " bytes " << it->second.bytes << " }";
    }
    o << "\n";
  }
  for (const auto& [name, s] : t.sets) AddSet(o, name, s);
  for (const auto& [name, c] : t.chains) AddChain(o, name, c);
  for (const auto& [name, s] : t.sets) {
    Elements(o, "add", name, s.elements.begin(), s.elements.end(), ElementText);
  }
  for (const auto& [name, c] : t.chains) AddRules(o, name, c);
  o << extra;
  return o.str();
}

std::string RenderDiff(const NftTable& from, const NftTable& to, const Touched& touched) {
  std::ostringstream o;
  auto find_set = [](const NftTable& t, const std::string& n) -> const NftSet* {
    auto it = t.sets.find(n);
    return it == t.sets.end() ? nullptr : &it->second;
  };
  auto find_chain = [](const NftTable& t, const std::string& n) -> const NftChain* {
    auto it = t.chains.find(n);
    return it == t.chains.end() ? nullptr : &it->second;
  };
  // 1. New objects, empty.
  for (const auto& n : touched.counters) {
    if (to.counters.contains(n) && !from.counters.contains(n))
      o << "add counter " << Obj(n) << "\n";
  }
  for (const auto& n : touched.sets) {
    const NftSet* a = find_set(from, n);
    const NftSet* b = find_set(to, n);
    if (b && !a) AddSet(o, n, *b);
  }
  for (const auto& n : touched.chains) {
    const NftChain* a = find_chain(from, n);
    const NftChain* b = find_chain(to, n);
    if (b && !a) AddChain(o, n, *b);
  }
  // 2. Rules of new and changed chains (the sets they name exist now).
  for (const auto& n : touched.chains) {
    const NftChain* a = find_chain(from, n);
    const NftChain* b = find_chain(to, n);
    if (!b) continue;
    if (a && a->rules == b->rules) continue;
    if (a) o << "flush chain " << Obj(n) << "\n";
    AddRules(o, n, *b);
  }
  // 3. Elements: removed and changed ones out, then new and changed ones in.
  for (const auto& n : touched.sets) {
    const NftSet* a = find_set(from, n);
    const NftSet* b = find_set(to, n);
    if (!b) continue;
    std::vector<std::string> del;
    std::vector<std::pair<const std::string, std::string>> add;
    if (a) {
      for (const auto& [k, v] : a->elements) {
        auto it = b->elements.find(k);
        if (it == b->elements.end() || it->second != v) del.push_back(k);
      }
    }
    for (const auto& e : b->elements) {
      if (!a) {
        add.push_back(e);
        continue;
      }
      auto it = a->elements.find(e.first);
      if (it == a->elements.end() || it->second != e.second) add.push_back(e);
    }
    Elements(o, "delete", n, del.begin(), del.end(), [](const std::string& k) { return k; });
    Elements(o, "add", n, add.begin(), add.end(), ElementText);
  }
  // 4. Removed objects, after the last reference to them is gone.
  for (const auto& n : touched.chains) {
    if (find_chain(from, n) && !find_chain(to, n)) o << "flush chain " << Obj(n) << "\n";
  }
  for (const auto& n : touched.chains) {
    if (find_chain(from, n) && !find_chain(to, n)) o << "delete chain " << Obj(n) << "\n";
  }
  for (const auto& n : touched.sets) {
    const NftSet* a = find_set(from, n);
    if (a && !find_set(to, n)) o << "delete " << (IsMap(*a) ? "map " : "set ") << Obj(n) << "\n";
  }
  for (const auto& n : touched.counters) {
    if (from.counters.contains(n) && !to.counters.contains(n))
      o << "delete counter " << Obj(n) << "\n";
  }
  return o.str();
}

void CopyTouched(const NftTable& want, const Touched& touched, NftTable* applied) {
  for (const auto& n : touched.sets) {
    if (auto it = want.sets.find(n); it != want.sets.end())
      applied->sets[n] = it->second;
    else
      applied->sets.erase(n);
  }
  for (const auto& n : touched.chains) {
    if (auto it = want.chains.find(n); it != want.chains.end())
      applied->chains[n] = it->second;
    else
      applied->chains.erase(n);
  }
  applied->counters = want.counters;
}

Nft::Nft() : ctx_(nft_ctx_new(NFT_CTX_DEFAULT)), json_ctx_(nft_ctx_new(NFT_CTX_DEFAULT)) {
  if (ctx_ == nullptr || json_ctx_ == nullptr) throw std::runtime_error("nft_ctx_new failed");
  nft_ctx_buffer_output(ctx_);
  nft_ctx_buffer_error(ctx_);
  nft_ctx_buffer_output(json_ctx_);
  nft_ctx_buffer_error(json_ctx_);
  nft_ctx_output_set_flags(json_ctx_, NFT_CTX_OUTPUT_JSON);
}

Nft::~Nft() {
  nft_ctx_free(ctx_);
  nft_ctx_free(json_ctx_);
}

std::string Nft::Run(const std::string& script, std::string* output) {
  std::lock_guard lock(mu_);
  int rc = nft_run_cmd_from_buffer(ctx_, script.c_str());
  if (output != nullptr) *output = nft_ctx_get_output_buffer(ctx_);
  std::string err = nft_ctx_get_error_buffer(ctx_);
  if (rc == 0) return "";
  return err.empty() ? "nft failed without a message" : err;
}

// A netlink dump of the table's counter objects (NFT_MSG_GETOBJ filtered by
// table and type). Asking libnftables would build its cache of the whole
// table, set elements included: seconds of CPU on a large table, every poll.
std::map<std::string, CounterValue> Nft::Counters() {
  std::map<std::string, CounterValue> out;
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) return out;
  alignas(nlmsghdr) char req[256] = {};
  auto* nlh = reinterpret_cast<nlmsghdr*>(req);
  nlh->nlmsg_type = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETOBJ;
  nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  nlh->nlmsg_seq = 1;
  nlh->nlmsg_len = NLMSG_LENGTH(sizeof(nfgenmsg));
  auto* nfg = reinterpret_cast<nfgenmsg*>(NLMSG_DATA(nlh));
  nfg->nfgen_family = NFPROTO_INET;
  nfg->version = NFNETLINK_V0;
  auto put = [&](uint16_t type, const void* data, size_t len) {
    auto* a = reinterpret_cast<nlattr*>(req + NLMSG_ALIGN(nlh->nlmsg_len));
    a->nla_type = type;
    a->nla_len = static_cast<uint16_t>(NLA_HDRLEN + len);
    std::memcpy(reinterpret_cast<char*>(a) + NLA_HDRLEN, data, len);
    nlh->nlmsg_len = NLMSG_ALIGN(nlh->nlmsg_len) + NLA_ALIGN(a->nla_len);
  };
  put(NFTA_OBJ_TABLE, kTable, std::strlen(kTable) + 1);
  uint32_t type = htobe32(NFT_OBJECT_COUNTER);
  put(NFTA_OBJ_TYPE, &type, sizeof type);
  if (send(fd, req, nlh->nlmsg_len, 0) < 0) {
    close(fd);
    return out;
  }
  // Walks the attributes in [p, end), calling fn(type, payload, len).
  auto attrs = [](const char* p, const char* end, auto&& fn) {
    while (p + NLA_HDRLEN <= end) {
      auto* a = reinterpret_cast<const nlattr*>(p);
      if (a->nla_len < NLA_HDRLEN || p + a->nla_len > end) break;
      fn(a->nla_type & NLA_TYPE_MASK, p + NLA_HDRLEN, a->nla_len - NLA_HDRLEN);
      p += NLA_ALIGN(a->nla_len);
    }
  };
  std::vector<char> buf(1 << 16);
  bool done = false;
  while (!done) {
    ssize_t n = recv(fd, buf.data(), buf.size(), 0);
    if (n <= 0) break;
    int len = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(h, len);
         h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR) {
        done = true;
        break;
      }
      const char* p = static_cast<const char*>(NLMSG_DATA(h)) + NLMSG_ALIGN(sizeof(nfgenmsg));
      const char* end = reinterpret_cast<const char*>(h) + h->nlmsg_len;
      std::string name;
      CounterValue v;
      attrs(p, end, [&](uint16_t t, const char* data, size_t len) {
        if (t == NFTA_OBJ_NAME) name.assign(data, strnlen(data, len));
        if (t != NFTA_OBJ_DATA) return;
        attrs(data, data + len, [&](uint16_t ct, const char* d, size_t l) {
          uint64_t be = 0;
          if (l != sizeof be) return;
          std::memcpy(&be, d, sizeof be);
          if (ct == NFTA_COUNTER_PACKETS) v.packets = be64toh(be);
          if (ct == NFTA_COUNTER_BYTES) v.bytes = be64toh(be);
        });
      });
      if (!name.empty()) out[name] = v;
    }
  }
  close(fd);
  return out;
}

bool Nft::TableExists() {
  std::lock_guard lock(mu_);
  if (nft_run_cmd_from_buffer(json_ctx_, "list tables inet") != 0) return false;
  auto j = nlohmann::json::parse(nft_ctx_get_output_buffer(json_ctx_), nullptr, false);
  if (!j.is_object() || !j.contains("nftables")) return false;
  for (const auto& item : j["nftables"]) {
    if (item.contains("table") && item["table"].value("name", "") == kTable) return true;
  }
  return false;
}

}  // namespace trellis::policy
