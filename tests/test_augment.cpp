// Data augmentation: the identity is exact; right-angle rotations and integer shifts move
// pixels exactly; a small rotation with scaling and a sub-pixel shift matches a bilinear
// reference written here independently (complex-number rotation, forward map inverted by
// hand); and a sample's image depends only on (seed, epoch, global index): not on the thread
// count, the batch it is gathered in, or its position there.
#include <complex>
#include <vector>

#include <gtest/gtest.h>
#include <omp.h>

#include "core/data/augment.h"

using namespace deeptrain;
using data::AugmentParams;

namespace {

// An asymmetric test image: every pixel distinct, so any misplacement shows.
std::vector<uint8_t> ramp_image(int c, int h, int w) {
  std::vector<uint8_t> img(size_t(c) * h * w);
  for (size_t k = 0; k < img.size(); ++k) img[k] = uint8_t((k * 37 + 11) % 251);
  return img;
}

data::Dataset ramp_dataset(int64_t n, int c, int h, int w) {
  data::Dataset d;
  d.name = "ramp";
  d.num_classes = 10;
  d.images = Tensor::empty({n, c, h, w}, DType::u8);
  d.labels = Tensor::empty({n}, DType::i32);
  for (int64_t k = 0; k < d.images.numel(); ++k)
    d.images.data<uint8_t>()[k] = uint8_t((k * 131 + k / 7) % 256);
  for (int64_t i = 0; i < n; ++i) d.labels.data<int32_t>()[i] = int32_t(i % 10);
  return d;
}

proto::AugmentConfig config(float rotation, float shift, float smin = 0, float smax = 0) {
  proto::AugmentConfig c;
  c.set_enabled(true);
  c.set_rotation_deg(rotation);
  c.set_shift_px(shift);
  c.set_scale_min(smin);
  c.set_scale_max(smax);
  return c;
}

std::vector<float> augment(const std::vector<uint8_t>& img, int c, int h, int w,
                           const AugmentParams& p) {
  std::vector<float> out(img.size());
  data::augment_sample(img.data(), c, h, w, p, out.data());
  return out;
}

float px(uint8_t v) { return float(v) / 255.0f; }

TEST(Augment, IdentityEqualsGatherBatchExactly) {
  const data::Dataset d = ramp_dataset(6, 1, 28, 28);
  const int64_t ids[] = {4, 0, 5, 2};
  Tensor x0 = Tensor::empty({4, 1, 28, 28}, DType::f32), t0 = Tensor::empty({4}, DType::i32);
  Tensor x1 = x0.clone(), t1 = t0.clone(), x2 = x0.clone(), t2 = t0.clone();
  data::gather_batch(d, ids, 4, x0, t0);
  proto::AugmentConfig off;  // not enabled
  data::gather_batch_augmented(d, ids, 4, 3, 9, off, x1, t1);
  proto::AugmentConfig zero = config(0, 0);  // enabled, nothing to draw
  data::gather_batch_augmented(d, ids, 4, 3, 9, zero, x2, t2);
  for (int64_t k = 0; k < x0.numel(); ++k) {
    ASSERT_EQ(x1.data<float>()[k], x0.data<float>()[k]) << k;
    ASSERT_EQ(x2.data<float>()[k], x0.data<float>()[k]) << k;
  }
  for (int i = 0; i < 4; ++i) EXPECT_EQ(t2.data<int32_t>()[i], t0.data<int32_t>()[i]);
  // The general path (a full turn) is exact too.
  const std::vector<uint8_t> img = ramp_image(2, 5, 7);
  const std::vector<float> turned = augment(img, 2, 5, 7, {360, 0, 0, 1});
  for (size_t k = 0; k < img.size(); ++k) EXPECT_EQ(turned[k], px(img[k])) << k;
}

TEST(Augment, RightAngleRotationsPermutePixels) {
  const int n = 6;
  const std::vector<uint8_t> img = ramp_image(1, n, n);
  auto in = [&](int row, int col) { return px(img[row * n + col]); };
  const std::vector<float> ccw = augment(img, 1, n, n, {90, 0, 0, 1});
  const std::vector<float> cw = augment(img, 1, n, n, {-90, 0, 0, 1});
  const std::vector<float> half = augment(img, 1, n, n, {180, 0, 0, 1});
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      // Counter-clockwise as displayed: the top-right corner comes to the top-left.
      EXPECT_EQ(ccw[i * n + j], in(j, n - 1 - i)) << i << "," << j;
      EXPECT_EQ(cw[i * n + j], in(n - 1 - j, i)) << i << "," << j;
      EXPECT_EQ(half[i * n + j], in(n - 1 - i, n - 1 - j)) << i << "," << j;
    }
  EXPECT_EQ(ccw[0], in(0, n - 1));
}

