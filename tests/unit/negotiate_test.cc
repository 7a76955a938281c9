// ABI negotiation on synthetic descriptors (no library involved): the rules
// of docs/plugin-abi.md, each refusal asserted word for word.
#include <gtest/gtest.h>

#include <cstddef>

#include "core/plugin_loader.h"

namespace trellis {
namespace {

trellis_status Validate(const char*, trellis_error*) { return TRELLIS_OK; }
trellis_status Create(const trellis_host_api*, const char*, void**, trellis_error*) {
  return TRELLIS_OK;
}
void Destroy(void*) {}
trellis_status PodOp(void*, const trellis_pod*, trellis_error*) { return TRELLIS_OK; }
trellis_status GcOp(void*, const trellis_pod_ref*, uint32_t, trellis_error*) { return TRELLIS_OK; }

trellis_plugin_descriptor Minimal() {
  trellis_plugin_descriptor d{};
  d.struct_size = sizeof d;
  d.abi_major = TRELLIS_ABI_MAJOR;
  d.abi_minor = TRELLIS_ABI_MINOR;
  d.name = "synthetic";
  d.version = "9.9.9";
  d.validate = Validate;
  d.create = Create;
  d.destroy = Destroy;
  return d;
}

trellis_qos_ops Qos() {
  trellis_qos_ops q{};
  q.struct_size = sizeof q;
  q.version = TRELLIS_QOS_VERSION;
  q.apply = PodOp;
  q.remove = PodOp;
  q.check = PodOp;
  q.gc = GcOp;
  return q;
}

std::string Refusal(const trellis_plugin_descriptor* d) {
  auto r = Negotiate(d);
  return r.ok() ? "(accepted)" : std::string(r.status().message());
}

const std::string kHost = std::to_string(TRELLIS_ABI_MAJOR) + "." + std::to_string(TRELLIS_ABI_MINOR);

TEST(Negotiate, MinimalDescriptorIsAccepted) {
  auto d = Minimal();
  auto r = Negotiate(&d);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->name, "synthetic");
  EXPECT_EQ(r->version, "9.9.9");
  EXPECT_EQ(r->description, "");  // NULL reads as empty
  EXPECT_EQ(r->AbiVersion(), kHost);
  EXPECT_TRUE(r->Interfaces().empty());
}

TEST(Negotiate, NullAndTinyDescriptors) {
  EXPECT_EQ(Refusal(nullptr), "its entry point returned NULL");
  auto d = Minimal();
  d.struct_size = 4;
  EXPECT_EQ(Refusal(&d), "its descriptor is 4 bytes: not a trellis plugin descriptor");
}

TEST(Negotiate, MajorMustMatch) {
  auto d = Minimal();
  d.abi_major = TRELLIS_ABI_MAJOR + 1;
  d.abi_minor = 0;
  EXPECT_EQ(Refusal(&d), "it was built for plugin ABI " + std::to_string(TRELLIS_ABI_MAJOR + 1) +
                             ".0, this host speaks ABI " + kHost +
                             " (the major versions must match); rebuild it against this SDK");
  d.abi_major = TRELLIS_ABI_MAJOR - 1;
  d.abi_minor = 7;
  EXPECT_EQ(Refusal(&d), "it was built for plugin ABI " + std::to_string(TRELLIS_ABI_MAJOR - 1) +
                             ".7, this host speaks ABI " + kHost +
                             " (the major versions must match); rebuild it against this SDK");
}

TEST(Negotiate, NewerMinorIsRefused) {
  auto d = Minimal();
  d.abi_minor = TRELLIS_ABI_MINOR + 3;
  EXPECT_EQ(Refusal(&d), "it was built for plugin ABI " + std::to_string(TRELLIS_ABI_MAJOR) + "." +
                             std::to_string(TRELLIS_ABI_MINOR + 3) + ", newer than this host's " +
                             kHost + "; upgrade trellisd or rebuild the plugin against SDK " +
                             kHost);
}

TEST(Negotiate, DescriptorSmallerThanTheFirstMinorIsRefused) {
  auto d = Minimal();
  d.struct_size = offsetof(trellis_plugin_descriptor, secgroup);
  EXPECT_EQ(Refusal(&d), "its descriptor is " + std::to_string(d.struct_size) +
                             " bytes, smaller than the " +
                             std::to_string(offsetof(trellis_plugin_descriptor, reserved)) +
                             " bytes of ABI 1.0");
}

// The reserved slots are not part of what a plugin must write.
TEST(Negotiate, DescriptorWithoutReservedSlotsIsAccepted) {
  struct {
    trellis_plugin_descriptor d;
  } raw{};
  raw.d = Minimal();
  raw.d.struct_size = offsetof(trellis_plugin_descriptor, reserved);
  raw.d.reserved[0] = reinterpret_cast<void*>(0x1);  // past its size: never read
  auto r = Negotiate(&raw.d);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->d.reserved[0], nullptr);
}

