// Numerical gradient checks (central differences, float64) of every layer on its own, and of
// the whole DeepConvNet through the Net. Multi-input layers (add, concat) and layer graphs are
// checked in test_layers_extra.cpp. For a layer with output y we check the gradient of
// L = sum(y * R) for a fixed random R, so dL/dy = R.
#include <cmath>
#include <functional>

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include "gradcheck_util.h"

#include "core/backend/backend.h"
#include "core/net.h"
#include "core/random.h"

using namespace deeptrain;

using namespace deeptrain::testing_util;

namespace {

struct LayerCase {
  const char* name;
  const char* config;  // a LayerConfig in text format
  Shape input;         // per sample
  bool training;
};

class LayerGradient : public ::testing::TestWithParam<LayerCase> {};

TEST_P(LayerGradient, MatchesCentralDifferences) {
  const LayerCase c = GetParam();
  proto::LayerConfig lc;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(c.config, &lc));
  auto backend = make_backend("cpu-ref");
  auto layer = make_layer(lc, 3);
  const Shape out_shape = layer->setup({c.input});
  const int64_t n = 3;
  std::vector<Tensor> params, grads;
  for (const ParamSpec& s : layer->param_specs()) {
    params.push_back(Tensor::empty(s.shape, DType::f64));
    grads.push_back(Tensor::empty(s.shape, DType::f64));
    fill_random(params.back(), 11 + params.size(), 0.5);
  }
  layer->bind(params, grads);
  Tensor x = Tensor::empty(batched(n, c.input), DType::f64);
  fill_random(x, 1);
  Tensor y = Tensor::empty(batched(n, out_shape), DType::f64);
  Tensor r = Tensor::empty(y.shape(), DType::f64);
  fill_random(r, 2);
  const int64_t ids[n] = {5, 17, 40000};
  StepContext ctx{*backend, c.training, 42, 9, ids};

  auto loss = [&] {
    layer->forward(ctx, {&x}, y);
    double s = 0;
    for (int64_t i = 0; i < y.numel(); ++i) s += y.data<double>()[i] * r.data<double>()[i];
    return s;
  };
  loss();
  Tensor dy = r.clone(), dx = Tensor::empty(x.shape(), DType::f64);
  layer->backward(ctx, {&x}, y, dy, {&dx});
  const Tensor dx_analytic = dx.clone();
  std::vector<Tensor> dparams;
  for (Tensor& g : grads) dparams.push_back(g.clone());

  EXPECT_LE(check(x, dx_analytic, loss), 1e-7) << "input gradient";
  for (size_t k = 0; k < params.size(); ++k)
    EXPECT_LE(check(params[k], dparams[k], loss), 1e-7) << "parameter " << k;
}

// Max-pool inputs are random normals, so ties (where the derivative is undefined) do not occur.
INSTANTIATE_TEST_SUITE_P(
    Layers, LayerGradient,
    ::testing::Values(
        LayerCase{"conv3x3_pad1", "name: 'c' conv { out_channels: 4 kernel: 3 pad: 1 }", {2, 6, 6}, true},
        LayerCase{"conv3x3_pad2", "name: 'c' conv { out_channels: 3 kernel: 3 pad: 2 }", {2, 5, 5}, true},
        LayerCase{"conv_stride2", "name: 'c' conv { out_channels: 3 kernel: 3 stride: 2 pad: 1 }", {2, 7, 7}, true},
        LayerCase{"conv_5x5_nobias", "name: 'c' conv { out_channels: 2 kernel: 5 no_bias: true }", {3, 6, 6}, true},
        LayerCase{"conv_1x1", "name: 'c' conv { out_channels: 5 kernel: 1 }", {3, 4, 4}, true},
        LayerCase{"conv_rect", "name: 'c' conv { out_channels: 2 kernel_h: 3 kernel_w: 2 }", {2, 5, 6}, true},
        LayerCase{"maxpool2", "name: 'p' max_pool { kernel: 2 stride: 2 }", {2, 6, 6}, true},
        LayerCase{"maxpool3_s2_pad1", "name: 'p' max_pool { kernel: 3 stride: 2 pad: 1 }", {2, 7, 7}, true},
        LayerCase{"relu", "name: 'r' relu {}", {2, 3, 3}, true},
        LayerCase{"affine_from_4d", "name: 'a' affine { out_features: 4 }", {2, 3, 3}, true},
        LayerCase{"affine_nobias", "name: 'a' affine { out_features: 3 no_bias: true }", {7}, true},
        LayerCase{"dropout_train", "name: 'd' dropout { ratio: 0.5 }", {20}, true},
        LayerCase{"dropout_eval", "name: 'd' dropout { ratio: 0.5 }", {20}, false},
        // Batch statistics depend on every sample, so the input gradient couples the batch.
        LayerCase{"batch_norm_4d_train", "name: 'n' batch_norm {}", {3, 4, 3}, true},
        LayerCase{"batch_norm_2d_train", "name: 'n' batch_norm { momentum: 0.5 }", {6}, true},
        LayerCase{"batch_norm_per_activation", "name: 'n' batch_norm { per_activation: true }", {2, 3, 3}, true},
        LayerCase{"batch_norm_eval", "name: 'n' batch_norm { eps: 0.01 }", {3, 4, 4}, false},
        LayerCase{"global_avg_pool", "name: 'g' global_avg_pool {}", {4, 3, 5}, true},
        LayerCase{"deconv_s1", "name: 'u' deconv { out_channels: 3 kernel: 3 }", {2, 4, 5}, true},
        LayerCase{"deconv_s2_pad1", "name: 'u' deconv { out_channels: 2 kernel: 4 stride: 2 pad: 1 }", {3, 3, 4}, true},
        LayerCase{"deconv_s3_outpad2_nobias", "name: 'u' deconv { out_channels: 2 kernel: 3 stride: 3 pad: 1 output_padding: 2 no_bias: true }", {2, 3, 2}, true},
        LayerCase{"deconv_bilinear", "name: 'u' deconv { out_channels: 2 kernel: 4 stride: 2 pad: 1 init: BILINEAR }", {2, 3, 3}, true}),
    [](const ::testing::TestParamInfo<LayerCase>& i) { return std::string(i.param.name); });

