// The layers of the deeper networks: batch norm (training vs evaluation semantics, running
// statistics, synchronised statistics over simulated ranks), the multi-input joins add and
// concat (central differences in float64), and small layer graphs with residual and concat
// branches checked numerically through Net::backward.
#include <barrier>
#include <cmath>
#include <functional>
#include <thread>

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include "gradcheck_util.h"
#include "net_cases.h"

#include "core/backend/backend.h"
#include "core/net.h"
#include "core/random.h"
#include "core/threads.h"

using namespace deeptrain;

using namespace deeptrain::testing_util;

namespace {

proto::LayerConfig parse_layer(const char* text) {
  proto::LayerConfig lc;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &lc)) << text;
  return lc;
}

// A layer with its own f64 parameters, inputs and a fixed random output weighting R, so that
// the loss sum(y * R) has dL/dy = R.
struct LayerRig {
  std::unique_ptr<Backend> backend = make_backend("cpu-ref");
  std::unique_ptr<Layer> layer;
  std::vector<Tensor> xs, params, grads;
  Tensor y, r;
  int64_t n;

  LayerRig(const char* cfg, const std::vector<Shape>& inputs, int64_t batch, bool fused_relu = false)
      : n(batch) {
    layer = make_layer(parse_layer(cfg), 0);
    layer->set_fused_relu(fused_relu);
    const Shape out = layer->setup(inputs);
    for (const ParamSpec& s : layer->param_specs()) {
      params.push_back(Tensor::empty(s.shape, DType::f64));
      grads.push_back(Tensor::empty(s.shape, DType::f64));
      fill_random(params.back(), 11 + params.size(), 0.5, s.constant ? 1.0 : 0.0);
    }
    layer->bind(params, grads);
    for (size_t k = 0; k < inputs.size(); ++k) {
      xs.push_back(Tensor::empty(batched(n, inputs[k]), DType::f64));
      fill_random(xs.back(), 100 + k);
    }
    y = Tensor::empty(batched(n, out), DType::f64);
    r = Tensor::empty(y.shape(), DType::f64);
    fill_random(r, 2);
  }
  std::vector<Tensor*> inputs() {
    std::vector<Tensor*> in;
    for (Tensor& x : xs) in.push_back(&x);
    return in;
  }
  double loss(StepContext& ctx) {
    layer->forward(ctx, inputs(), y);
    double s = 0;
    for (int64_t i = 0; i < y.numel(); ++i) s += y.data<double>()[i] * r.data<double>()[i];
    return s;
  }
  // Checks the gradients of every input and parameter against central differences.
  void check_all(bool training) {
    StepContext ctx{*backend, training, 1, 2, nullptr};
    loss(ctx);
    std::vector<Tensor> dxs;
    std::vector<Tensor*> din;
    for (Tensor& x : xs) dxs.push_back(Tensor::empty(x.shape(), DType::f64));
    for (Tensor& d : dxs) din.push_back(&d);
    Tensor dy = r.clone();
    layer->backward(ctx, inputs(), y, dy, din);
    std::vector<Tensor> dparams;
    for (Tensor& g : grads) dparams.push_back(g.clone());
    auto f = [&] { return loss(ctx); };
    for (size_t k = 0; k < xs.size(); ++k)
      EXPECT_LE(check(xs[k], dxs[k], f), 1e-7) << layer->type() << " input " << k;
    for (size_t k = 0; k < params.size(); ++k)
      EXPECT_LE(check(params[k], dparams[k], f), 1e-7) << layer->type() << " parameter " << k;
  }
};

// ------------------------------------------------------------------ add, concat: gradients

TEST(AddLayer, TwoAndThreeInputsMatchCentralDifferences) {
  LayerRig(R"(name: "s" add {})", {{3, 4, 4}, {3, 4, 4}}, 2).check_all(true);
  LayerRig(R"(name: "s" add {})", {{5}, {5}, {5}}, 3).check_all(true);
  LayerRig(R"(name: "s" add {})", {{2, 3, 3}, {2, 3, 3}}, 2, /*fused_relu=*/true).check_all(true);
}