struct Bigger {
  trellis_plugin_descriptor d;
  uint64_t future[2];
};

TEST(Negotiate, LargerDescriptorAcceptedOnlyWithAZeroTail) {
  Bigger b{};
  b.d = Minimal();
  b.d.struct_size = sizeof b;
  EXPECT_TRUE(Negotiate(&b.d).ok());
  b.future[1] = 1;
  EXPECT_EQ(Refusal(&b.d), "its descriptor is " + std::to_string(sizeof b) +
                               " bytes, larger than the " +
                               std::to_string(sizeof(trellis_plugin_descriptor)) +
                               " this host knows, and its unknown tail is not zero: the plugin "
                               "uses features this host lacks; upgrade trellisd");
}

TEST(Negotiate, ImplausibleSizeIsRefusedWithoutReadingIt) {
  auto d = Minimal();
  d.struct_size = 0x7fffffff;
  EXPECT_EQ(Refusal(&d),
            "its descriptor claims to be 2147483647 bytes, more than any trellis structure "
            "(4096): it is corrupt");
}

TEST(Negotiate, NameAndLifecycleOpsAreMandatory) {
  auto d = Minimal();
  d.name = nullptr;
  EXPECT_EQ(Refusal(&d), "its descriptor has no name");
  d.name = "";
  EXPECT_EQ(Refusal(&d), "its descriptor has no name");
  for (const char* op : {"validate", "create", "destroy"}) {
    d = Minimal();
    if (std::string(op) == "validate") d.validate = nullptr;
    if (std::string(op) == "create") d.create = nullptr;
    if (std::string(op) == "destroy") d.destroy = nullptr;
    EXPECT_EQ(Refusal(&d), std::string("its descriptor has no ") + op +
                               " op (validate, create and destroy are mandatory)");
  }
}

TEST(Negotiate, OptionalLifecycleOpsMayBeAbsent) {
  auto d = Minimal();
  d.reconfigure = nullptr;
  d.status = nullptr;
  d.deactivate = nullptr;
  EXPECT_TRUE(Negotiate(&d).ok());
}

TEST(Negotiate, InterfacesAreDetectedFromTheirTables) {
  auto q = Qos();
  trellis_secgroup_ops sg{};
  sg.struct_size = sizeof sg;
  sg.version = TRELLIS_SECGROUP_VERSION;
  sg.reconcile = [](void*, uint32_t, trellis_sink*, trellis_error*) -> trellis_status {
    return TRELLIS_OK;
  };
  auto d = Minimal();
  d.qos = &q;
  d.secgroup = &sg;
  auto r = Negotiate(&d);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->Interfaces(), (std::vector<std::string>{"qos", "secgroup"}));
  EXPECT_TRUE(r->has_qos);
  EXPECT_FALSE(r->has_ipam);
  EXPECT_EQ(r->qos.apply, &PodOp);
}

