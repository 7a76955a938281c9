/* A row of the ABI layout as one compiler saw it. */
#ifndef TRELLIS_TESTS_ABI_LAYOUT_TABLE_H_
#define TRELLIS_TESTS_ABI_LAYOUT_TABLE_H_

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct trellis_layout_row {
  const char* what;  /* "struct.member", or "struct" for the whole size */
  size_t offset;
  size_t size;
} trellis_layout_row;

extern const trellis_layout_row trellis_layout_c[];
extern const size_t trellis_layout_c_rows;
extern const char trellis_layout_c_entry_symbol[];

#ifdef __cplusplus
}
#endif

#endif /* TRELLIS_TESTS_ABI_LAYOUT_TABLE_H_ */
