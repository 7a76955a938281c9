#include "model.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <set>
#include <sstream>

namespace trellis::policy {
namespace {

[[noreturn]] void Fail(const std::string& field, const std::string& why) {
  throw ParseError(field + ": " + why);
}

std::string Idx(const std::string& field, size_t i) {
  return field + "[" + std::to_string(i) + "]";
}

const Json* Find(const Json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

void RequireObject(const Json& j, const std::string& field) {
  if (!j.is_object()) Fail(field, "expected a map, got " + std::string(j.type_name()));
}
const Json& RequireList(const Json& j, const std::string& field) {
  if (!j.is_array()) Fail(field, "expected a list, got " + std::string(j.type_name()));
  return j;
}
std::string RequireString(const Json& j, const std::string& field) {
  if (!j.is_string()) Fail(field, "expected a string, got " + std::string(j.type_name()));
  return j.get<std::string>();
}

// IANA_SVC_NAME as Kubernetes validates it: 1-15 characters of [a-z0-9-],
// at least one letter, no leading/trailing/double hyphen.
bool IsPortName(const std::string& s) {
  if (s.empty() || s.size() > 15 || s.front() == '-' || s.back() == '-') return false;
  bool letter = false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c >= 'a' && c <= 'z')
      letter = true;
    else if (!(c >= '0' && c <= '9') && c != '-')
      return false;
    if (c == '-' && i > 0 && s[i - 1] == '-') return false;
  }
  return letter;
}

uint16_t PortNumber(const Json& j, const std::string& field) {
  if (!j.is_number_integer()) Fail(field, "expected a port number, got " + j.dump());
  int64_t v = j.get<int64_t>();
  if (v < 1 || v > 65535) Fail(field, std::to_string(v) + " is out of range 1-65535");
  return static_cast<uint16_t>(v);
}

PolicyPort ParsePort(const Json& j, const std::string& field) {
  RequireObject(j, field);
  PolicyPort p;
  for (const auto& [k, v] : j.items()) {
    if (k != "protocol" && k != "port" && k != "endPort") {
      Fail(field + "." + k, "unknown field (known: protocol, port, endPort)");
    }
  }
  if (const Json* proto = Find(j, "protocol")) {
    std::string name = RequireString(*proto, field + ".protocol");
    auto n = ParseProtocol(name);
    if (!n)
      Fail(field + ".protocol", "unknown protocol '" + name + "' (expected TCP, UDP or SCTP)");
    p.proto = *n;
  }
  if (const Json* port = Find(j, "port")) {
    if (port->is_string()) {
      std::string s = port->get<std::string>();
      if (!IsPortName(s)) {
        Fail(field + ".port", "'" + s + "' is neither a port number nor a valid port name");
      }
      p.named = s;
    } else {
      p.port = PortNumber(*port, field + ".port");
    }
  }
  if (const Json* end = Find(j, "endPort")) {
    uint16_t e = PortNumber(*end, field + ".endPort");
    if (!p.port) Fail(field + ".endPort", "needs a numeric port");
    if (e < *p.port) {
      Fail(field + ".endPort", std::to_string(e) + " is below port " + std::to_string(*p.port));
    }
    p.end_port = e;
  }
  return p;
}

Peer ParsePeer(const Json& j, const std::string& field) {
  RequireObject(j, field);
  Peer p;
  for (const auto& [k, v] : j.items()) {
    if (k != "podSelector" && k != "namespaceSelector" && k != "ipBlock") {
      Fail(field + "." + k, "unknown field (known: podSelector, namespaceSelector, ipBlock)");
    }
  }
  std::vector<std::string> parts;
  if (const Json* s = Find(j, "podSelector")) {
    p.pods = ParseSelector(*s, field + ".podSelector");
    parts.push_back("pods " + p.pods->ToString());
  }
  if (const Json* s = Find(j, "namespaceSelector")) {
    p.namespaces = ParseSelector(*s, field + ".namespaceSelector");
    parts.push_back("namespaces " + p.namespaces->ToString());
  }
  if (const Json* b = Find(j, "ipBlock")) {
    if (p.pods || p.namespaces) {
      Fail(field, "ipBlock may not be combined with podSelector or namespaceSelector in one peer");
    }
    RequireObject(*b, field + ".ipBlock");
    const Json* cidr = Find(*b, "cidr");
    if (cidr == nullptr) Fail(field + ".ipBlock.cidr", "required");
    std::string text = RequireString(*cidr, field + ".ipBlock.cidr"), why;
    p.cidr = ParseCidr(text, &why);
    if (!p.cidr) Fail(field + ".ipBlock.cidr", why);
    std::string desc = "ipBlock " + text;
    if (const Json* ex = Find(*b, "except")) {
      RequireList(*ex, field + ".ipBlock.except");
      for (size_t i = 0; i < ex->size(); ++i) {
        std::string f = Idx(field + ".ipBlock.except", i);
        std::string t = RequireString((*ex)[i], f);
        auto r = ParseCidr(t, &why);
        if (!r) Fail(f, why);
        if (!p.cidr->Covers(*r) || *r == *p.cidr) {
          Fail(f, "'" + t + "' must be a strict subset of cidr " + text);
        }
        p.except.push_back(*r);
        desc += (i == 0 ? " except " : ",") + t;
      }
    }
    parts.push_back(desc);
  }
  if (parts.empty()) Fail(field, "a peer needs podSelector, namespaceSelector or ipBlock");
  for (const auto& s : parts) p.text += (p.text.empty() ? "" : " and ") + s;
  return p;
}

Rule ParseRule(const Json& j, const std::string& field, bool egress) {
  RequireObject(j, field);
  const char* peers_key = egress ? "to" : "from";
  for (const auto& [k, v] : j.items()) {
    if (k != peers_key && k != "ports") {
      Fail(field + "." + k, std::string("unknown field (known: ") + peers_key + ", ports)");
    }
  }
  Rule r;
  if (const Json* peers = Find(j, peers_key)) {
    RequireList(*peers, field + "." + peers_key);
    for (size_t i = 0; i < peers->size(); ++i) {
      r.peers.push_back(ParsePeer((*peers)[i], Idx(field + "." + peers_key, i)));
    }
    r.all_peers = r.peers.empty();
  }
  if (const Json* ports = Find(j, "ports")) {
    RequireList(*ports, field + ".ports");
    for (size_t i = 0; i < ports->size(); ++i) {
      r.ports.push_back(ParsePort((*ports)[i], Idx(field + ".ports", i)));
    }
    r.all_ports = r.ports.empty();
  }
  return r;
}

std::vector<Rule> ParseRules(const Json* j, const std::string& field, bool egress) {
  std::vector<Rule> out;
  if (j == nullptr) return out;
  RequireList(*j, field);
  for (size_t i = 0; i < j->size(); ++i) out.push_back(ParseRule((*j)[i], Idx(field, i), egress));
  return out;
}

Json ScalarToJson(const YAML::Node& n) {
  const std::string& s = n.Scalar();
  if (n.Tag() == "!") return s;  // quoted: always a string
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return nullptr;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  {
    size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
    bool digits = i < s.size() && s.size() - i <= 18;
    for (size_t k = i; digits && k < s.size(); ++k)
      digits = std::isdigit(static_cast<unsigned char>(s[k]));
    if (digits) return std::stoll(s);
  }
  {
    char* end = nullptr;
    double d = std::strtod(s.c_str(), &end);
    bool numeric = end != nullptr && *end == '\0' &&
                   s.find_first_not_of("0123456789+-.eE") == std::string::npos;
    if (numeric) return d;
  }
  return s;
}

Json NodeToJson(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Scalar:
      return ScalarToJson(n);
    case YAML::NodeType::Sequence: {
      Json a = Json::array();
      for (const auto& e : n) a.push_back(NodeToJson(e));
      return a;
    }
    case YAML::NodeType::Map: {
      Json o = Json::object();
      for (const auto& kv : n) o[kv.first.as<std::string>()] = NodeToJson(kv.second);
      return o;
    }
  }
  return nullptr;
}