TEST(AddLayer, SumsInInputOrderAndRejectsShapeMismatch) {
  LayerRig rig(R"(name: "s" add {})", {{2, 2, 2}, {2, 2, 2}}, 2);
  StepContext ctx{*rig.backend, true};
  rig.layer->forward(ctx, rig.inputs(), rig.y);
  for (int64_t i = 0; i < rig.y.numel(); ++i)
    EXPECT_EQ(rig.y.data<double>()[i], rig.xs[0].data<double>()[i] + rig.xs[1].data<double>()[i]);
  auto layer = make_layer(parse_layer(R"(name: "res1" add {})"), 0);
  try {
    layer->setup({{4, 8, 8}, {8, 4, 4}});
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("res1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("1x1 conv"), std::string::npos) << e.what();
  }
  EXPECT_THROW(layer->setup({{4, 8, 8}}), InputError);
}

TEST(ConcatLayer, ChannelsAndFeaturesMatchCentralDifferences) {
  LayerRig(R"(name: "c" concat {})", {{2, 3, 3}, {1, 3, 3}, {3, 3, 3}}, 2).check_all(true);
  LayerRig(R"(name: "c" concat {})", {{4}, {2}}, 3).check_all(true);
}

TEST(ConcatLayer, PlacesInputsAlongChannelsAndRejectsMismatch) {
  LayerRig rig(R"(name: "c" concat {})", {{1, 2, 2}, {2, 2, 2}}, 2);
  EXPECT_EQ(rig.y.shape(), (Shape{2, 3, 2, 2}));
  StepContext ctx{*rig.backend, true};
  rig.layer->forward(ctx, rig.inputs(), rig.y);
  const double* y = rig.y.data<double>();
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t k = 0; k < 4; ++k) {
      EXPECT_EQ(y[n * 12 + k], rig.xs[0].data<double>()[n * 4 + k]);
      EXPECT_EQ(y[n * 12 + 4 + k], rig.xs[1].data<double>()[n * 8 + k]);
      EXPECT_EQ(y[n * 12 + 8 + k], rig.xs[1].data<double>()[n * 8 + 4 + k]);
    }
  auto layer = make_layer(parse_layer(R"(name: "inc3" concat {})"), 0);
  try {
    layer->setup({{4, 8, 8}, {4, 7, 7}});
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("inc3"), std::string::npos) << e.what();
  }
}

// A forward-only pass (evaluation) keeps no argmax: the same output as a training forward,
// and a backward after it is an error naming the layer, not a gradient from a stale argmax.
TEST(MaxPoolLayer, ForwardOnlyGivesTheSameOutputAndNoBackward) {
  LayerRig rig(R"(name: "pool_fo" max_pool { kernel: 3 stride: 1 pad: 1 })", {{3, 5, 5}}, 2);
  StepContext train{*rig.backend, true};
  rig.layer->forward(train, rig.inputs(), rig.y);
  const Tensor want = rig.y.clone();
  StepContext eval{*rig.backend, false};
  eval.forward_only = true;
  rig.layer->forward(eval, rig.inputs(), rig.y);
  for (int64_t i = 0; i < want.numel(); ++i)
    ASSERT_EQ(rig.y.data<double>()[i], want.data<double>()[i]) << i;
  Tensor dy = rig.y.clone(), dx = Tensor::empty(rig.xs[0].shape(), DType::f64);
  try {
    rig.layer->backward(eval, rig.inputs(), rig.y, dy, {&dx});
    FAIL() << "no error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("pool_fo"), std::string::npos) << e.what();
  }
}

TEST(GlobalAvgPool, IsTheChannelMean) {
  LayerRig rig(R"(name: "g" global_avg_pool {})", {{3, 2, 5}}, 2);
  StepContext ctx{*rig.backend, true};
  rig.layer->forward(ctx, rig.inputs(), rig.y);
  ASSERT_EQ(rig.y.shape(), (Shape{2, 3}));
  for (int64_t p = 0; p < 6; ++p) {
    double s = 0;
    for (int k = 0; k < 10; ++k) s += rig.xs[0].data<double>()[p * 10 + k];
    EXPECT_NEAR(rig.y.data<double>()[p], s / 10, 1e-15);
  }
}

