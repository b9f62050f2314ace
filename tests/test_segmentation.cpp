// Segmentation's pieces: the mnist_scenes data set (a pure function of seed and index, label
// maps as documented, boxes), transposed convolution against its definition, crop and the
// per-pixel softmax cross-entropy in float64 against central differences, the mean IoU, and
// their errors. (Transposed convolution's own gradient check is in test_gradcheck.)
#include <cmath>
#include <limits>

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include "core/config.h"
#include "core/data/mnist_scenes.h"
#include "core/layers/kinds.h"
#include "core/loss.h"
#include "core/net.h"
#include "core/threads.h"
#include "distributed/trainer.h"
#include "error_util.h"
#include "gradcheck_util.h"
#include "synthetic_squares.h"

using namespace deeptrain;
using namespace deeptrain::testing_util;

namespace {

// "Digits": bright 8x8 squares (200..255) on 0, class = the square's place; test digits
// drawn from another stream than the training ones.
data::DatasetSplit square_digits() {
  data::DatasetSplit s;
  s.train = synthetic_squares(50, {3, 1, 200, 56, 1});
  s.test = synthetic_squares(30, {4, 2, 200, 56, 1});
  return s;
}

proto::MnistScenesConfig scene_options() {
  proto::MnistScenesConfig o;
  o.set_canvas(48);
  o.set_min_digits(2);
  o.set_max_digits(4);
  o.set_min_scale(0.8f);
  o.set_max_scale(1.5f);
  o.set_train_scenes(40);
  o.set_test_scenes(20);
  o.set_seed(9);
  return o;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

proto::LayerConfig layer(const std::string& text) {
  proto::LayerConfig lc;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &lc)) << text;
  return lc;
}

}  // namespace

TEST(MnistScenes, AreAPureFunctionOfSeedAndIndexWhateverTheThreads) {
  const data::DatasetSplit digits = square_digits();
  set_cpu_threads(1);
  const data::DatasetSplit a = data::make_mnist_scenes(digits, scene_options());
  set_cpu_threads(2);
  const data::DatasetSplit b = data::make_mnist_scenes(digits, scene_options());
  EXPECT_TRUE(same_bytes(a.train.images, b.train.images));
  EXPECT_TRUE(same_bytes(a.train.label_maps, b.train.label_maps));
  EXPECT_TRUE(same_bytes(a.test.label_maps, b.test.label_maps));
  // A limit keeps the first scenes as they were; another seed gives other scenes.
  const data::DatasetSplit first = data::make_mnist_scenes(digits, scene_options(), 10, 5);
  ASSERT_EQ(first.train.size(), 10);
  EXPECT_EQ(std::memcmp(first.train.images.raw(), a.train.images.raw(), first.train.images.nbytes()), 0);
  proto::MnistScenesConfig other = scene_options();
  other.set_seed(10);
  EXPECT_FALSE(same_bytes(data::make_mnist_scenes(digits, other).train.images, a.train.images));
  // Scene 7 rendered alone is scene 7 of the set.
  std::vector<uint8_t> img(48 * 48), map(48 * 48);
  std::vector<data::Box> boxes;
  data::render_scene(digits.train.images, digits.train.labels, scene_options(), 0, 7, img.data(),
                     map.data(), &boxes);
  EXPECT_EQ(std::memcmp(img.data(), a.train.images.data<uint8_t>() + 7 * 48 * 48, img.size()), 0);
  EXPECT_EQ(boxes.size(), a.train.boxes[7].size());
}

