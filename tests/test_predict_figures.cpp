// The pictures `predict` and segmentation runs draw (report/segmentation_figures.h,
// report/detections.h) and how predict prepares an image file for a model
// (core/data/image_input.h).
#include <gtest/gtest.h>

#include <set>

#include "cli_util.h"
#include "core/data/image_codec.h"
#include "core/data/image_input.h"
#include "core/data/image_transform.h"
#include "core/error.h"
#include "error_util.h"
#include "report/detections.h"
#include "report/segmentation_figures.h"

using namespace deeptrain;
using report::Rgb;

namespace {

std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

// A planar image with a different value at every pixel and channel.
std::vector<uint8_t> pattern(int c, int h, int w) {
  std::vector<uint8_t> p(size_t(c) * h * w);
  for (size_t i = 0; i < p.size(); ++i) p[i] = uint8_t((i * 37 + 11) % 256);
  return p;
}

TEST(ClassColours, AreVocsPaletteAndDistinct) {
  EXPECT_EQ(report::class_colour(0), (Rgb{0, 0, 0}));
  EXPECT_EQ(report::class_colour(1), (Rgb{128, 0, 0}));
  EXPECT_EQ(report::class_colour(2), (Rgb{0, 128, 0}));
  EXPECT_EQ(report::class_colour(3), (Rgb{128, 128, 0}));
  EXPECT_EQ(report::class_colour(4), (Rgb{0, 0, 128}));
  EXPECT_EQ(report::class_colour(10), (Rgb{64, 128, 0}));  // VOC's "cow"
  EXPECT_EQ(report::class_colour(15), (Rgb{192, 128, 128}));  // VOC's "person"
  std::set<std::tuple<int, int, int>> seen;
  for (int k = 0; k < 256; ++k) {
    const Rgb c = report::class_colour(k);
    seen.insert({c.r, c.g, c.b});
  }
  EXPECT_EQ(seen.size(), 256u);
}

TEST(SegmentationFigures, MaskAndOverlayColourEveryPixelByItsClass) {
  const int h = 3, w = 4;
  const std::vector<uint8_t> img = pattern(1, h, w);
  const std::vector<uint8_t> classes = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 255};
  const report::Raster m = report::mask_raster(classes.data(), h, w, 2);
  ASSERT_EQ(m.width(), 8);
  ASSERT_EQ(m.height(), 6);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const int k = classes[size_t(y * w + x)];
      const Rgb want = k == 255 ? report::kIgnoreColour : report::class_colour(k);
      EXPECT_EQ(m.at(2 * x + 1, 2 * y + 1), want) << x << "," << y;
    }
  const report::Raster o = report::overlay_raster(img.data(), 1, h, w, classes.data());
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const int k = classes[size_t(y * w + x)];
      const uint8_t p = img[size_t(y * w + x)];
      const Rgb c = report::class_colour(k);
      const Rgb want = k == 0 ? Rgb{p, p, p}
                              : Rgb{uint8_t((p + c.r + 1) / 2), uint8_t((p + c.g + 1) / 2), uint8_t((p + c.b + 1) / 2)};
      EXPECT_EQ(o.at(x, y), want) << x << "," << y;
    }
}

