// Invariant checks inside fuzz targets: a violation aborts, which libFuzzer
// reports as a crash with the input, and the corpus replay as a failed test.
#ifndef TRELLIS_TESTS_FUZZ_FUZZ_CHECK_H_
#define TRELLIS_TESTS_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond)                                                      \
  do {                                                                        \
    if (!(cond)) {                                                            \
      std::fprintf(stderr, "%s:%d: invariant violated: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                           \
    }                                                                         \
  } while (0)

#endif  // TRELLIS_TESTS_FUZZ_FUZZ_CHECK_H_
