// data.transform (core/data/image_transform.h): packed images of any size and colour brought to
// the model's input as torchvision 0.14 does with PIL: RandomResizedCrop's boxes and fallback,
// Resize + CenterCrop, PIL's antialiased bilinear filter and gray <-> RGB conversion, the
// ToTensor + Normalize arithmetic; against real torchvision on the same PNG files (skipped when
// python3-torchvision is absent); the draws keyed by (seed, epoch, sample): data threads, rank
// count and a resume change nothing.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include <gtest/gtest.h>

#include "error_util.h"

#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "core/config.h"
#include "core/data/image_codec.h"
#include "core/data/image_transform.h"
#include "core/data/shard_reader.h"
#include "core/data/shard_writer.h"
#include "core/error.h"
#include "core/io/weights.h"

using namespace deeptrain;
namespace fs = std::filesystem;

namespace {

// Structured content (ramps, a checker, a salt) so a wrong tap or offset shows.
std::vector<uint8_t> picture(int c, int h, int w, int salt) {
  std::vector<uint8_t> v(size_t(c) * h * w);
  for (int p = 0; p < c; ++p)
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        v[(size_t(p) * h + y) * w + x] =
            uint8_t((x * 7 + y * 13 + p * 60 + salt * 31 + ((x / 3 + y / 2) % 2) * 90 + (x * y) % 11) % 256);
  return v;
}


// The sizes of a pack of mixed images: (channels, height, width).
const int kSizes[][3] = {{3, 40, 30}, {1, 24, 50}, {3, 17, 17}, {3, 64, 48}, {1, 33, 20},
                         {3, 20, 90}, {3, 16, 16}, {1, 90, 18}, {3, 31, 57}, {3, 50, 50}};

std::string mixed_pack(const fs::path& dir, int copies = 1) {
  data::ShardWriter w(dir.string(), 3000);
  int i = 0;
  for (int k = 0; k < copies; ++k)
    for (const auto& s : kSizes) {
      const auto px = picture(s[0], s[1], s[2], i);
      w.add(data::encode_png(px.data(), s[0], s[1], s[2]), data::ImageFormat::png, i % 3, s[0], s[1], s[2]);
      ++i;
    }
  proto::ShardManifest m;
  for (const char* c : {"a", "b", "c"}) m.add_class_names(c);
  w.finish(m);
  return dir.string();
}

proto::ImageTransformConfig transform_cfg(bool convert = true) {
  proto::ImageTransformConfig t;
  t.set_random_resized_crop(true);
  t.set_flip_horizontal(true);
  t.set_convert_channels(convert);
  return t;
}

}  // namespace

TEST(ImageTransform, CropBoxesStayInsideAndFollowTheirDraws) {
  std::vector<data::CropAttempt> trace;
  int fell_back = 0;
  for (int64_t sample = 0; sample < 400; ++sample) {
    const int w = 20 + int(sample % 37) * 3, h = 15 + int(sample % 23) * 4;
    trace.clear();
    const data::CropBox b =
        data::random_resized_crop_box(w, h, 0.08f, 1.0f, 0.75f, 4.0f / 3, 7, 2, sample, &trace);
    ASSERT_GE(b.top, 0);
    ASSERT_GE(b.left, 0);
    ASSERT_GT(b.height, 0);
    ASSERT_GT(b.width, 0);
    ASSERT_LE(b.top + b.height, h);
    ASSERT_LE(b.left + b.width, w);
    ASSERT_FALSE(trace.empty());
    for (const auto& a : trace) {
      EXPECT_GE(a.scale, 0.08f);
      EXPECT_LE(a.scale, 1.0f);
      EXPECT_GE(a.log_ratio, std::log(0.75f));
      EXPECT_LE(a.log_ratio, std::log(4.0f / 3));
    }
    const data::CropAttempt& last = trace.back();
    const double side_w = std::sqrt(double(w) * h * last.scale * std::exp(last.log_ratio));
    if (std::lround(side_w) == b.width && b.top == last.top && b.left == last.left) {
      // The winning attempt: w and h are its rounded sides (up to the half-to-even tie).
      EXPECT_NEAR(b.width, side_w, 0.5 + 1e-9);
      EXPECT_NEAR(b.height, std::sqrt(double(w) * h * last.scale / std::exp(last.log_ratio)), 0.5 + 1e-9);
    } else {
      ++fell_back;
      EXPECT_EQ(trace.size(), 10u);
    }
    // A pure function of (seed, epoch, sample).
    EXPECT_EQ(data::random_resized_crop_box(w, h, 0.08f, 1.0f, 0.75f, 4.0f / 3, 7, 2, sample), b);
  }
  EXPECT_LT(fell_back, 40);  // 10 attempts at up to 1/2 failure each: a fallback is rare
  int same = 0;
  for (int64_t sample = 0; sample < 100; ++sample)
    same += data::random_resized_crop_box(64, 64, 0.08f, 1, 0.75f, 4.0f / 3, 7, 2, sample) ==
            data::random_resized_crop_box(64, 64, 0.08f, 1, 0.75f, 4.0f / 3, 7, 3, sample);
  EXPECT_LT(same, 5);  // another epoch, other boxes
}