// Splits at lines that are exactly "---" (optionally followed by blanks or a
// comment), the YAML document separator. A malformed document then costs
// only itself.
std::vector<std::pair<int, std::string>> SplitDocuments(const std::string& content) {
  std::vector<std::pair<int, std::string>> docs;  // (first line, text)
  std::istringstream in(content);
  std::string line, cur;
  int lineno = 0, start = 1;
  while (std::getline(in, line)) {
    ++lineno;
    bool sep = line.rfind("---", 0) == 0 && (line.size() == 3 || line[3] == ' ' ||
                                             line[3] == '\t' || line[3] == '\r' || line[3] == '#');
    if (sep) {
      docs.emplace_back(start, cur);
      cur.clear();
      start = lineno + 1;
      continue;
    }
    if (line.rfind("...", 0) == 0 && line.find_first_not_of(". \t\r") == std::string::npos)
      continue;
    cur += line + "\n";
  }
  docs.emplace_back(start, cur);
  return docs;
}

bool Blank(const std::string& doc) {
  std::istringstream in(doc);
  std::string line;
  while (std::getline(in, line)) {
    auto p = line.find_first_not_of(" \t\r");
    if (p != std::string::npos && line[p] != '#') return false;
  }
  return true;
}

Policy ParseTerwayPolicy(const Json& j, const std::string& field) {
  RequireObject(j, field);
  for (const auto& [k, v] : j.items()) {
    if (k != "name" && k != "selector" && k != "ingress" && k != "egress" && k != "policyTypes") {
      Fail(field + "." + k, "unknown field (known: name, selector, ingress, egress, policyTypes)");
    }
  }
  Policy p;
  const Json* name = Find(j, "name");
  if (name == nullptr) Fail(field + ".name", "required");
  p.name = RequireString(*name, field + ".name");
  if (p.name.empty()) Fail(field + ".name", "must not be empty");
  p.cluster_wide = true;
  if (const Json* sel = Find(j, "selector")) {
    RequireObject(*sel, field + ".selector");
    Json pod_sel = Json::object();
    for (const auto& [k, v] : sel->items()) {
      if (k == "namespace") {
        p.ns = RequireString(v, field + ".selector.namespace");
        p.cluster_wide = p.ns.empty();
      } else if (k == "podSelector") {
        pod_sel = v;
      } else if (k == "matchLabels" || k == "matchExpressions") {
        pod_sel[k] = v;
      } else {
        Fail(field + ".selector." + k,
             "unknown field (known: namespace, podSelector, matchLabels, matchExpressions)");
      }
    }
    p.selector = ParseSelector(pod_sel, field + ".selector");
  }
  p.ingress_rules = ParseRules(Find(j, "ingress"), field + ".ingress", false);
  p.egress_rules = ParseRules(Find(j, "egress"), field + ".egress", true);
  p.ingress = true;
  p.egress = !p.egress_rules.empty();
  if (const Json* types = Find(j, "policyTypes")) {
    RequireList(*types, field + ".policyTypes");
    p.ingress = p.egress = false;
    for (size_t i = 0; i < types->size(); ++i) {
      std::string t = RequireString((*types)[i], Idx(field + ".policyTypes", i));
      if (t == "Ingress")
        p.ingress = true;
      else if (t == "Egress")
        p.egress = true;
      else
        Fail(Idx(field + ".policyTypes", i), "'" + t + "' is not Ingress or Egress");
    }
  }
  return p;
}

}  // namespace

