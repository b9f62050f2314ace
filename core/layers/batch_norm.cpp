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
// not depend on the rank count. Sums run in f64, per sample and then over the samples in
// order, so neither the thread count nor the activation's layout (plain, or a fast backend's
// blocked nChw8c/nChw16c, which BN reads and writes as it is) changes them. In exact mode
// (core/micro_shards.h) the sums over samples are taken per micro-shard and then over the
// micro-shards in their global order (MicroShards::ordered_sum), and gamma's and beta's
// gradients are each micro-shard's own; exact mode needs `sync` (statistics of a rank's shard
// would change with the rank count).
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "core/layers/extra_layers.h"

namespace deeptrain {
namespace {

constexpr int64_t kParallelMin = int64_t{1} << 14;  // elements below which threads cost more

// A config float as the decimal written in the file (0.9f -> 0.9, not 0.899999976), so the
// statistics are the ones a user (or another framework) computes by hand.
double decimal(float f) { return std::strtod(fmt::format("{}", f).c_str(), nullptr); }

// ---- kernels over an activation viewed as (n, C/B, S, B): n samples, C/B blocks of B
// channels, S positions, B lanes (B = 1: plain). Element (i, c, s) is at
// ((i * C/B + c/B) * S + s) * B + c % B. "part" arrays hold one sum per (sample, channel) at
// i * C + c, which is (i * C/B + c/B) * B + c % B: the same index as a block's lanes.
struct Act {
  int64_t n, cb, s;
  int64_t blocks() const { return n * cb; }
};

// sums[c] = sum over samples i, in order, of part[i * C + c].
void sum_samples(int64_t n, int64_t C, const double* part, double* sums) {
  for (int64_t c = 0; c < C; ++c) sums[c] = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < C; ++c) sums[c] += part[i * C + c];
}

// The B per-channel constants v[c] of block p's lanes.
template <int B>
void lanes(const Act& a, int64_t p, const double* v, double* out) {
  const int64_t c0 = (p % a.cb) * B;
  for (int l = 0; l < B; ++l) out[l] = v[c0 + l];
}

template <class T, int B>
void sum_x(const Act& a, const T* __restrict x, double* __restrict part) {
#pragma omp parallel for schedule(static) if (a.blocks() * a.s * B >= kParallelMin)
  for (int64_t p = 0; p < a.blocks(); ++p) {
    const T* xp = x + p * a.s * B;
    double acc[B] = {};
    for (int64_t s = 0; s < a.s; ++s)
#pragma omp simd
      for (int l = 0; l < B; ++l) acc[l] += double(xp[s * B + l]);
    for (int l = 0; l < B; ++l) part[p * B + l] = acc[l];
  }
}

// part = sum of (x - mean)^2
template <class T, int B>
void sum_sq_dev(const Act& a, const T* __restrict x, const double* mean, double* __restrict part) {
#pragma omp parallel for schedule(static) if (a.blocks() * a.s * B >= kParallelMin)
  for (int64_t p = 0; p < a.blocks(); ++p) {
    const T* xp = x + p * a.s * B;
    double mu[B], acc[B] = {};
    lanes<B>(a, p, mean, mu);
    for (int64_t s = 0; s < a.s; ++s)
#pragma omp simd
      for (int l = 0; l < B; ++l) {
        const double d = double(xp[s * B + l]) - mu[l];
        acc[l] += d * d;
      }
    for (int l = 0; l < B; ++l) part[p * B + l] = acc[l];
  }
}

// y = (x - mean) * scale + shift, then max(0, .) when relu.
template <class T, int B, bool kRelu>
void affine_map_impl(const Act& a, const T* __restrict x, const double* mean, const double* scale,
                     const double* shift, T* __restrict y) {
#pragma omp parallel for schedule(static) if (a.blocks() * a.s * B >= kParallelMin)
  for (int64_t p = 0; p < a.blocks(); ++p) {
    const T* xp = x + p * a.s * B;
    T* yp = y + p * a.s * B;
    double mu[B], sc[B], sh[B];
    lanes<B>(a, p, mean, mu);
    lanes<B>(a, p, scale, sc);
    lanes<B>(a, p, shift, sh);
    for (int64_t s = 0; s < a.s; ++s)
#pragma omp simd
      for (int l = 0; l < B; ++l) {
        const T v = T((double(xp[s * B + l]) - mu[l]) * sc[l] + sh[l]);
        yp[s * B + l] = kRelu ? (v > T(0) ? v : T(0)) : v;
      }
  }
}
template <class T, int B>
void affine_map(const Act& a, const T* x, const double* mean, const double* scale,
                const double* shift, bool relu, T* y) {
  if (relu) affine_map_impl<T, B, true>(a, x, mean, scale, shift, y);
  else affine_map_impl<T, B, false>(a, x, mean, scale, shift, y);
}

// g = dy, or dy masked by y > 0 when y (a fused ReLU's output) is given;
// part_g = sum of g, part_gx = sum of g * (x - mean). (Writing g back to dy would make GCC
// turn the mask into a conditional store and give up vectorising.)
template <class T, int B, bool kMask>
void sum_g_gdev_impl(const Act& a, const T* __restrict x, const T* __restrict y,
                     const double* mean, const T* __restrict dy, double* __restrict part_g,
                     double* __restrict part_gx) {
#pragma omp parallel for schedule(static) if (a.blocks() * a.s * B >= kParallelMin)
  for (int64_t p = 0; p < a.blocks(); ++p) {
    const int64_t o = p * a.s * B;
    double mu[B], sg[B] = {}, sgx[B] = {};
    lanes<B>(a, p, mean, mu);
    for (int64_t s = 0; s < a.s; ++s)
#pragma omp simd
      for (int l = 0; l < B; ++l) {
        const int64_t i = o + s * B + l;
        const T gv = kMask ? relu_masked(dy[i], y[i]) : dy[i];
        sg[l] += double(gv);
        sgx[l] += double(gv) * (double(x[i]) - mu[l]);
      }
    for (int l = 0; l < B; ++l) {
      part_g[p * B + l] = sg[l];
      part_gx[p * B + l] = sgx[l];
    }
  }
}
template <class T, int B>
void sum_g_gdev(const Act& a, const T* x, const T* y, const double* mean, const T* dy, double* part_g,
                double* part_gx) {
  if (y) sum_g_gdev_impl<T, B, true>(a, x, y, mean, dy, part_g, part_gx);
  else sum_g_gdev_impl<T, B, false>(a, x, nullptr, mean, dy, part_g, part_gx);
}

// dx = k * g + m - r * (x - mean), g as in sum_g_gdev.
template <class T, int B, bool kMask>
void input_grad_impl(const Act& a, const T* __restrict x, const T* __restrict y,
                     const T* __restrict dy, const double* mean, const double* k, const double* m,
                     const double* r, T* __restrict dx) {
#pragma omp parallel for schedule(static) if (a.blocks() * a.s * B >= kParallelMin)
  for (int64_t p = 0; p < a.blocks(); ++p) {
    const int64_t o = p * a.s * B;
    double mu[B], kl[B], ml[B], rl[B];
    lanes<B>(a, p, mean, mu);
    lanes<B>(a, p, k, kl);
    lanes<B>(a, p, m, ml);
    lanes<B>(a, p, r, rl);
    for (int64_t s = 0; s < a.s; ++s)
#pragma omp simd
      for (int l = 0; l < B; ++l) {
        const int64_t i = o + s * B + l;
        const T gv = kMask ? relu_masked(dy[i], y[i]) : dy[i];
        dx[i] = T(kl[l] * double(gv) + ml[l] - rl[l] * (double(x[i]) - mu[l]));
      }
  }
}
template <class T, int B>
void input_grad(const Act& a, const T* x, const T* y, const T* dy, const double* mean,
                const double* k, const double* m, const double* r, T* dx) {
  if (y) input_grad_impl<T, B, true>(a, x, y, dy, mean, k, m, r, dx);
  else input_grad_impl<T, B, false>(a, x, nullptr, dy, mean, k, m, r, dx);
}

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
    per_channel_ = s.rank() == 3 && !p_.per_activation();
    channels_ = per_channel_ ? s[0] : s.numel();
    spatial_ = per_channel_ ? s[1] * s[2] : 1;
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
    if (ctx.micro && !p_.sync())
      fail_input("layer '{}': exact mode needs batch_norm.sync: true (statistics over a rank's "
                 "shard would change with the rank count)", name_);
    if (ctx.backend.device() != Device::cpu) {  // a device backend's ops (host defaults too)
      DT_CHECK(!ctx.micro, "layer '{}': exact mode runs on the host backends", name_);
      x_ = *in[0];
      forward_device(ctx, out);
      return;
    }
    // Per-channel statistics read a blocked activation in place; per-activation ones need the
    // plain (C * H * W) order.
    x_ = per_channel_ ? *in[0] : ctx.backend.to_plain(*in[0]);
    dispatch(x_, [&]<class T, int B>() { forward_impl<T, B>(ctx, out); });
    out.set_layout(x_.layout());
  }
  void backward(StepContext& ctx, const std::vector<Tensor*>& in, const Tensor& out,
                Tensor& dout, const std::vector<Tensor*>& din) override {
    if (ctx.backend.device() != Device::cpu) return backward_device(ctx, out, dout, din[0]);
    if (dout.layout() == x_.layout()) {
      dispatch(x_, [&]<class T, int B>() { backward_impl<T, B>(ctx, x_, out, dout, din[0]); });
      if (din[0]) din[0]->set_layout(x_.layout());
      return;
    }
    // The gradient came back in another layout than the activations (rare: a consumer that
    // writes plain gradients): compute in plain.
    const Tensor x = ctx.backend.to_plain(x_), y = ctx.backend.to_plain(out);
    const Tensor dy = ctx.backend.to_plain(dout);
    dispatch(x, [&]<class T, int B>() { backward_impl<T, B>(ctx, x, y, dy, din[0]); });
    if (din[0]) din[0]->set_layout(Layout::plain);
  }

 private:
  bool synced(const StepContext& ctx) const { return p_.sync() && ctx.allreduce_sum; }

  // Calls f.template operator()<T, B>() for x's element type and channel block.
  template <class F>
  static void dispatch(const Tensor& x, F&& f) {
    const int block = layout_block(x.layout());
    const bool f64 = x.dtype() == DType::f64;
    if (block == 16 && !f64) f.template operator()<float, 16>();
    else if (block == 8 && !f64) f.template operator()<float, 8>();
    else if (block != 1) fail("batch_norm: a {} {} activation", layout_name(x.layout()), dtype_name(x.dtype()));
    else if (f64) f.template operator()<double, 1>();
    else f.template operator()<float, 1>();
  }

  // ---- the host path's statistics (f64; the device path has the backend's bn_* ops) ----
  // out (L = C or C + 1 elements) = the sums over the batch's samples of part (one row of C
  // per sample), and with L = C + 1 the element count (samples * S) last; over every rank's
  // samples when synchronised, per micro-shard and then in micro-shard order in exact mode.
  void sum_over_samples(StepContext& ctx, int64_t n, const double* part, Tensor& out) {
    const int64_t C = channels_, L = out.numel();
    if (!ctx.micro) {
      double* o = out.data<double>();
      sum_samples(n, C, part, o);
      if (L > C) o[C] = double(n * spatial_);
      if (synced(ctx)) ctx.allreduce_sum(out);
      return;
    }
    Tensor parts = Tensor::empty({ctx.micro->count(), L}, DType::f64);
    for_each_piece(ctx.micro, n, [&](int64_t b, int64_t e, int64_t j) {
      double* row = parts.data<double>() + j * L;
      sum_samples(e - b, C, part + b * C, row);
      if (L > C) row[C] = double((e - b) * spatial_);
    });
    ctx.micro->ordered_sum(parts, out);
  }
  // sums: per-channel sums of x (C) and the element count, over the (global) batch. Sets the
  // count and the means.
  void take_means(Tensor& sums) {
    const int64_t C = channels_;
    const double* sd = sums.data<double>();
    count_ = sd[C];
    for (int64_t c = 0; c < C; ++c) mean_[c] = count_ > 0 ? sd[c] / count_ : 0.0;
  }
  // sq: per-channel sums of (x - mean)^2 over the (global) batch. Sets 1/std and updates the
  // running statistics.
  void take_variances(const Tensor& sq) {
    const double* qd = sq.data<double>();
    double* rm = running_mean_.data<double>();
    double* rv = running_var_.data<double>();
    for (int64_t c = 0; c < channels_; ++c) {
      const double var = count_ > 0 ? qd[c] / count_ : 0.0;
      invstd_[c] = 1.0 / std::sqrt(var + eps_);
      rm[c] = momentum_ * rm[c] + (1.0 - momentum_) * mean_[c];
      rv[c] = momentum_ * rv[c] + (1.0 - momentum_) * var;
    }
  }
  void take_running_statistics() {
    for (int64_t c = 0; c < channels_; ++c) {
      mean_[c] = running_mean_.data<double>()[c];
      invstd_[c] = 1.0 / std::sqrt(running_var_.data<double>()[c] + eps_);
    }
  }
  // sums (2C, host f64): [sum g | sum g * xhat] over the (global) batch. Returns the
  // coefficients of dx = k * g + m - r * (x - mean) per channel. In evaluation the statistics
  // are constants: k = gamma / std, m = r = 0. In training they are the batch's:
  // dx = gamma / std * (g - mean(g) - xhat * mean(g * xhat)), means over the (global) batch.
  struct InputGrad {
    std::vector<double> k, m, r;
  };
  template <class G>
  InputGrad input_grad_coefficients(const Tensor& sums, const G* gamma) {
    const int64_t C = channels_;
    InputGrad q{std::vector<double>(C), std::vector<double>(C, 0.0), std::vector<double>(C, 0.0)};
    for (int64_t c = 0; c < C; ++c) q.k[c] = double(gamma[c]) * invstd_[c];
    if (!training_) return q;
    const double* sd = sums.data<double>();
    const double inv_count = count_ > 0 ? 1.0 / count_ : 0.0;
    for (int64_t c = 0; c < C; ++c) {
      q.m[c] = -q.k[c] * sd[c] * inv_count;
      q.r[c] = q.k[c] * invstd_[c] * sd[C + c] * inv_count;
    }
    return q;
  }

  // ---- the device path: the backend's bn_* ops, everything in its memory ----
  // The running statistics live on the device while the layer computes there (state_to_host
  // brings them back); the per-step vectors are allocated once.
  struct DeviceStats {
    Backend* backend = nullptr;
    Tensor running_mean, running_var;  // the device's copy of state()
    Tensor sums, sq, grad_sums, mean, invstd, scale, shift, k, m, r;
  };
  void state_to_device(Backend& be) override {
    if (dev_.backend != &be) {
      device_stats(be);  // allocates, and copies the host's statistics
      return;
    }
    be.copy(running_mean_, dev_.running_mean);
    be.copy(running_var_, dev_.running_var);
  }
  void state_to_host(Backend& be) override {
    if (dev_.backend != &be) return;  // never computed there: the host's are current
    be.copy(dev_.running_mean, running_mean_);
    be.copy(dev_.running_var, running_var_);
  }
  DeviceStats& device_stats(Backend& be) {
    if (dev_.backend == &be) return dev_;
    DT_CHECK(dev_.backend == nullptr, "layer '{}': batch_norm computes on one device", name_);
    const int64_t C = channels_;
    for (Tensor* t : {&dev_.running_mean, &dev_.running_var, &dev_.sums, &dev_.sq, &dev_.mean,
                      &dev_.invstd, &dev_.scale, &dev_.shift, &dev_.k, &dev_.m, &dev_.r})
      *t = be.empty({C}, DType::f64);
    dev_.grad_sums = be.empty({2 * C}, DType::f64);
    dev_.backend = &be;
    // First use (the Net's first state_to_device, or a net computing on a device it was not
    // placed on): the host's statistics are the current ones.
    be.copy(running_mean_, dev_.running_mean);
    be.copy(running_var_, dev_.running_var);
    return dev_;
  }
  // The sample count over the ranks (synchronised BN: shards may differ in size).
  static double global_count(StepContext& ctx, double local) {
    Tensor t = Tensor::empty({1}, DType::f64);
    t.data<double>()[0] = local;
    ctx.allreduce_sum(t);
    return t.data<double>()[0];
  }
  void forward_device(StepContext& ctx, Tensor& out) {
    Backend& be = ctx.backend;
    DeviceStats& d = device_stats(be);
    training_ = ctx.training;
    // A rank without samples (synchronised BN runs on every rank) adds zeros to the sums.
    const bool empty = x_.numel() == 0;
    if (training_) {
      if (empty) be.fill_zero(d.sums);
      else be.bn_sums(x_, nullptr, d.sums);
      count_ = double(x_.numel() / channels_);
      if (synced(ctx)) {
        ctx.allreduce_sum(d.sums);
        count_ = global_count(ctx, count_);
      }
      be.bn_mean(d.sums, count_, d.mean);
      if (empty) be.fill_zero(d.sq);
      else be.bn_sums(x_, &d.mean, d.sq);
      if (synced(ctx)) ctx.allreduce_sum(d.sq);
      be.bn_normalizer(&d.sq, count_, eps_, momentum_, params_[0], params_[1], d.running_mean,
                       d.running_var, d.mean, d.invstd, d.scale, d.shift);
    } else {
      be.bn_normalizer(nullptr, 0.0, eps_, momentum_, params_[0], params_[1], d.running_mean,
                       d.running_var, d.mean, d.invstd, d.scale, d.shift);
    }
    if (!empty) be.bn_apply(x_, d.mean, d.scale, d.shift, fused_relu_, out);
  }
  void backward_device(StepContext& ctx, const Tensor& out, const Tensor& dout, Tensor* din) {
    Backend& be = ctx.backend;
    DeviceStats& d = device_stats(be);
    const Tensor* relu_y = fused_relu_ ? &out : nullptr;
    const bool empty = x_.numel() == 0;
    if (empty) be.fill_zero(d.grad_sums);
    else be.bn_grad_sums(x_, relu_y, dout, d.mean, d.grad_sums);
    be.bn_param_grads(d.grad_sums, d.invstd, grads_[0], grads_[1]);  // this rank's, as on the host
    if (!din) return;
    if (training_ && synced(ctx)) ctx.allreduce_sum(d.grad_sums);
    // gamma as forward read it: the optimizer step comes after backward.
    be.bn_input_coefficients(d.grad_sums, d.invstd, params_[0], count_, training_, d.k, d.m, d.r);
    if (!empty) be.bn_input_grad(x_, relu_y, dout, d.mean, d.k, d.m, d.r, *din);
  }

  // ---- the host path ----
  template <class T, int B>
  void forward_impl(StepContext& ctx, Tensor& out) {
    const Act a{x_.dim(0), channels_ / B, spatial_};
    const int64_t C = channels_;
    const T* x = x_.data<T>();
    mean_.assign(C, 0.0);
    invstd_.assign(C, 0.0);
    training_ = ctx.training;
    if (training_) {
      // Sums (and the sample count) first, the centred squares second: two passes, so a
      // large mean does not swallow the variance.
      Tensor sums = Tensor::zeros({C + 1}, DType::f64);
      per_sample_.resize(size_t(a.n * C));
      sum_x<T, B>(a, x, per_sample_.data());
      sum_over_samples(ctx, a.n, per_sample_.data(), sums);
      take_means(sums);
      Tensor sq = Tensor::zeros({C}, DType::f64);
      sum_sq_dev<T, B>(a, x, mean_.data(), per_sample_.data());
      sum_over_samples(ctx, a.n, per_sample_.data(), sq);
      take_variances(sq);
    } else {
      take_running_statistics();
    }
    // y = (x - mean) * gamma / std + beta
    const T* gamma = params_[0].data<T>();
    const T* beta = params_[1].data<T>();
    std::vector<double> scale(C), shift(C);
    for (int64_t c = 0; c < C; ++c) {
      scale[c] = double(gamma[c]) * invstd_[c];
      shift[c] = double(beta[c]);
    }
    affine_map<T, B>(a, x, mean_.data(), scale.data(), shift.data(), fused_relu_, out.data<T>());
  }

  template <class T, int B>
  void backward_impl(StepContext& ctx, const Tensor& xt, const Tensor& out, const Tensor& dout,
                     Tensor* din) {
    const Act a{xt.dim(0), channels_ / B, spatial_};
    const int64_t C = channels_;
    const T* x = xt.data<T>();
    const T* y = fused_relu_ ? out.data<T>() : nullptr;  // the fused ReLU's mask
    const T* dy = dout.data<T>();
    // [sum g (C) | sum g * xhat (C)] over a piece of the batch, where g is the gradient
    // reaching the normalisation (dy through the fused ReLU's mask): the piece's dbeta and
    // dgamma. Then over the (global) batch: the input gradient's coefficients.
    per_sample_.resize(size_t(2 * a.n * C));
    double* part_g = per_sample_.data();
    double* part_gx = part_g + a.n * C;
    sum_g_gdev<T, B>(a, x, y, mean_.data(), dy, part_g, part_gx);
    const int64_t pieces = ctx.micro ? ctx.micro->count() : 1;
    Tensor piece_sums = Tensor::empty({pieces, 2 * C}, DType::f64);
    for_each_piece(ctx.micro, a.n, [&](int64_t b, int64_t e, int64_t j) {
      double* sd = piece_sums.data<double>() + std::max<int64_t>(j, 0) * 2 * C;
      sum_samples(e - b, C, part_g + b * C, sd);
      sum_samples(e - b, C, part_gx + b * C, sd + C);
      for (int64_t c = 0; c < C; ++c) sd[C + c] *= invstd_[c];
      Tensor dgamma = piece_grad(ctx.micro, j, grads_[0]), dbeta = piece_grad(ctx.micro, j, grads_[1]);
      for (int64_t c = 0; c < C; ++c) {
        dbeta.data<T>()[c] = T(sd[c]);
        dgamma.data<T>()[c] = T(sd[C + c]);
      }
    });
    if (!din) return;
    Tensor sums = ctx.micro ? Tensor::empty({2 * C}, DType::f64) : piece_sums.reshape({2 * C});
    if (ctx.micro) ctx.micro->ordered_sum(piece_sums, sums);
    else if (training_ && synced(ctx)) ctx.allreduce_sum(sums);
    const InputGrad q = input_grad_coefficients(sums, params_[0].data<T>());
    input_grad<T, B>(a, x, y, dy, mean_.data(), q.k.data(), q.m.data(), q.r.data(),
                     din->data<T>());
  }

  proto::BatchNormParam p_;
  double momentum_, eps_;
  bool per_channel_ = false;
  int64_t channels_ = 0, spatial_ = 0;
  Tensor running_mean_, running_var_;  // f64 (C)
  // From the last forward, for backward: its input (in the layout it came in), statistics,
  // mode and global count.
  Tensor x_;
  std::vector<double> mean_, invstd_;
  DeviceStats dev_;  // the device path's statistics
  double count_ = 0;
  bool training_ = false;
  std::vector<double> per_sample_;  // per-sample sums before they are summed over samples
};

}  // namespace

std::unique_ptr<Layer> make_batch_norm(const proto::LayerConfig& cfg, int index) {
  return std::make_unique<BatchNorm>(cfg, index);
}

}  // namespace deeptrain