TEST(ImageTransform, FallbackIsTheCentredCropCutToTheRatio) {
  // A strip no attempt fits: torchvision keeps the short side and cuts the long one to the
  // ratio bound, centred (w = round(10 * 4/3) = 13; h = round(10 / 0.75) = 13).
  EXPECT_EQ(data::random_resized_crop_box(1000, 10, 0.5f, 1, 0.75f, 4.0f / 3, 1, 0, 0),
            (data::CropBox{0, 493, 10, 13}));
  EXPECT_EQ(data::random_resized_crop_box(10, 1000, 0.5f, 1, 0.75f, 4.0f / 3, 1, 0, 0),
            (data::CropBox{493, 0, 13, 10}));
  // Within the ratios: the whole image.
  EXPECT_EQ(data::random_resized_crop_box(40, 40, 2.0f, 3.0f, 0.75f, 4.0f / 3, 1, 0, 0),
            (data::CropBox{0, 0, 40, 40}));
}

TEST(ImageTransform, ResizeAndCentreCropSizesAreTorchvisions) {
  EXPECT_EQ(data::resize_shorter_size(500, 375, 256), (std::pair{341, 256}));  // int(341.33)
  EXPECT_EQ(data::resize_shorter_size(375, 500, 256), (std::pair{256, 341}));
  EXPECT_EQ(data::resize_shorter_size(30, 30, 16), (std::pair{16, 16}));
  // Offsets round half to even, as Python's round(): (341 - 224) / 2 = 58.5 -> 58.
  EXPECT_EQ(data::center_crop_box(256, 341, 224, 224), (data::CropBox{16, 58, 224, 224}));
  EXPECT_EQ(data::center_crop_box(21, 21, 16, 16), (data::CropBox{2, 2, 16, 16}));  // 2.5 -> 2
  EXPECT_EQ(data::center_crop_box(23, 23, 16, 16), (data::CropBox{4, 4, 16, 16}));  // 3.5 -> 4
}

TEST(ImageTransform, BilinearIsPillowsAntialiasedFilterInFixedPoint) {
  // Halving a step: at scale 2 PIL's triangle filter spans 4 input pixels, weights 1/8, 3/8,
  // 3/8, 1/8 (cut and renormalised at the border): 255/8 = 31.9 -> 32, 255 * 7/8 -> 223. (The
  // values Pillow 9.4 gives.)
  const uint8_t step[8] = {0, 0, 0, 0, 255, 255, 255, 255};
  uint8_t half[4];
  data::crop_resize_bilinear(step, 1, 1, 8, {0, 0, 1, 8}, 1, 4, half);
  EXPECT_EQ(std::vector<uint8_t>(half, half + 4), (std::vector<uint8_t>{0, 32, 223, 255}));
  // Doubling [0, 255]: weights 3/4 and 1/4 inside, the edge pixels copied.
  const uint8_t two[2] = {0, 255};
  uint8_t four[4];
  data::crop_resize_bilinear(two, 1, 1, 2, {0, 0, 1, 2}, 1, 4, four);
  EXPECT_EQ(std::vector<uint8_t>(four, four + 4), (std::vector<uint8_t>{0, 64, 191, 255}));
  // Vertically the same filter; a crop is cut first (its border clips the filter).
  const uint8_t col[8] = {9, 0, 0, 0, 255, 255, 255, 255};
  uint8_t cut[4];
  data::crop_resize_bilinear(col, 1, 8, 1, {1, 0, 7, 1}, 4, 1, cut);
  uint8_t ref[4];
  const uint8_t col7[7] = {0, 0, 0, 255, 255, 255, 255};
  data::crop_resize_bilinear(col7, 1, 7, 1, {0, 0, 7, 1}, 4, 1, ref);
  EXPECT_EQ(std::vector<uint8_t>(cut, cut + 4), std::vector<uint8_t>(ref, ref + 4));
  // Same size: the crop itself; a constant image stays constant at any scale.
  const auto px = picture(3, 9, 11, 1);
  std::vector<uint8_t> same(3 * 4 * 5);
  data::crop_resize_bilinear(px.data(), 3, 9, 11, {2, 3, 4, 5}, 4, 5, same.data());
  for (int p = 0; p < 3; ++p)
    for (int y = 0; y < 4; ++y)
      for (int x = 0; x < 5; ++x)
        ASSERT_EQ(same[(p * 4 + y) * 5 + x], px[(p * 9 + 2 + y) * 11 + 3 + x]);
  const std::vector<uint8_t> flat(37 * 23, 77);
  std::vector<uint8_t> out(10 * 61);
  data::crop_resize_bilinear(flat.data(), 1, 37, 23, {3, 1, 30, 20}, 10, 61, out.data());
  for (uint8_t v : out) ASSERT_EQ(v, 77);
}