TEST(Negotiate, OlderOpsTableReadsMissingOpsAsAbsent) {
  auto q = Qos();
  q.struct_size = offsetof(trellis_qos_ops, check);
  auto d = Minimal();
  d.qos = &q;
  auto r = Negotiate(&d);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NE(r->qos.apply, nullptr);
  EXPECT_EQ(r->qos.check, nullptr);  // set in memory, but past the table's size
  EXPECT_EQ(r->qos.gc, nullptr);
}

TEST(Negotiate, OpsTableSizesAndVersions) {
  auto q = Qos();
  auto d = Minimal();
  d.qos = &q;
  q.struct_size = 4;
  EXPECT_EQ(Refusal(&d), "its qos ops table is 4 bytes, smaller than the 8 bytes of ABI 1.0");
  q = Qos();
  q.version = 0;
  EXPECT_EQ(Refusal(&d), "its qos interface is version 0, this host knows versions 1 to 1");
  q.version = TRELLIS_QOS_VERSION + 1;
  EXPECT_EQ(Refusal(&d), "its qos interface is version 2, this host knows versions 1 to 1");

  struct {
    trellis_qos_ops q;
    void* future;
  } bigger{};
  bigger.q = Qos();
  bigger.q.struct_size = sizeof bigger;
  d.qos = &bigger.q;
  EXPECT_TRUE(Negotiate(&d).ok());
  bigger.future = reinterpret_cast<void*>(&GcOp);
  EXPECT_EQ(Refusal(&d), "its qos ops table is " + std::to_string(sizeof bigger) +
                             " bytes, larger than the " + std::to_string(sizeof(trellis_qos_ops)) +
                             " this host knows, and its unknown tail is not zero: the plugin uses "
                             "features this host lacks; upgrade trellisd");
}

TEST(Negotiate, MandatoryInterfaceOps) {
  auto d = Minimal();
  auto q = Qos();
  d.qos = &q;
  q.remove = nullptr;
  EXPECT_EQ(Refusal(&d), "its qos interface has no remove op (apply and remove are mandatory)");

  d = Minimal();
  trellis_ipam_ops ipam{};
  ipam.struct_size = sizeof ipam;
  ipam.version = TRELLIS_IPAM_VERSION;
  d.ipam = &ipam;
  EXPECT_EQ(Refusal(&d), "its ipam interface has no allocate op (allocate and release are mandatory)");

  d = Minimal();
  trellis_address_source_ops src{};
  src.struct_size = sizeof src;
  src.version = TRELLIS_ADDRESS_SOURCE_VERSION;
  d.address_source = &src;
  EXPECT_EQ(Refusal(&d),
            "its address_source interface has no acquire op (acquire and release are mandatory)");

  d = Minimal();
  trellis_policy_ops pol{};
  pol.struct_size = sizeof pol;
  pol.version = TRELLIS_POLICY_VERSION;
  pol.pod_upsert = PodOp;
  d.policy = &pol;
  EXPECT_EQ(Refusal(&d),
            "its policy interface has no pod_remove op (pod_upsert and pod_remove are mandatory)");

  d = Minimal();
  trellis_eni_ops eni{};
  eni.struct_size = sizeof eni;
  eni.version = TRELLIS_ENI_VERSION;
  d.eni = &eni;
  EXPECT_EQ(Refusal(&d), "its eni interface has no pool_status op (pool_status is mandatory)");

  d = Minimal();
  trellis_secgroup_ops sg{};
  sg.struct_size = sizeof sg;
  sg.version = TRELLIS_SECGROUP_VERSION;
  d.secgroup = &sg;
  EXPECT_EQ(Refusal(&d), "its secgroup interface has no reconcile op (reconcile is mandatory)");
}

// The host keeps its own copy: what the plugin does to its descriptor later
// changes nothing.
TEST(Negotiate, HostKeepsItsOwnCopy) {
  auto q = Qos();
  auto d = Minimal();
  d.qos = &q;
  auto r = Negotiate(&d);
  ASSERT_TRUE(r.ok());
  d.name = "changed";
  q.apply = nullptr;
  EXPECT_EQ(r->name, "synthetic");
  EXPECT_EQ(r->qos.apply, &PodOp);
}

}  // namespace
}  // namespace trellis