TEST(MnistScenes, LabelMapsAndBoxesFollowTheStrokes) {
  const data::DatasetSplit digits = square_digits();
  const data::DatasetSplit s = data::make_mnist_scenes(digits, scene_options());
  int64_t strokes = 0, ignored = 0;
  for (const data::Dataset* d : {&s.train, &s.test}) {
    ASSERT_EQ(d->label_maps.shape(), (Shape{d->size(), 48, 48}));
    ASSERT_EQ(d->images.shape(), (Shape{d->size(), 1, 48, 48}));
    for (int64_t i = 0; i < d->size(); ++i) {
      const uint8_t* img = d->images.data<uint8_t>() + i * 48 * 48;
      const uint8_t* map = d->label_maps.data<uint8_t>() + i * 48 * 48;
      ASSERT_GE(d->boxes[size_t(i)].size(), 1u);
      ASSERT_LE(d->boxes[size_t(i)].size(), 4u);
      for (int64_t p = 0; p < 48 * 48; ++p) {
        if (img[p] == 0) ASSERT_EQ(map[p], 0) << "scene " << i << " pixel " << p;
        else if (img[p] < data::kStrokeThreshold) ASSERT_EQ(map[p], data::kSceneIgnoreLabel);
        else ASSERT_TRUE(map[p] >= 1 && map[p] <= 10) << int(map[p]);
        strokes += map[p] >= 1 && map[p] <= 10;
        ignored += map[p] == data::kSceneIgnoreLabel;
        // Every labelled pixel lies in a box of its class.
        if (map[p] >= 1 && map[p] <= 10) {
          bool inside = false;
          for (const data::Box& b : d->boxes[size_t(i)])
            inside |= b.label + 1 == map[p] && p % 48 >= b.x0 && p % 48 < b.x1 && p / 48 >= b.y0 &&
                      p / 48 < b.y1;
          ASSERT_TRUE(inside) << "scene " << i << " pixel " << p;
        }
      }
      for (const data::Box& b : d->boxes[size_t(i)]) {
        EXPECT_TRUE(b.x0 >= 0 && b.y0 >= 0 && b.x1 <= 48 && b.y1 <= 48 && b.x0 < b.x1 && b.y0 < b.y1);
        EXPECT_TRUE(b.label >= 0 && b.label < 10);
      }
    }
  }
  EXPECT_GT(strokes, 0);
  EXPECT_GT(ignored, 0);  // resized squares have faint edges
}

// Two boxes share at most `limit` of the smaller one's area.
bool within_overlap(const data::Box& a, const data::Box& b, double limit) {
  const int64_t w = std::min(a.x1, b.x1) - std::max(a.x0, b.x0), h = std::min(a.y1, b.y1) - std::max(a.y0, b.y0);
  const int64_t inter = w > 0 && h > 0 ? w * h : 0;
  const int64_t area_a = int64_t(a.x1 - a.x0) * (a.y1 - a.y0), area_b = int64_t(b.x1 - b.x0) * (b.y1 - b.y0);
  return double(inter) <= limit * double(std::min(area_a, area_b));
}

TEST(MnistScenes, MaxOverlapBoundsHowMuchDigitsCoverEachOther) {
  const data::DatasetSplit digits = square_digits();
  proto::MnistScenesConfig crowded = scene_options();
  crowded.set_train_scenes(200);
  crowded.set_max_digits(6);
  const data::DatasetSplit free = data::make_mnist_scenes(digits, crowded);
  // No limit (1) draws the same scenes as an unset limit: existing data sets stay as they were.
  crowded.set_max_overlap(1.0f);
  EXPECT_TRUE(same_bytes(data::make_mnist_scenes(digits, crowded).train.images, free.train.images));
  crowded.set_max_overlap(0.1f);
  const data::DatasetSplit sparse = data::make_mnist_scenes(digits, crowded);
  int64_t pairs_over = 0, digits_free = 0, digits_sparse = 0;
  for (int64_t i = 0; i < 200; ++i) {
    const auto& fb = free.train.boxes[size_t(i)];
    const auto& sb = sparse.train.boxes[size_t(i)];
    digits_free += int64_t(fb.size()), digits_sparse += int64_t(sb.size());
    for (size_t a = 0; a < fb.size(); ++a)
      for (size_t b = a + 1; b < fb.size(); ++b) pairs_over += !within_overlap(fb[a], fb[b], 0.1);
    ASSERT_GE(sb.size(), 1u);
    for (size_t a = 0; a < sb.size(); ++a)
      for (size_t b = a + 1; b < sb.size(); ++b)
        ASSERT_TRUE(within_overlap(sb[a], sb[b], 0.1)) << "scene " << i << " boxes " << a << ", " << b;
  }
  EXPECT_GT(pairs_over, 0);  // the unlimited scenes do overlap more, so the limit did something
  // 48x48 canvases hold six 8x8..12x12 squares apart: few digits find no place.
  EXPECT_GT(digits_sparse, digits_free * 9 / 10);
}