// ------------------------------------------------------------------ batch norm semantics

struct BnStats {
  std::vector<double> mean, var;  // biased, per channel
};
// Per-channel statistics of x (n, C, H, W) computed here, independently of the layer.
BnStats channel_stats(const Tensor& x) {
  const int64_t n = x.dim(0), C = x.dim(1), S = x.numel() / (n * C);
  BnStats s{std::vector<double>(C, 0.0), std::vector<double>(C, 0.0)};
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < S; ++k) s.mean[c] += x.data<double>()[(i * C + c) * S + k];
    s.mean[c] /= double(n * S);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < S; ++k) {
        const double d = x.data<double>()[(i * C + c) * S + k] - s.mean[c];
        s.var[c] += d * d;
      }
    s.var[c] /= double(n * S);
  }
  return s;
}

Tensor* state_of(Layer& l, const std::string& suffix) {
  for (auto& [name, t] : l.state())
    if (name == suffix) return t;
  ADD_FAILURE() << "no state " << suffix;
  return nullptr;
}

TEST(BatchNorm, TrainingNormalisesWithBatchStatisticsAndUpdatesRunningOnes) {
  LayerRig rig(R"(name: "bn" batch_norm {})", {{3, 4, 5}}, 4);
  fill_random(rig.xs[0], 5, 2.0, 3.0);  // mean 3, sd 2: normalisation has work to do
  const BnStats s = channel_stats(rig.xs[0]);
  Tensor& rm = *state_of(*rig.layer, "running_mean");
  Tensor& rv = *state_of(*rig.layer, "running_var");
  ASSERT_EQ(rm.dtype(), DType::f64);
  for (int c = 0; c < 3; ++c) {  // initial state: mean 0, var 1
    EXPECT_EQ(rm.data<double>()[c], 0.0);
    EXPECT_EQ(rv.data<double>()[c], 1.0);
  }
  StepContext ctx{*rig.backend, true};
  rig.layer->forward(ctx, rig.inputs(), rig.y);
  const double* gamma = rig.params[0].data<double>();
  const double* beta = rig.params[1].data<double>();
  for (int64_t i = 0; i < rig.y.numel(); ++i) {
    const int64_t c = (i / 20) % 3;
    const double expect =
        gamma[c] * (rig.xs[0].data<double>()[i] - s.mean[c]) / std::sqrt(s.var[c] + 1e-6) + beta[c];
    EXPECT_NEAR(rig.y.data<double>()[i], expect, 1e-12);
  }
  for (int c = 0; c < 3; ++c) {  // momentum 0.9, the biased batch variance
    EXPECT_NEAR(rm.data<double>()[c], 0.1 * s.mean[c], 1e-14);
    EXPECT_NEAR(rv.data<double>()[c], 0.9 + 0.1 * s.var[c], 1e-14);
  }
  // A second training pass: running = 0.9 * running + 0.1 * batch again.
  rig.layer->forward(ctx, rig.inputs(), rig.y);
  for (int c = 0; c < 3; ++c)
    EXPECT_NEAR(rm.data<double>()[c], 0.9 * 0.1 * s.mean[c] + 0.1 * s.mean[c], 1e-14);
}

