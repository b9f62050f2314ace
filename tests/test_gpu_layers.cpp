// The deeper nets' layers on the GPU (skipped without one): BatchNorm, the residual add,
// channel concat and global average pooling through the layer API, on device tensors of the
// "cuda" backend against the same layer on host tensors of the reference backend; then a
// residual/inception graph through Net, and ResNet-20's first training steps.
//
// Tolerances: the add, the concat and the pooling move, add or average the same values in the
// same order as the host (bit-identical expected). BatchNorm's per-channel sums run in f64 in
// another order than the host's, which can move a float result by an ulp: 1e-5 relative to the
// largest magnitude. The graph and training comparisons add cuDNN's convolutions (summation
// order again): 1e-4 relative for one pass, 1e-3 on the loss over the first steps.
#include <cmath>
#include <cstring>

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include "gradcheck_util.h"
#include "net_cases.h"

#include "core/backend/backend.h"
#include "core/config.h"
#include "core/data/dataset.h"
#include "core/net.h"
#include "core/optim/optimizer.h"
#include "core/random.h"
#include "distributed/communicator.h"
#include "distributed/trainer.h"

using namespace deeptrain;
using namespace deeptrain::testing_util;

namespace {

#define REQUIRE_GPU_BACKEND(var)                                                  \
  std::unique_ptr<Backend> var;                                                   \
  try {                                                                           \
    var = make_backend("cuda");                                                   \
  } catch (const InputError& e) {                                                 \
    GTEST_SKIP() << "no GPU: " << e.what();                                       \
  }


struct Pass {
  Tensor y;
  std::vector<Tensor> dx, dparams, state;  // state: BatchNorm's running statistics after the pass
};

// One forward and backward of the layer `cfg` on `be` (host tensors for a host backend, device
// tensors otherwise), results copied to the host. `inputs` may repeat an index (x + x).
Pass run_layer(Backend& be, const char* cfg, bool fused_relu, bool training,
               const std::vector<Tensor>& xs, const std::vector<int>& inputs, const Tensor& dy) {
  proto::LayerConfig lc;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(cfg, &lc));
  auto layer = make_layer(lc, 0);
  layer->set_fused_relu(fused_relu);
  std::vector<Shape> shapes;
  for (int k : inputs) {
    std::vector<int64_t> d(xs[k].shape().dims().begin() + 1, xs[k].shape().dims().end());
    shapes.push_back(Shape(d));
  }
  const Shape out = layer->setup(shapes);
  const bool host = be.device() == Device::cpu;
  auto place = [&](const Tensor& t) { return host ? t.clone() : on_backend(be, t); };
  std::vector<Tensor> params, grads;
  for (const ParamSpec& s : layer->param_specs()) {
    params.push_back(place(random_f32(s.shape, 40 + params.size(), 0.5, s.constant ? 1.0 : 0.0)));
    grads.push_back(place(Tensor::zeros(s.shape, DType::f32)));
  }
  layer->bind(params, grads);
  std::vector<Tensor> xt, dxt;
  for (const Tensor& x : xs) {
    xt.push_back(place(x));
    dxt.push_back(place(Tensor::zeros(x.shape(), DType::f32)));
  }
  std::vector<Tensor*> in, din;
  for (int k : inputs) {
    in.push_back(&xt[k]);
    din.push_back(&dxt[k]);
  }
  std::vector<int64_t> dims{xs[0].dim(0)};
  for (int64_t d : out.dims()) dims.push_back(d);
  Tensor y = host ? Tensor::empty(Shape(dims), DType::f32) : be.empty(Shape(dims), DType::f32);
  StepContext ctx{be, training, 1, 2, nullptr};
  layer->forward(ctx, in, y);
  Tensor g = place(dy);
  layer->backward(ctx, in, y, g, din);
  Pass p;
  p.y = be.to_host(y);
  for (Tensor& t : dxt) p.dx.push_back(be.to_host(t));
  for (Tensor& t : grads) p.dparams.push_back(be.to_host(t));
  layer->state_to_host(be);  // what Net does before the host reads a device-trained state
  be.synchronize();
  for (auto& [name, t] : layer->state()) p.state.push_back(t->clone());
  return p;
}