uint64_t Fnv64(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

std::string Hex(uint64_t v, int digits) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return std::string(buf + 16 - digits);
}

std::optional<uint8_t> ParseProtocol(const std::string& name) {
  std::string u = name;
  std::transform(u.begin(), u.end(), u.begin(), [](unsigned char c) { return std::toupper(c); });
  if (u == "TCP") return kTcp;
  if (u == "UDP") return kUdp;
  if (u == "SCTP") return kSctp;
  return std::nullopt;
}

std::string ProtocolName(uint8_t proto) {
  switch (proto) {
    case kTcp:
      return "TCP";
    case kUdp:
      return "UDP";
    case kSctp:
      return "SCTP";
  }
  return std::to_string(proto);
}

bool LabelSelector::Matches(const Labels& labels) const {
  for (const auto& [k, v] : match_labels) {
    auto it = labels.find(k);
    if (it == labels.end() || it->second != v) return false;
  }
  for (const auto& r : expressions) {
    auto it = labels.find(r.key);
    bool has = it != labels.end();
    bool in = has && std::find(r.values.begin(), r.values.end(), it->second) != r.values.end();
    switch (r.op) {
      case Requirement::Op::kIn:
        if (!in) return false;
        break;
      case Requirement::Op::kNotIn:
        if (in) return false;
        break;
      case Requirement::Op::kExists:
        if (!has) return false;
        break;
      case Requirement::Op::kDoesNotExist:
        if (has) return false;
        break;
    }
  }
  return true;
}

