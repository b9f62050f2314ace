// The figures: learning curves (PNG with the series' colours, SVG as XML), the misclassified-image
// grid and the confusion matrix.
#include <png.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>

#include <gtest/gtest.h>

#include "cli_util.h"
#include "core/error.h"
#include "report/crc32c.h"
#include "report/event_file.h"
#include "report/learning_curves.h"
#include "report/metrics_file.h"
#include "report/misclassified.h"
#include "report/progress.h"
#include "report/run_dir.h"
#include "report/tfrecord.h"
#include "report_test_util.h"

namespace {

using namespace deeptrain;
using namespace deeptrain::report;
using namespace report_test;
namespace fs = std::filesystem;

const std::string kMnist = std::string(DEEPTRAIN_DATA_DIR) + "/mnist";

LearningCurves sample_curves(int epochs) {
  LearningCurves c;
  for (int e = 1; e <= epochs; ++e) {
    c.epoch.push_back(e);
    c.train_accuracy.push_back(1 - 0.5 / e);
    c.test_accuracy.push_back(1 - 0.6 / e);
    c.train_loss.push_back(1.0 / e);
    c.test_loss.push_back(1.2 / e);
    c.learning_rate.push_back(1e-3);
  }
  return c;
}

TEST(Figures, LearningCurvesPngHasTheRequestedSizeAndTheSeriesColours) {
  const DecodedPng png = decode_png(learning_curves_png(sample_curves(5), 640, 300));
  ASSERT_EQ(png.width, 640u);
  ASSERT_EQ(png.height, 300u);
  auto has = [&](uint8_t r, uint8_t g, uint8_t b) {
    for (size_t i = 0; i + 2 < png.rgb.size(); i += 3)
      if (png.rgb[i] == r && png.rgb[i + 1] == g && png.rgb[i + 2] == b) return true;
    return false;
  };
  EXPECT_TRUE(has(31, 119, 180));   // train
  EXPECT_TRUE(has(255, 127, 14));   // test
  EXPECT_TRUE(has(44, 160, 44));    // learning rate
  EXPECT_TRUE(has(255, 255, 255));  // background
}

TEST(Figures, LearningCurvesSvgIsXmlWithOnePolylinePerSeries) {
  const std::string svg = learning_curves_svg(sample_curves(3), 800, 320);
  const auto tags = check_xml(svg);
  ASSERT_FALSE(tags.empty());
  EXPECT_EQ(tags[0].substr(0, 4), "svg ");
  EXPECT_NE(tags[0].find("width=\"800\""), std::string::npos) << tags[0];
  EXPECT_NE(tags[0].find("height=\"320\""), std::string::npos) << tags[0];
  std::vector<std::string> series;
  for (const auto& t : tags)
    if (t.rfind("polyline ", 0) == 0) {
      std::smatch m;
      ASSERT_TRUE(std::regex_search(t, m, std::regex("data-series=\"([a-z_]+)\""))) << t;
      series.push_back(m[1]);
      std::smatch pts;
      ASSERT_TRUE(std::regex_search(t, pts, std::regex("points=\"([^\"]*)\"")));
      EXPECT_EQ(count(pts[1], ","), 3u) << t;  // one point per epoch
    }
  EXPECT_EQ(series, (std::vector<std::string>{"train_accuracy", "test_accuracy", "train_loss",
                                              "test_loss", "learning_rate"}));
  EXPECT_NE(svg.find(">accuracy</text>"), std::string::npos);
  EXPECT_NE(svg.find(">epoch</text>"), std::string::npos);
}

TEST(Figures, OneEpochStillDrawsMarkers) {
  const std::string svg = learning_curves_svg(sample_curves(1), 1200, 480);
  check_xml(svg);
  EXPECT_GE(count(svg, "<circle"), 2u);  // train accuracy and train loss
}

data::Dataset tiny_dataset() {
  data::Dataset d;
  d.num_classes = 3;
  d.images = Tensor::zeros({4, 1, 2, 2}, DType::u8);
  d.labels = Tensor::empty({4}, DType::i32);
  const int32_t labels[] = {0, 1, 2, 2};
  std::copy(labels, labels + 4, d.labels.data<int32_t>());
  d.images.data<uint8_t>()[4] = 255;  // sample 1, top-left pixel white (drawn black)
  return d;
}

TEST(Figures, MisclassifiedGridAndConfusionMatrix) {
  const data::Dataset d = tiny_dataset();
  const std::vector<int32_t> pred = {0, 2, 2, 0};
  const Raster grid = misclassified_grid(d, pred);
  // Two misclassified images (samples 1 and 3): two columns of (2*3 + 8) px plus a margin, or
  // the title's width.
  EXPECT_EQ(grid.width(), std::max(2 * (2 * 3 + 8) + 8, Raster::text_width("true/predicted", 2) + 16));
  const DecodedPng png = decode_png(encode_png(grid));
  EXPECT_EQ(png.width, uint32_t(grid.width()));
  EXPECT_EQ(png.height, uint32_t(grid.height()));
  const ConfusionMatrix m = confusion_matrix(d, pred);
  EXPECT_EQ(m.at(0, 0), 1);
  EXPECT_EQ(m.at(1, 2), 1);
  EXPECT_EQ(m.at(2, 2), 1);
  EXPECT_EQ(m.at(2, 0), 1);
  EXPECT_EQ(confusion_csv(m), "true\\predicted,0,1,2\n0,1,0,0\n1,0,0,1\n2,1,0,1\n");
  EXPECT_NE(confusion_table(m).find("true\\pred"), std::string::npos);
  // Nothing misclassified: a small image that says so.
  const Raster none = misclassified_grid(d, {0, 1, 2, 2});
  EXPECT_LT(none.height(), 40);
}

// ------------------------------------------------------------------------------ run directory


}  // namespace