TEST(BatchNorm, EvaluationUsesRunningStatisticsAndLeavesThemAlone) {
  LayerRig rig(R"(name: "bn" batch_norm { eps: 0.001 })", {{2, 3, 3}}, 3);
  Tensor& rm = *state_of(*rig.layer, "running_mean");
  Tensor& rv = *state_of(*rig.layer, "running_var");
  rm.data<double>()[0] = 0.5;
  rm.data<double>()[1] = -1.0;
  rv.data<double>()[0] = 4.0;
  rv.data<double>()[1] = 0.25;
  StepContext ctx{*rig.backend, false};
  rig.layer->forward(ctx, rig.inputs(), rig.y);
  const double* gamma = rig.params[0].data<double>();
  const double* beta = rig.params[1].data<double>();
  for (int64_t i = 0; i < rig.y.numel(); ++i) {
    const int64_t c = (i / 9) % 2;
    const double expect = gamma[c] * (rig.xs[0].data<double>()[i] - rm.data<double>()[c]) /
                              std::sqrt(rv.data<double>()[c] + 0.001) + beta[c];
    EXPECT_NEAR(rig.y.data<double>()[i], expect, 1e-13);
  }
  EXPECT_EQ(rm.data<double>()[0], 0.5);
  EXPECT_EQ(rv.data<double>()[1], 0.25);
  // Every output depends only on its own input: the gradient does not couple the batch.
  rig.check_all(false);
  EXPECT_EQ(rm.data<double>()[1], -1.0);
}

TEST(BatchNorm, MomentumZeroMakesEvaluationEqualTraining) {
  LayerRig rig(R"(name: "bn" batch_norm { momentum: 0 })", {{4}}, 5);
  StepContext train{*rig.backend, true}, eval{*rig.backend, false};
  rig.layer->forward(train, rig.inputs(), rig.y);
  const Tensor y_train = rig.y.clone();
  rig.layer->forward(eval, rig.inputs(), rig.y);
  for (int64_t i = 0; i < rig.y.numel(); ++i)
    EXPECT_NEAR(rig.y.data<double>()[i], y_train.data<double>()[i], 1e-12);
}

TEST(BatchNorm, PerActivationNormalisesEachElementOverTheBatch) {
  LayerRig rig(R"(name: "bn" batch_norm { per_activation: true })", {{2, 2, 2}}, 4);
  EXPECT_EQ(rig.params[0].shape(), Shape{8});
  StepContext ctx{*rig.backend, true};
  rig.params[0].data<double>()[3] = 1.0;
  rig.params[1].data<double>()[3] = 0.0;
  rig.layer->forward(ctx, rig.inputs(), rig.y);
  double mean = 0, sq = 0;
  for (int i = 0; i < 4; ++i) mean += rig.y.data<double>()[i * 8 + 3] / 4;
  for (int i = 0; i < 4; ++i) sq += std::pow(rig.y.data<double>()[i * 8 + 3] - mean, 2) / 4;
  EXPECT_NEAR(mean, 0.0, 1e-12);
  EXPECT_NEAR(sq, 1.0, 1e-5);  // var / (var + eps)
}

TEST(BatchNorm, Float32MatchesFloat64) {
  auto backend = make_backend("cpu-ref");
  auto l64 = make_layer(parse_layer(R"(name: "bn" batch_norm {})"), 0);
  auto l32 = make_layer(parse_layer(R"(name: "bn" batch_norm {})"), 0);
  l64->set_fused_relu(true);
  l32->set_fused_relu(true);
  const Shape in{3, 4, 4};
  l64->setup({in});
  l32->setup({in});
  Tensor g64 = Tensor::empty({3}, DType::f64), b64 = Tensor::empty({3}, DType::f64);
  fill_random(g64, 1, 0.3, 1.0);
  fill_random(b64, 2, 0.3);
  Tensor dg64 = Tensor::empty({3}, DType::f64), db64 = Tensor::empty({3}, DType::f64);
  Tensor dg32 = Tensor::empty({3}, DType::f32), db32 = Tensor::empty({3}, DType::f32);
  l64->bind({g64, b64}, {dg64, db64});
  l32->bind({g64.to(DType::f32), b64.to(DType::f32)}, {dg32, db32});
  Tensor x64 = Tensor::empty(batched(5, in), DType::f64), r64 = x64.clone();
  fill_random(x64, 3, 2.0, 1.0);
  fill_random(r64, 4);
  Tensor x32 = x64.to(DType::f32), r32 = r64.to(DType::f32);
  Tensor y64 = Tensor::empty(x64.shape(), DType::f64), y32 = Tensor::empty(x64.shape(), DType::f32);
  Tensor dx64 = y64.clone(), dx32 = y32.clone();
  StepContext ctx{*backend, true};
  l64->forward(ctx, {&x64}, y64);
  l32->forward(ctx, {&x32}, y32);
  l64->backward(ctx, {&x64}, y64, r64, {&dx64});
  l32->backward(ctx, {&x32}, y32, r32, {&dx32});
  for (int64_t i = 0; i < y64.numel(); ++i) {
    EXPECT_NEAR(y32.data<float>()[i], y64.data<double>()[i], 1e-5);
    EXPECT_NEAR(dx32.data<float>()[i], dx64.data<double>()[i], 1e-5);
  }
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(dg32.data<float>()[c], dg64.data<double>()[c], 1e-4);
    EXPECT_NEAR(db32.data<float>()[c], db64.data<double>()[c], 1e-4);
  }
}