TEST(ImageTransform, ChannelConversionIsPils) {
  data::DecodedImage rgb{3, 1, 4, {255, 0, 0, 10, 0, 255, 0, 20, 0, 0, 255, 30}};
  data::convert_image_channels(rgb, 1);
  // PIL's convert("L"): (19595 R + 38470 G + 7471 B + 2^15) >> 16.
  EXPECT_EQ(rgb.pixels, (std::vector<uint8_t>{76, 150, 29, 18}));
  data::DecodedImage gray{1, 1, 2, {5, 200}};
  data::convert_image_channels(gray, 3);
  EXPECT_EQ(gray.pixels, (std::vector<uint8_t>{5, 200, 5, 200, 5, 200}));
}

TEST(ImageTransform, PacksOfAnySizeReachTheModelShapeAlikeOnAnyThreadCount) {
  TempDir dir;
  const std::string pack = mixed_pack(dir.path / "p");
  const int64_t n = std::size(kSizes);
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[size_t(i)] = i;
  using Batch = std::vector<uint8_t>;
  std::map<std::pair<int, int64_t>, Batch> seen;  // (threads, epoch) -> batch
  auto at = [&](int threads, int64_t epoch) -> const Batch& { return seen[std::pair{threads, epoch}]; };
  for (int threads : {0, 2}) {
    data::ShardReadOptions o;
    o.threads = threads;
    o.expected = Shape{3, 16, 16};
    o.transform = transform_cfg();
    o.seed = 11;
    const data::Dataset d = data::open_shards(pack, o);
    ASSERT_EQ(d.sample_shape(), (Shape{3, 16, 16}));
    for (int64_t epoch : {int64_t(0), int64_t(1), data::kEvalEpoch}) {
      if (threads) d.source->prefetch(ids.data(), n, epoch);
      std::vector<uint8_t> out(size_t(n) * 3 * 16 * 16);
      d.source->read(ids.data(), n, out.data(), epoch);
      seen[std::pair{threads, epoch}] = out;
    }
  }
  for (int64_t epoch : {int64_t(0), int64_t(1), data::kEvalEpoch})
    EXPECT_EQ(at(0, epoch), at(2, epoch)) << "epoch " << epoch;
  EXPECT_NE(at(0, 0), at(0, 1));
  // Evaluation: Resize(16) + CenterCrop(16), computed here step by step for sample 0 (40x30).
  const auto px = picture(3, 40, 30, 0);
  const auto [rw, rh] = data::resize_shorter_size(30, 40, 16);
  std::vector<uint8_t> resized(size_t(3) * rh * rw), want(3 * 16 * 16);
  data::crop_resize_bilinear(px.data(), 3, 40, 30, {0, 0, 40, 30}, rh, rw, resized.data());
  const data::CropBox c = data::center_crop_box(rh, rw, 16, 16);
  data::crop_resize_bilinear(resized.data(), 3, rh, rw, c, 16, 16, want.data());
  const Batch& eval = at(0, data::kEvalEpoch);
  EXPECT_EQ(Batch(eval.begin(), eval.begin() + 3 * 16 * 16), want);

  // A gray image for an RGB model without convert_channels: named with its shard and offset.
  data::ShardReadOptions o;
  o.threads = 0;
  o.expected = Shape{3, 16, 16};
  o.transform = transform_cfg(/*convert=*/false);
  const data::Dataset d = data::open_shards(pack, o);
  std::vector<uint8_t> buf(3 * 16 * 16);
  const int64_t gray = 1;
  const std::string e = error_of([&] { d.source->read(&gray, 1, buf.data(), 0); });
  EXPECT_NE(e.find(".tar: sample 1 at offset "), std::string::npos) << e;
  EXPECT_NE(e.find("a 1-channel image, the model takes 3"), std::string::npos) << e;
  EXPECT_NE(e.find("data.transform.convert_channels: true"), std::string::npos) << e;
}

