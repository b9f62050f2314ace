// Augmentation of label maps and boxes (data.augment flip_horizontal and shift_px on a
// segmentation or detection set): they move with the image.
//  - hand-derived cases: a 3 x 4 label map and its boxes under whole and sub-pixel shifts, with
//    and without the mirror, pixels off the canvas taking the ignore label, boxes clipped to the
//    canvas and dropped when nothing is left;
//  - against the image path (augment_sample, bilinear, written independently): under whole-pixel
//    shifts an image whose pixels are the label map's ids becomes the augmented label map
//    wherever the map is not ignored (and 0 where it is);
//  - a box is the bounding box of its painted region moved (random sub-pixel shifts, mirrors);
//  - gather_batch_augmented gives each sample's targets from (seed, epoch, global index) only:
//    one batch or two, any thread count; and rotation or scaling of targets is refused naming
//    the field.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "core/data/augment.h"
#include "core/error.h"
#include "error_util.h"

using namespace deeptrain;
using data::AugmentParams;
using data::Box;

namespace {

constexpr int32_t I = 255;  // the ignore label

AugmentParams shift(double x, double y, bool flip = false) {
  AugmentParams p;
  p.shift_x = x;
  p.shift_y = y;
  p.flip = flip;
  return p;
}

std::vector<int32_t> moved_map(const std::vector<uint8_t>& in, int h, int w, const AugmentParams& p) {
  std::vector<int32_t> out(in.size());
  data::augment_label_map(in.data(), h, w, p, I, out.data());
  return out;
}

bool same(const std::vector<Box>& a, const std::vector<Box>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].label != b[i].label || a[i].x0 != b[i].x0 || a[i].y0 != b[i].y0 || a[i].x1 != b[i].x1 ||
        a[i].y1 != b[i].y1)
      return false;
  return true;
}

// 3 rows x 4 columns, ids 0..11 row by row.
const std::vector<uint8_t> kMap = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};

TEST(AugmentTargets, LabelMapsMoveByHand) {
  EXPECT_EQ(moved_map(kMap, 3, 4, shift(0, 0)), std::vector<int32_t>(kMap.begin(), kMap.end()));
  EXPECT_EQ(moved_map(kMap, 3, 4, shift(1, 0)), (std::vector<int32_t>{I, 0, 1, 2, I, 4, 5, 6, I, 8, 9, 10}));
  EXPECT_EQ(moved_map(kMap, 3, 4, shift(-2, 1)), (std::vector<int32_t>{I, I, I, I, 2, 3, I, I, 6, 7, I, I}));
  // The mirror first (column x reads column 3 - x), then the shift.
  EXPECT_EQ(moved_map(kMap, 3, 4, shift(0, 0, true)), (std::vector<int32_t>{3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8}));
  EXPECT_EQ(moved_map(kMap, 3, 4, shift(1, -1, true)), (std::vector<int32_t>{I, 7, 6, 5, I, 11, 10, 9, I, I, I, I}));
  // Sub-pixel: each pixel takes its nearest source (0.4 right: itself; 0.6 right: its left
  // neighbour; an exact half rounds up, to the pixel itself).
  EXPECT_EQ(moved_map(kMap, 3, 4, shift(0.4, -0.4)), std::vector<int32_t>(kMap.begin(), kMap.end()));
  EXPECT_EQ(moved_map(kMap, 3, 4, shift(0.6, 0)), (std::vector<int32_t>{I, 0, 1, 2, I, 4, 5, 6, I, 8, 9, 10}));
  EXPECT_EQ(moved_map(kMap, 3, 4, shift(0.5, 0)), std::vector<int32_t>(kMap.begin(), kMap.end()));
  EXPECT_EQ(moved_map(kMap, 3, 4, shift(-0.5, 0)), (std::vector<int32_t>{1, 2, 3, I, 5, 6, 7, I, 9, 10, 11, I}));
}

