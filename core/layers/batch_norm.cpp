// Batch normalisation (Ioffe & Szegedy 2015; the book's BatchNormalization, ch. 6.3).
//
// The input is viewed as (N, C, S): per channel of a 4-d input (C channels, S = H * W
// positions), per feature of a 2-d one (S = 1), or, with per_activation, per element of a
// 4-d input as the book's code does (C * H * W features, S = 1).
//   training:   y = gamma * (x - mean_B) / sqrt(var_B + eps) + beta, over the batch B, and
//               running = momentum * running + (1 - momentum) * batch statistic;
//   evaluation: the same with the running statistics.
// The variance is the biased one (divided by the count), in the normalisation and in the
// running variance alike, as in the book. running_var starts at 1 (the book starts at 0,
// which makes evaluation before any training step divide by sqrt(eps)).
//
// Synchronised BN: with `sync` and a StepContext::allreduce_sum, the per-channel sums are
// summed over all ranks, so the statistics are those of the global batch and the result does
// not depend on the rank count. Each channel's sums run sequentially in f64 inside one
// thread, so the thread count does not change them either.
#include <cmath>
#include <cstdlib>

#include "core/layers/extra_layers.h"

namespace deeptrain {
namespace {

constexpr int64_t kParallelMin = int64_t{1} << 14;  // elements below which threads cost more

// A config float as the decimal written in the file (0.9f -> 0.9, not 0.899999976), so the
// statistics are the ones a user (or another framework) computes by hand.
double decimal(float f) { return std::strtod(fmt::format("{}", f).c_str(), nullptr); }

class BatchNorm : public Layer {
 public:
  BatchNorm(const proto::LayerConfig& cfg, int index) : Layer(cfg.name(), index), p_(cfg.batch_norm()) {
    momentum_ = p_.has_momentum() ? decimal(p_.momentum()) : 0.9;
    eps_ = p_.has_eps() ? decimal(p_.eps()) : 1e-6;  // the book's 10e-7
    if (!(momentum_ >= 0.0 && momentum_ <= 1.0))
      fail_input("layer '{}': batch_norm.momentum must be in [0, 1], got {}", name_, momentum_);
    if (!(eps_ > 0.0)) fail_input("layer '{}': batch_norm.eps must be > 0, got {}", name_, eps_);
  }
  const char* type() const override { return "batch_norm"; }
  bool can_fuse_relu() const override { return true; }

  Shape setup(const std::vector<Shape>& in) override {
    if (in.size() != 1) fail_input("layer '{}': expects 1 input, got {}", name_, in.size());
    const Shape& s = in[0];
    if (s.rank() != 1 && s.rank() != 3)
      fail_input("layer '{}': batch_norm expects (C, H, W) or (D) per sample, got {}", name_, s.str());
    const bool per_channel = s.rank() == 3 && !p_.per_activation();
    channels_ = per_channel ? s[0] : s.numel();
    spatial_ = per_channel ? s[1] * s[2] : 1;
    running_mean_ = Tensor::zeros({channels_}, DType::f64);
    running_var_ = Tensor::empty({channels_}, DType::f64);
    for (int64_t c = 0; c < channels_; ++c) running_var_.data<double>()[c] = 1.0;
    return s;
  }
  std::vector<ParamSpec> param_specs() const override {
    return {{"gamma", {channels_}, proto::INIT_DEFAULT, channels_, false, 1.0},
            {"beta", {channels_}, proto::INIT_DEFAULT, channels_, true}};
  }
  std::vector<std::pair<std::string, Tensor*>> state() override {
    return {{"running_mean", &running_mean_}, {"running_var", &running_var_}};
  }

  void forward(StepContext& ctx, const std::vector<Tensor*>& in, Tensor& out) override {
    x_ = ctx.backend.to_plain(*in[0]);
    if (x_.dtype() == DType::f64) forward_impl<double>(ctx, out);
    else forward_impl<float>(ctx, out);
    out.set_layout(Layout::plain);
  }
  void backward(StepContext& ctx, const std::vector<Tensor*>& in, const Tensor& out,
                Tensor& dout, const std::vector<Tensor*>& din) override {
    const Tensor dy = ctx.backend.to_plain(dout);
    if (x_.dtype() == DType::f64) backward_impl<double>(ctx, out, dy, din[0]);
    else backward_impl<float>(ctx, out, dy, din[0]);
    if (din[0]) din[0]->set_layout(Layout::plain);
  }

 private:
  bool synced(const StepContext& ctx) const { return p_.sync() && ctx.allreduce_sum; }

  // Per-channel sums of f(n, c, s) over n and s, one channel per thread iteration.
  template <class F>
  void channel_sums(int64_t n, double* sums, F&& f) const {
    const int64_t C = channels_, S = spatial_;
#pragma omp parallel for schedule(static) if (n * C * S >= kParallelMin)
    for (int64_t c = 0; c < C; ++c) {
      double acc = 0;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t s = 0; s < S; ++s) acc += f((i * C + c) * S + s, c);
      sums[c] = acc;
    }
  }