void expect_gpu_matches_host(Backend& gpu, const char* cfg, bool relu, bool training,
                             const std::vector<Tensor>& xs, const std::vector<int>& inputs,
                             const Tensor& dy, double tol) {
  auto ref = make_backend("cpu-ref");
  const Pass want = run_layer(*ref, cfg, relu, training, xs, inputs, dy);
  const Pass got = run_layer(gpu, cfg, relu, training, xs, inputs, dy);
  SCOPED_TRACE(testing::Message() << cfg << " relu " << relu << " training " << training);
  EXPECT_LE(rel_diff(got.y, want.y), tol) << "output";
  for (size_t k = 0; k < xs.size(); ++k) EXPECT_LE(rel_diff(got.dx[k], want.dx[k]), tol) << "dx " << k;
  for (size_t k = 0; k < want.dparams.size(); ++k)
    EXPECT_LE(rel_diff(got.dparams[k], want.dparams[k]), tol) << "parameter gradient " << k;
  ASSERT_EQ(got.state.size(), want.state.size());
  for (size_t k = 0; k < want.state.size(); ++k)
    EXPECT_LE(rel_diff(got.state[k], want.state[k]), 1e-12) << "running statistic " << k;
}

TEST(GpuLayers, BatchNormMatchesTheHost) {
  REQUIRE_GPU_BACKEND(gpu);
  const Tensor x4 = random_f32({6, 5, 4, 3}, 1, 3.0, 2.0), dy4 = random_f32({6, 5, 4, 3}, 2);
  const Tensor x2 = random_f32({7, 9}, 3, 2.0, -1.0), dy2 = random_f32({7, 9}, 4);
  for (bool relu : {false, true})
    for (bool training : {true, false}) {
      expect_gpu_matches_host(*gpu, R"(name: "bn" batch_norm {})", relu, training, {x4}, {0}, dy4, 1e-5);
      expect_gpu_matches_host(*gpu, R"(name: "bn" batch_norm {})", relu, training, {x2}, {0}, dy2, 1e-5);
      expect_gpu_matches_host(*gpu, R"(name: "bn" batch_norm { per_activation: true })", relu,
                              training, {x4}, {0}, dy4, 1e-5);
    }
  // Large enough that each channel's sums are cut into chunks of images (cuda_reduce.cuh): 37
  // images of 29 x 31 make 3 chunks of 13, 13 and 11 images.
  const Tensor xl = random_f32({37, 3, 29, 31}, 5, 3.0, 2.0), dyl = random_f32({37, 3, 29, 31}, 6);
  expect_gpu_matches_host(*gpu, R"(name: "bn" batch_norm {})", true, true, {xl}, {0}, dyl, 1e-5);
}

// BatchNorm's statistics ops (kept on the device: no readback per step) against CpuBackend's
// on the same f64 inputs. Both round each f64 operation once, but the host compiler may
// contract a multiply-add (the running averages): 1e-14 relative.
// Transposed convolution (GEMMs over f32 sums: 1e-5 relative as the convolutions) and crop
// (copies: exact) against the reference backend; the per-pixel loss's sums and gradient too.
TEST(GpuLayers, DenseLayersAndPixelLossMatchTheReference) {
  REQUIRE_GPU_BACKEND(gpu);
  const Tensor x = random_f32({3, 4, 5, 6}, 1), dy = random_f32({3, 2, 10, 12}, 2);
  expect_gpu_matches_host(*gpu, "name: 'u' deconv { out_channels: 2 kernel: 4 stride: 2 pad: 1 }",
                          false, true, {x}, {0}, dy, 1e-5);
  const Tensor big = random_f32({3, 4, 9, 8}, 3), ref = random_f32({3, 1, 5, 6}, 4);
  expect_gpu_matches_host(*gpu, "name: 'c' crop { offset_h: 2 offset_w: 1 }", false, true,
                          {big, ref}, {0, 1}, random_f32({3, 4, 5, 6}, 5), 0.0);
  auto cpu = make_backend("cpu-ref");
  const Tensor z = random_f32({2, 5, 4, 3}, 6, 2.0);
  Tensor t = Tensor::empty({2, 4, 3}, DType::i32);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<int32_t>()[i] = i % 6 == 2 ? 255 : int32_t(i % 5);
  const std::vector<double> w{1, 2, 0.5, 1, 3};
  Tensor pc = Tensor::empty(z.shape(), DType::f32), dc = pc.clone();
  const LossSums want = cpu->pixel_softmax_ce_forward(z, t, 255, w, 1e-7, pc);
  cpu->pixel_softmax_ce_backward(pc, t, 255, w, 0.25, dc);
  Tensor zg = on_backend(*gpu, z), tg = on_backend(*gpu, t);
  Tensor pg = gpu->empty(z.shape(), DType::f32), dg = gpu->empty(z.shape(), DType::f32);
  const LossSums got = gpu->pixel_softmax_ce_forward(zg, tg, 255, w, 1e-7, pg);
  gpu->pixel_softmax_ce_backward(pg, tg, 255, w, 0.25, dg);
  EXPECT_NEAR(got.loss, want.loss, 1e-6 * want.loss);
  EXPECT_EQ(got.correct, want.correct);
  EXPECT_EQ(got.counted, want.counted);
  EXPECT_LE(rel_diff(gpu->to_host(dg), dc), 1e-6);
}