TEST(AugmentTargets, BoxesMoveByHand) {
  // In the 3 x 4 image (h x w): columns [1, 3), rows [0, 2).
  const std::vector<Box> b = {{3, 1, 0, 3, 2}};
  EXPECT_TRUE(same(data::augment_boxes(b, 3, 4, shift(0, 0)), b));
  EXPECT_TRUE(same(data::augment_boxes(b, 3, 4, shift(1, 0)), {{3, 2, 0, 4, 2}}));
  EXPECT_TRUE(same(data::augment_boxes(b, 3, 4, shift(2, 1)), {{3, 3, 1, 4, 3}}));   // clipped
  EXPECT_TRUE(same(data::augment_boxes(b, 3, 4, shift(3, 0)), {}));                  // gone right
  EXPECT_TRUE(same(data::augment_boxes(b, 3, 4, shift(0, -2)), {}));                 // gone up
  EXPECT_TRUE(same(data::augment_boxes(b, 3, 4, shift(0, 0, true)), {{3, 1, 0, 3, 2}}));  // symmetric
  const std::vector<Box> left = {{1, 0, 1, 1, 3}, {2, 0, 0, 4, 3}};
  EXPECT_TRUE(same(data::augment_boxes(left, 3, 4, shift(0, 0, true)), {{1, 3, 1, 4, 3}, {2, 0, 0, 4, 3}}));
  EXPECT_TRUE(same(data::augment_boxes(left, 3, 4, shift(-1.6, 0.6, true)), {{1, 1, 2, 2, 3}, {2, 0, 1, 2, 3}}));
  EXPECT_TRUE(same(data::augment_boxes(left, 3, 4, shift(0.6, 0)), {{1, 1, 1, 2, 3}, {2, 1, 0, 4, 3}}));
}

// Whole-pixel shifts and mirrors: the image path (bilinear, which copies pixels exactly at
// whole shifts) carries an image of the ids to the moved label map, with 0 where the map is
// ignored (the image reads 0 off the canvas).
TEST(AugmentTargets, LabelMapsFollowTheImage) {
  const int h = 7, w = 9;
  std::vector<uint8_t> map(size_t(h * w));
  for (size_t k = 0; k < map.size(); ++k) map[k] = uint8_t(1 + (k * 29) % 200);
  for (int sx = -4; sx <= 4; ++sx)
    for (int sy = -3; sy <= 3; ++sy)
      for (bool flip : {false, true}) {
        const AugmentParams p = shift(sx, sy, flip);
        std::vector<float> image(map.size());
        data::augment_sample(map.data(), 1, h, w, p, image.data());
        const std::vector<int32_t> labels = moved_map(map, h, w, p);
        for (size_t k = 0; k < map.size(); ++k)
          ASSERT_EQ(image[k], float(labels[k] == I ? 0 : labels[k]) / 255.0f)
              << "shift " << sx << "," << sy << " flip " << flip << " pixel " << k;
      }
}

// A box moved is the bounding box of its region painted into a label map and moved.
TEST(AugmentTargets, BoxesAreTheirRegionsMoved) {
  std::mt19937 rng(17);
  const int h = 11, w = 13;
  for (int trial = 0; trial < 400; ++trial) {
    std::uniform_int_distribution<int> xs(0, w - 1), ys(0, h - 1);
    int x0 = xs(rng), x1 = xs(rng), y0 = ys(rng), y1 = ys(rng);
    if (x0 > x1) std::swap(x0, x1);
    if (y0 > y1) std::swap(y0, y1);
    const Box b{4, x0, y0, x1 + 1, y1 + 1};
    std::vector<uint8_t> map(size_t(h * w), 0);
    for (int y = b.y0; y < b.y1; ++y)
      for (int x = b.x0; x < b.x1; ++x) map[size_t(y * w + x)] = 1;
    std::uniform_real_distribution<double> s(-6, 6);
    const AugmentParams p = shift(s(rng), s(rng), trial % 2);
    const std::vector<int32_t> moved = moved_map(map, h, w, p);
    int bx0 = w, by0 = h, bx1 = 0, by1 = 0;
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        if (moved[size_t(y * w + x)] == 1) {
          bx0 = std::min(bx0, x), by0 = std::min(by0, y), bx1 = std::max(bx1, x + 1), by1 = std::max(by1, y + 1);
        }
    const std::vector<Box> want = bx1 > bx0 ? std::vector<Box>{{4, bx0, by0, bx1, by1}} : std::vector<Box>{};
    ASSERT_TRUE(same(data::augment_boxes({b}, h, w, p), want))
        << "trial " << trial << " shift " << p.shift_x << "," << p.shift_y << " flip " << p.flip;
  }
}

proto::AugmentConfig flip_shift() {
  proto::AugmentConfig c;
  c.set_enabled(true);
  c.set_flip_horizontal(true);
  c.set_shift_px(3.5f);
  return c;
}

data::Dataset targets_dataset(bool maps, int64_t n, int h, int w) {
  data::Dataset d;
  d.name = maps ? "maps" : "boxes";
  d.num_classes = 5;
  d.images = Tensor::empty({n, 1, h, w}, DType::u8);
  d.labels = Tensor::zeros({n}, DType::i32);
  for (int64_t k = 0; k < d.images.numel(); ++k) d.images.data<uint8_t>()[k] = uint8_t((k * 131 + k / 7) % 256);
  if (maps) {
    d.label_maps = Tensor::empty({n, h, w}, DType::u8);
    for (int64_t k = 0; k < d.label_maps.numel(); ++k) d.label_maps.data<uint8_t>()[k] = uint8_t((k * 7 + k / 5) % 5);
    return d;
  }
  d.boxes.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i)
    for (int j = 0; j <= i % 3; ++j)
      d.boxes[size_t(i)].push_back({int32_t((i + j) % 5), int32_t(j * 3), int32_t(i % 4), int32_t(j * 3 + 4), int32_t(i % 4 + 5)});
  return d;
}

