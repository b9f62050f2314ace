// The book's optimizers (common/optimizer.py) plus AdamW, over flat f32 buffers.
//
// Reproducibility: scalar coefficients (lr_t, 1 - beta1, ...) are computed in double and rounded
// to float once, as numpy does when a Python float meets a float32 array; the per-element math is
// float, in the book's operation order. Each element's update reads and writes only that element,
// so the partition among threads cannot change the result.
#include "core/optim/optimizer.h"

#include <cmath>

// A compiler that fuses a*b+c into one FMA rounds once where numpy rounds twice, and may fuse in
// the vectorised loop body but not in its scalar remainder. Keep every operation separately rounded.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace deeptrain {
namespace {

// Below this many elements, waking the thread team costs more than the update.
constexpr int64_t kParallelMin = int64_t{1} << 15;

// An OptimizerConfig after validation, with defaults filled in.
struct Hyper {
  double momentum, beta1, beta2, eps, decay_rate, weight_decay;
};

// The raw buffers of one step. scale is null when every element has lr scale 1.
struct StepBuffers {
  float* params;
  const float* grads;
  const float* scale;
  int64_t n;
};

// Calls update(i, s, g) for each element i whose lr scale s is not 0 (frozen elements are skipped
// whole: params, state, weight decay). g is the gradient with L2 weight decay added: g + l2 * p.
template <class Update>
void for_each_unfrozen(const StepBuffers& b, float l2, Update&& update) {
#pragma omp parallel for simd schedule(static) if (parallel : b.n >= kParallelMin)
  for (int64_t i = 0; i < b.n; ++i) {
    const float s = b.scale ? b.scale[i] : 1.0f;
    if (s == 0.0f) continue;
    // Only when asked: adding 0 * p would still turn a -0 gradient into +0.
    const float g = l2 != 0.0f ? b.grads[i] + l2 * b.params[i] : b.grads[i];
    update(i, s, g);
  }
}

// What every optimizer here shares: the hyperparameters, the element count, the step checks.
class FlatOptimizer : public Optimizer {
 protected:
  FlatOptimizer(const Hyper& h, int64_t n, Backend* device) : hyper_(h), n_(n), device_(device) {}

  Tensor zero_state() const {
    return device_ ? device_->zeros(Shape{n_}, DType::f32) : Tensor::zeros(Shape{n_}, DType::f32);
  }

  // With a device backend the whole update is its fused kernel; returns false on the host.
  bool step_on_device(OptimizerStep::Rule rule, Tensor& params, const Tensor& grads, float lr,
                      const Tensor* lr_scale, Tensor* state0 = nullptr, Tensor* state1 = nullptr) {
    if (!device_) return false;
    check_step(params, grads, lr, lr_scale);
    ++t_;
    const OptimizerStep s{rule,
                          lr,
                          float(hyper_.momentum),
                          float(hyper_.beta1),
                          float(hyper_.beta2),
                          float(hyper_.decay_rate),
                          float(hyper_.eps),
                          float(hyper_.weight_decay),
                          t_};
    if (!device_->optimizer_step(s, params, grads, state0, state1, lr_scale))
      fail("optimizer {}: backend '{}' has no fused update for it", name(), device_->name());
    return true;
  }
  // L2 coefficient for for_each_unfrozen (AdamW passes 0: its decay is decoupled).
  float l2() const { return static_cast<float>(hyper_.weight_decay); }

  // Checks the buffers against the layout this optimizer was made for (host and device alike).
  void check_step(const Tensor& params, const Tensor& grads, float lr, const Tensor* lr_scale) const {
    DT_CHECK(params.numel() == n_, "{}: params have {} elements, optimizer made for {}", name(),
             params.numel(), n_);
    DT_CHECK(grads.numel() == n_, "{}: grads have {} elements, params {}", name(), grads.numel(), n_);
    DT_CHECK(std::isfinite(lr) && lr >= 0.0f, "{}: learning rate {}", name(), lr);
    if (lr_scale)
      DT_CHECK(lr_scale->numel() == n_, "{}: lr_scale has {} elements, params {}", name(),
               lr_scale->numel(), n_);
  }