std::string LabelSelector::ToString() const {
  if (Empty()) return "<all>";
  std::string out;
  auto add = [&](const std::string& s) { out += (out.empty() ? "" : ",") + s; };
  for (const auto& [k, v] : match_labels) add(k + "=" + v);
  for (const auto& r : expressions) {
    std::string vals;
    for (const auto& v : r.values) vals += (vals.empty() ? "" : ",") + v;
    switch (r.op) {
      case Requirement::Op::kIn:
        add(r.key + " in (" + vals + ")");
        break;
      case Requirement::Op::kNotIn:
        add(r.key + " notin (" + vals + ")");
        break;
      case Requirement::Op::kExists:
        add(r.key);
        break;
      case Requirement::Op::kDoesNotExist:
        add("!" + r.key);
        break;
    }
  }
  return out;
}

std::string PolicyPort::ToString() const {
  std::string p = !named.empty() ? named
                  : !port        ? "all"
                  : end_port     ? std::to_string(*port) + "-" + std::to_string(*end_port)
                                 : std::to_string(*port);
  return p + "/" + ProtocolName(proto);
}

LabelSelector ParseSelector(const Json& j, const std::string& field) {
  RequireObject(j, field);
  LabelSelector s;
  for (const auto& [k, v] : j.items()) {
    if (k != "matchLabels" && k != "matchExpressions") {
      Fail(field + "." + k, "unknown field (known: matchLabels, matchExpressions)");
    }
  }
  if (const Json* ml = Find(j, "matchLabels")) {
    RequireObject(*ml, field + ".matchLabels");
    for (const auto& [k, v] : ml->items()) {
      if (v.is_string())
        s.match_labels[k] = v.get<std::string>();
      else if (v.is_number_integer() || v.is_boolean())
        s.match_labels[k] = v.dump();
      else
        Fail(field + ".matchLabels." + k, "expected a string value");
    }
  }
  if (const Json* me = Find(j, "matchExpressions")) {
    RequireList(*me, field + ".matchExpressions");
    for (size_t i = 0; i < me->size(); ++i) {
      const std::string f = Idx(field + ".matchExpressions", i);
      const Json& e = (*me)[i];
      RequireObject(e, f);
      Requirement r;
      const Json* key = Find(e, "key");
      if (key == nullptr) Fail(f + ".key", "required");
      r.key = RequireString(*key, f + ".key");
      const Json* op = Find(e, "operator");
      if (op == nullptr) Fail(f + ".operator", "required");
      std::string o = RequireString(*op, f + ".operator");
      if (o == "In")
        r.op = Requirement::Op::kIn;
      else if (o == "NotIn")
        r.op = Requirement::Op::kNotIn;
      else if (o == "Exists")
        r.op = Requirement::Op::kExists;
      else if (o == "DoesNotExist")
        r.op = Requirement::Op::kDoesNotExist;
      else
        Fail(f + ".operator", "'" + o + "' is not In, NotIn, Exists or DoesNotExist");
      if (const Json* vals = Find(e, "values")) {
        RequireList(*vals, f + ".values");
        for (size_t k = 0; k < vals->size(); ++k) {
          const Json& v = (*vals)[k];
          if (v.is_string())
            r.values.push_back(v.get<std::string>());
          else if (v.is_number_integer() || v.is_boolean())
            r.values.push_back(v.dump());
          else
            Fail(Idx(f + ".values", k), "expected a string");
        }
      }
      bool set_op = r.op == Requirement::Op::kIn || r.op == Requirement::Op::kNotIn;
      if (set_op && r.values.empty()) Fail(f + ".values", "must not be empty for operator " + o);
      if (!set_op && !r.values.empty()) Fail(f + ".values", "must be empty for operator " + o);
      s.expressions.push_back(std::move(r));
    }
  }
  return s;
}

