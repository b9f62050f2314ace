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
// The layer orchestrates; the backend's bn_* ops compute (core/backend/backend.h): per-channel
// f64 sums in a fixed order that neither the thread count nor the activation's layout (plain,
// or a fast backend's blocked nChw8c/nChw16c, read and written as it is) changes, and the
// statistics from them, all in the backend's memory (a GPU reads nothing back per step).
//
// Synchronised BN: with `sync` and a StepContext::allreduce_sum, the per-channel sums are
// summed over all ranks, so the statistics are those of the global batch and the result does
// not depend on the rank count. In exact mode (core/micro_shards.h) the sums over samples are
// taken per micro-shard and then over the micro-shards in their global order
// (MicroShards::ordered_sum), and gamma's and beta's gradients are each micro-shard's own;
// exact mode needs `sync` (statistics of a rank's shard would change with the rank count).
#include <cstdint>
#include <cstdlib>

#include "core/layers/kinds.h"

namespace deeptrain {
namespace {

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
  void state_to_device(Backend& be) override {
    if (st_.backend != &be) {
      stats(be);  // allocates, and copies the host's statistics
      return;
    }
    if (!in_state_memory(be)) {
      be.copy(running_mean_, st_.running_mean);
      be.copy(running_var_, st_.running_var);
    }
  }
  void state_to_host(Backend& be) override {
    if (st_.backend != &be || in_state_memory(be)) return;  // the host's are current
    be.copy(st_.running_mean, running_mean_);
    be.copy(st_.running_var, running_var_);
  }

  void forward(StepContext& ctx, const std::vector<Tensor*>& in, Tensor& out) override {
    if (ctx.micro && !p_.sync())
      fail_input("layer '{}': exact mode needs batch_norm.sync: true (statistics over a rank's "
                 "shard would change with the rank count)", name_);
    Backend& be = ctx.backend;
    // Per-channel statistics read a blocked activation in place; per-activation ones need the
    // plain (C * H * W) order.
    x_ = per_channel_ ? *in[0] : be.to_plain(*in[0]);
    Stats& d = stats(be);
    training_ = ctx.training;
    if (training_) {
      // Sums first, the centred squares second, so a large mean does not swallow the variance.
      // Where the backend has bn_sample_moments, each sample's sums and centred squares come
      // from one read of x, and the batch's centred squares from those (no second read).
      count_ = batch_count(ctx);
      const Tensor* moments = nullptr;
      Tensor sample_moments;
      if (x_.numel() > 0) {
        const int64_t m = x_.dim(0) * 2 * channels_;
        if (!d.moments.defined() || d.moments.numel() < m) d.moments = be.empty({m}, DType::f64);
        sample_moments = d.moments.slice_flat(0, {m});
        if (be.bn_sample_moments(x_, sample_moments)) moments = &sample_moments;
      }
      sum_over_batch(ctx, nullptr, moments, d.sums);
      be.bn_mean(d.sums, count_, d.mean);
      sum_over_batch(ctx, &d.mean, moments, d.sq);
      be.bn_normalizer(&d.sq, count_, eps_, momentum_, params_[0], params_[1], d.running_mean,
                       d.running_var, d.mean, d.invstd, d.scale, d.shift);
    } else {
      be.bn_normalizer(nullptr, 0.0, eps_, momentum_, params_[0], params_[1], d.running_mean,
                       d.running_var, d.mean, d.invstd, d.scale, d.shift);
    }
    if (x_.numel() > 0) be.bn_apply(x_, d.mean, d.scale, d.shift, fused_relu_, out);
    out.set_layout(x_.layout());
  }

  void backward(StepContext& ctx, const std::vector<Tensor*>& in, const Tensor& out,
                Tensor& dout, const std::vector<Tensor*>& din) override {
    Backend& be = ctx.backend;
    Stats& d = stats(be);
    // The gradient may come back in another layout than the activations (rare: a consumer
    // that writes plain gradients): then all three meet in plain.
    const bool same = dout.layout() == x_.layout();
    const Tensor x = same ? x_ : be.to_plain(x_);
    const Tensor y = same ? out : be.to_plain(out);
    const Tensor dy = same ? dout : be.to_plain(dout);
    const Tensor* relu_y = fused_relu_ ? &y : nullptr;  // the fused ReLU's mask
    // [sum g | sum g * (x - mean)] over a piece of the batch, where g is the gradient reaching
    // the normalisation: the piece's dbeta and dgamma (bn_param_grads). Then over the (global)
    // batch: the input gradient's coefficients.
    if (ctx.micro) {
      const int64_t L = 2 * channels_;
      Tensor parts = be.empty({ctx.micro->count(), L}, DType::f64);
      for_each_piece(ctx.micro, x.dim(0), [&](int64_t b, int64_t e, int64_t j) {
        Tensor sums = parts.slice_flat(j * L, {L});
        const Tensor yj = relu_y ? batch_rows(y, b, e) : Tensor();
        be.bn_grad_sums(batch_rows(x, b, e), relu_y ? &yj : nullptr, batch_rows(dy, b, e),
                        d.mean, sums);
        Tensor dgamma = piece_grad(ctx.micro, j, grads_[0]);
        Tensor dbeta = piece_grad(ctx.micro, j, grads_[1]);
        be.bn_param_grads(sums, d.invstd, dgamma, dbeta);
      });
      if (!din[0]) return;
      ctx.micro->ordered_sum(parts, d.grad_sums);
    } else {
      if (x.numel() > 0) be.bn_grad_sums(x, relu_y, dy, d.mean, d.grad_sums);
      else be.fill_zero(d.grad_sums);  // a rank without samples (synchronised BN runs on all)
      be.bn_param_grads(d.grad_sums, d.invstd, grads_[0], grads_[1]);  // this rank's
      if (!din[0]) return;
      if (training_ && synced(ctx)) ctx.allreduce_sum(d.grad_sums);
    }
    // gamma as forward read it: the optimizer step comes after backward.
    be.bn_input_coefficients(d.grad_sums, d.invstd, params_[0], count_, training_, d.k, d.m, d.r);
    if (x.numel() > 0) be.bn_input_grad(x, relu_y, dy, d.mean, d.k, d.m, d.r, *din[0]);
    din[0]->set_layout(x.layout());
  }