TEST(BatchNorm, RejectsBadParameters) {
  EXPECT_THROW(make_layer(parse_layer(R"(name: "bn" batch_norm { momentum: 1.5 })"), 0), InputError);
  EXPECT_THROW(make_layer(parse_layer(R"(name: "bn" batch_norm { eps: 0 })"), 0), InputError);
  auto l = make_layer(parse_layer(R"(name: "bn" batch_norm {})"), 0);
  EXPECT_THROW(l->setup({{2, 3}}), InputError);
}

// Synchronised BN over two simulated ranks (threads, each with half the batch, summing through
// a barrier-based allreduce) equals BN over the whole batch on one rank: outputs, input
// gradients, the sum of the parameter gradients, and the running statistics.
TEST(BatchNorm, SynchronisedOverTwoRanksEqualsOneRankOnTheWholeBatch) {
  const Shape in{3, 2, 3};
  const int64_t n = 6, half = 3;
  const char* cfg = R"(name: "bn" batch_norm { sync: true })";
  LayerRig whole(cfg, {in}, n, /*fused_relu=*/true);
  StepContext ctx{*whole.backend, true};
  whole.layer->forward(ctx, whole.inputs(), whole.y);
  Tensor dx = whole.xs[0].clone(), dy = whole.r.clone();
  whole.layer->backward(ctx, whole.inputs(), whole.y, dy, {&dx});

  // The simulated communicator: every rank deposits its tensor, then every rank sums them.
  std::barrier sync_point(2);
  Tensor slots[2];
  auto allreduce = [&](int rank, Tensor& t) {
    slots[rank] = t.clone();
    sync_point.arrive_and_wait();
    for (int64_t i = 0; i < t.numel(); ++i)
      t.data<double>()[i] = slots[0].data<double>()[i] + slots[1].data<double>()[i];
    sync_point.arrive_and_wait();  // nobody overwrites a slot before both have read it
  };
  struct Rank {
    std::unique_ptr<Layer> layer;
    Tensor gamma, beta, dgamma, dbeta, x, y, dy, dx;
  } ranks[2];
  const int64_t sample = in.numel();
  for (int r = 0; r < 2; ++r) {
    Rank& k = ranks[r];
    k.layer = make_layer(parse_layer(cfg), 0);
    k.layer->set_fused_relu(true);
    k.layer->setup({in});
    k.gamma = whole.params[0].clone();
    k.beta = whole.params[1].clone();
    k.dgamma = Tensor::empty({3}, DType::f64);
    k.dbeta = Tensor::empty({3}, DType::f64);
    k.layer->bind({k.gamma, k.beta}, {k.dgamma, k.dbeta});
    k.x = whole.xs[0].slice_flat(r * half * sample, batched(half, in)).clone();
    k.dy = whole.r.slice_flat(r * half * sample, batched(half, in)).clone();
    k.y = Tensor::empty(k.x.shape(), DType::f64);
    k.dx = Tensor::empty(k.x.shape(), DType::f64);
  }
  auto run = [&](int r) {
    auto backend = make_backend("cpu-ref");
    StepContext c{*backend, true};
    c.allreduce_sum = [&, r](Tensor& t) { allreduce(r, t); };
    c.global_batch = 2 * half;
    Rank& k = ranks[r];
    k.layer->forward(c, {&k.x}, k.y);
    k.layer->backward(c, {&k.x}, k.y, k.dy, {&k.dx});
  };
  std::thread t1(run, 1);
  run(0);
  t1.join();

  for (int r = 0; r < 2; ++r)
    for (int64_t i = 0; i < half * sample; ++i) {
      EXPECT_NEAR(ranks[r].y.data<double>()[i], whole.y.data<double>()[r * half * sample + i], 1e-12);
      EXPECT_NEAR(ranks[r].dx.data<double>()[i], dx.data<double>()[r * half * sample + i], 1e-12);
    }
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(ranks[0].dgamma.data<double>()[c] + ranks[1].dgamma.data<double>()[c],
                whole.grads[0].data<double>()[c], 1e-12);
    EXPECT_NEAR(ranks[0].dbeta.data<double>()[c] + ranks[1].dbeta.data<double>()[c],
                whole.grads[1].data<double>()[c], 1e-12);
    for (const char* s : {"running_mean", "running_var"})
      for (int r = 0; r < 2; ++r)
        EXPECT_NEAR(state_of(*ranks[r].layer, s)->data<double>()[c],
                    state_of(*whole.layer, s)->data<double>()[c], 1e-14) << s;
  }
}