// The detection loss: the CUDA kernels evaluate the targets cell by cell, the CPU op splats
// each box; both in double over f32 inputs, so the sums agree to rounding (1e-9 relative) and
// the gradient to f32 rounding.
TEST(GpuLayers, DetectionLossMatchesTheReference) {
  REQUIRE_GPU_BACKEND(gpu);
  auto cpu = make_backend("cpu-ref");
  DetectionLossSpec s;
  s.classes = 3, s.stride = 4, s.max_boxes = 3;
  s.heat_channel = 0, s.size_channel = 3, s.offset_channel = 5;
  const Tensor z = random_f32({2, 7, 6, 5}, 7, 1.5);
  Tensor boxes = Tensor::empty({2, 3, 5}, DType::i32);
  const int32_t b[30] = {2, 1, 2, 13, 15, 0, 8, 10, 20, 24, -1, 0, 0, 0, 0,
                         1, 5, 6, 11, 21, -1, 0, 0, 0, 0, -1, 0, 0, 0, 0};
  std::memcpy(boxes.data<int32_t>(), b, sizeof(b));
  for (const bool variant : {false, true}) {
    s.heat_bce = s.size_smooth = variant;
    Tensor dc = Tensor::empty(z.shape(), DType::f32);
    const double want = cpu->detection_loss(z, boxes, s, 0.5, &dc);
    Tensor zg = on_backend(*gpu, z), bg = on_backend(*gpu, boxes);
    Tensor dg = gpu->empty(z.shape(), DType::f32);
    const double got = gpu->detection_loss(zg, bg, s, 0.5, &dg);
    EXPECT_NEAR(got, want, 1e-9 * want);
    EXPECT_EQ(gpu->detection_loss(zg, bg, s, 0.5, nullptr), got);
    EXPECT_LE(rel_diff(gpu->to_host(dg), dc), 1e-6);
  }
}

TEST(GpuLayers, BatchNormStatisticsOpsMatchTheReference) {
  REQUIRE_GPU_BACKEND(gpu);
  auto ref = make_backend("cpu-ref");
  const int64_t C = 37;
  auto f64 = [&](uint64_t seed, double scale, double offset) {
    return random_f32({C}, seed, scale, offset).to(DType::f64);
  };
  const Tensor gamma = random_f32({C}, 1, 0.5, 1.0), beta = random_f32({C}, 2);
  const Tensor sums = f64(3, 50.0, 0.0), sq = f64(4, 20.0, 40.0);
  const Tensor grad_sums = random_f32({2 * C}, 5, 10.0).to(DType::f64);
  struct Out {
    std::vector<Tensor> t;
  };
  // Every op once per mode on `be`; returns every vector it wrote, on the host.
  auto run = [&](Backend& be, double count, bool training) {
    auto dev = [&](const Tensor& t) { return on_backend(be, t.clone()); };
    Tensor rm = dev(f64(6, 1.0, 0.0)), rv = dev(f64(7, 0.5, 1.0));
    const Tensor z = Tensor::zeros({C}, DType::f64), zf = Tensor::zeros({C}, DType::f32);
    Tensor mean = dev(z), invstd = dev(z), scale = dev(z), shift = dev(z), k = dev(z), m = dev(z),
           r = dev(z);
    Tensor gs = dev(grad_sums), dgamma = dev(zf), dbeta = dev(zf);
    const Tensor sq_d = dev(sq), g_d = dev(gamma), b_d = dev(beta);
    if (training) be.bn_mean(dev(sums), count, mean);
    be.bn_normalizer(training ? &sq_d : nullptr, count, 1e-5, 0.9, g_d, b_d, rm, rv, mean, invstd,
                     scale, shift);
    be.bn_param_grads(gs, invstd, dgamma, dbeta);
    be.bn_input_coefficients(gs, invstd, g_d, count, training, k, m, r);
    Out o;
    for (Tensor* t : {&rm, &rv, &mean, &invstd, &scale, &shift, &gs, &dgamma, &dbeta, &k, &m, &r})
      o.t.push_back(be.to_host(*t));
    return o;
  };
  const char* names[] = {"running_mean", "running_var", "mean", "invstd", "scale", "shift",
                         "grad_sums", "dgamma", "dbeta", "k", "m", "r"};
  for (double count : {0.0, 123.0})
    for (bool training : {true, false}) {
      const Out want = run(*ref, count, training), got = run(*gpu, count, training);
      for (size_t i = 0; i < want.t.size(); ++i)
        EXPECT_LE(rel_diff(got.t[i], want.t[i]), 1e-14)
            << names[i] << " count " << count << " training " << training;
    }
}

