#pragma once
// A layer graph and one training pass through Net, shared by the tests that compare backends
// on whole graphs (test_layers_extra, test_blocked_layers, test_gpu_layers).
#include <algorithm>
#include <cmath>

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include "core/backend/backend.h"
#include "core/net.h"

namespace deeptrain::testing_util {

// A residual block (BN, identity shortcut), an Inception-style concat of 1x1, 3x3 and pooling
// branches, a strided block with a 1x1 projection shortcut, a BN output read by a ReLU and by a
// 3-input add (two consumers: Net adds their gradients), global average pooling and a
// classifier of 5 classes; 1x8x8 inputs. Its 16 and 32 channels fill the fast CPU backend's
// channel blocks, so there BN, add and pooling see blocked activations and gradients.
inline proto::ModelConfig wide_graph() {
  proto::ModelConfig mc;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(R"(
    layer { name: "stem" conv { out_channels: 16 kernel: 3 pad: 1 no_bias: true } }
    layer { name: "stem_bn" batch_norm {} }
    layer { name: "stem_relu" relu {} }
    layer { name: "a1" conv { out_channels: 16 kernel: 3 pad: 1 no_bias: true } }
    layer { name: "a1_bn" batch_norm {} }
    layer { name: "a1_relu" relu {} }
    layer { name: "a2" conv { out_channels: 16 kernel: 3 pad: 1 no_bias: true } }
    layer { name: "a2_bn" batch_norm {} }
    layer { name: "res" input: "a2_bn" input: "stem_relu" add {} }
    layer { name: "res_relu" relu {} }
    layer { name: "b1" input: "res_relu" conv { out_channels: 8 kernel: 1 } }
    layer { name: "b3" input: "res_relu" conv { out_channels: 8 kernel: 3 pad: 1 } }
    layer { name: "bp" input: "res_relu" max_pool { kernel: 3 stride: 1 pad: 1 } }
    layer { name: "cat" input: "b1" input: "b3" input: "bp" concat {} }
    layer { name: "down" conv { out_channels: 32 kernel: 3 stride: 2 pad: 1 no_bias: true } }
    layer { name: "down_bn" batch_norm {} }
    layer { name: "down_relu" input: "down_bn" relu {} }
    layer { name: "proj" input: "cat" conv { out_channels: 32 kernel: 1 stride: 2 no_bias: true } }
    layer { name: "proj_bn" batch_norm {} }
    layer { name: "res2" input: "down_relu" input: "proj_bn" input: "down_bn" add {} }
    layer { name: "gap" global_avg_pool {} }
    layer { name: "fc" affine { out_features: 5 } }
  )", &mc));
  return mc;
}

// t in backend be's memory: t itself on a host backend, else a device copy.
inline Tensor on_backend(Backend& be, const Tensor& t) {
  if (be.device() == Device::cpu) return t;
  Tensor d = be.empty(t.shape(), t.dtype());
  be.copy(t, d);
  return d;
}

// The logits and every parameter gradient (host copies) of one training-mode forward and
// backward of the mean softmax cross-entropy: a fresh f32 net (parameters from seed 7) on
// backend `be` (placed there when it is a device backend), x and labels given on the host.
struct NetPass {
  Tensor logits, grads;
};
inline NetPass net_pass(const proto::ModelConfig& mc, const Shape& input, int classes,
                        Backend& be, const Tensor& x, const Tensor& labels) {
  Net net(mc, input, classes, DType::f32);
  net.init_params(7);
  net.place_on(be);
  const Tensor xd = on_backend(be, x), td = on_backend(be, labels);
  const int64_t n = x.dim(0);
  Tensor probs = be.empty({n, classes}, DType::f32), dlogits = be.empty({n, classes}, DType::f32);
  StepContext ctx{be, true, 5, 0, nullptr};
  const Tensor& logits = net.forward(ctx, xd);
  NetPass r;
  r.logits = be.to_host(logits);
  be.softmax_ce_forward(logits, td, 1e-7, probs, nullptr);
  be.softmax_ce_backward(probs, td, 1.0 / double(n), dlogits);
  be.fill_zero(net.compute_grads());
  net.backward(ctx, dlogits);
  r.grads = be.to_host(net.compute_grads());
  return r;
}

// max |got - want| / max |want| (f32 or f64 host tensors of equal size): one number for a
// whole tensor, the bound the GPU and device-path comparisons state.
inline double rel_diff(const Tensor& got, const Tensor& want) {
  const Tensor g = got.to(DType::f64), w = want.to(DType::f64);  // f32 or f64
  double m = 0, scale = 1e-300;
  for (int64_t i = 0; i < w.numel(); ++i) {
    m = std::max(m, std::abs(g.data<double>()[i] - w.data<double>()[i]));
    scale = std::max(scale, std::abs(w.data<double>()[i]));
  }
  return m / scale;
}

// Every element of got within tol * max(1, |want|) of want's.
inline void expect_close(const Tensor& got, const Tensor& want, double tol, const char* what) {
  ASSERT_EQ(got.numel(), want.numel()) << what;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const float w = want.data<float>()[i];
    EXPECT_NEAR(got.data<float>()[i], w, tol * std::max(1.0f, std::abs(w))) << what << " " << i;
  }
}

}  // namespace deeptrain::testing_util