  // check_step, and counts the step.
  StepBuffers begin_step(Tensor& params, const Tensor& grads, float lr, const Tensor* lr_scale) {
    check_step(params, grads, lr, lr_scale);
    const float* scale = lr_scale ? lr_scale->data<float>() : nullptr;
    ++t_;
    return {params.data<float>(), grads.data<float>(), scale, n_};
  }

  Hyper hyper_;
  int64_t n_;
  Backend* device_;
};

// p -= lr g
class Sgd final : public FlatOptimizer {
 public:
  Sgd(const Hyper& h, int64_t n, Backend* d) : FlatOptimizer(h, n, d) {}
  const char* name() const override { return "sgd"; }
  std::vector<std::pair<std::string, Tensor*>> state() override { return {}; }

  void step(Tensor& params, const Tensor& grads, float lr, const Tensor* lr_scale) override {
    if (step_on_device(OptimizerStep::Rule::sgd, params, grads, lr, lr_scale)) return;
    const StepBuffers b = begin_step(params, grads, lr, lr_scale);
    for_each_unfrozen(b, l2(), [&](int64_t i, float s, float g) { b.params[i] -= (lr * s) * g; });
  }
};

// v = momentum v - lr g; p += v
class Momentum final : public FlatOptimizer {
 public:
  Momentum(const Hyper& h, int64_t n, Backend* d) : FlatOptimizer(h, n, d), v_(zero_state()) {}
  const char* name() const override { return "momentum"; }
  std::vector<std::pair<std::string, Tensor*>> state() override { return {{"v", &v_}}; }

  void step(Tensor& params, const Tensor& grads, float lr, const Tensor* lr_scale) override {
    if (step_on_device(OptimizerStep::Rule::momentum, params, grads, lr, lr_scale, &v_)) return;
    const StepBuffers b = begin_step(params, grads, lr, lr_scale);
    const float momentum = static_cast<float>(hyper_.momentum);
    float* v = v_.data<float>();
    for_each_unfrozen(b, l2(), [&](int64_t i, float s, float g) {
      v[i] = momentum * v[i] - (lr * s) * g;
      b.params[i] += v[i];
    });
  }

 private:
  Tensor v_;
};

// The book's Nesterov form: v *= m; v -= lr g; p += m m v; p -= (1 + m) lr g
class Nesterov final : public FlatOptimizer {
 public:
  Nesterov(const Hyper& h, int64_t n, Backend* d) : FlatOptimizer(h, n, d), v_(zero_state()) {}
  const char* name() const override { return "nesterov"; }
  std::vector<std::pair<std::string, Tensor*>> state() override { return {{"v", &v_}}; }

  void step(Tensor& params, const Tensor& grads, float lr, const Tensor* lr_scale) override {
    if (step_on_device(OptimizerStep::Rule::nesterov, params, grads, lr, lr_scale, &v_)) return;
    const StepBuffers b = begin_step(params, grads, lr, lr_scale);
    const float momentum = static_cast<float>(hyper_.momentum);
    const float momentum_sq = static_cast<float>(hyper_.momentum * hyper_.momentum);
    const float lookahead_lr = static_cast<float>((1.0 + hyper_.momentum) * lr);
    float* v = v_.data<float>();
    for_each_unfrozen(b, l2(), [&](int64_t i, float s, float g) {
      v[i] *= momentum;
      v[i] -= (lr * s) * g;
      b.params[i] += momentum_sq * v[i];
      b.params[i] -= (lookahead_lr * s) * g;
    });
  }