TEST(GpuLayers, AddConcatAndPoolingAreExact) {
  REQUIRE_GPU_BACKEND(gpu);
  const Tensor a = random_f32({3, 4, 5, 5}, 5), b = random_f32({3, 4, 5, 5}, 6);
  const Tensor c = random_f32({3, 2, 5, 5}, 7), dy = random_f32({3, 4, 5, 5}, 8);
  for (bool relu : {false, true}) {
    expect_gpu_matches_host(*gpu, R"(name: "add" add {})", relu, true, {a, b}, {0, 1}, dy, 0);
    expect_gpu_matches_host(*gpu, R"(name: "add" add {})", relu, true, {a, b}, {0, 1, 0}, dy, 0);
  }
  const Tensor dcat = random_f32({3, 10, 5, 5}, 9), dcat2 = random_f32({3, 8, 5, 5}, 10);
  expect_gpu_matches_host(*gpu, R"(name: "cat" concat {})", false, true, {a, c}, {0, 1, 0}, dcat, 0);
  expect_gpu_matches_host(*gpu, R"(name: "cat" concat {})", false, true, {a, c}, {1, 0, 1}, dcat2, 0);
  const Tensor dgap = random_f32({3, 4}, 11);
  expect_gpu_matches_host(*gpu, R"(name: "gap" global_avg_pool {})", false, true, {a}, {0}, dgap, 0);
}

// testing_util::wide_graph (residual blocks, an Inception concat, a BN with two consumers,
// global pooling): one forward and backward through Net on the GPU against the reference.
TEST(GpuLayers, ResidualAndInceptionGraphMatchesTheReference) {
  REQUIRE_GPU_BACKEND(gpu);
  const int64_t n = 6;
  const Tensor x = random_f32({n, 1, 8, 8}, 9);
  Tensor t = Tensor::empty({n}, DType::i32);
  for (int64_t i = 0; i < n; ++i) t.data<int32_t>()[i] = int32_t(i % 5);
  auto ref = make_backend("cpu-ref");
  const NetPass want = net_pass(wide_graph(), {1, 8, 8}, 5, *ref, x, t);
  const NetPass got = net_pass(wide_graph(), {1, 8, 8}, 5, *gpu, x, t);
  EXPECT_LE(rel_diff(got.logits, want.logits), 1e-4);
  EXPECT_LE(rel_diff(got.grads, want.grads), 1e-4);
}