// ------------------------------------------------------------------ graphs through Net

// The gradient of the mean softmax cross-entropy with respect to every parameter of `net`
// (training mode, f64), analytic through Net::backward vs central differences.
void check_net(Net& net, const Shape& input, int64_t n) {
  // Hundreds of tiny forward passes: one thread, or a loaded machine's descheduled OpenMP
  // workers make each parallel region wait (50 ms alone became 80 s on a busy 2-core box).
  struct OneThread {
    int saved = cpu_threads();
    OneThread() { set_cpu_threads(1); }
    ~OneThread() { set_cpu_threads(saved); }
  } one_thread;
  auto backend = make_backend("cpu-ref");
  Tensor x = Tensor::empty(batched(n, input), DType::f64);
  fill_random(x, 8);
  Tensor t = Tensor::empty({n}, DType::i32);
  for (int64_t i = 0; i < n; ++i) t.data<int32_t>()[i] = int32_t(i % net.num_classes());
  StepContext ctx{*backend, true, 5, 0, nullptr};
  const int m = net.num_classes();
  Tensor probs = Tensor::empty({n, m}, DType::f64), dlogits = Tensor::empty({n, m}, DType::f64);
  auto loss = [&] {
    return backend->softmax_ce_forward(net.forward(ctx, x), t, 0.0, probs, nullptr) / double(n);
  };
  loss();
  backend->softmax_ce_backward(probs, t, 1.0 / double(n), dlogits);
  net.compute_grads().fill_zero();
  net.backward(ctx, dlogits);
  const Tensor analytic = net.compute_grads().clone();
  // A spread of up to 16 elements of every parameter tensor (all of them take seconds).
  check_net_params(net, analytic, loss, 16);
}

const ParamEntry* find_param(const Net& net, const std::string& name) {
  for (const ParamEntry& e : net.param_entries())
    if (e.name == name) return &e;
  return nullptr;
}

bool fused(const Net& net, const std::string& layer) {
  for (const auto& l : net.layers())
    if (l->name() == layer) return l->fused_relu();
  ADD_FAILURE() << "no layer " << layer;
  return false;
}