// The mirror comes first: alone it reverses each row; followed by a quarter turn
// counter-clockwise it transposes the image.
TEST(Augment, FlipMirrorsRowsBeforeTheRotation) {
  const int n = 5;
  const std::vector<uint8_t> img = ramp_image(2, n, n);
  auto in = [&](int ch, int row, int col) { return px(img[(ch * n + row) * n + col]); };
  AugmentParams flip;
  flip.flip = true;
  EXPECT_FALSE(flip.identity());
  AugmentParams flip_ccw = flip;
  flip_ccw.angle_deg = 90;
  const std::vector<float> mirrored = augment(img, 2, n, n, flip);
  const std::vector<float> transposed = augment(img, 2, n, n, flip_ccw);
  for (int ch = 0; ch < 2; ++ch)
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) {
        EXPECT_EQ(mirrored[(ch * n + i) * n + j], in(ch, i, n - 1 - j)) << ch << ":" << i << "," << j;
        EXPECT_EQ(transposed[(ch * n + i) * n + j], in(ch, j, i)) << ch << ":" << i << "," << j;
      }
}

// flip_horizontal mirrors about half of the samples, the same ones for the same (seed, epoch,
// index), and leaves the other draws as they are without it.
TEST(Augment, FlipDrawsHalfTheSamplesAndLeavesTheOtherDrawsAlone) {
  proto::AugmentConfig cfg = config(15, 3, 0.9f, 1.1f), plain = cfg;
  cfg.set_flip_horizontal(true);
  int flips = 0;
  for (int64_t i = 0; i < 4000; ++i) {
    const AugmentParams p = data::draw_augment(cfg, 1, 2, i), q = data::draw_augment(plain, 1, 2, i);
    flips += p.flip;
    EXPECT_FALSE(q.flip);
    EXPECT_EQ(p.flip, data::draw_augment(cfg, 1, 2, i).flip);
    EXPECT_EQ(p.angle_deg, q.angle_deg);
    EXPECT_EQ(p.shift_x, q.shift_x);
    EXPECT_EQ(p.scale, q.scale);
  }
  EXPECT_GT(flips, 1800);  // 2000 expected; 4.5 standard deviations either way
  EXPECT_LT(flips, 2200);
  int epoch_changes = 0;
  for (int64_t i = 0; i < 200; ++i)
    epoch_changes += data::draw_augment(cfg, 1, 2, i).flip != data::draw_augment(cfg, 1, 3, i).flip;
  EXPECT_GT(epoch_changes, 60);  // another epoch draws again (100 expected)
}

TEST(Augment, IntegerShiftsMovePixelsAndFillWithZero) {
  const int h = 5, w = 6;
  const std::vector<uint8_t> img = ramp_image(3, h, w);
  const std::vector<float> out = augment(img, 3, h, w, {0, 2, -1, 1});  // right 2, up 1
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const int sx = x - 2, sy = y + 1;
        const float expect = sx >= 0 && sy < h ? px(img[(c * h + sy) * w + sx]) : 0.0f;
        EXPECT_EQ(out[(c * h + y) * w + x], expect) << c << "," << y << "," << x;
      }
}

