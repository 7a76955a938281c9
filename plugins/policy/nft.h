// The nftables side: an in-memory picture of the one table trellis owns, the
// scripts that turn one picture into another in a single transaction, and a
// libnftables runner.
//
// Every script handed to Nft::Run is one netlink batch: the kernel applies all
// of it or none of it, and packets see either the old or the new ruleset.
#ifndef TRELLIS_PLUGINS_POLICY_NFT_H_
#define TRELLIS_PLUGINS_POLICY_NFT_H_

#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

struct nft_ctx;

namespace trellis::policy {

inline constexpr const char* kTable = "trellis";  // family inet

struct NftSet {
  std::string spec;  // "type ipv4_addr; flags interval;"
  // element key -> value ("" for a plain set; "jump x" or "\"counter\"" for maps)
  std::map<std::string, std::string> elements;
  bool operator==(const NftSet&) const = default;
};

struct NftChain {
  std::string spec;  // base chains: "type filter hook forward priority filter; policy accept;"
  std::vector<std::string> rules;
  bool operator==(const NftChain&) const = default;
};

struct NftTable {
  std::map<std::string, NftSet> sets;  // sets and maps
  std::map<std::string, NftChain> chains;
  std::set<std::string> counters;
  size_t ElementCount() const;
  size_t RuleCount() const;
};

struct CounterValue {
  uint64_t packets = 0, bytes = 0;
};

// Names of objects that changed since the last successful apply.
struct Touched {
  std::set<std::string> sets, chains, counters;
  bool empty() const { return sets.empty() && chains.empty() && counters.empty(); }
  void Merge(const Touched& o);
};

// Replaces the table as a whole (it may or may not exist): add + delete +
// create in one batch, so enforcement never lapses. `counters` carries values
// over; `extra` is appended inside the same batch.
std::string RenderReplace(const NftTable& t, const std::map<std::string, CounterValue>& counters,
                          const std::string& extra = "");
// Turns `from` into `to` for the touched objects only. Order inside the batch
// follows the kernel's reference checks: objects are created before anything
// refers to them and deleted after the last reference is gone.
std::string RenderDiff(const NftTable& from, const NftTable& to, const Touched& touched);

// Records in `applied` that the touched objects of `want` are in the kernel.
void CopyTouched(const NftTable& want, const Touched& touched, NftTable* applied);

class Nft {
 public:
  Nft();
  ~Nft();
  Nft(const Nft&) = delete;
  Nft& operator=(const Nft&) = delete;
  // Runs a script as one transaction. Returns "" on success, else nft's error
  // output. `output` receives nft's standard output when not null.
  std::string Run(const std::string& script, std::string* output = nullptr);
  // Reads the named counters of the table: name -> value. Empty when the table
  // does not exist.
  std::map<std::string, CounterValue> Counters();
  bool TableExists();

 private:
  std::mutex mu_;
  nft_ctx* ctx_;
  nft_ctx* json_ctx_;
};

}  // namespace trellis::policy

#endif  // TRELLIS_PLUGINS_POLICY_NFT_H_
