// Optimizers: the book's update rules against a numpy reference, bitwise; frozen elements;
// state for checkpoints; config validation; independence from the thread count.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/optim/optimizer.h"

namespace deeptrain {
namespace {

const std::vector<proto::OptimizerType> kAllTypes = {proto::SGD,     proto::MOMENTUM, proto::NESTEROV,
                                                     proto::ADAGRAD, proto::RMSPROP,  proto::ADAM,
                                                     proto::ADAMW};

Tensor vec(const std::vector<float>& values) {
  Tensor t = Tensor::empty(Shape{static_cast<int64_t>(values.size())}, DType::f32);
  std::memcpy(t.data<float>(), values.data(), values.size() * sizeof(float));
  return t;
}

std::vector<float> values(const Tensor& t) {
  const float* p = t.data<float>();
  return std::vector<float>(p, p + t.numel());
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.numel() == b.numel() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

proto::OptimizerConfig config(proto::OptimizerType type, float lr = 0.1f, float weight_decay = 0.0f) {
  proto::OptimizerConfig cfg;
  cfg.set_type(type);
  cfg.set_lr(lr);
  cfg.set_weight_decay(weight_decay);
  return cfg;
}

// ---------------------------------------------------------------------------------------------
// The numpy reference: the book's update rules (common/optimizer.py) over 3 steps, run with
// /usr/bin/python3 (numpy 1.24.2); its output is pasted into kReference below.
//
//   import numpy as np
//   f = lambda x: float(np.float32(x))          # config fields are proto floats
//   lr, mom, b1, b2, d, eps = f(0.1), f(0.9), f(0.9), f(0.999), f(0.99), f(1e-7)
//   p0 = np.array([0.5, -1.25, 2.0, 0.0, -0.75], np.float32)
//   gs = [np.array(g, np.float32) for g in ([0.1, -0.2, 0.3, -0.4, 0.5],
//                                            [0.25, 0.5, -0.125, 1.0, -2.0],
//                                            [-0.3, 0.05, 0.2, 0.0, 0.7])]
//   def run(update, wd=0.0, decoupled=False):
//       p, st = p0.copy(), {}
//       for t, g in enumerate(gs, 1):
//           if wd and not decoupled: g = g + f(wd) * p
//           if wd and decoupled: p -= lr * f(wd) * p
//           update(p, g, st, t)
//       return p, st
//   def sgd(p, g, st, t): p -= lr * g
//   def momentum(p, g, st, t):
//       v = st.setdefault('v', np.zeros_like(p)); v[:] = mom * v - lr * g; p += v
//   def nesterov(p, g, st, t):
//       v = st.setdefault('v', np.zeros_like(p))
//       v *= mom; v -= lr * g; p += mom * mom * v; p -= (1 + mom) * lr * g
//   def adagrad(p, g, st, t):
//       h = st.setdefault('h', np.zeros_like(p)); h += g * g; p -= lr * g / (np.sqrt(h) + eps)
//   def rmsprop(p, g, st, t):
//       h = st.setdefault('h', np.zeros_like(p))
//       h *= d; h += (1 - d) * g * g; p -= lr * g / (np.sqrt(h) + eps)
//   def adam(p, g, st, t):
//       m = st.setdefault('m', np.zeros_like(p)); v = st.setdefault('v', np.zeros_like(p))
//       lr_t = lr * np.sqrt(1.0 - b2**t) / (1.0 - b1**t)
//       m += (1 - b1) * (g - m); v += (1 - b2) * (g**2 - v); p -= lr_t * m / (np.sqrt(v) + eps)
//   fmt = lambda a: '{' + ', '.join('%.9gf' % x for x in a) + '}'
//   for name, upd, wd, dec in [('SGD', sgd, 0, 0), ('MOMENTUM', momentum, 0, 0),
//                              ('NESTEROV', nesterov, 0, 0), ('ADAGRAD', adagrad, 0, 0),
//                              ('RMSPROP', rmsprop, 0, 0), ('ADAM', adam, 0, 0),
//                              ('ADAMW', adam, 0.01, 1), ('SGD wd', sgd, 0.01, 0),
//                              ('ADAM wd', adam, 0.01, 0)]:
//       p, st = run(upd, wd, dec)
//       print(name, 'params', fmt(p), *('%s %s' % (k, fmt(v)) for k, v in st.items()))
// ---------------------------------------------------------------------------------------------
const std::vector<float> kParams0 = {0.5f, -1.25f, 2.0f, 0.0f, -0.75f};
const std::vector<std::vector<float>> kGrads = {{0.1f, -0.2f, 0.3f, -0.4f, 0.5f},
                                                {0.25f, 0.5f, -0.125f, 1.0f, -2.0f},
                                                {-0.3f, 0.05f, 0.2f, 0.0f, 0.7f}};

struct Reference {
  const char* label;
  proto::OptimizerType type;
  float weight_decay;
  std::vector<float> params;                          // after 3 steps at lr 0.1
  std::map<std::string, std::vector<float>> state;    // after 3 steps
};

const std::vector<Reference> kReference = {
    {"SGD", proto::SGD, 0.0f, {0.495000005f, -1.28499997f, 1.9625001f, -0.0599999987f, -0.670000017f}, {}},
    {"MOMENTUM", proto::MOMENTUM, 0.0f,
     {0.45539999f, -1.29579997f, 1.92245007f, -0.081599988f, -0.575500011f},
     {{"v", {-0.000599998981f, -0.0337999985f, -0.0330500007f, -0.0575999953f, 0.0694999918f}}}},
    {"NESTEROV", proto::NESTEROV, 0.0f,
     {0.454374015f, -1.35359812f, 1.86593449f, -0.180095986f, -0.456655025f},
     {{"v", {-0.000599998981f, -0.0337999985f, -0.0330500007f, -0.0575999953f, 0.0694999918f}}}},
    {"ADAGRAD", proto::ADAGRAD, 0.0f,
     {0.38157326f, -1.25209284f, 1.88605177f, 0.00715232641f, -0.785137773f},
     {{"h", {0.162499994f, 0.292499989f, 0.14562501f, 1.15999997f, 4.73999977f}}}},
    {"RMSPROP", proto::RMSPROP, 0.0f,
     {-0.68300432f, -1.27209616f, 0.858630478f, 0.0708807111f, -1.10262752f},
     {{"h", {0.00161675853f, 0.00289203739f, 0.00143677625f, 0.0114681497f, 0.0469502062f}}}},
    {"ADAM", proto::ADAM, 0.0f,
     {0.30508247f, -1.23416853f, 1.81142485f, 0.0215945654f, -0.773646951f},
     {{"m", {0.000599998981f, 0.0338000059f, 0.0330500081f, 0.0576000065f, -0.0695000067f}},
      {"v", {0.000162415439f, 0.000292166311f, 0.000145427606f, 0.00115866528f, 0.00473543908f}}}},
    {"ADAMW", proto::ADAMW, 0.01f,
     {0.303877831f, -1.23057795f, 1.80566394f, 0.0214388855f, -0.771255255f},
     {{"m", {0.000599998981f, 0.0338000059f, 0.0330500081f, 0.0576000065f, -0.0695000067f}},
      {"v", {0.000162415439f, 0.000292166311f, 0.000145427606f, 0.00115866528f, 0.00473543908f}}}},
    {"SGD wd", proto::SGD, 0.01f,
     {0.493546456f, -1.28124368f, 1.95655358f, -0.0599799529f, -0.667852342f}, {}},
    {"ADAM wd", proto::ADAM, 0.01f,
     {0.303004056f, -1.22810161f, 1.79896629f, 0.0215066597f, -0.772671282f},
     {{"m", {0.00167064741f, 0.0305609815f, 0.0382398181f, 0.0577457547f, -0.0716662034f}},
      {"v", {0.000163627847f, 0.000284906389f, 0.000161203119f, 0.0011606646f, 0.00475100055f}}}},
};

TEST(Optimizer, MatchesNumpyReferenceBitwiseOverThreeSteps) {
  for (const Reference& ref : kReference) {
    SCOPED_TRACE(ref.label);
    auto opt = make_optimizer(config(ref.type, 0.1f, ref.weight_decay), 5);
    Tensor params = vec(kParams0);
    for (const auto& g : kGrads) opt->step(params, vec(g), 0.1f);
    EXPECT_EQ(opt->steps_taken(), 3);
    EXPECT_EQ(values(params), ref.params);
    std::map<std::string, std::vector<float>> state;
    for (auto& [name, tensor] : opt->state()) state[name] = values(*tensor);
    EXPECT_EQ(state, ref.state);
  }
}

TEST(Optimizer, MomentumFirstStepByHand) {
  // v = 0.9 * 0 - 0.5 * 2 = -1; p = 3 + (-1) = 2. Then v = 0.9 * -1 - 0.5 * 2 = -1.9; p = 0.1.
  auto opt = make_optimizer(config(proto::MOMENTUM, 0.5f), 1);
  Tensor p = vec({3.0f});
  opt->step(p, vec({2.0f}), 0.5f);
  EXPECT_EQ(values(p)[0], 2.0f);
  opt->step(p, vec({2.0f}), 0.5f);
  EXPECT_FLOAT_EQ(values(p)[0], 0.1f);
}

TEST(Optimizer, AdamFirstStepIsAboutLrWhateverTheGradientScale) {
  // At t = 1 the bias correction cancels (1 - b1) in m and sqrt(1 - b2) in sqrt(v): |step| = lr
  // up to eps.
  for (auto type : {proto::ADAM, proto::ADAMW}) {
    auto opt = make_optimizer(config(type, 0.01f), 4);
    Tensor p = vec({0.0f, 0.0f, 0.0f, 0.0f});
    opt->step(p, vec({1e-2f, -1.0f, 30.0f, -1e3f}), 0.01f);
    const std::vector<float> after = values(p);
    EXPECT_NEAR(after[0], -0.01f, 1e-5f);
    EXPECT_NEAR(after[1], 0.01f, 1e-6f);
    EXPECT_NEAR(after[2], -0.01f, 1e-6f);
    EXPECT_NEAR(after[3], 0.01f, 1e-6f);
  }
}

// Frozen elements (lr scale 0) are not read: a -0 parameter stays -0, an inf gradient or weight
// decay does not reach it, and its state stays 0. The other elements (scale 1) update as without
// a scale.
TEST(Optimizer, ZeroLrScaleLeavesParamsBitIdentical) {
  const std::vector<float> params0 = {0.5f, -0.0f, 2.0f, 1e-30f, -0.75f, 3.0f};
  const std::vector<float> scale = {1.0f, 0.0f, 1.0f, 0.0f, 1.0f, 0.0f};
  const Tensor lr_scale = vec(scale);
  const float inf = std::numeric_limits<float>::infinity();
  for (auto type : kAllTypes) {
    SCOPED_TRACE(proto::OptimizerType_Name(type));
    auto frozen = make_optimizer(config(type, 0.1f, 0.01f), 6);
    auto free = make_optimizer(config(type, 0.1f, 0.01f), 6);
    Tensor p_frozen = vec(params0), p_free = vec(params0);
    for (const auto& g : kGrads) {
      Tensor grads = vec({g[0], inf, g[1], g[2], g[3], g[4]});
      frozen->step(p_frozen, grads, 0.1f, &lr_scale);
      free->step(p_free, grads, 0.1f);
    }
    const std::vector<float> a = values(p_frozen), b = values(p_free);
    for (int i = 0; i < 6; ++i) {
      const float expected = scale[i] == 0.0f ? params0[i] : b[i];
      EXPECT_EQ(std::memcmp(&a[i], &expected, sizeof(float)), 0) << "element " << i;
    }
    for (auto& [name, tensor] : frozen->state())
      for (int i : {1, 3, 5}) EXPECT_EQ(values(*tensor)[i], 0.0f) << name << " element " << i;
  }
}

// A scale of 0.5 is exactly a halved learning rate (scaling by a power of two rounds nothing).
TEST(Optimizer, LrScaleMultipliesTheLearningRate) {
  for (auto type : kAllTypes) {
    SCOPED_TRACE(proto::OptimizerType_Name(type));
    auto scaled = make_optimizer(config(type, 0.1f, 0.01f), 5);
    auto halved = make_optimizer(config(type, 0.05f, 0.01f), 5);
    Tensor p_scaled = vec(kParams0), p_halved = vec(kParams0);
    const Tensor half = vec({0.5f, 0.5f, 0.5f, 0.5f, 0.5f});
    for (const auto& g : kGrads) {
      scaled->step(p_scaled, vec(g), 0.1f, &half);
      halved->step(p_halved, vec(g), 0.05f);
    }
    EXPECT_TRUE(bitwise_equal(p_scaled, p_halved));
  }
}

TEST(Optimizer, StateNamesAndLayout) {
  const std::map<proto::OptimizerType, std::vector<std::string>> expected = {
      {proto::SGD, {}},          {proto::MOMENTUM, {"v"}}, {proto::NESTEROV, {"v"}},
      {proto::ADAGRAD, {"h"}},   {proto::RMSPROP, {"h"}},  {proto::ADAM, {"m", "v"}},
      {proto::ADAMW, {"m", "v"}}};
  const std::map<proto::OptimizerType, std::string> names = {
      {proto::SGD, "sgd"},         {proto::MOMENTUM, "momentum"}, {proto::NESTEROV, "nesterov"},
      {proto::ADAGRAD, "adagrad"}, {proto::RMSPROP, "rmsprop"},   {proto::ADAM, "adam"},
      {proto::ADAMW, "adamw"}};
  for (auto type : kAllTypes) {
    SCOPED_TRACE(proto::OptimizerType_Name(type));
    auto opt = make_optimizer(config(type), 7);
    EXPECT_EQ(opt->name(), names.at(type));
    EXPECT_EQ(opt->steps_taken(), 0);
    std::vector<std::string> got;
    for (auto& [name, tensor] : opt->state()) {
      got.push_back(name);
      EXPECT_EQ(tensor->dtype(), DType::f32);
      EXPECT_EQ(tensor->shape(), Shape({7}));
      EXPECT_EQ(values(*tensor), std::vector<float>(7, 0.0f));
    }
    EXPECT_EQ(got, expected.at(type));
  }
}

// A checkpoint (params, state tensors, steps taken) restored into a fresh optimizer continues
// exactly where the original would have.
TEST(Optimizer, RestoredStateContinuesIdentically) {
  for (auto type : kAllTypes) {
    SCOPED_TRACE(proto::OptimizerType_Name(type));
    auto original = make_optimizer(config(type, 0.1f, 0.01f), 5);
    Tensor p = vec(kParams0);
    original->step(p, vec(kGrads[0]), 0.1f);
    original->step(p, vec(kGrads[1]), 0.1f);

    auto restored = make_optimizer(config(type, 0.1f, 0.01f), 5);
    Tensor p_restored = p.clone();
    auto from = original->state(), to = restored->state();
    ASSERT_EQ(from.size(), to.size());
    for (size_t i = 0; i < from.size(); ++i) to[i].second->copy_from(*from[i].second);
    restored->set_steps_taken(original->steps_taken());

    original->step(p, vec(kGrads[2]), 0.1f);
    restored->step(p_restored, vec(kGrads[2]), 0.1f);
    EXPECT_TRUE(bitwise_equal(p, p_restored));
  }
}

// 0 means "default"; spelling the defaults out gives the same run.
TEST(Optimizer, DefaultsEqualSpelledOutValues) {
  for (auto type : kAllTypes) {
    SCOPED_TRACE(proto::OptimizerType_Name(type));
    proto::OptimizerConfig spelled = config(type);
    spelled.set_momentum(0.9f);
    spelled.set_beta1(0.9f);
    spelled.set_beta2(0.999f);
    spelled.set_decay_rate(0.99f);
    spelled.set_eps(1e-7f);
    auto a = make_optimizer(config(type), 5), b = make_optimizer(spelled, 5);
    Tensor pa = vec(kParams0), pb = vec(kParams0);
    for (const auto& g : kGrads) {
      a->step(pa, vec(g), 0.1f);
      b->step(pb, vec(g), 0.1f);
    }
    EXPECT_TRUE(bitwise_equal(pa, pb));
  }
}

std::string config_error(const proto::OptimizerConfig& cfg) {
  try {
    make_optimizer(cfg, 3);
  } catch (const InputError& e) {
    return e.what();
  }
  return "no InputError";
}

TEST(Optimizer, InvalidConfigsNameTheField) {
  proto::OptimizerConfig cfg = config(proto::ADAM);
  cfg.set_type(proto::OPTIMIZER_UNSET);
  EXPECT_EQ(config_error(cfg), "optimizer.type: not set");
  cfg.set_type(static_cast<proto::OptimizerType>(99));
  EXPECT_EQ(config_error(cfg), "optimizer.type: unknown value 99");

  EXPECT_EQ(config_error(config(proto::SGD, 0.0f)), "optimizer.lr: must be > 0, got 0");
  EXPECT_EQ(config_error(config(proto::SGD, -0.5f)), "optimizer.lr: must be > 0, got -0.5");
  EXPECT_EQ(config_error(config(proto::SGD, std::numeric_limits<float>::infinity())),
            "optimizer.lr: must be > 0, got inf");
  EXPECT_EQ(config_error(config(proto::SGD, std::nanf(""))), "optimizer.lr: must be > 0, got nan");

  cfg = config(proto::ADAM);
  cfg.set_beta1(1.5f);
  EXPECT_EQ(config_error(cfg), "optimizer.beta1: must be in [0, 1), got 1.5");
  cfg = config(proto::ADAM);
  cfg.set_beta2(1.0f);
  EXPECT_EQ(config_error(cfg), "optimizer.beta2: must be in [0, 1), got 1");
  cfg = config(proto::MOMENTUM);
  cfg.set_momentum(-0.25f);
  EXPECT_EQ(config_error(cfg), "optimizer.momentum: must be in [0, 1), got -0.25");
  cfg = config(proto::RMSPROP);
  cfg.set_decay_rate(2.0f);
  EXPECT_EQ(config_error(cfg), "optimizer.decay_rate: must be in [0, 1), got 2");
  cfg = config(proto::ADAGRAD);
  cfg.set_eps(-1e-7f);
  EXPECT_EQ(config_error(cfg), "optimizer.eps: must be > 0, got -1e-07");
  EXPECT_EQ(config_error(config(proto::ADAMW, 0.1f, -0.5f)),
            "optimizer.weight_decay: must be >= 0, got -0.5");
}

TEST(Optimizer, MismatchedBuffersAreRejected) {
  auto opt = make_optimizer(config(proto::SGD), 3);
  Tensor p3 = vec({1, 2, 3}), p4 = vec({1, 2, 3, 4});
  EXPECT_THROW(opt->step(p4, vec({1, 2, 3, 4}), 0.1f), Error);
  EXPECT_THROW(opt->step(p3, vec({1, 2}), 0.1f), Error);
  const Tensor bad_scale = vec({1, 1});
  EXPECT_THROW(opt->step(p3, vec({1, 2, 3}), 0.1f, &bad_scale), Error);
  EXPECT_THROW(opt->step(p3, vec({1, 2, 3}), std::nanf("")), Error);
  EXPECT_EQ(opt->steps_taken(), 0);
}

// Each element's update reads and writes only that element, so 1 and 2 threads (different
// partitions, different vector/scalar remainder splits) must agree to the bit.
TEST(Optimizer, ResultIndependentOfThreadCount) {
  const int64_t n = 100000;
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> params0(n), scale(n);
  std::vector<std::vector<float>> grads(3, std::vector<float>(n));
  for (int64_t i = 0; i < n; ++i) {
    params0[i] = normal(rng);
    scale[i] = i % 7 == 0 ? 0.0f : (i % 3 == 0 ? 0.5f : 1.0f);
    for (auto& g : grads) g[i] = normal(rng) * 0.1f;
  }
  const Tensor lr_scale = vec(scale);
  const int threads_before = omp_get_max_threads();
  for (auto type : kAllTypes) {
    SCOPED_TRACE(proto::OptimizerType_Name(type));
    std::vector<Tensor> final_params;
    std::vector<std::unique_ptr<Optimizer>> opts;
    for (int threads : {1, 2}) {
      omp_set_num_threads(threads);
      opts.push_back(make_optimizer(config(type, 0.01f, 1e-3f), n));
      Tensor p = vec(params0);
      for (const auto& g : grads) opts.back()->step(p, vec(g), 0.01f, &lr_scale);
      final_params.push_back(p);
    }
    EXPECT_TRUE(bitwise_equal(final_params[0], final_params[1]));
    auto s1 = opts[0]->state(), s2 = opts[1]->state();
    for (size_t i = 0; i < s1.size(); ++i)
      EXPECT_TRUE(bitwise_equal(*s1[i].second, *s2[i].second)) << s1[i].first;
  }
  omp_set_num_threads(threads_before);
}

}  // namespace
}  // namespace deeptrain