// The reference: rotate each output point back with a complex multiplication, undo the scale,
// sample bilinearly with zero outside.
float reference_pixel(const std::vector<uint8_t>& img, int h, int w, int c, int y, int x,
                      const AugmentParams& p) {
  const std::complex<double> centre((w - 1) / 2.0, (h - 1) / 2.0);
  // The forward map turns by +angle counter-clockwise on screen, i.e. by -angle in the
  // (x right, y down) plane; the inverse turns by +angle there.
  const std::complex<double> turn = std::polar(1.0, p.angle_deg * M_PI / 180.0);
  const std::complex<double> q = std::complex<double>(x - p.shift_x, y - p.shift_y) - centre;
  const std::complex<double> src = centre + turn * q / p.scale;
  const double sx = src.real(), sy = src.imag();
  const int x0 = int(std::floor(sx)), y0 = int(std::floor(sy));
  double v = 0;
  for (int dy = 0; dy <= 1; ++dy)
    for (int dx = 0; dx <= 1; ++dx) {
      const int xx = x0 + dx, yy = y0 + dy;
      const double weight = (dx ? sx - x0 : 1 - (sx - x0)) * (dy ? sy - y0 : 1 - (sy - y0));
      if (xx >= 0 && xx < w && yy >= 0 && yy < h) v += weight * img[(c * h + yy) * w + xx];
    }
  return float(v / 255.0);
}

TEST(Augment, SmallRotationScaleAndShiftMatchAnIndependentReference) {
  const int c = 2, h = 9, w = 11;
  const std::vector<uint8_t> img = ramp_image(c, h, w);
  for (const AugmentParams& p : {AugmentParams{7.5, 0, 0, 1}, AugmentParams{-12, 0.3, -1.7, 1.15},
                                 AugmentParams{3, 0, 0, 0.8}}) {
    const std::vector<float> out = augment(img, c, h, w, p);
    for (int ch = 0; ch < c; ++ch)
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
          EXPECT_NEAR(out[(ch * h + y) * w + x], reference_pixel(img, h, w, ch, y, x, p), 2e-6)
              << p.angle_deg << " deg at " << ch << "," << y << "," << x;
  }
}

TEST(Augment, DrawsStayInRangeAndDependOnSeedEpochAndIndexOnly) {
  const proto::AugmentConfig cfg = config(15, 3, 0.9f, 1.2f);
  double max_angle = 0;
  for (int64_t i = 0; i < 2000; ++i) {
    const AugmentParams p = data::draw_augment(cfg, 1, 2, i);
    EXPECT_LE(std::abs(p.angle_deg), 15.0);
    EXPECT_LE(std::abs(p.shift_x), 3.0);
    EXPECT_LE(std::abs(p.shift_y), 3.0);
    EXPECT_GE(p.scale, 0.9 - 1e-7);
    EXPECT_LE(p.scale, 1.2 + 1e-7);
    max_angle = std::max(max_angle, std::abs(p.angle_deg));
  }
  EXPECT_GT(max_angle, 14.0);  // the range is used
  const AugmentParams a = data::draw_augment(cfg, 1, 2, 77), b = data::draw_augment(cfg, 1, 2, 77);
  EXPECT_EQ(a.angle_deg, b.angle_deg);
  EXPECT_EQ(a.shift_y, b.shift_y);
  EXPECT_NE(a.angle_deg, data::draw_augment(cfg, 1, 3, 77).angle_deg);  // another epoch
  EXPECT_NE(a.angle_deg, data::draw_augment(cfg, 2, 2, 77).angle_deg);  // another seed
  EXPECT_NE(a.angle_deg, data::draw_augment(cfg, 1, 2, 78).angle_deg);  // another sample
  proto::AugmentConfig no_scale = config(15, 3);
  EXPECT_EQ(data::draw_augment(no_scale, 1, 2, 77).scale, 1.0);
  proto::AugmentConfig off = cfg;
  off.set_enabled(false);
  EXPECT_TRUE(data::draw_augment(off, 1, 2, 77).identity());
}