// ResNet-20 (examples/resnet20_fashion_mnist.prototxt's model and optimizer) on 640 random
// 28x28 images: the first momentum-SGD steps on the GPU and on the CPU from one initialisation
// give the same losses.
TEST(GpuLayers, ResNet20TrainsAsOnTheCpu) {
  REQUIRE_GPU_BACKEND(gpu);
  data::Dataset images;
  images.name = "random";
  images.num_classes = 10;
  images.images = Tensor::empty({640, 1, 28, 28}, DType::u8);
  images.labels = Tensor::empty({640}, DType::i32);
  const RandomStream rs{77, 1};
  for (int64_t k = 0; k < images.images.numel(); ++k)
    images.images.data<uint8_t>()[k] = uint8_t(rs.block(uint64_t(k))[0] & 0xff);
  for (int64_t i = 0; i < 640; ++i) images.labels.data<int32_t>()[i] = int32_t(i % 10);
  const proto::ExperimentConfig cfg =
      load_config(DEEPTRAIN_SOURCE_DIR "/examples/resnet20_fashion_mnist.prototxt");
  std::vector<std::vector<double>> losses;
  for (const char* name : {"cpu", "cuda"}) {
    auto be = name == std::string("cuda") ? std::move(gpu) : make_backend(name);
    Net net(cfg.model(), {1, 28, 28}, 10, DType::f32);
    net.init_params(3);
    auto opt = make_optimizer(cfg.optimizer(), net.num_params(), be.get());
    TrainerOptions to;
    to.seed = 3;
    to.lr = cfg.optimizer().lr() * 0.1f;
    SingleProcessCommunicator one;
    Trainer trainer(to, net, *be, *opt, one);
    std::vector<double> l;
    std::vector<int64_t> ids(128);
    for (int s = 0; s < 5; ++s) {
      for (int64_t i = 0; i < 128; ++i) ids[i] = s * 128 + i;
      l.push_back(trainer.train_step(images, ids.data(), 128).loss_sum / 128.0);
    }
    losses.push_back(l);
  }
  for (size_t s = 0; s < losses[0].size(); ++s)
    EXPECT_NEAR(losses[1][s], losses[0][s], 1e-3 * std::max(1.0, losses[0][s])) << "step " << s;
}

// Batches gathered from a data set in device memory are the host's batches, bit for bit (the
// GPU trainer gathers there unless it augments); a bad sample id is an error naming it.
TEST(GpuData, GatherSamplesIsTheHostGather) {
  REQUIRE_GPU_BACKEND(gpu);
  data::Dataset d;
  d.images = Tensor::empty({50, 1, 7, 9}, DType::u8);
  d.labels = Tensor::empty({50}, DType::i32);
  for (int64_t k = 0; k < d.images.numel(); ++k) d.images.data<uint8_t>()[k] = uint8_t(k * 37 + 11);
  for (int64_t i = 0; i < 50; ++i) d.labels.data<int32_t>()[i] = int32_t((i * 7) % 10);
  const std::vector<int64_t> ids{49, 0, 17, 17, 3, 48, 25};
  const int64_t n = int64_t(ids.size());
  Tensor want_x = Tensor::empty({n, 1, 7, 9}, DType::f32), want_t = Tensor::empty({n}, DType::i32);
  data::gather_batch(d, ids.data(), n, want_x, want_t);

  Tensor images = gpu->empty(d.images.shape(), DType::u8), labels = gpu->empty({50}, DType::i32);
  gpu->copy(d.images, images);
  gpu->copy(d.labels, labels);
  Tensor x = gpu->empty({n, 1, 7, 9}, DType::f32), t = gpu->empty({n}, DType::i32);
  gpu->gather_samples(images, labels, ids.data(), n, x, t);
  const Tensor hx = gpu->to_host(x), ht = gpu->to_host(t);
  EXPECT_EQ(0, std::memcmp(hx.raw(), want_x.raw(), want_x.nbytes()));
  EXPECT_EQ(0, std::memcmp(ht.raw(), want_t.raw(), want_t.nbytes()));
  // The host default (what a CPU backend runs) is the same gather.
  auto cpu = make_backend("cpu-ref");
  Tensor cx = Tensor::empty({n, 1, 7, 9}, DType::f32), ct = Tensor::empty({n}, DType::i32);
  cpu->gather_samples(d.images, d.labels, ids.data(), n, cx, ct);
  EXPECT_EQ(0, std::memcmp(cx.raw(), want_x.raw(), want_x.nbytes()));

  const int64_t bad[2] = {3, 50};
  Tensor x2 = gpu->empty({2, 1, 7, 9}, DType::f32), t2 = gpu->empty({2}, DType::i32);
  try {
    gpu->gather_samples(images, labels, bad, 2, x2, t2);
    ADD_FAILURE() << "sample id 50 of 50 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sample id 50 out of range [0, 50)"), std::string::npos)
        << e.what();
  }
}

}  // namespace
