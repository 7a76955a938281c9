// The ABI layout as a C++ compiler sees it, pinned at compile time, then
// compared row by row with what the C compiler saw (layout_c.c): a plugin
// written in C and a host written in C++ must agree on every byte.
#include <trellis/abi.h>
#include <gtest/gtest.h>

#include <cstddef>
#include <string>
#include <type_traits>

#include "layout_table.h"

namespace {

#define TRELLIS_LAYOUT(S, M, OFF, SIZE)                                    \
  static_assert(offsetof(S, M) == (OFF), #S "." #M " moved");              \
  static_assert(sizeof(S::M) == (SIZE), #S "." #M " changed size");
#define TRELLIS_SIZE(S, SIZE)                                              \
  static_assert(sizeof(S) == (SIZE), "sizeof " #S " changed");             \
  static_assert(std::is_standard_layout_v<S> && std::is_trivial_v<S>,     \
                #S " must stay a plain C struct");
#include "abi_layout.inc"
#undef TRELLIS_LAYOUT
#undef TRELLIS_SIZE

const trellis_layout_row kLayoutCxx[] = {
#define TRELLIS_LAYOUT(S, M, OFF, SIZE) {#S "." #M, offsetof(S, M), sizeof(S::M)},
#define TRELLIS_SIZE(S, SIZE) {#S, 0, sizeof(S)},
#include "abi_layout.inc"
#undef TRELLIS_LAYOUT
#undef TRELLIS_SIZE
};

// Values are ABI too: a plugin compiled against an older header must mean
// the same thing by every constant.
static_assert(TRELLIS_ABI_MAJOR == 1);
static_assert(TRELLIS_OK == 0 && TRELLIS_E_INVALID == 1 && TRELLIS_E_NOT_FOUND == 2 &&
              TRELLIS_E_EXISTS == 3 && TRELLIS_E_EXHAUSTED == 4 && TRELLIS_E_UNAVAILABLE == 5 &&
              TRELLIS_E_PRECONDITION == 6 && TRELLIS_E_INTERNAL == 7 &&
              TRELLIS_E_UNIMPLEMENTED == 8 && TRELLIS_E_TIMEOUT == 9 &&
              TRELLIS_E_MISMATCH == 10 && TRELLIS_E_BUFFER == 11);
static_assert(TRELLIS_LOG_TRACE == 0 && TRELLIS_LOG_DEBUG == 1 && TRELLIS_LOG_INFO == 2 &&
              TRELLIS_LOG_WARN == 3 && TRELLIS_LOG_ERROR == 4);
static_assert(TRELLIS_METRIC_COUNTER == 1 && TRELLIS_METRIC_GAUGE == 2 &&
              TRELLIS_METRIC_HISTOGRAM == 3);
static_assert(TRELLIS_ADDR_F_FROM_SOURCE == 0x01 && TRELLIS_SECGROUP_SYNC_DRY_RUN == 0x1);
static_assert(TRELLIS_IPAM_VERSION == 1 && TRELLIS_ADDRESS_SOURCE_VERSION == 1 &&
              TRELLIS_QOS_VERSION == 1 && TRELLIS_POLICY_VERSION == 1 &&
              TRELLIS_ENI_VERSION == 1 && TRELLIS_SECGROUP_VERSION == 1);
static_assert(std::is_same_v<trellis_plugin_entry_fn, const trellis_plugin_descriptor* (*)()>);

TEST(AbiLayout, CAndCxxCompilersAgreeOnEveryMember) {
  constexpr size_t kRows = sizeof kLayoutCxx / sizeof kLayoutCxx[0];
  ASSERT_EQ(trellis_layout_c_rows, kRows);
  for (size_t i = 0; i < kRows; ++i) {
    SCOPED_TRACE(kLayoutCxx[i].what);
    EXPECT_STREQ(trellis_layout_c[i].what, kLayoutCxx[i].what);
    EXPECT_EQ(trellis_layout_c[i].offset, kLayoutCxx[i].offset);
    EXPECT_EQ(trellis_layout_c[i].size, kLayoutCxx[i].size);
  }
}

TEST(AbiLayout, EntrySymbolNameIsVersioned) {
  EXPECT_STREQ(trellis_layout_c_entry_symbol, "trellis_plugin_entry_v1");
  EXPECT_EQ(std::string(TRELLIS_PLUGIN_ENTRY_SYMBOL),
            "trellis_plugin_entry_v" + std::to_string(TRELLIS_ABI_MAJOR));
}

}  // namespace