// The same samples gathered with 1 and 2 threads, as one batch or split across two "ranks"
// in either order, come out bit-identical.
TEST(Augment, SameImagesForAnyThreadCountAndAnySplitOfTheBatch) {
  const data::Dataset d = ramp_dataset(50, 1, 28, 28);
  const proto::AugmentConfig cfg = config(20, 2.5f, 0.9f, 1.1f);
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < 24; ++i) ids.push_back((i * 17 + 3) % 50);
  const int64_t n = int64_t(ids.size()), sample = 784;
  auto gather = [&](const std::vector<int64_t>& which, int threads) {
    Tensor x = Tensor::empty({int64_t(which.size()), 1, 28, 28}, DType::f32);
    Tensor t = Tensor::empty({int64_t(which.size())}, DType::i32);
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    data::gather_batch_augmented(d, which.data(), int64_t(which.size()), 4, 123, cfg, x, t);
    omp_set_num_threads(saved);
    return x;
  };
  const Tensor one = gather(ids, 1), two = gather(ids, 2);
  // Rank 0 and rank 1 of two: the first and second half, gathered separately.
  const std::vector<int64_t> first(ids.begin(), ids.begin() + 10), second(ids.begin() + 10, ids.end());
  const Tensor r0 = gather(first, 2), r1 = gather(second, 1);
  std::vector<int64_t> reversed(ids.rbegin(), ids.rend());
  const Tensor rev = gather(reversed, 2);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < sample; ++k) {
      const float v = one.data<float>()[i * sample + k];
      ASSERT_EQ(two.data<float>()[i * sample + k], v) << i;
      ASSERT_EQ(i < 10 ? r0.data<float>()[i * sample + k] : r1.data<float>()[(i - 10) * sample + k], v) << i;
      ASSERT_EQ(rev.data<float>()[(n - 1 - i) * sample + k], v) << i;
    }
  // And the augmentation did something.
  Tensor plain = one.clone(), t = Tensor::empty({n}, DType::i32);
  data::gather_batch(d, ids.data(), n, plain, t);
  int64_t differ = 0;
  for (int64_t k = 0; k < plain.numel(); ++k) differ += plain.data<float>()[k] != one.data<float>()[k];
  EXPECT_GT(differ, plain.numel() / 2);
}

TEST(Augment, ValidationNamesTheField) {
  auto message = [](const proto::AugmentConfig& c) {
    try {
      data::validate_augment(c);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(message(config(30, 2, 0.9f, 1.1f)), "");
  EXPECT_NE(message(config(-1, 0)).find("data.augment.rotation_deg"), std::string::npos);
  EXPECT_NE(message(config(0, -2)).find("data.augment.shift_px"), std::string::npos);
  EXPECT_NE(message(config(0, 0, 1.2f, 0.9f)).find("scale_min"), std::string::npos);
  EXPECT_NE(message(config(0, 0, 0, 1.1f)).find("scale_min"), std::string::npos);
}

// Augmenting a batch of 100 MNIST-sized images is far cheaper than a training step, so the
// data-parallel loader can do it inline (or on a worker thread) and keep up.
TEST(Augment, IsCheap) {
  const data::Dataset d = ramp_dataset(100, 1, 28, 28);
  std::vector<int64_t> ids(100);
  for (int i = 0; i < 100; ++i) ids[i] = i;
  Tensor x = Tensor::empty({100, 1, 28, 28}, DType::f32), t = Tensor::empty({100}, DType::i32);
  const proto::AugmentConfig cfg = config(15, 2, 0.9f, 1.1f);
  const double t0 = omp_get_wtime();
  for (int epoch = 0; epoch < 20; ++epoch)
    data::gather_batch_augmented(d, ids.data(), 100, epoch, 1, cfg, x, t);
  const double per_batch = (omp_get_wtime() - t0) / 20;
  std::cout << "augmenting 100 images of 28x28: " << per_batch * 1e3 << " ms\n";
  EXPECT_LT(per_batch, 0.1);  // about 6 ms on one core; generous for a loaded machine
}

}  // namespace