TEST(ImageTransform, NormalisationIsToTensorThenNormalize) {
  TempDir dir;
  const std::string pack = mixed_pack(dir.path / "p");
  data::ShardReadOptions o;
  o.threads = 0;
  o.expected = Shape{3, 16, 16};
  o.transform = transform_cfg();
  const data::Dataset plain = data::open_shards(pack, o);
  for (float m : {0.485f, 0.456f, 0.406f}) o.transform->add_mean(m);
  for (float s : {0.229f, 0.224f, 0.225f}) o.transform->add_std(s);
  const data::Dataset norm = data::open_shards(pack, o);
  const int64_t ids[] = {0, 3, 5};
  Tensor x0 = Tensor::empty({3, 3, 16, 16}, DType::f32), t = Tensor::empty({3}, DType::i32);
  Tensor x1 = x0.clone();
  data::gather_batch(plain, ids, 3, x0, t, 4);
  data::gather_batch(norm, ids, 3, x1, t, 4);
  for (int64_t k = 0; k < x0.numel(); ++k) {
    const int64_t ch = (k / 256) % 3;
    const float p = x0.data<float>()[k];
    ASSERT_EQ(p * 255.0f, std::nearbyint(p * 255.0f));  // the plain set holds pixel / 255
    ASSERT_EQ(x1.data<float>()[k], (p - norm.mean[size_t(ch)]) / norm.std[size_t(ch)]) << k;
  }
}

TEST(ImageTransform, BadSettingsAreRefusedNamingTheField) {
  TempDir dir;
  const std::string pack = mixed_pack(dir.path / "p");
  auto open_with = [&](const std::function<void(proto::ImageTransformConfig&)>& edit) {
    data::ShardReadOptions o;
    o.threads = 0;
    o.expected = Shape{3, 16, 16};
    o.transform = transform_cfg();
    edit(*o.transform);
    return error_of([&] { data::open_shards(pack, o); });
  };
  EXPECT_NE(open_with([](auto& t) { t.set_scale_min(0); }).find("data.transform.scale_min"), std::string::npos);
  EXPECT_NE(open_with([](auto& t) { t.set_ratio_min(2); }).find("data.transform.ratio_min"), std::string::npos);
  EXPECT_NE(open_with([](auto& t) { t.set_resize(12); }).find("data.transform.resize: 12"), std::string::npos);
  EXPECT_NE(open_with([](auto& t) { t.add_mean(0.5f); t.add_mean(0.5f); t.add_std(1); t.add_std(1); })
                .find("data.transform.mean: 2 values for a 3-channel input"), std::string::npos);
  EXPECT_NE(open_with([](auto& t) { t.add_mean(0.5f); t.add_std(0); }).find("data.transform.std[0]"),
            std::string::npos);
  EXPECT_NE(open_with([](auto& t) { t.add_mean(0.5f); }).find("data.transform.mean/std: 1 means and 0"),
            std::string::npos);
  // Images of several sizes and no model.input: the error says what to set.
  data::ShardReadOptions o;
  o.transform = transform_cfg();
  EXPECT_NE(error_of([&] { data::open_shards(pack, o); }).find("set model.input"), std::string::npos);
  // Only packs have a transform.
  EXPECT_NE(error_of([] { parse_config("data { dataset: \"mnist\" transform { resize: 40 } }", "x"); })
                .find("data.transform: only for dataset: shards"), std::string::npos);
}