// Conv, affine and batch norm with a fused ReLU: the same check through the fused path.
TEST(FusedRelu, ConvAndAffineMatchCentralDifferences) {
  for (const char* cfg : {"name: 'c' conv { out_channels: 3 kernel: 3 pad: 1 }",
                          "name: 'a' affine { out_features: 6 }", "name: 'n' batch_norm {}"}) {
    proto::LayerConfig lc;
    ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(cfg, &lc));
    auto backend = make_backend("cpu-ref");
    auto layer = make_layer(lc, 0);
    layer->set_fused_relu(true);
    const Shape in{2, 5, 5};
    const Shape out = layer->setup({in});
    std::vector<Tensor> params, grads;
    for (const ParamSpec& s : layer->param_specs()) {
      params.push_back(Tensor::empty(s.shape, DType::f64));
      grads.push_back(Tensor::empty(s.shape, DType::f64));
      fill_random(params.back(), 3 + params.size(), 0.5);
    }
    layer->bind(params, grads);
    Tensor x = Tensor::empty(batched(2, in), DType::f64), y = Tensor::empty(batched(2, out), DType::f64);
    Tensor r = Tensor::empty(y.shape(), DType::f64);
    fill_random(x, 5);
    fill_random(r, 6);
    StepContext ctx{*backend, true, 0, 0, nullptr};
    auto loss = [&] {
      layer->forward(ctx, {&x}, y);
      double s = 0;
      for (int64_t i = 0; i < y.numel(); ++i) {
        EXPECT_GE(y.data<double>()[i], 0.0);
        s += y.data<double>()[i] * r.data<double>()[i];
      }
      return s;
    };
    loss();
    Tensor dy = r.clone(), dx = Tensor::empty(x.shape(), DType::f64);
    layer->backward(ctx, {&x}, y, dy, {&dx});
    const Tensor dxa = dx.clone(), dwa = grads[0].clone();
    EXPECT_LE(check(x, dxa, loss), 1e-7) << cfg;
    EXPECT_LE(check(params[0], dwa, loss), 1e-7) << cfg;
  }
}

// The whole DeepConvNet in f64, training mode (dropout on, masks fixed by the sample ids),
// loss without the book's 1e-7 so the analytic gradient is exact. Checks a spread of elements
// of every parameter tensor (all of them would take minutes).
TEST(NetGradient, DeepConvNetMatchesCentralDifferences) {
  proto::ModelConfig mc;
  mc.set_preset("deep_convnet");
  Net net(mc, {1, 28, 28}, 10, DType::f64);
  net.init_params(3);
  auto backend = make_backend("cpu-ref");
  const int64_t n = 2;
  Tensor x = Tensor::empty({n, 1, 28, 28}, DType::f64);
  fill_random(x, 8, 0.5);
  Tensor t = Tensor::empty({n}, DType::i32);
  t.data<int32_t>()[0] = 3;
  t.data<int32_t>()[1] = 7;
  const int64_t ids[n] = {12, 345};
  StepContext ctx{*backend, true, 99, 4, ids};
  Tensor probs = Tensor::empty({n, 10}, DType::f64), dlogits = Tensor::empty({n, 10}, DType::f64);
  auto loss = [&] {
    const Tensor& z = net.forward(ctx, x);
    return backend->softmax_ce_forward(z, t, 0.0, probs, nullptr) / n;
  };
  loss();
  backend->softmax_ce_backward(probs, t, 1.0 / n, dlogits);
  net.backward(ctx, dlogits);
  const Tensor grads = net.compute_grads().clone();
  const int checked = check_net_params(net, grads, loss, 7);
  EXPECT_GT(checked, 100);
}

}  // namespace
