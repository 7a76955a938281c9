/* The ABI layout as a C compiler sees it: compile-time pins, and a table the
   C++ test compares with its own view. */
#include <stddef.h>
#include <trellis/abi.h>

#include "layout_table.h"

#if !defined(__x86_64__) || !defined(__LP64__)
#error "the pinned layout is that of x86_64 (LP64)"
#endif

#define TRELLIS_LAYOUT(S, M, OFF, SIZE)                                      \
  _Static_assert(offsetof(S, M) == (OFF), #S "." #M " moved");               \
  _Static_assert(sizeof(((S*)0)->M) == (SIZE), #S "." #M " changed size");
#define TRELLIS_SIZE(S, SIZE) _Static_assert(sizeof(S) == (SIZE), "sizeof " #S " changed");
#include "abi_layout.inc"
#undef TRELLIS_LAYOUT
#undef TRELLIS_SIZE

_Static_assert(sizeof(trellis_status) == 4, "trellis_status is an int32_t");
_Static_assert(_Alignof(trellis_address) == 4, "trellis_address is 4-byte aligned (arrays)");

const trellis_layout_row trellis_layout_c[] = {
#define TRELLIS_LAYOUT(S, M, OFF, SIZE) {#S "." #M, offsetof(S, M), sizeof(((S*)0)->M)},
#define TRELLIS_SIZE(S, SIZE) {#S, 0, sizeof(S)},
#include "abi_layout.inc"
#undef TRELLIS_LAYOUT
#undef TRELLIS_SIZE
};
const size_t trellis_layout_c_rows = sizeof trellis_layout_c / sizeof trellis_layout_c[0];

const char trellis_layout_c_entry_symbol[] = TRELLIS_PLUGIN_ENTRY_SYMBOL;
