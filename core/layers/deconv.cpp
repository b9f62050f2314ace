// Transposed convolution (deconv): shape logic here, arithmetic in Backend::deconv2d_*. The
// geometry is that of the conv whose input gradient it computes: ConvGeom's input (c, h, w) is
// the deconv's output, its output (k, p, q) the deconv's input.
#include "core/layers/kinds.h"

namespace deeptrain {
namespace {

class Deconv2D : public Layer {
 public:
  Deconv2D(const proto::LayerConfig& cfg, int index) : Layer(cfg.name(), index), p_(cfg.deconv()) {
    stride_ = p_.stride() ? p_.stride() : 1;
    if (p_.out_channels() <= 0) fail_input("layer '{}': deconv.out_channels must be > 0", name_);
    if (p_.kernel() <= 0) fail_input("layer '{}': deconv.kernel must be > 0", name_);
    if (stride_ <= 0 || p_.pad() < 0) fail_input("layer '{}': deconv.stride > 0, pad >= 0", name_);
    if (p_.output_padding() < 0 || p_.output_padding() >= stride_)
      fail_input("layer '{}': deconv.output_padding {} must be in [0, stride {})", name_,
                 p_.output_padding(), stride_);
  }
  const char* type() const override { return "deconv"; }
  Shape setup(const std::vector<Shape>& in) override {
    expect_inputs(name_, in, 1, 3);
    k_ = in[0][0];
    if (p_.init() == proto::BILINEAR && k_ != p_.out_channels())
      fail_input("layer '{}': deconv.init BILINEAR maps each channel to itself: needs "
                 "out_channels {} equal to the input's {} channels", name_, p_.out_channels(), k_);
    auto out = [&](int64_t v) {
      return (v - 1) * stride_ - 2 * p_.pad() + p_.kernel() + p_.output_padding();
    };
    const int64_t h = out(in[0][1]), w = out(in[0][2]);
    if (h <= 0 || w <= 0)
      fail_input("layer '{}': deconv of {} gives an empty output ({} x {})", name_, in[0].str(), h, w);
    geom_ = ConvGeom::make(1, p_.out_channels(), h, w, k_, p_.kernel(), p_.kernel(), stride_,
                           stride_, p_.pad(), p_.pad());
    // output_padding < stride keeps the conv of the output on the input's grid.
    DT_CHECK(geom_.p == in[0][1] && geom_.q == in[0][2], "deconv '{}': {}x{} back to {}x{}", name_,
             h, w, geom_.p, geom_.q);
    return {geom_.c, h, w};
  }
  std::vector<ParamSpec> param_specs() const override {
    // Fan-in of an output element: the input channels times the kernel taps that reach it.
    const int64_t taps = std::max<int64_t>(1, (p_.kernel() / stride_) * (p_.kernel() / stride_));
    std::vector<ParamSpec> s{{"W", {k_, geom_.c, p_.kernel(), p_.kernel()}, p_.init(), k_ * taps, false}};
    if (!p_.no_bias()) s.push_back({"b", {geom_.c}, p_.init(), k_ * taps, true});
    return s;
  }
  void forward(StepContext& ctx, const std::vector<Tensor*>& in, Tensor& out) override {
    // The output's layout is the backend's choice (the fast one writes blocked layouts).
    const Tensor x = *in[0], y = out;
    Layout layout = out.layout();
    for_each_piece(ctx.micro, x.dim(0), [&](int64_t b, int64_t e, int64_t j) {
      Tensor yp = batch_rows(y, b, e);
      ctx.backend.deconv2d_forward(geom_.with_batch(e - b), batch_rows(x, b, e), params_[0], bias(), yp);
      if (j <= 0) layout = yp.layout();
    });
    out.set_layout(layout);
  }
  void backward(StepContext& ctx, const std::vector<Tensor*>& in, const Tensor&, Tensor& dout,
                const std::vector<Tensor*>& din) override {
    const Tensor x = *in[0], dy = dout, dx = din[0] ? *din[0] : Tensor();
    Layout layout = dx.layout();
    for_each_piece(ctx.micro, x.dim(0), [&](int64_t b, int64_t e, int64_t j) {
      Tensor dxp = din[0] ? batch_rows(dx, b, e) : Tensor();
      Tensor dw = piece_grad(ctx.micro, j, grads_[0]);
      Tensor db = p_.no_bias() ? Tensor() : piece_grad(ctx.micro, j, grads_[1]);
      ctx.backend.deconv2d_backward(geom_.with_batch(e - b), batch_rows(x, b, e), params_[0],
                                    batch_rows(dy, b, e), din[0] ? &dxp : nullptr, dw,
                                    p_.no_bias() ? nullptr : &db);
      if (j <= 0) layout = dxp.layout();
    });
    if (din[0]) din[0]->set_layout(layout);
  }

 private:
  Tensor bias() const { return p_.no_bias() ? Tensor() : params_[1]; }
  proto::DeconvParam p_;
  int64_t stride_, k_ = 0;
  ConvGeom geom_{};
};

}  // namespace

std::unique_ptr<Layer> make_deconv(const proto::LayerConfig& cfg, int index) {
  return std::make_unique<Deconv2D>(cfg, index);
}

}  // namespace deeptrain