Policy ParseNetworkPolicy(const Json& m) {
  RequireObject(m, "document");
  const Json* api = Find(m, "apiVersion");
  if (api == nullptr) Fail("apiVersion", "required (networking.k8s.io/v1)");
  if (RequireString(*api, "apiVersion") != "networking.k8s.io/v1") {
    Fail("apiVersion", "'" + api->get<std::string>() + "' is not networking.k8s.io/v1");
  }
  const Json* kind = Find(m, "kind");
  if (kind == nullptr || RequireString(*kind, "kind") != "NetworkPolicy") {
    Fail("kind", "expected NetworkPolicy");
  }
  const Json* meta = Find(m, "metadata");
  if (meta == nullptr) Fail("metadata", "required");
  RequireObject(*meta, "metadata");
  Policy p;
  const Json* name = Find(*meta, "name");
  if (name == nullptr) Fail("metadata.name", "required");
  p.name = RequireString(*name, "metadata.name");
  if (p.name.empty()) Fail("metadata.name", "must not be empty");
  p.ns = "default";
  if (const Json* ns = Find(*meta, "namespace")) p.ns = RequireString(*ns, "metadata.namespace");
  if (p.ns.empty()) p.ns = "default";
  const Json* spec = Find(m, "spec");
  if (spec == nullptr) Fail("spec", "required");
  RequireObject(*spec, "spec");
  for (const auto& [k, v] : spec->items()) {
    if (k != "podSelector" && k != "ingress" && k != "egress" && k != "policyTypes") {
      Fail("spec." + k, "unknown field (known: podSelector, ingress, egress, policyTypes)");
    }
  }
  const Json* sel = Find(*spec, "podSelector");
  if (sel == nullptr) Fail("spec.podSelector", "required ({} selects every pod of the namespace)");
  p.selector = ParseSelector(*sel, "spec.podSelector");
  p.ingress_rules = ParseRules(Find(*spec, "ingress"), "spec.ingress", false);
  p.egress_rules = ParseRules(Find(*spec, "egress"), "spec.egress", true);
  // Kubernetes defaulting: Ingress always, Egress when egress rules exist.
  p.ingress = true;
  p.egress = !p.egress_rules.empty();
  if (const Json* types = Find(*spec, "policyTypes")) {
    RequireList(*types, "spec.policyTypes");
    if (!types->empty()) p.ingress = p.egress = false;
    for (size_t i = 0; i < types->size(); ++i) {
      std::string t = RequireString((*types)[i], Idx("spec.policyTypes", i));
      if (t == "Ingress")
        p.ingress = true;
      else if (t == "Egress")
        p.egress = true;
      else
        Fail(Idx("spec.policyTypes", i), "'" + t + "' is not Ingress or Egress");
    }
  }
  return p;
}

void Stamp(Policy* p, const std::string& key, const std::string& origin, const Json& canonical) {
  p->key = key;
  p->origin = origin;
  p->uid = Hex(Fnv64(key + "\n" + canonical.dump()), 12);
}

Json YamlToJson(const std::string& document, int first_line) {
  try {
    return NodeToJson(YAML::Load(document));
  } catch (const YAML::Exception& e) {
    std::string where =
        e.mark.is_null() ? "" : "line " + std::to_string(e.mark.line + first_line) + ": ";
    throw ParseError("malformed YAML: " + where + e.msg);
  }
}

std::vector<LoadedDocument> ParsePolicyFile(const std::string& path, const std::string& content) {
  std::vector<LoadedDocument> out;
  int index = 0;
  for (const auto& [first_line, text] : SplitDocuments(content)) {
    if (Blank(text)) continue;
    ++index;
    std::string where =
        path + ": document " + std::to_string(index) + " (line " + std::to_string(first_line) + ")";
    Json doc;
    try {
      doc = YamlToJson(text, first_line);
    } catch (const ParseError& e) {
      out.push_back({index, std::nullopt, where + ": " + e.what()});
      continue;
    }
    std::vector<std::pair<std::string, Json>> items;  // (suffix, object)
    if (doc.is_object() && doc.value("kind", "") != "NetworkPolicy" &&
        (doc.value("kind", "") == "List" || doc.value("kind", "") == "NetworkPolicyList")) {
      const Json* list = Find(doc, "items");
      if (list == nullptr || !list->is_array()) {
        out.push_back({index, std::nullopt, where + ": items: expected a list"});
        continue;
      }
      for (size_t i = 0; i < list->size(); ++i)
        items.emplace_back("." + std::to_string(i), (*list)[i]);
    } else {
      items.emplace_back("", doc);
    }
    for (const auto& [suffix, obj] : items) {
      std::string w = suffix.empty() ? where : where + " items[" + suffix.substr(1) + "]";
      try {
        Policy p = ParseNetworkPolicy(obj);
        Stamp(&p, "file:" + path + "#" + std::to_string(index) + suffix, w, obj);
        out.push_back({index, std::move(p), ""});
      } catch (const ParseError& e) {
        std::string label;
        if (obj.is_object() && obj.contains("metadata") && obj["metadata"].is_object() &&
            obj["metadata"].value("name", Json()).is_string()) {
          label = " (" + obj["metadata"].value("namespace", std::string("default")) + "/" +
                  obj["metadata"]["name"].get<std::string>() + ")";
        }
        out.push_back({index, std::nullopt, w + label + ": " + e.what()});
      }
    }
  }
  return out;
}