// The same PNG files through torchvision 0.14 (tests/torchvision/compare_transforms.py) and
// through a pack with data.transform: evaluation's and two epochs of training's model inputs
// equal to the last bit, torchvision choosing deeptrain's crop boxes from deeptrain's draws.
TEST(ImageTransform, MatchesTorchvisionOnTheSamePngFiles) {
  if (std::system("/usr/bin/python3 -c 'import torchvision, PIL' 2>/dev/null") != 0)
    GTEST_SKIP() << "python3-torchvision not installed (scripts/install_deps.sh --with-torch)";
  TempDir dir;
  // Downscaling (antialiased), upscaling, extreme strips (crop fallback), gray and RGB files.
  const int sizes[][3] = {{3, 150, 200}, {1, 90, 61}, {3, 17, 17}, {3, 64, 48}, {1, 30, 20},
                          {3, 12, 140}, {3, 41, 29}, {1, 200, 9}, {3, 33, 57}, {3, 99, 100}};
  data::ShardWriter w((dir.path / "p").string(), 1 << 20);
  std::vector<std::string> pngs;
  std::vector<std::pair<int, int>> dims;  // (width, height)
  for (int i = 0; i < int(std::size(sizes)); ++i) {
    const auto& s = sizes[i];
    const auto px = picture(s[0], s[1], s[2], i);
    const std::string png = data::encode_png(px.data(), s[0], s[1], s[2]);
    w.add(png, data::ImageFormat::png, 0, s[0], s[1], s[2]);
    pngs.push_back((dir.path / fmt::format("{}.png", i)).string());
    std::ofstream(pngs.back(), std::ios::binary) << png;
    dims.emplace_back(s[2], s[1]);
  }
  proto::ShardManifest m;
  m.add_class_names("x");
  w.finish(m);
  struct Model {
    int c, h, w, resize;
    std::vector<float> mean, std;
  };
  for (const Model& model : {Model{3, 24, 20, 28, {0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}},
                             Model{1, 16, 16, 16, {0.5f}, {0.25f}}}) {
    proto::ImageTransformConfig t = transform_cfg();
    t.set_resize(model.resize);
    t.set_scale_min(0.2f);  // (non-default bounds: the config's floats reach torchvision's ranges)
    for (float v : model.mean) t.add_mean(v);
    for (float v : model.std) t.add_std(v);
    data::ShardReadOptions o;
    o.threads = 1;
    o.expected = Shape{model.c, model.h, model.w};
    o.transform = t;
    o.seed = 21;
    const data::Dataset d = data::open_shards((dir.path / "p").string(), o);
    const int64_t n = d.size();
    std::vector<int64_t> ids(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) ids[size_t(i)] = i;
    nlohmann::json cases = nlohmann::json::array();
    for (int64_t epoch : {data::kEvalEpoch, int64_t(0), int64_t(1)}) {
      Tensor x = Tensor::empty({n, model.c, model.h, model.w}, DType::f32), lab = Tensor::empty({n}, DType::i32);
      data::gather_batch(d, ids.data(), n, x, lab, epoch);
      for (int64_t i = 0; i < n; ++i) {
        const std::string out = (dir.path / fmt::format("m{}_e{}_{}.f32", model.c, epoch, i)).string();
        std::ofstream(out, std::ios::binary)
            .write(reinterpret_cast<const char*>(x.data<float>() + i * x.numel() / n), x.nbytes() / n);
        nlohmann::json c{{"png", pngs[size_t(i)]}, {"out", out}, {"epoch", epoch}};
        if (epoch >= 0) {
          std::vector<data::CropAttempt> trace;
          const data::CropBox b = data::random_resized_crop_box(
              dims[size_t(i)].first, dims[size_t(i)].second, t.scale_min(), 1.0f, 0.75f, 4.0f / 3, 21, epoch, i, &trace);
          c["box"] = {b.top, b.left, b.height, b.width};
          c["attempts"] = nlohmann::json::array();
          for (const auto& a : trace) c["attempts"].push_back({a.scale, a.log_ratio, a.top, a.left});
          c["flip"] = data::random_flip(21, epoch, i);
        }
        cases.push_back(c);
      }
    }
    const nlohmann::json cfg{{"channels", model.c}, {"height", model.h}, {"width", model.w},
                             {"resize", model.resize}, {"mean", model.mean}, {"std", model.std},
                             {"scale", {t.scale_min(), 1.0}}, {"ratio", {3.0 / 4.0, 4.0 / 3.0}},
                             {"cases", cases}};
    const std::string json_path = dir.file(fmt::format("cases{}.json", model.c), cfg.dump());
    const CommandResult r = run_command(fmt::format("/usr/bin/python3 {}/tests/torchvision/compare_transforms.py {}",
                                                    DEEPTRAIN_SOURCE_DIR, json_path));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find(fmt::format("{} samples compared, 0 differ", 3 * n)), std::string::npos) << r.output;
  }
}
