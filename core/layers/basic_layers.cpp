// Conv2D, MaxPool, ReLU, Affine, Dropout: shape logic here, arithmetic in the backend.
#include "core/layers/layer.h"
#include "core/layers/extra_layers.h"

namespace deeptrain {
namespace {

void expect_inputs(const std::string& name, const std::vector<Shape>& in, size_t n, int rank) {
  if (in.size() != n) fail_input("layer '{}': expects {} input(s), got {}", name, n, in.size());
  if (rank > 0 && in[0].rank() != rank)
    fail_input("layer '{}': expects a {}-d input per sample, got {}", name, rank, in[0].str());
}

class Conv2D : public Layer {
 public:
  Conv2D(const proto::LayerConfig& cfg, int index) : Layer(cfg.name(), index), p_(cfg.conv()) {
    kh_ = p_.kernel_h() ? p_.kernel_h() : p_.kernel();
    kw_ = p_.kernel_w() ? p_.kernel_w() : p_.kernel();
    stride_ = p_.stride() ? p_.stride() : 1;
    if (p_.out_channels() <= 0) fail_input("layer '{}': conv.out_channels must be > 0", name_);
    if (kh_ <= 0 || kw_ <= 0) fail_input("layer '{}': conv.kernel must be > 0", name_);
    if (stride_ <= 0 || p_.pad() < 0) fail_input("layer '{}': conv.stride > 0, pad >= 0", name_);
  }
  const char* type() const override { return "conv"; }
  bool can_fuse_relu() const override { return true; }
  Shape setup(const std::vector<Shape>& in) override {
    expect_inputs(name_, in, 1, 3);
    c_ = in[0][0];
    geom_ = ConvGeom::make(1, c_, in[0][1], in[0][2], p_.out_channels(), kh_, kw_, stride_,
                           stride_, p_.pad(), p_.pad());
    return {geom_.k, geom_.p, geom_.q};
  }
  std::vector<ParamSpec> param_specs() const override {
    std::vector<ParamSpec> s{{"W", {geom_.k, c_, kh_, kw_}, p_.init(), c_ * kh_ * kw_, false}};
    if (!p_.no_bias()) s.push_back({"b", {geom_.k}, p_.init(), c_ * kh_ * kw_, true});
    return s;
  }
  // Exact mode: one call per micro-shard, each with the micro-shard's own shape (pieces run
  // concurrently: each writes only its rows, and the layouts are set once they are done).
  void forward(StepContext& ctx, const std::vector<Tensor*>& in, Tensor& out) override {
    const Tensor x = *in[0], y = out;
    Layout layout = out.layout();
    for_each_piece(ctx.micro, x.dim(0), [&](int64_t b, int64_t e, int64_t j) {
      Tensor yp = batch_rows(y, b, e);
      ctx.backend.conv2d_forward(batch_geom(e - b), batch_rows(x, b, e), params_[0], bias(), yp,
                                 fused_relu_);
      if (j <= 0) layout = yp.layout();
    });
    out.set_layout(layout);
  }
  void backward(StepContext& ctx, const std::vector<Tensor*>& in, const Tensor& out,
                Tensor& dout, const std::vector<Tensor*>& din) override {
    const Tensor x = *in[0], dy = dout, dx = din[0] ? *din[0] : Tensor();
    Layout layout = dx.layout();
    for_each_piece(ctx.micro, x.dim(0), [&](int64_t b, int64_t e, int64_t j) {
      Tensor dyp = batch_rows(dy, b, e), dxp = din[0] ? batch_rows(dx, b, e) : Tensor();
      Tensor dw = piece_grad(ctx.micro, j, grads_[0]);
      Tensor db = p_.no_bias() ? Tensor() : piece_grad(ctx.micro, j, grads_[1]);
      ctx.backend.conv2d_backward(batch_geom(e - b), batch_rows(x, b, e), params_[0],
                                  batch_rows(out, b, e), dyp, fused_relu_, din[0] ? &dxp : nullptr,
                                  dw, p_.no_bias() ? nullptr : &db);
      if (j <= 0) layout = dxp.layout();
    });
    if (din[0]) din[0]->set_layout(layout);
  }