TEST(MnistScenes, TrainingScenesUseTrainingDigitsOnly) {
  // Training digits all class 0 (label 1 on the map), test digits all class 3.
  data::DatasetSplit digits = square_digits();
  for (int64_t i = 0; i < digits.train.size(); ++i) digits.train.labels.data<int32_t>()[i] = 0;
  for (int64_t i = 0; i < digits.test.size(); ++i) digits.test.labels.data<int32_t>()[i] = 3;
  const data::DatasetSplit s = data::make_mnist_scenes(digits, scene_options());
  for (int64_t p = 0; p < s.train.label_maps.numel(); ++p) {
    const uint8_t v = s.train.label_maps.data<uint8_t>()[p];
    ASSERT_TRUE(v == 0 || v == 1 || v == 255) << int(v);
  }
  for (int64_t p = 0; p < s.test.label_maps.numel(); ++p) {
    const uint8_t v = s.test.label_maps.data<uint8_t>()[p];
    ASSERT_TRUE(v == 0 || v == 4 || v == 255) << int(v);
  }
}

// y[n, o, i*s - p + a, j*s - p + b] += x[n, k, i, j] * w[k, o, a, b], + bias: PyTorch's
// ConvTranspose2d, summed in long double.
TEST(Deconv, EqualsTheScatterDefinition) {
  for (const char* cfg : {"name: 'u' deconv { out_channels: 3 kernel: 4 stride: 2 pad: 1 }",
                          "name: 'u' deconv { out_channels: 2 kernel: 3 stride: 3 pad: 1 output_padding: 1 }",
                          "name: 'u' deconv { out_channels: 2 kernel: 5 stride: 1 pad: 2 }"}) {
    for (const char* which : {"cpu-ref", "cpu"}) {
      auto backend = make_backend(which);
      auto l = make_layer(layer(cfg), 0);
      const Shape in{4, 5, 3};
      const Shape out = l->setup({in});
      const auto specs = l->param_specs();
      Tensor w = random_f32(specs[0].shape, 1), b = random_f32(specs[1].shape, 2);
      Tensor gw = Tensor::empty(w.shape(), DType::f32), gb = Tensor::empty(b.shape(), DType::f32);
      l->bind({w, b}, {gw, gb});
      const int64_t n = 2;
      Tensor x = random_f32(batched(n, in), 3), y = Tensor::empty(batched(n, out), DType::f32);
      StepContext ctx{*backend, true, 0, 0, nullptr};
      l->forward(ctx, {&x}, y);
      const proto::DeconvParam p = layer(cfg).deconv();
      const int64_t s = p.stride(), pad = p.pad(), K = p.kernel(), O = out[0], H = out[1], W = out[2];
      std::vector<long double> ref(size_t(n * O * H * W), 0.0L);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t o = 0; o < O; ++o)
          for (int64_t yy = 0; yy < H; ++yy)
            for (int64_t xx = 0; xx < W; ++xx) ref[size_t(((i * O + o) * H + yy) * W + xx)] = b.data<float>()[o];
      for (int64_t i = 0; i < n; ++i)
        for (int64_t k = 0; k < in[0]; ++k)
          for (int64_t r = 0; r < in[1]; ++r)
            for (int64_t c = 0; c < in[2]; ++c)
              for (int64_t o = 0; o < O; ++o)
                for (int64_t a = 0; a < K; ++a)
                  for (int64_t bb = 0; bb < K; ++bb) {
                    const int64_t yy = r * s - pad + a, xx = c * s - pad + bb;
                    if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
                    ref[size_t(((i * O + o) * H + yy) * W + xx)] +=
                        (long double)x.data<float>()[((i * in[0] + k) * in[1] + r) * in[2] + c] *
                        w.data<float>()[((k * O + o) * K + a) * K + bb];
                  }
      // f32 rounding of sums of at most in[0] * K * K products of |x|, |w| ~ N(0, 1) terms:
      // a bound of (terms + 1) * 2^-24 * the sum of |terms| is far below 1e-4.
      const Tensor yp = backend->to_plain(y);
      for (size_t e = 0; e < ref.size(); ++e)
        ASSERT_NEAR(double(yp.data<float>()[e]), double(ref[e]), 1e-4) << cfg << " " << which << " element " << e;
    }
  }
}

