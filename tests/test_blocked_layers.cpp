// BatchNorm, the residual add and global average pooling on a fast backend's blocked
// activations (nChw8c, nChw16c), which they read and write without converting: the same
// numbers as on plain activations, bit for bit (each channel's sums run in the same order in
// both layouts), and a ResNet-style graph on the fast CPU backend against the reference.
#include <cstring>

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include "gradcheck_util.h"
#include "net_cases.h"

#include "core/backend/backend.h"
#ifdef DEEPTRAIN_HAVE_DNNL
#include "core/backend/cpu_kernels_blocked.h"
#endif
#include "core/layers/kinds.h"

using namespace deeptrain;
using namespace deeptrain::testing_util;

namespace {

// The layout formula of core/tensor.h, written out here independently of the backend's
// conversion kernels: element (n, c, s) of a blocked tensor lives at
// ((n * C/B + c/B) * S + s) * B + c % B.
Tensor to_blocked(const Tensor& plain, int B) {
  const int64_t n = plain.dim(0), c = plain.dim(1), s = plain.dim(2) * plain.dim(3);
  Tensor out = Tensor::empty(plain.shape(), DType::f32);
  const float* src = plain.data<float>();
  float* dst = out.data<float>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t p = 0; p < s; ++p)
        dst[((i * (c / B) + ch / B) * s + p) * B + ch % B] = src[(i * c + ch) * s + p];
  out.set_layout(B == 16 ? Layout::nChw16c : Layout::nChw8c);
  return out;
}

Tensor from_blocked(const Tensor& blocked) {
  const int B = layout_block(blocked.layout());
  const int64_t n = blocked.dim(0), c = blocked.dim(1), s = blocked.dim(2) * blocked.dim(3);
  Tensor out = Tensor::empty(blocked.shape(), DType::f32);
  const float* src = blocked.data<float>();
  float* dst = out.data<float>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t p = 0; p < s; ++p)
        dst[(i * c + ch) * s + p] = src[((i * (c / B) + ch / B) * s + p) * B + ch % B];
  return out;
}

void expect_bit_identical(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.numel(), b.numel()) << what;
  EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << what << " differs";
}

// One layer run forward and backward in a layout: its output, input gradients and parameter
// gradients, all returned plain.
struct Run {
  Tensor y;
  std::vector<Tensor> dx, dparams;
};

Run run_layer(const char* cfg, bool fused_relu, bool training, const std::vector<Tensor>& xs,
              const Tensor& dy, int block) {
  proto::LayerConfig lc;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(cfg, &lc));
  auto backend = make_backend("cpu-ref");
  auto layer = make_layer(lc, 0);
  layer->set_fused_relu(fused_relu);
  std::vector<Shape> shapes;
  for (const Tensor& x : xs) shapes.push_back(Shape({x.dim(1), x.dim(2), x.dim(3)}));
  const Shape out = layer->setup(shapes);
  std::vector<Tensor> params, grads;
  for (const ParamSpec& s : layer->param_specs()) {
    params.push_back(random_f32(s.shape, 40 + params.size(), 0.5, s.constant ? 1.0 : 0.0));
    grads.push_back(Tensor::zeros(s.shape, DType::f32));
  }
  layer->bind(params, grads);
  auto in_layout = [&](const Tensor& t) { return block == 1 ? t.clone() : to_blocked(t, block); };
  std::vector<Tensor> in_t;
  for (const Tensor& x : xs) in_t.push_back(in_layout(x));
  std::vector<Tensor*> in;
  for (Tensor& t : in_t) in.push_back(&t);
  std::vector<int64_t> dims{xs[0].dim(0)};
  for (int64_t d : out.dims()) dims.push_back(d);
  Tensor y = Tensor::empty(Shape(dims), DType::f32);
  StepContext ctx{*backend, training, 1, 2, nullptr};
  layer->forward(ctx, in, y);
  Tensor g = y.shape().rank() == 4 && block != 1 ? to_blocked(dy, block) : dy.clone();
  std::vector<Tensor> dx_t;
  for (const Tensor& x : xs) dx_t.push_back(Tensor::empty(x.shape(), DType::f32));
  std::vector<Tensor*> din;
  for (Tensor& t : dx_t) din.push_back(&t);
  layer->backward(ctx, in, y, g, din);
  Run r;
  r.y = y.layout() == Layout::plain ? y : from_blocked(y);
  if (y.shape().rank() == 4) EXPECT_EQ(layout_block(y.layout()), block) << "output layout";
  for (Tensor& t : dx_t) {
    EXPECT_EQ(layout_block(t.layout()), block) << "input gradient layout";
    r.dx.push_back(t.layout() == Layout::plain ? t : from_blocked(t));
  }
  r.dparams = grads;
  return r;
}

void expect_same_in_every_layout(const char* cfg, bool fused_relu, bool training,
                                 const std::vector<Tensor>& xs, const Tensor& dy) {
  const Run plain = run_layer(cfg, fused_relu, training, xs, dy, 1);
  for (int block : {8, 16}) {
    SCOPED_TRACE(testing::Message() << cfg << " block " << block << " relu " << fused_relu
                                    << " training " << training);
    const Run b = run_layer(cfg, fused_relu, training, xs, dy, block);
    expect_bit_identical(b.y, plain.y, "output");
    for (size_t k = 0; k < xs.size(); ++k) expect_bit_identical(b.dx[k], plain.dx[k], "dx");
    for (size_t k = 0; k < plain.dparams.size(); ++k)
      expect_bit_identical(b.dparams[k], plain.dparams[k], "parameter gradient");
  }
}