 private:
  ConvGeom batch_geom(int64_t n) const {
    ConvGeom g = geom_;
    g.n = n;
    return g;
  }
  Tensor bias() const { return p_.no_bias() ? Tensor() : params_[1]; }
  proto::ConvParam p_;
  int64_t kh_, kw_, stride_, c_ = 0;
  ConvGeom geom_{};
};

class MaxPool : public Layer {
 public:
  MaxPool(const proto::LayerConfig& cfg, int index) : Layer(cfg.name(), index) {
    k_ = cfg.max_pool().kernel() ? cfg.max_pool().kernel() : 2;
    stride_ = cfg.max_pool().stride() ? cfg.max_pool().stride() : k_;
    pad_ = cfg.max_pool().pad();
    if (k_ <= 0 || stride_ <= 0 || pad_ < 0 || pad_ >= k_)
      fail_input("layer '{}': max_pool needs kernel > 0, stride > 0, 0 <= pad < kernel", name_);
  }
  const char* type() const override { return "max_pool"; }
  Shape setup(const std::vector<Shape>& in) override {
    expect_inputs(name_, in, 1, 3);
    geom_ = PoolGeom::make(1, in[0][0], in[0][1], in[0][2], k_, k_, stride_, stride_, pad_, pad_);
    return {geom_.c, geom_.p, geom_.q};
  }
  void forward(StepContext& ctx, const std::vector<Tensor*>& in, Tensor& out) override {
    PoolGeom g = geom_;
    g.n = in[0]->dim(0);
    if (argmax_.numel() < out.numel()) argmax_ = ctx.backend.empty({out.numel()}, DType::i32);
    Tensor idx = argmax_.slice_flat(0, out.shape());
    ctx.backend.maxpool2d_forward(g, *in[0], out, idx);
  }
  void backward(StepContext& ctx, const std::vector<Tensor*>& in, const Tensor& out,
                Tensor& dout, const std::vector<Tensor*>& din) override {
    if (!din[0]) return;
    PoolGeom g = geom_;
    g.n = in[0]->dim(0);
    ctx.backend.maxpool2d_backward(g, dout, argmax_.slice_flat(0, out.shape()), *din[0]);
  }

 private:
  int64_t k_, stride_, pad_;
  PoolGeom geom_{};
  Tensor argmax_;
};

class Relu : public Layer {
 public:
  using Layer::Layer;
  const char* type() const override { return "relu"; }
  Shape setup(const std::vector<Shape>& in) override {
    expect_inputs(name_, in, 1, 0);
    return in[0];
  }
  void forward(StepContext& ctx, const std::vector<Tensor*>& in, Tensor& out) override {
    ctx.backend.relu_forward(*in[0], out);
  }
  void backward(StepContext& ctx, const std::vector<Tensor*>& in, const Tensor& out,
                Tensor& dout, const std::vector<Tensor*>& din) override {
    if (din[0]) ctx.backend.relu_backward(out, dout, *din[0]);
  }
};

class Affine : public Layer {
 public:
  Affine(const proto::LayerConfig& cfg, int index) : Layer(cfg.name(), index), p_(cfg.affine()) {
    if (p_.out_features() <= 0) fail_input("layer '{}': affine.out_features must be > 0", name_);
  }
  const char* type() const override { return "affine"; }
  bool can_fuse_relu() const override { return true; }
  Shape setup(const std::vector<Shape>& in) override {
    expect_inputs(name_, in, 1, 0);
    d_ = in[0].numel();  // flattened in (C, H, W) order, as the book does
    return {p_.out_features()};
  }
  std::vector<ParamSpec> param_specs() const override {
    std::vector<ParamSpec> s{{"W", {d_, p_.out_features()}, p_.init(), d_, false}};
    if (!p_.no_bias()) s.push_back({"b", {p_.out_features()}, p_.init(), d_, true});
    return s;
  }
  // Exact mode: one call per micro-shard, each with the micro-shard's own shape.
  void forward(StepContext& ctx, const std::vector<Tensor*>& in, Tensor& out) override {
    const int64_t n = in[0]->dim(0);
    x_ = ctx.backend.to_plain(*in[0]).reshape({n, d_});
    const Tensor y = out;
    Layout layout = out.layout();
    for_each_piece(ctx.micro, n, [&](int64_t b, int64_t e, int64_t j) {
      Tensor yp = batch_rows(y, b, e);
      ctx.backend.affine_forward(batch_rows(x_, b, e), params_[0], bias(), yp, fused_relu_);
      if (j <= 0) layout = yp.layout();
    });
    out.set_layout(layout);
  }
  void backward(StepContext& ctx, const std::vector<Tensor*>& in, const Tensor& out,
                Tensor& dout, const std::vector<Tensor*>& din) override {
    const int64_t n = in[0]->dim(0);
    Tensor dx;
    if (din[0]) dx = din[0]->reshape({n, d_});
    for_each_piece(ctx.micro, n, [&](int64_t b, int64_t e, int64_t j) {
      Tensor dy = batch_rows(dout, b, e), dxp = din[0] ? batch_rows(dx, b, e) : Tensor();
      Tensor dw = piece_grad(ctx.micro, j, grads_[0]);
      Tensor db = p_.no_bias() ? Tensor() : piece_grad(ctx.micro, j, grads_[1]);
      ctx.backend.affine_backward(batch_rows(x_, b, e), params_[0], batch_rows(out, b, e), dy,
                                  fused_relu_, din[0] ? &dxp : nullptr, dw,
                                  p_.no_bias() ? nullptr : &db);
    });
    if (din[0]) din[0]->set_layout(Layout::plain);
  }