// The fast backend (oneDNN's conv primitives with the roles swapped, blocked layouts when the
// channels fill blocks) against the reference, forward and backward: sums of products, so
// 1e-4 of the largest reference value (test_backend_ops' rule).
TEST(Deconv, FastBackendMatchesTheReference) {
  for (const char* cfg : {"name: 'u' deconv { out_channels: 16 kernel: 4 stride: 2 pad: 1 }",
                          "name: 'u' deconv { out_channels: 3 kernel: 3 stride: 2 pad: 1 output_padding: 1 }",
                          "name: 'u' deconv { out_channels: 16 kernel: 3 stride: 3 output_padding: 2 }"}) {
    std::vector<std::vector<Tensor>> results;
    for (const char* which : {"cpu-ref", "cpu"}) {
      auto backend = make_backend(which);
      auto l = make_layer(layer(cfg), 0);
      const Shape in{16, 5, 4};
      const Shape out = l->setup({in});
      const auto specs = l->param_specs();
      Tensor w = random_f32(specs[0].shape, 1), b = random_f32(specs[1].shape, 2);
      Tensor gw = Tensor::empty(w.shape(), DType::f32), gb = Tensor::empty(b.shape(), DType::f32);
      l->bind({w, b}, {gw, gb});
      Tensor x = random_f32(batched(3, in), 3), y = Tensor::empty(batched(3, out), DType::f32);
      Tensor dy = random_f32(batched(3, out), 4), dx = Tensor::empty(x.shape(), DType::f32);
      StepContext ctx{*backend, true, 0, 0, nullptr};
      l->forward(ctx, {&x}, y);
      Tensor yp = backend->to_plain(y).clone();
      l->backward(ctx, {&x}, y, dy, {&dx});
      results.push_back({yp, backend->to_plain(dx).clone(), gw.clone(), gb.clone()});
    }
    for (size_t k = 0; k < 4; ++k) {
      const Tensor& want = results[0][k];
      const Tensor& got = results[1][k];
      double m = 0;
      for (int64_t i = 0; i < want.numel(); ++i) m = std::max(m, std::abs(double(want.data<float>()[i])));
      for (int64_t i = 0; i < want.numel(); ++i)
        ASSERT_NEAR(got.data<float>()[i], want.data<float>()[i], 1e-4 * m) << cfg << " result " << k << " element " << i;
    }
  }
}