TEST(SegmentationFigures, PredictionGridShowsImageTruthAndPrediction) {
  data::Dataset d;
  d.name = "t";
  const int n = 3, h = 5, w = 6;
  d.images = Tensor::empty({n, 1, h, w}, DType::u8);
  d.label_maps = Tensor::empty({n, h, w}, DType::u8);
  d.labels = Tensor::zeros({n}, DType::i32);
  const std::vector<uint8_t> px = pattern(1, n * h, w);
  std::copy(px.begin(), px.end(), d.images.data<uint8_t>());
  // Classes that repeat no pattern (a hash), so no picture matches another one shifted.
  auto hashed = [](uint32_t i) { return uint8_t(((i * 2654435761u) >> 13) % 11); };
  for (int i = 0; i < n * h * w; ++i) d.label_maps.data<uint8_t>()[i] = hashed(uint32_t(i));
  std::vector<uint8_t> predicted(size_t(2 * h * w));
  for (size_t i = 0; i < predicted.size(); ++i) predicted[i] = hashed(uint32_t(i + 1000));
  const report::Raster g = report::prediction_grid(d, predicted);
  // Two rows of three cells, each picture 3x: find each picture where its pixels are.
  auto picture_at = [&](int X, int Y, auto colour_of) {
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int dy = 0; dy < 3; ++dy)
          for (int dx = 0; dx < 3; ++dx)
            if (X + 3 * x + dx >= g.width() || Y + 3 * y + dy >= g.height() ||
                !(g.at(X + 3 * x + dx, Y + 3 * y + dy) == colour_of(y * w + x)))
              return false;
    return true;
  };
  auto find = [&](auto colour_of) {
    for (int Y = 0; Y < g.height(); ++Y)
      for (int X = 0; X < g.width(); ++X)
        if (picture_at(X, Y, colour_of)) return std::pair{X, Y};
    return std::pair{-1, -1};
  };
  int last_y = -1;
  for (int i = 0; i < 2; ++i) {
    const auto image = find([&](int p) {
      const uint8_t v = px[size_t(i * h * w + p)];
      return Rgb{v, v, v};
    });
    const auto truth = find([&](int p) { return report::class_colour(d.label_maps.data<uint8_t>()[i * h * w + p]); });
    const auto pred = find([&](int p) { return report::class_colour(predicted[size_t(i * h * w + p)]); });
    ASSERT_GE(image.first, 0) << "row " << i;
    ASSERT_GE(truth.first, 0) << "row " << i;
    ASSERT_GE(pred.first, 0) << "row " << i;
    EXPECT_EQ(image.second, truth.second);
    EXPECT_EQ(truth.second, pred.second);
    EXPECT_LT(image.first, truth.first);
    EXPECT_LT(truth.first, pred.first);
    EXPECT_GT(image.second, last_y);
    last_y = image.second;
  }
  // Too many predictions for the set is a programming error.
  EXPECT_THROW(report::prediction_grid(d, std::vector<uint8_t>(size_t(4 * h * w))), Error);
}

TEST(Detections, BoxesAreOutlinedInTheirClassColourWithACaption) {
  report::Raster r(60, 40, report::kBlack);
  const Detection d{.label = 2, .score = 0.875f, .x0 = 10, .y0 = 20, .x1 = 30, .y1 = 35};
  report::draw_detections(r, {d}, {"zero", "one", "two"});
  const Rgb c = report::class_colour(3);
  EXPECT_EQ(report::detection_caption(d, {"zero", "one", "two"}), "two 0.88");
  EXPECT_EQ(report::detection_caption(d, {}), "2 0.88");
  // The outline: [10, 30) x [20, 35), one pixel thick; the inside untouched.
  for (int x = 10; x < 30; ++x) {
    EXPECT_EQ(r.at(x, 34), c) << x;
  }
  for (int y = 20; y < 35; ++y) {
    EXPECT_EQ(r.at(10, y), c) << y;
    EXPECT_EQ(r.at(29, y), c) << y;
  }
  EXPECT_EQ(r.at(20, 27), report::kBlack);
  EXPECT_EQ(r.at(30, 27), report::kBlack);
  // The caption sits above the box: its background in the class colour, white glyphs on it.
  int white = 0, colour = 0;
  for (int y = 20 - 9; y < 20; ++y)
    for (int x = 10; x < 10 + report::Raster::text_width("two 0.88") + 2; ++x) {
      white += r.at(x, y) == report::kWhite;
      colour += r.at(x, y) == c;
    }
  EXPECT_GT(white, 10);
  EXPECT_GT(colour, 10);
  // A box reaching outside the image and one at its top edge draw clipped, their captions inside.
  report::Raster edge(30, 30, report::kBlack);
  report::draw_detections(edge, {{.label = 0, .score = 1.0f, .x0 = -5, .y0 = 0, .x1 = 50, .y1 = 12},
                                 {.label = 9, .score = 0.5f, .x0 = 25, .y0 = 25, .x1 = 40, .y1 = 40}});
  EXPECT_EQ(edge.at(0, 11), report::class_colour(1));
  EXPECT_EQ(edge.at(29, 25), report::class_colour(10));
  // Scaled: a box of the image's coordinates drawn on a 2x picture of it.
  report::Raster big(40, 40, report::kBlack);
  report::draw_detections(big, {{.label = 0, .score = 0.5f, .x0 = 5, .y0 = 10, .x1 = 10, .y1 = 15}}, {}, 2);
  EXPECT_EQ(big.at(10, 29), report::class_colour(1));
  EXPECT_EQ(big.at(19, 25), report::class_colour(1));
  EXPECT_EQ(big.at(15, 25), report::kBlack);
}

