#include <gtest/gtest.h>

#include "core/config.h"

TEST(Config, EmbeddedDefaultParses) {
  auto cfg = trellis::ParseNodeConfig(trellis::EmbeddedDefaultConfigYaml(), "x");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
}