 private:
  Tensor bias() const { return p_.no_bias() ? Tensor() : params_[1]; }
  proto::AffineParam p_;
  int64_t d_ = 0;
  Tensor x_;  // the plain, flattened input of the last forward
};

class Dropout : public Layer {
 public:
  Dropout(const proto::LayerConfig& cfg, int index)
      : Layer(cfg.name(), index),
        ratio_(cfg.dropout().ratio()),
        book_(cfg.dropout().mode() == proto::DropoutParam::BOOK) {
    if (!(ratio_ >= 0.0f && ratio_ < 1.0f))
      fail_input("layer '{}': dropout.ratio must be in [0, 1), got {}", name_, ratio_);
  }
  const char* type() const override { return "dropout"; }
  Shape setup(const std::vector<Shape>& in) override {
    expect_inputs(name_, in, 1, 0);
    return in[0];
  }
  void forward(StepContext& ctx, const std::vector<Tensor*>& in, Tensor& out) override {
    active_ = ctx.training && ratio_ > 0.0f;
    Tensor x = ctx.backend.to_plain(*in[0]);
    if (!active_) {
      scale_ = book_ ? 1.0f - ratio_ : 1.0f;  // evaluation
      ctx.backend.scale(x, scale_, out);
      return;
    }
    DT_CHECK(ctx.sample_ids, "dropout in training needs the batch's global sample ids");
    if (mask_.numel() < out.numel()) mask_ = ctx.backend.empty({out.numel()}, DType::u8);
    Tensor m = mask_.slice_flat(0, out.shape());
    scale_ = book_ ? 1.0f : 1.0f / (1.0f - ratio_);
    ctx.backend.dropout_forward({ctx.seed, ctx.step, index_, ctx.sample_ids}, ratio_, scale_, x,
                                out, m);
  }
  void backward(StepContext& ctx, const std::vector<Tensor*>& in, const Tensor& out,
                Tensor& dout, const std::vector<Tensor*>& din) override {
    if (!din[0]) return;
    if (!active_) { ctx.backend.scale(ctx.backend.to_plain(dout), scale_, *din[0]); return; }
    ctx.backend.dropout_backward(scale_, mask_.slice_flat(0, out.shape()), dout, *din[0]);
  }

 private:
  float ratio_;
  bool book_;
  float scale_ = 1.0f;
  bool active_ = false;
  Tensor mask_;
};

}  // namespace

std::unique_ptr<Layer> make_layer(const proto::LayerConfig& cfg, int index) {
  using K = proto::LayerConfig;
  switch (cfg.kind_case()) {
    case K::kConv: return std::make_unique<Conv2D>(cfg, index);
    case K::kMaxPool: return std::make_unique<MaxPool>(cfg, index);
    case K::kRelu: return std::make_unique<Relu>(cfg.name(), index);
    case K::kAffine: return std::make_unique<Affine>(cfg, index);
    case K::kDropout: return std::make_unique<Dropout>(cfg, index);
    case K::kBatchNorm: return make_batch_norm(cfg, index);
    case K::kGlobalAvgPool: return make_global_avg_pool(cfg, index);
    case K::kAdd: return make_add(cfg, index);
    case K::kConcat: return make_concat(cfg, index);
    case K::KIND_NOT_SET: break;
  }
  fail_input("layer '{}': no layer kind given (conv, max_pool, relu, affine, dropout, "
             "batch_norm, global_avg_pool, add, concat)", cfg.name());
}

}  // namespace deeptrain