// A residual block with an identity shortcut, an Inception-style concat of 1x1, 3x3 and
// pool branches, a strided block with a 1x1 projection shortcut, BN, GAP and a classifier.
const char* kGraph = R"(
  layer { name: "stem" conv { out_channels: 4 kernel: 3 pad: 1 } }
  layer { name: "stem_bn" batch_norm {} }
  layer { name: "stem_relu" relu {} }
  layer { name: "a1" conv { out_channels: 4 kernel: 3 pad: 1 no_bias: true } }
  layer { name: "a1_bn" batch_norm {} }
  layer { name: "a1_relu" relu {} }
  layer { name: "a2" conv { out_channels: 4 kernel: 3 pad: 1 } }
  layer { name: "res" input: "a2" input: "stem_relu" add {} }
  layer { name: "res_relu" relu {} }
  layer { name: "b1" input: "res_relu" conv { out_channels: 2 kernel: 1 } }
  layer { name: "b3" input: "res_relu" conv { out_channels: 3 kernel: 3 pad: 1 } }
  layer { name: "bp" input: "res_relu" max_pool { kernel: 3 stride: 1 pad: 1 } }
  layer { name: "cat" input: "b1" input: "b3" input: "bp" concat {} }
  layer { name: "down" input: "cat" conv { out_channels: 5 kernel: 3 stride: 2 pad: 1 } }
  layer { name: "proj" input: "cat" conv { out_channels: 5 kernel: 1 stride: 2 } }
  layer { name: "res2" input: "down" input: "proj" add {} }
  layer { name: "gap" global_avg_pool {} }
  layer { name: "fc" affine { out_features: 3 } }
)";

TEST(NetGraph, ResidualAndConcatBranchesMatchCentralDifferences) {
  proto::ModelConfig mc;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(kGraph, &mc));
  Net net(mc, {2, 6, 6}, 3, DType::f64);
  net.init_params(7);
  // gamma starts at 1, beta at 0; running statistics are state, not parameters.
  const ParamEntry* gamma = find_param(net, "stem_bn.gamma");
  ASSERT_TRUE(gamma && find_param(net, "stem_bn.beta"));
  EXPECT_EQ(net.params().data<double>()[gamma->offset], 1.0);
  EXPECT_FALSE(find_param(net, "stem_bn.running_mean"));
  // ReLUs after BN (single consumer) and after the residual add are fused into them, even when
  // the fused output (stem_relu, res_relu) feeds several layers.
  EXPECT_TRUE(fused(net, "stem_bn"));
  EXPECT_TRUE(fused(net, "a1_bn"));
  EXPECT_TRUE(fused(net, "res"));
  EXPECT_EQ(net.summary().find("(fused into the layer before)") != std::string::npos, true);
  check_net(net, {2, 6, 6}, 3);
}

// A BN output read by a ReLU and by another layer: no fusion (the other reader needs the
// values before the ReLU), and the two gradients add up.
TEST(NetGraph, BatchNormWithTwoConsumersIsNotFused) {
  proto::ModelConfig mc;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(R"(
    layer { name: "c" conv { out_channels: 3 kernel: 3 pad: 1 } }
    layer { name: "n" batch_norm {} }
    layer { name: "r" relu {} }
    layer { name: "g1" input: "r" global_avg_pool {} }
    layer { name: "g2" input: "n" global_avg_pool {} }
    layer { name: "cat" input: "g1" input: "g2" concat {} }
    layer { name: "fc" affine { out_features: 4 } }
  )", &mc));
  Net net(mc, {2, 5, 5}, 4, DType::f64);
  net.init_params(3);
  EXPECT_FALSE(fused(net, "n"));
  check_net(net, {2, 5, 5}, 4);
}

}  // namespace

namespace {

// The same graph on the fast CPU backend (oneDNN, blocked layouts between its convolutions,
// where built) and on the reference: the new layers read blocked inputs and gradients through
// to_plain, so logits and every gradient agree to float32 accuracy.
TEST(NetGraph, FastBackendMatchesTheReference) {
  proto::ModelConfig mc;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(kGraph, &mc));
  const int64_t n = 4;
  Tensor x = Tensor::empty({n, 2, 6, 6}, DType::f64);
  fill_random(x, 8);
  Tensor t = Tensor::empty({n}, DType::i32);
  for (int64_t i = 0; i < n; ++i) t.data<int32_t>()[i] = int32_t(i % 3);
  auto ref = make_backend("cpu-ref"), fast = make_backend("cpu");
  const NetPass want = net_pass(mc, {2, 6, 6}, 3, *ref, x.to(DType::f32), t);
  const NetPass got = net_pass(mc, {2, 6, 6}, 3, *fast, x.to(DType::f32), t);
  expect_close(got.logits, want.logits, 1e-4, "logits");
  expect_close(got.grads, want.grads, 1e-4, "gradients");
}

}  // namespace