 private:
  Tensor v_;
};

// h += g^2; p -= lr g / (sqrt(h) + eps)
class AdaGrad final : public FlatOptimizer {
 public:
  AdaGrad(const Hyper& h, int64_t n, Backend* d) : FlatOptimizer(h, n, d), h_sum_(zero_state()) {}
  const char* name() const override { return "adagrad"; }
  std::vector<std::pair<std::string, Tensor*>> state() override { return {{"h", &h_sum_}}; }

  void step(Tensor& params, const Tensor& grads, float lr, const Tensor* lr_scale) override {
    if (step_on_device(OptimizerStep::Rule::adagrad, params, grads, lr, lr_scale, &h_sum_)) return;
    const StepBuffers b = begin_step(params, grads, lr, lr_scale);
    const float eps = static_cast<float>(hyper_.eps);
    float* h = h_sum_.data<float>();
    for_each_unfrozen(b, l2(), [&](int64_t i, float s, float g) {
      h[i] += g * g;
      b.params[i] -= (lr * s) * g / (std::sqrt(h[i]) + eps);
    });
  }

 private:
  Tensor h_sum_;  // running sum of squared gradients
};

// h = decay h + (1 - decay) g^2; p -= lr g / (sqrt(h) + eps)
class RmsProp final : public FlatOptimizer {
 public:
  RmsProp(const Hyper& h, int64_t n, Backend* d) : FlatOptimizer(h, n, d), h_avg_(zero_state()) {}
  const char* name() const override { return "rmsprop"; }
  std::vector<std::pair<std::string, Tensor*>> state() override { return {{"h", &h_avg_}}; }

  void step(Tensor& params, const Tensor& grads, float lr, const Tensor* lr_scale) override {
    if (step_on_device(OptimizerStep::Rule::rmsprop, params, grads, lr, lr_scale, &h_avg_)) return;
    const StepBuffers b = begin_step(params, grads, lr, lr_scale);
    const float decay = static_cast<float>(hyper_.decay_rate);
    const float one_minus_decay = static_cast<float>(1.0 - hyper_.decay_rate);
    const float eps = static_cast<float>(hyper_.eps);
    float* h = h_avg_.data<float>();
    for_each_unfrozen(b, l2(), [&](int64_t i, float s, float g) {
      // The book's order: h *= d; h += (1 - d) * g * g
      h[i] *= decay;
      h[i] += one_minus_decay * g * g;
      b.params[i] -= (lr * s) * g / (std::sqrt(h[i]) + eps);
    });
  }

 private:
  Tensor h_avg_;  // moving average of squared gradients
};

// The book's Adam form, bias correction folded into the step size:
//   lr_t = lr sqrt(1 - b2^t) / (1 - b1^t); m += (1-b1)(g - m); v += (1-b2)(g^2 - v);
//   p -= lr_t m / (sqrt(v) + eps)
// AdamW (decoupled) first does p -= lr wd p, with the schedule's lr, as PyTorch does.
class Adam final : public FlatOptimizer {
 public:
  Adam(const Hyper& h, int64_t n, bool decoupled, Backend* d)
      : FlatOptimizer(h, n, d), decoupled_(decoupled), m_(zero_state()), v_(zero_state()) {}
  const char* name() const override { return decoupled_ ? "adamw" : "adam"; }
  std::vector<std::pair<std::string, Tensor*>> state() override { return {{"m", &m_}, {"v", &v_}}; }