TEST(BlockedLayouts, BatchNormIsBitIdenticalToPlain) {
  // 32 channels: four blocks of 8, two of 16; mean 2, sd 3 so the normalisation has work.
  const Tensor x = random_f32({5, 32, 3, 7}, 1, 3.0, 2.0), dy = random_f32({5, 32, 3, 7}, 2);
  for (bool relu : {false, true})
    for (bool training : {true, false})
      expect_same_in_every_layout(R"(name: "bn" batch_norm {})", relu, training, {x}, dy);
}

TEST(BlockedLayouts, AddIsBitIdenticalToPlain) {
  const Tensor a = random_f32({3, 16, 5, 5}, 3), b = random_f32({3, 16, 5, 5}, 4);
  const Tensor c = random_f32({3, 16, 5, 5}, 5), dy = random_f32({3, 16, 5, 5}, 6);
  for (bool relu : {false, true}) {
    expect_same_in_every_layout(R"(name: "add" add {})", relu, true, {a, b}, dy);
    expect_same_in_every_layout(R"(name: "add" add {})", relu, true, {a, b, c}, dy);
  }
}

TEST(BlockedLayouts, GlobalAvgPoolIsBitIdenticalToPlain) {
  const Tensor x = random_f32({4, 32, 7, 7}, 7), dy = random_f32({4, 32}, 8);
  expect_same_in_every_layout(R"(name: "gap" global_avg_pool {})", false, true, {x}, dy);
}

// Inputs whose channels fill whole blocks are joined in their blocked layout (no conversion),
// and the gradient is split in it: the same values, bit for bit, in the same layout.
TEST(BlockedLayouts, ConcatIsBitIdenticalToPlain) {
  const Tensor a = random_f32({3, 16, 4, 5}, 11), b = random_f32({3, 32, 4, 5}, 12);
  const Tensor dy = random_f32({3, 48, 4, 5}, 13);
  expect_same_in_every_layout(R"(name: "cat" concat {})", false, true, {a, b}, dy);
  const Tensor dy2 = random_f32({3, 32, 4, 5}, 16);  // two 16-channel inputs
  expect_same_in_every_layout(R"(name: "cat" concat {})", false, true, {a, a}, dy2);
}

// Inputs in different layouts (a blocked 16-channel branch next to a plain 8-channel one, as in
// GoogLeNet's first Inception module) are joined plain.
TEST(BlockedLayouts, ConcatOfMixedLayoutsIsPlain) {
  const Tensor a = random_f32({2, 16, 3, 3}, 14), b = random_f32({2, 8, 3, 3}, 15);
  auto backend = make_backend("cpu");  // its to_plain reads the blocked input
  proto::LayerConfig lc;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(R"(name: "cat" concat {})", &lc));
  auto layer = make_layer(lc, 0);
  layer->setup({Shape({16, 3, 3}), Shape({8, 3, 3})});
  Tensor ab = to_blocked(a, 16), bp = b.clone();
  std::vector<Tensor*> in{&ab, &bp};
  Tensor y = Tensor::empty(Shape({2, 24, 3, 3}), DType::f32);
  StepContext ctx{*backend, true, 1, 2, nullptr};
  layer->forward(ctx, in, y);
  ASSERT_EQ(y.layout(), Layout::plain);
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t c = 0; c < 24; ++c)
      for (int64_t s = 0; s < 9; ++s) {
        const float want = c < 16 ? a.data<float>()[(i * 16 + c) * 9 + s]
                                  : b.data<float>()[(i * 8 + c - 16) * 9 + s];
        ASSERT_EQ(y.data<float>()[(i * 24 + c) * 9 + s], want) << i << " " << c << " " << s;
      }
}

#ifdef DEEPTRAIN_HAVE_DNNL
// The fast backend's layout conversions (16 x 16 tiles transposed in registers, scalar tails)
// against the layout formula, bit for bit, with plane sizes with and without a tail.
TEST(BlockedLayouts, ConversionKernelsFollowTheLayoutFormula) {
  for (int B : {8, 16})
    for (int64_t c : {int64_t(B), int64_t(3 * B)})
      for (int64_t hw : {1, 16, 37, 49}) {
        SCOPED_TRACE(testing::Message() << "B " << B << " c " << c << " hw " << hw);
        const int64_t n = 3;
        const Tensor x = random_f32({n, c, 1, hw}, 17);
        Tensor got = Tensor::empty(x.shape(), DType::f32);
        std::memset(got.raw(), 0xff, got.nbytes());  // NaNs where nothing is written
        kernels::plain_to_blocked(x.raw(), got.raw(), n, c, hw, B);
        expect_bit_identical(got, to_blocked(x, B), "plain to blocked");
        Tensor back = Tensor::empty(x.shape(), DType::f32);
        kernels::blocked_to_plain(got.raw(), back.raw(), n, c, hw, B);
        expect_bit_identical(back, x, "blocked to plain");
      }
}
#endif

// testing_util::wide_graph (residual blocks, an Inception concat, a BN with two consumers)
// on the fast CPU backend, whose blocked layouts its BN, add and pooling layers then read and
// write, against the plain reference backend.
TEST(BlockedLayouts, ResidualNetOnTheFastBackendMatchesTheReference) {
  const int64_t n = 6;
  const Tensor x = random_f32({n, 1, 8, 8}, 9);
  Tensor t = Tensor::empty({n}, DType::i32);
  for (int64_t i = 0; i < n; ++i) t.data<int32_t>()[i] = int32_t(i % 5);
  auto ref = make_backend("cpu-ref"), fast = make_backend("cpu");
  const NetPass want = net_pass(wide_graph(), {1, 8, 8}, 5, *ref, x, t);
  const NetPass got = net_pass(wide_graph(), {1, 8, 8}, 5, *fast, x, t);
  expect_close(got.logits, want.logits, 1e-4, "logits");
  expect_close(got.grads, want.grads, 1e-4, "gradients");
}

}  // namespace