TEST(Deconv, BilinearInitialisationInterpolates) {
  // FCN's x2 upsampling (kernel 4, stride 2, pad 1): a linear ramp comes out as the ramp at the
  // half-pixel positions inside the image (bilinear interpolation), a constant as the constant.
  auto backend = make_backend("cpu-ref");
  Tensor x = Tensor::empty({1, 2, 5, 5}, DType::f64);
  for (int64_t i = 0; i < 25; ++i) {
    x.data<double>()[i] = double(i % 5);  // channel 0: a ramp along x
    x.data<double>()[25 + i] = 3.0;      // channel 1: constant
  }
  auto l = make_layer(layer("name: 'up' deconv { out_channels: 2 kernel: 4 stride: 2 pad: 1 no_bias: true init: BILINEAR }"), 0);
  const Shape out = l->setup({Shape{2, 5, 5}});
  ASSERT_EQ(out, (Shape{2, 10, 10}));
  Tensor w = Tensor::empty(l->param_specs()[0].shape, DType::f64), gw = w.clone();
  l->bind({w}, {gw});
  // The initial values as the Net writes them (a net whose crop brings the output back to the
  // input's size, as a dense loss needs).
  proto::ModelConfig one;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(
      "layer { name: 'up' deconv { out_channels: 2 kernel: 4 stride: 2 pad: 1 no_bias: true init: BILINEAR } }"
      " layer { name: 'fit' crop { } input: 'up' input: 'data' }"
      " loss { type: PIXEL_SOFTMAX_CE }", &one));
  Net fitted(one, Shape{2, 5, 5}, 2, DType::f64);
  fitted.init_params(1);
  w.copy_from(fitted.params().slice_flat(0, w.shape()));
  Tensor y = Tensor::empty({1, 2, 10, 10}, DType::f64);
  StepContext ctx{*backend, false, 0, 0, nullptr};
  l->forward(ctx, {&x}, y);
  for (int64_t r = 1; r < 9; ++r)
    for (int64_t c = 1; c < 9; ++c) {
      // Output pixel c sits at input position (c + 0.5) / 2 - 0.5.
      EXPECT_NEAR(y.data<double>()[r * 10 + c], (double(c) + 0.5) / 2 - 0.5, 1e-12) << r << "," << c;
      EXPECT_NEAR(y.data<double>()[100 + r * 10 + c], 3.0, 1e-12);
    }
}

TEST(Crop, TakesTheWindowAndMatchesCentralDifferences) {
  auto backend = make_backend("cpu-ref");
  auto l = make_layer(layer("name: 'c' crop { offset_h: 1 offset_w: 2 } input: 'a' input: 'b'"), 0);
  const Shape out = l->setup({Shape{2, 6, 7}, Shape{5, 4, 3}});
  ASSERT_EQ(out, (Shape{2, 4, 3}));
  Tensor x = Tensor::empty({3, 2, 6, 7}, DType::f64), ref = Tensor::empty({3, 5, 4, 3}, DType::f64);
  fill_random(x, 1);
  fill_random(ref, 2);
  Tensor y = Tensor::empty({3, 2, 4, 3}, DType::f64), r = y.clone();
  fill_random(r, 3);
  StepContext ctx{*backend, true, 0, 0, nullptr};
  auto loss = [&] {
    l->forward(ctx, {&x, &ref}, y);
    double s = 0;
    for (int64_t i = 0; i < y.numel(); ++i) s += y.data<double>()[i] * r.data<double>()[i];
    return s;
  };
  loss();
  EXPECT_EQ(y.data<double>()[0], x.data<double>()[1 * 7 + 2]);
  Tensor dy = r.clone(), dx = Tensor::empty(x.shape(), DType::f64), dref = Tensor::empty(ref.shape(), DType::f64);
  fill_random(dref, 4);  // must be overwritten with zeros
  l->backward(ctx, {&x, &ref}, y, dy, {&dx, &dref});
  EXPECT_LE(check(x, dx.clone(), loss), 1e-7);
  for (int64_t i = 0; i < dref.numel(); ++i) ASSERT_EQ(dref.data<double>()[i], 0.0);
  // A window that does not fit is refused naming the layer.
  auto big = make_layer(layer("name: 'c2' crop { offset_h: 3 } input: 'a' input: 'b'"), 0);
  EXPECT_CONTAINS(error_of<deeptrain::Error>([&] { (void)(big->setup({Shape{2, 6, 7}, Shape{5, 4, 3}})); }), "layer 'c2'");
}