  void step(Tensor& params, const Tensor& grads, float lr, const Tensor* lr_scale) override {
    if (step_on_device(decoupled_ ? OptimizerStep::Rule::adamw : OptimizerStep::Rule::adam, params, grads, lr,
                       lr_scale, &m_, &v_))
      return;
    const StepBuffers b = begin_step(params, grads, lr, lr_scale);
    const double t = static_cast<double>(t_);
    const float lr_t = static_cast<float>(lr * std::sqrt(1.0 - std::pow(hyper_.beta2, t)) /
                                          (1.0 - std::pow(hyper_.beta1, t)));
    const float one_minus_beta1 = static_cast<float>(1.0 - hyper_.beta1);
    const float one_minus_beta2 = static_cast<float>(1.0 - hyper_.beta2);
    const float eps = static_cast<float>(hyper_.eps);
    const float decoupled_decay = decoupled_ ? static_cast<float>(lr * hyper_.weight_decay) : 0.0f;
    float* m = m_.data<float>();
    float* v = v_.data<float>();
    for_each_unfrozen(b, decoupled_ ? 0.0f : l2(), [&](int64_t i, float s, float g) {
      if (decoupled_decay != 0.0f) b.params[i] -= (decoupled_decay * s) * b.params[i];
      m[i] += one_minus_beta1 * (g - m[i]);
      v[i] += one_minus_beta2 * (g * g - v[i]);
      b.params[i] -= (lr_t * s) * m[i] / (std::sqrt(v[i]) + eps);
    });
  }

 private:
  bool decoupled_;
  Tensor m_;  // first moment
  Tensor v_;  // second moment
};

// 0 in a proto3 float means "not set": the default applies. Defaults are floats, as if the user had
// typed them, so a config that spells out a default trains identically to one that omits it.
double or_default(float value, float fallback) { return value == 0.0f ? fallback : value; }

void check_unit_interval(const char* field, float value) {
  if (!(value >= 0.0f && value < 1.0f)) fail_input("optimizer.{}: must be in [0, 1), got {}", field, value);
}

}  // namespace

std::unique_ptr<Optimizer> make_optimizer(const proto::OptimizerConfig& cfg, int64_t n,
                                          Backend* device) {
  if (device && device->device() == Device::cpu) device = nullptr;  // host memory: update here
  DT_CHECK(n >= 0, "optimizer for {} parameters", n);
  if (cfg.type() == proto::OPTIMIZER_UNSET) fail_input("optimizer.type: not set");
  if (!(cfg.lr() > 0.0f && std::isfinite(cfg.lr()))) fail_input("optimizer.lr: must be > 0, got {}", cfg.lr());
  // Fields that do not apply to the chosen type are still checked: a bad value there is a typo.
  check_unit_interval("momentum", cfg.momentum());
  check_unit_interval("beta1", cfg.beta1());
  check_unit_interval("beta2", cfg.beta2());
  check_unit_interval("decay_rate", cfg.decay_rate());
  if (!(cfg.eps() >= 0.0f && std::isfinite(cfg.eps())))
    fail_input("optimizer.eps: must be > 0, got {}", cfg.eps());
  if (!(cfg.weight_decay() >= 0.0f && std::isfinite(cfg.weight_decay())))
    fail_input("optimizer.weight_decay: must be >= 0, got {}", cfg.weight_decay());
  const Hyper h{or_default(cfg.momentum(), 0.9f),    or_default(cfg.beta1(), 0.9f),
                or_default(cfg.beta2(), 0.999f),     or_default(cfg.eps(), 1e-7f),
                or_default(cfg.decay_rate(), 0.99f), cfg.weight_decay()};

  switch (cfg.type()) {
    case proto::SGD: return std::make_unique<Sgd>(h, n, device);
    case proto::MOMENTUM: return std::make_unique<Momentum>(h, n, device);
    case proto::NESTEROV: return std::make_unique<Nesterov>(h, n, device);
    case proto::ADAGRAD: return std::make_unique<AdaGrad>(h, n, device);
    case proto::RMSPROP: return std::make_unique<RmsProp>(h, n, device);
    case proto::ADAM: return std::make_unique<Adam>(h, n, /*decoupled=*/false, device);
    case proto::ADAMW: return std::make_unique<Adam>(h, n, /*decoupled=*/true, device);
    default: fail_input("optimizer.type: unknown value {}", static_cast<int>(cfg.type()));
  }
}

}  // namespace deeptrain
