// Fully connected (affine): x (n, d) . W (d, m) + b, through Backend::affine_*.
#include "core/layers/kinds.h"

namespace deeptrain {
namespace {

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

}  // namespace

std::unique_ptr<Layer> make_affine(const proto::LayerConfig& cfg, int index) {
  return std::make_unique<Affine>(cfg, index);
}

}  // namespace deeptrain
