// 2-d convolution (conv): shape logic here, arithmetic in Backend::conv2d_*.
#include "core/layers/kinds.h"

namespace deeptrain {
namespace {

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
    if (!p_.no_bias() && p_.has_bias_init()) s.back().constant = double(p_.bias_init());
    return s;
  }
  // Exact mode: one call per micro-shard, each with the micro-shard's own shape (pieces run
  // concurrently: each writes only its rows, and the layouts are set once they are done).
  void forward(StepContext& ctx, const std::vector<Tensor*>& in, Tensor& out) override {
    const Tensor x = *in[0], y = out;
    Layout layout = out.layout();
    for_each_piece(ctx.micro, x.dim(0), [&](int64_t b, int64_t e, int64_t j) {
      Tensor yp = batch_rows(y, b, e);
      ctx.backend.conv2d_forward(geom_.with_batch(e - b), batch_rows(x, b, e), params_[0], bias(), yp,
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
      ctx.backend.conv2d_backward(geom_.with_batch(e - b), batch_rows(x, b, e), params_[0],
                                  batch_rows(out, b, e), dyp, fused_relu_, din[0] ? &dxp : nullptr,
                                  dw, p_.no_bias() ? nullptr : &db);
      if (j <= 0) layout = dxp.layout();
    });
    if (din[0]) din[0]->set_layout(layout);
  }

 private:
  Tensor bias() const { return p_.no_bias() ? Tensor() : params_[1]; }
  proto::ConvParam p_;
  int64_t kh_, kw_, stride_, c_ = 0;
  ConvGeom geom_{};
};

}  // namespace

std::unique_ptr<Layer> make_conv(const proto::LayerConfig& cfg, int index) {
  return std::make_unique<Conv2D>(cfg, index);
}

}  // namespace deeptrain