 private:
  bool synced(const StepContext& ctx) const { return p_.sync() && ctx.allreduce_sum; }

  // The per-step vectors, in the backend's memory and allocated once. The running statistics
  // are state() itself when the backend computes in the memory state() lives in (the host); a
  // device keeps its own copy (no readback per step), which state_to_host brings back.
  struct Stats {
    Backend* backend = nullptr;
    Tensor running_mean, running_var;
    Tensor sums, sq, grad_sums, mean, invstd, scale, shift, k, m, r;
    Tensor moments;  // bn_sample_moments' (n * 2C), grown to the largest batch
  };
  bool in_state_memory(const Backend& be) const { return be.device() == running_mean_.device(); }
  Stats& stats(Backend& be) {
    if (st_.backend != &be) {
      // Host backends may take turns (they share state()'s memory); a device's copy of the
      // running statistics would be lost.
      DT_CHECK(st_.backend == nullptr || in_state_memory(*st_.backend),
               "layer '{}': batch_norm computes on one device", name_);
      const int64_t C = channels_;
      for (Tensor* t : {&st_.sums, &st_.sq, &st_.mean, &st_.invstd, &st_.scale, &st_.shift,
                        &st_.k, &st_.m, &st_.r})
        *t = be.empty({C}, DType::f64);
      st_.grad_sums = be.empty({2 * C}, DType::f64);
      st_.backend = &be;
      if (!in_state_memory(be)) {
        // First use (the Net's first state_to_device, or a net computing on a device it was
        // not placed on): the host's statistics are the current ones.
        st_.running_mean = be.empty({C}, DType::f64);
        st_.running_var = be.empty({C}, DType::f64);
        be.copy(running_mean_, st_.running_mean);
        be.copy(running_var_, st_.running_var);
      }
    }
    if (in_state_memory(be)) {
      st_.running_mean = running_mean_;
      st_.running_var = running_var_;
    }
    return st_;
  }

  // The element count per channel over the (global) batch: over every rank's samples when
  // synchronised (shards may differ in size), over the micro-shards of the global batch in
  // exact mode.
  double batch_count(StepContext& ctx) const {
    if (ctx.micro) return double(ctx.micro->global_rows() * spatial_);
    if (!synced(ctx)) return double(x_.numel() / channels_);
    DT_CHECK(ctx.global_batch > 0, "layer '{}': synchronised batch_norm without the global batch "
             "size", name_);
    return double(ctx.global_batch * spatial_);
  }
  // out (C) = the per-channel sums of x, or of (x - mean)^2 when mean is given, over the
  // (global) batch: over every rank's samples when synchronised, per micro-shard and then in
  // micro-shard order in exact mode. From x's per-sample moments when given (rows b..e of x
  // are moments' rows b..e), else from x.
  void sum_over_batch(StepContext& ctx, const Tensor* mean, const Tensor* moments, Tensor& out) {
    Backend& be = ctx.backend;
    const int64_t C = channels_;
    auto rows_sum = [&](int64_t b, int64_t e, Tensor& o) {
      if (moments)
        be.bn_moment_sums(moments->slice_flat(b * 2 * C, {(e - b) * 2 * C}), spatial_, mean, o);
      else if (b == 0 && e == x_.dim(0))
        be.bn_sums(x_, mean, o);
      else
        be.bn_sums(batch_rows(x_, b, e), mean, o);
    };
    if (ctx.micro) {
      Tensor parts = be.empty({ctx.micro->count(), C}, DType::f64);
      for_each_piece(ctx.micro, x_.dim(0), [&](int64_t b, int64_t e, int64_t j) {
        Tensor row = parts.slice_flat(j * C, {C});
        rows_sum(b, e, row);
      });
      ctx.micro->ordered_sum(parts, out);
      return;
    }
    if (x_.numel() > 0) rows_sum(0, x_.dim(0), out);
    else be.fill_zero(out);  // a rank without samples adds zeros
    if (synced(ctx)) ctx.allreduce_sum(out);
  }

  proto::BatchNormParam p_;
  double momentum_, eps_;
  bool per_channel_ = false;
  int64_t channels_ = 0, spatial_ = 0;
  Tensor running_mean_, running_var_;  // f64 (C): state(), on the host
  Stats st_;
  // From the last forward, for backward: its input (in the layout it came in), mode and
  // global count.
  Tensor x_;
  double count_ = 0;
  bool training_ = false;
};

}  // namespace

std::unique_ptr<Layer> make_batch_norm(const proto::LayerConfig& cfg, int index) {
  return std::make_unique<BatchNorm>(cfg, index);
}

}  // namespace deeptrain