TEST(PixelSoftmaxCE, MatchesCentralDifferencesWithIgnoredPixelsAndClassWeights) {
  auto backend = make_backend("cpu-ref");
  const int64_t n = 2, K = 4, H = 3, W = 5;
  Tensor z = Tensor::empty({n, K, H, W}, DType::f64), probs = z.clone(), dz = z.clone();
  fill_random(z, 5, 2.0);
  Tensor t = Tensor::empty({n, H, W}, DType::i32);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<int32_t>()[i] = i % 7 == 3 ? 255 : int32_t(i % K);
  const std::vector<double> weights{0.5, 1.0, 2.0, 1.5};
  for (const auto& wv : {std::vector<double>{}, weights}) {
    auto loss = [&] { return backend->pixel_softmax_ce_forward(z, t, 255, wv, 0.0, probs).loss; };
    const LossSums s = backend->pixel_softmax_ce_forward(z, t, 255, wv, 0.0, probs);
    int64_t ignored = 0;
    for (int64_t i = 0; i < t.numel(); ++i) ignored += t.data<int32_t>()[i] == 255;
    EXPECT_EQ(s.counted, t.numel() - ignored);
    backend->pixel_softmax_ce_backward(probs, t, 255, wv, 1.0, dz);
    EXPECT_LE(check(z, dz.clone(), loss), 1e-7) << wv.size() << " weights";
    // Ignored pixels get no gradient.
    for (int64_t i = 0; i < n; ++i)
      for (int64_t p = 0; p < H * W; ++p)
        if (t.data<int32_t>()[i * H * W + p] == 255) {
          for (int64_t k = 0; k < K; ++k) ASSERT_EQ(dz.data<double>()[(i * K + k) * H * W + p], 0.0);
        }
  }
  // A label that is neither a class nor the ignore label names the sample and the pixel.
  t.data<int32_t>()[H * W + 4] = 7;
  EXPECT_CONTAINS(error_of<deeptrain::Error>([&] { (void)(backend->pixel_softmax_ce_forward(z, t, 255, {}, 0.0, probs)); }), "sample 1 of the batch has label 7 at pixel 4");
}

TEST(SegmentationMetrics, PixelAccuracyAndMeanIoU) {
  // 3 classes; rows true, columns predicted.
  const std::vector<int64_t> c{50, 2, 3,   //
                               4, 10, 0,   //
                               1, 0, 0};   // class 2 never predicted right
  const SegmentationMetrics m = segmentation_metrics(c, 3);
  EXPECT_DOUBLE_EQ(m.pixel_accuracy, 60.0 / 70.0);
  const double iou0 = 50.0 / (55 + 55 - 50), iou1 = 10.0 / (14 + 12 - 10), iou2 = 0.0;
  EXPECT_DOUBLE_EQ(m.mean_iou, (iou0 + iou1 + iou2) / 3);
  EXPECT_DOUBLE_EQ(m.mean_iou_fg, (iou1 + iou2) / 2);
  // A class that never occurs (true or predicted) is left out of the means.
  const SegmentationMetrics absent = segmentation_metrics({5, 0, 0, 0}, 2);
  EXPECT_TRUE(std::isnan(absent.iou[1]));
  EXPECT_DOUBLE_EQ(absent.mean_iou, 1.0);
}

TEST(DenseModel, RefusesOutputsOfTheWrongSizeAndBadLossOptions) {
  proto::ModelConfig m;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(
      "layer { name: 'c' conv { out_channels: 3 kernel: 3 } } loss { type: PIXEL_SOFTMAX_CE }", &m));
  EXPECT_CONTAINS(error_of<deeptrain::Error>([&] { (void)(Net(m, Shape{1, 8, 8}, 3, DType::f32)); }), "needs (3, 8, 8)");
  m.mutable_layer(0)->mutable_conv()->set_pad(1);
  EXPECT_NO_THROW(Net(m, Shape{1, 8, 8}, 3, DType::f32));
  m.mutable_loss()->add_class_weights(1);
  EXPECT_CONTAINS(error_of<deeptrain::Error>([&] { (void)(Net(m, Shape{1, 8, 8}, 3, DType::f32)); }), "model.loss.class_weights");
  m.mutable_loss()->clear_class_weights();
  m.mutable_loss()->set_ignore_label(2);
  EXPECT_CONTAINS(error_of<deeptrain::Error>([&] { (void)(Net(m, Shape{1, 8, 8}, 3, DType::f32)); }), "model.loss.ignore_label");
  EXPECT_CONTAINS(error_of<deeptrain::Error>([&] { (void)(make_layer(layer("name: 'u' deconv { out_channels: 2 kernel: 4 stride: 2 output_padding: 2 }"), 0)); }), "output_padding");
  auto bil = make_layer(layer("name: 'u' deconv { out_channels: 2 kernel: 4 stride: 2 init: BILINEAR }"), 0);
  EXPECT_CONTAINS(error_of<deeptrain::Error>([&] { (void)(bil->setup({Shape{3, 4, 4}})); }), "BILINEAR");
}