// Each sample's targets depend only on (seed, epoch, global index): gathered in one batch or
// two, on 1 or 3 threads, they are the same; and the flip and shift do move them.
TEST(AugmentTargets, BatchesDependOnlyOnSeedEpochAndSample) {
  const int h = 10, w = 12, n = 16, m = 4;
  for (bool maps : {true, false}) {
    const data::Dataset d = targets_dataset(maps, n, h, w);
    std::vector<int64_t> ids(n);
    for (int i = 0; i < n; ++i) ids[size_t(i)] = (i * 5) % n;
    auto target = [&](int64_t k) { return maps ? Tensor::empty({k, h, w}, DType::i32) : Tensor::empty({k, m, 5}, DType::i32); };
    Tensor x = Tensor::empty({n, 1, h, w}, DType::f32), t = target(n), x0 = x.clone(), t0 = target(n);
    omp_set_num_threads(1);
    data::gather_batch_augmented(d, ids.data(), n, 3, 8, flip_shift(), x, t);
    data::gather_batch(d, ids.data(), n, x0, t0);
    EXPECT_NE(std::memcmp(t.raw(), t0.raw(), t.nbytes()), 0) << d.name << ": nothing moved";
    omp_set_num_threads(3);
    const int64_t half = n / 2, per = t.numel() / n;
    Tensor xa = Tensor::empty({half, 1, h, w}, DType::f32), ta = target(half), xb = xa.clone(), tb = target(half);
    data::gather_batch_augmented(d, ids.data() + half, half, 3, 8, flip_shift(), xa, ta);
    data::gather_batch_augmented(d, ids.data(), half, 3, 8, flip_shift(), xb, tb);
    EXPECT_EQ(std::memcmp(tb.raw(), t.raw(), size_t(half * per) * 4), 0) << d.name;
    EXPECT_EQ(std::memcmp(ta.raw(), t.data<int32_t>() + half * per, size_t(half * per) * 4), 0) << d.name;
    EXPECT_EQ(std::memcmp(xa.raw(), x.data<float>() + half * h * w, size_t(half * h * w) * 4), 0) << d.name;
    // Sample by sample: the image and targets of draw_augment's parameters.
    for (int i = 0; i < n; ++i) {
      const AugmentParams p = data::draw_augment(flip_shift(), 8, 3, ids[size_t(i)]);
      if (maps) {
        std::vector<int32_t> want(size_t(h * w));
        data::augment_label_map(d.label_maps.data<uint8_t>() + ids[size_t(i)] * h * w, h, w, p, 255, want.data());
        EXPECT_EQ(std::memcmp(want.data(), t.data<int32_t>() + i * per, want.size() * 4), 0) << i;
        continue;
      }
      const std::vector<Box> want = data::augment_boxes(d.boxes[size_t(ids[size_t(i)])], h, w, p);
      for (int j = 0; j < m; ++j) {
        const int32_t* row = t.data<int32_t>() + i * per + j * 5;
        const Box b = j < int(want.size()) ? want[size_t(j)] : Box{-1, 0, 0, 0, 0};
        EXPECT_TRUE(same({{row[0], row[1], row[2], row[3], row[4]}}, {b})) << i << " " << j;
      }
    }
  }
  omp_set_num_threads(1);
}

TEST(AugmentTargets, RotationAndScalingOfTargetsAreRefused) {
  proto::AugmentConfig c = flip_shift();
  EXPECT_NO_THROW(data::check_augment_targets(c, "boxes", "train"));
  c.set_rotation_deg(5);
  EXPECT_CONTAINS(error_of([&] { data::check_augment_targets(c, "boxes", "train"); }),
                  "data.augment.rotation_deg: not available for boxes (data set 'train')");
  c.set_rotation_deg(0);
  c.set_scale_min(0.9f);
  c.set_scale_max(1.1f);
  EXPECT_CONTAINS(error_of([&] { data::check_augment_targets(c, "label maps", "s"); }),
                  "data.augment.scale_min/scale_max: not available for label maps");
  c.set_enabled(false);
  EXPECT_NO_THROW(data::check_augment_targets(c, "boxes", "train"));
}

}  // namespace