// A detector's predictions.png: per sample a row of the image with its truth boxes (captioned
// with the class alone) | the image with the detections (captioned with class and score).
TEST(Detections, GridShowsTruthBesideTheDetections) {
  data::Dataset d;
  const int h = 16, w = 16, scale = 3, gap = 4;
  d.images = Tensor::zeros({2, 1, h, w}, DType::u8);
  d.labels = Tensor::zeros({2}, DType::i32);
  d.boxes = {{{.label = 4, .x0 = 2, .y0 = 3, .x1 = 10, .y1 = 12}}, {}};
  const std::vector<std::vector<Detection>> found = {
      {}, {{.label = 7, .score = 0.9f, .x0 = 4, .y0 = 4, .x1 = 12, .y1 = 14}}};
  const report::Raster g = report::detection_grid(d, found, scale);
  EXPECT_EQ(g.width(), 2 * w * scale + 3 * gap);
  EXPECT_EQ(g.height(), 2 * (h * scale + gap) + gap);
  // Row 0, left: the truth box's bottom edge in class 4's colour; right: nothing found.
  EXPECT_EQ(g.at(gap + 5 * scale, gap + 12 * scale - 1), report::class_colour(5));
  EXPECT_EQ(g.at(2 * gap + w * scale + 5 * scale, gap + 12 * scale - 1), report::kBlack);
  // Row 1: no truth on the left; the detection on the right.
  const int y1 = gap + (h * scale + gap);
  EXPECT_EQ(g.at(gap + 6 * scale, y1 + 14 * scale - 1), report::kBlack);
  EXPECT_EQ(g.at(2 * gap + w * scale + 6 * scale, y1 + 14 * scale - 1), report::class_colour(8));
}

// predict's preparation of an image file, per case of core/data/image_input.h.
TEST(ModelImageInput, PreparesAsTheModelsDataIsPrepared) {
  TempDir dir;
  proto::DataConfig plain;
  // Same size, gray model: the pixels as they are.
  const std::vector<uint8_t> gray = pattern(1, 28, 28);
  std::vector<uint8_t> out(28 * 28);
  data::ModelImageInput mnist(plain, Shape{1, 28, 28}, 1);
  mnist.prepare(bytes_of(data::encode_png(gray.data(), 1, 28, 28)), "gray.png", out.data());
  EXPECT_EQ(out, gray);
  EXPECT_TRUE(mnist.mean().empty());
  // Colour for a gray model: PIL's convert("L").
  data::DecodedImage rgb{3, 28, 28, pattern(3, 28, 28)};
  mnist.prepare(bytes_of(data::encode_png(rgb.pixels.data(), 3, 28, 28)), "rgb.png", out.data());
  data::convert_image_channels(rgb, 1);
  EXPECT_EQ(out, rgb.pixels);
  // Another size: PIL's bilinear resize of the whole image to the input's.
  const std::vector<uint8_t> big = pattern(1, 40, 50);
  mnist.prepare(bytes_of(data::encode_png(big.data(), 1, 40, 50)), "big.png", out.data());
  std::vector<uint8_t> want(28 * 28);
  data::crop_resize_bilinear(big.data(), 1, 40, 50, {0, 0, 40, 50}, 28, 28, want.data());
  EXPECT_EQ(out, want);
  // Gray for a colour model without data.transform: refused, naming the image.
  data::ModelImageInput cifar(plain, Shape{3, 32, 32}, 1);
  std::vector<uint8_t> out3(3 * 32 * 32);
  EXPECT_CONTAINS(error_of([&] {
    cifar.prepare(bytes_of(data::encode_png(gray.data(), 1, 28, 28)), "digit.png", out3.data());
  }), "digit.png: a 1-channel image, the model takes 3");
  // Not an image, a missing file: InputError naming it.
  EXPECT_CONTAINS(error_of([&] { mnist.prepare(bytes_of("hello"), "hello.png", out.data()); }), "hello.png");
  EXPECT_CONTAINS(error_of([&] { mnist.prepare((dir.path / "none.jpg").string(), out.data()); }), "none.jpg");
  // data.transform: its evaluation path (Resize + CenterCrop) and its normalisation.
  proto::DataConfig own;
  own.set_dataset("shards");
  auto* t = own.mutable_transform();
  t->set_resize(36);
  t->set_convert_channels(true);
  t->add_mean(0.5f);
  t->add_std(0.25f);
  data::ModelImageInput photos(own, Shape{3, 32, 32}, 7);
  photos.prepare(bytes_of(data::encode_png(big.data(), 1, 40, 50)), "big.png", out3.data());
  std::vector<uint8_t> want3(3 * 32 * 32);
  data::ImageTransform(*t, 3, 32, 32, 7).apply({1, 40, 50, big}, 0, data::kEvalEpoch, "big.png", want3.data());
  EXPECT_EQ(out3, want3);
  EXPECT_EQ(photos.mean(), (std::vector<float>{0.5f, 0.5f, 0.5f}));
  EXPECT_EQ(photos.std(), (std::vector<float>{0.25f, 0.25f, 0.25f}));
}

}  // namespace
