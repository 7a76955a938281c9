// Corpus replay: runs every input of a fuzz target's corpus (seeds and every
// crash ever found, kept as regressions) through the target, in the normal
// suite and with the normal compiler. A violated invariant aborts the test.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

TEST(TRELLIS_FUZZ_SUITE, EveryInputPasses) {
  const std::filesystem::path dir = TRELLIS_FUZZ_CORPUS;
  size_t inputs = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string data = ss.str();
    SCOPED_TRACE(entry.path().string());
    EXPECT_EQ(LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(data.data()), data.size()), 0);
    inputs++;
  }
  EXPECT_GE(inputs, 10u) << "the corpus in " << dir << " is missing";
}

}  // namespace