// A regression: finalizing added an empty `loss {}` to every config, so weights files written
// without it (every classification model before model.loss existed, and ONNX imports) were
// refused as belonging to another model.
TEST(LossConfig, ClassificationConfigsCarryNoLossMessage) {
  const proto::ExperimentConfig plain = parse_config("model { preset: 'deep_convnet' }", "plain");
  EXPECT_FALSE(plain.model().has_loss());
  const proto::ExperimentConfig explicit_ce =
      parse_config("model { preset: 'deep_convnet' loss { type: SOFTMAX_CE } }", "explicit");
  EXPECT_FALSE(explicit_ce.model().has_loss());
  const proto::ExperimentConfig dense = parse_config(
      "model { preset: 'deep_convnet' loss { type: PIXEL_SOFTMAX_CE } }", "dense");
  ASSERT_TRUE(dense.model().has_loss());
  EXPECT_EQ(dense.model().loss().ignore_label(), 255);
  EXPECT_CONTAINS(error_of([] { parse_config("model { loss { ignore_label: 3 } }", "bad"); }),
                  "model.loss: ignore_label and class_weights are for PIXEL_SOFTMAX_CE");
}

// A regression: evaluation ran the FCN example in batches of 1000 scenes and the net kept
// room for their gradients too, about 2.8 GB for the rest of the run. The default evaluation
// batch now keeps a batch's layer outputs under kEvalActivationBytes (classification models
// as small as DeepConvNet keep 1000), and forward alone allocates no gradient room.
TEST(EvalMemory, DefaultEvalBatchBoundsActivationsAndForwardHoldsNoGradients) {
  const proto::ExperimentConfig fcn =
      load_config(std::string(DEEPTRAIN_SOURCE_DIR) + "/examples/fcn_mnist_scenes.prototxt");
  const Net big(fcn.model(), Shape{1, 64, 64}, 11, DType::f32);
  const int64_t fcn_batch = default_eval_batch(big);
  EXPECT_LT(fcn_batch, config_defaults::kEvalBatchSize);
  EXPECT_LE(fcn_batch * big.activation_bytes_per_sample(), config_defaults::kEvalActivationBytes);
  EXPECT_GT((fcn_batch + 1) * big.activation_bytes_per_sample(), config_defaults::kEvalActivationBytes);

  proto::ModelConfig m;
  m.set_preset("deep_convnet");
  Net net(m, Shape{1, 28, 28}, 10, DType::f32);
  EXPECT_EQ(default_eval_batch(net), config_defaults::kEvalBatchSize);
  auto backend = make_backend("cpu-ref");
  const int64_t n = 8;
  net.init_params(1);
  Tensor x = Tensor::zeros({n, 1, 28, 28}, DType::f32);
  StepContext eval{*backend, false, 0, 0, nullptr};
  net.forward(eval, x);
  EXPECT_EQ(net.held_bytes(), n * net.activation_bytes_per_sample());
  const int64_t ids[n] = {0, 1, 2, 3, 4, 5, 6, 7};
  StepContext train{*backend, true, 0, 0, ids};
  Tensor dlogits = Tensor::zeros({n, 10}, DType::f32);
  net.forward(train, x);
  net.backward(train, dlogits);
  // A chain: no gradient is shared, so the room is the outputs' and their gradients', once.
  EXPECT_EQ(net.held_bytes(), 2 * n * net.activation_bytes_per_sample());
}