  template <class T>
  void forward_impl(StepContext& ctx, Tensor& out) {
    const int64_t n = x_.dim(0), C = channels_, S = spatial_;
    const T* x = x_.data<T>();
    mean_.assign(C, 0.0);
    invstd_.assign(C, 0.0);
    training_ = ctx.training;
    if (training_) {
      // Sums (and the sample count) first, the centred squares second: two passes, so a
      // large mean does not swallow the variance.
      Tensor sums = Tensor::zeros({C + 1}, DType::f64);
      double* sd = sums.data<double>();
      channel_sums(n, sd, [&](int64_t i, int64_t) { return double(x[i]); });
      sd[C] = double(n * S);
      if (synced(ctx)) ctx.allreduce_sum(sums);
      count_ = sd[C];
      for (int64_t c = 0; c < C; ++c) mean_[c] = count_ > 0 ? sd[c] / count_ : 0.0;
      Tensor sq = Tensor::zeros({C}, DType::f64);
      double* qd = sq.data<double>();
      channel_sums(n, qd, [&](int64_t i, int64_t c) {
        const double d = double(x[i]) - mean_[c];
        return d * d;
      });
      if (synced(ctx)) ctx.allreduce_sum(sq);
      double* rm = running_mean_.data<double>();
      double* rv = running_var_.data<double>();
      for (int64_t c = 0; c < C; ++c) {
        const double var = count_ > 0 ? qd[c] / count_ : 0.0;
        invstd_[c] = 1.0 / std::sqrt(var + eps_);
        rm[c] = momentum_ * rm[c] + (1.0 - momentum_) * mean_[c];
        rv[c] = momentum_ * rv[c] + (1.0 - momentum_) * var;
      }
    } else {
      for (int64_t c = 0; c < C; ++c) {
        mean_[c] = running_mean_.data<double>()[c];
        invstd_[c] = 1.0 / std::sqrt(running_var_.data<double>()[c] + eps_);
      }
    }
    const T* gamma = params_[0].data<T>();
    const T* beta = params_[1].data<T>();
    T* y = out.data<T>();
    const bool relu = fused_relu_;
#pragma omp parallel for schedule(static) if (n * C * S >= kParallelMin)
    for (int64_t nc = 0; nc < n * C; ++nc) {
      const int64_t c = nc % C;
      const double scale = double(gamma[c]) * invstd_[c], shift = double(beta[c]);
      for (int64_t s = 0; s < S; ++s) {
        const int64_t i = nc * S + s;
        const T v = T((double(x[i]) - mean_[c]) * scale + shift);
        y[i] = relu && !(v > T(0)) ? T(0) : v;
      }
    }
  }

  template <class T>
  void backward_impl(StepContext& ctx, const Tensor& out, const Tensor& dout, Tensor* din) {
    const int64_t n = x_.dim(0), C = channels_, S = spatial_;
    const T* x = x_.data<T>();
    const T* y = out.data<T>();
    const T* dy = dout.data<T>();
    const bool relu = fused_relu_;
    // The gradient reaching the normalisation: through the fused ReLU's mask if there is one.
    auto g = [&](int64_t i) { return relu && !(y[i] > T(0)) ? 0.0 : double(dy[i]); };
    auto xhat = [&](int64_t i, int64_t c) { return (double(x[i]) - mean_[c]) * invstd_[c]; };

    // sums: [sum g (C) | sum g * xhat (C)], this rank's; they are dbeta and dgamma.
    Tensor sums = Tensor::zeros({2 * C}, DType::f64);
    double* sd = sums.data<double>();
    channel_sums(n, sd, [&](int64_t i, int64_t) { return g(i); });
    channel_sums(n, sd + C, [&](int64_t i, int64_t c) { return g(i) * xhat(i, c); });
    T* dgamma = grads_[0].data<T>();
    T* dbeta = grads_[1].data<T>();
    for (int64_t c = 0; c < C; ++c) {
      dbeta[c] = T(sd[c]);
      dgamma[c] = T(sd[C + c]);
    }
    if (!din) return;
    const T* gamma = params_[0].data<T>();
    T* dx = din->data<T>();
    if (!training_) {  // the statistics are constants
#pragma omp parallel for schedule(static) if (n * C * S >= kParallelMin)
      for (int64_t nc = 0; nc < n * C; ++nc) {
        const int64_t c = nc % C;
        const double scale = double(gamma[c]) * invstd_[c];
        for (int64_t s = 0; s < S; ++s) dx[nc * S + s] = T(scale * g(nc * S + s));
      }
      return;
    }
    // dx = gamma / std * (g - mean(g) - xhat * mean(g * xhat)), means over the (global) batch.
    if (synced(ctx)) ctx.allreduce_sum(sums);
    const double inv_count = count_ > 0 ? 1.0 / count_ : 0.0;
#pragma omp parallel for schedule(static) if (n * C * S >= kParallelMin)
    for (int64_t nc = 0; nc < n * C; ++nc) {
      const int64_t c = nc % C;
      const double scale = double(gamma[c]) * invstd_[c];
      const double mean_g = sd[c] * inv_count, mean_gx = sd[C + c] * inv_count;
      for (int64_t s = 0; s < S; ++s) {
        const int64_t i = nc * S + s;
        dx[i] = T(scale * (g(i) - mean_g - xhat(i, c) * mean_gx));
      }
    }
  }

  proto::BatchNormParam p_;
  double momentum_, eps_;
  int64_t channels_ = 0, spatial_ = 0;
  Tensor running_mean_, running_var_;  // f64 (C)
  // From the last forward, for backward: its plain input, statistics, mode and global count.
  Tensor x_;
  std::vector<double> mean_, invstd_;
  double count_ = 0;
  bool training_ = false;
};

}  // namespace

std::unique_ptr<Layer> make_batch_norm(const proto::LayerConfig& cfg, int index) {
  return std::make_unique<BatchNorm>(cfg, index);
}

}  // namespace deeptrain