std::vector<Policy> ParseTerwayNetworkPolicy(const Json& j) {
  const std::string base = "terway_network_policy";
  RequireObject(j, base);
  for (const auto& [k, v] : j.items()) {
    if (k != "default_policy" && k != "policies") {
      Fail(base + "." + k, "unknown key (known: default_policy, policies)");
    }
  }
  std::vector<Policy> out;
  std::string def = "accept";
  if (const Json* d = Find(j, "default_policy")) def = RequireString(*d, base + ".default_policy");
  if (def != "accept" && def != "drop") {
    Fail(base + ".default_policy", "'" + def + "' is not accept or drop");
  }
  if (def == "drop") {
    // Every pod isolated for ingress; the policies below open what they name.
    Policy p;
    p.name = "terway-default-drop";
    p.cluster_wide = true;
    Stamp(&p, "terway:default_policy", base + ".default_policy", Json("drop"));
    out.push_back(std::move(p));
  }
  if (const Json* list = Find(j, "policies")) {
    RequireList(*list, base + ".policies");
    std::set<std::string> names;
    for (size_t i = 0; i < list->size(); ++i) {
      std::string f = Idx(base + ".policies", i);
      Policy p = ParseTerwayPolicy((*list)[i], f);
      if (!names.insert(p.name).second) Fail(f + ".name", "'" + p.name + "' is used twice");
      Stamp(&p, "terway:" + p.name, f, (*list)[i]);
      out.push_back(std::move(p));
    }
  }
  return out;
}

std::vector<Policy> ParseNetworkIsolation(const Json& j) {
  const std::string base = "network_isolation";
  RequireObject(j, base);
  bool enable = false;
  std::string def = "accept";
  std::vector<std::string> cidrs;
  for (const auto& [k, v] : j.items()) {
    if (k == "enable") {
      if (!v.is_boolean()) Fail(base + ".enable", "expected a boolean");
      enable = v.get<bool>();
    } else if (k == "default_policy") {
      def = RequireString(v, base + ".default_policy");
      if (def != "accept" && def != "drop") {
        Fail(base + ".default_policy", "'" + def + "' is not accept or drop");
      }
    } else if (k == "allowed_cidrs") {
      RequireList(v, base + ".allowed_cidrs");
      for (size_t i = 0; i < v.size(); ++i) {
        std::string c = RequireString(v[i], Idx(base + ".allowed_cidrs", i)), why;
        if (!ParseCidr(c, &why)) Fail(Idx(base + ".allowed_cidrs", i), why);
        cidrs.push_back(c);
      }
    } else {
      Fail(base + "." + k, "unknown key (known: enable, default_policy, allowed_cidrs)");
    }
  }
  if (!enable || def != "drop") return {};
  // Node isolation: every pod may talk only with the allowed CIDRs, both ways.
  Policy p;
  p.name = "terway-network-isolation";
  p.cluster_wide = true;
  p.ingress = p.egress = true;
  Rule in, out;
  in.all_peers = out.all_peers = false;
  for (const auto& c : cidrs) {
    Peer peer;
    peer.cidr = ParseCidr(c, nullptr);
    peer.text = "ipBlock " + c;
    in.peers.push_back(peer);
    out.peers.push_back(peer);
  }
  if (!cidrs.empty()) {
    p.ingress_rules.push_back(in);
    p.egress_rules.push_back(out);
  }
  Stamp(&p, "terway:network_isolation", base, j);
  return {p};
}

}  // namespace trellis::policy
