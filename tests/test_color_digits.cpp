// The larger-image example end to end (scripts/color_digits.sh): generated 64..96-pixel RGB
// images (scripts/make_color_digits.py) packed from their ImageFolder tree and a small ResNet
// (examples/resnet8_color_digits.prototxt) trained from the shards through data.transform. Four
// balanced classes: chance is 25%, and a pipeline that loses the link between pixels and labels
// (wrong samples, garbage decodes, shifted labels) stays within a few points of it (the binomial
// sd of 300 test images is 2.5 points); the run must reach 60%, 14 sd above.
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "cli_util.h"

namespace fs = std::filesystem;

TEST(ColorDigits, GeneratedPackedAndTrainedBeatsChance) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not fetched";
  if (std::system("/usr/bin/python3 -c 'import numpy' 2>/dev/null") != 0) GTEST_SKIP() << "no NumPy";
  TempDir dir;
  std::ifstream in(std::string(DEEPTRAIN_SOURCE_DIR) + "/examples/resnet8_color_digits.prototxt");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string cfg = ss.str();
  const size_t at = cfg.find("out_features: 10");
  ASSERT_NE(at, std::string::npos);
  cfg.replace(at, 16, "out_features: 4");
  const std::string cfg_path = dir.file("four.prototxt", cfg);
  const CommandResult r = run_command(fmt::format(
      "TRAIN=1200 TEST=300 CLASSES=4 CONFIG={} OUT={} MNIST={}/mnist DEEPTRAIN={} {}/scripts/color_digits.sh "
      "--epochs 10 --json", cfg_path, (dir.path / "cd").string(), DEEPTRAIN_DATA_DIR, DEEPTRAIN_BINARY,
      DEEPTRAIN_SOURCE_DIR));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(fs::exists(dir.path / "cd" / "images" / "train" / "3" / "000003.png"));
  const std::string last = r.last_line();
  const size_t k = last.find("\"test_accuracy\":");
  ASSERT_NE(k, std::string::npos) << r.output;
  const double accuracy = std::stod(last.substr(k + 16));
  EXPECT_GT(accuracy, 0.60) << last;
}
