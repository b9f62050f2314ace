// The config's distributed section: its defaults, and errors that name the field.
#include <gtest/gtest.h>

#include <string>

#include "core/config.h"
#include "core/error.h"

using namespace deeptrain;

TEST(DistributedConfig, DefaultsAndErrorsNameTheField) {
  const proto::ExperimentConfig c = parse_config("", "x");
  EXPECT_FLOAT_EQ(c.distributed().bucket_mb(), 0.1f);
  EXPECT_FLOAT_EQ(c.distributed().step_timeout_s(), 600);
  EXPECT_FLOAT_EQ(c.distributed().collective_timeout_s(), 300);
  EXPECT_EQ(c.distributed().compression(), proto::COMPRESSION_NONE);
  try {
    parse_config("distributed { bucket_mb: -1 }", "cfg.prototxt");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("cfg.prototxt: distributed.bucket_mb: must be in (0, 1024] MiB, got -1"),
              std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_config("distributed { compression: ZIP }", "cfg"), InputError);
  EXPECT_NO_THROW(parse_config("distributed { step_timeout_s: -1 collective_timeout_s: 2.5 }", "cfg"));
}
