// Max pooling (max_pool): shape logic here, arithmetic in Backend::maxpool2d_*.
#include "core/layers/kinds.h"

namespace deeptrain {
namespace {

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
    have_argmax_ = !ctx.forward_only;
    if (ctx.forward_only) return ctx.backend.maxpool2d_infer(g, *in[0], out, idx);
    ctx.backend.maxpool2d_forward(g, *in[0], out, idx);
  }
  void backward(StepContext& ctx, const std::vector<Tensor*>& in, const Tensor& out,
                Tensor& dout, const std::vector<Tensor*>& din) override {
    if (!din[0]) return;
    DT_CHECK(have_argmax_, "layer '{}': backward after a forward-only pass", name_);
    PoolGeom g = geom_;
    g.n = in[0]->dim(0);
    ctx.backend.maxpool2d_backward(g, dout, argmax_.slice_flat(0, out.shape()), *din[0]);
  }

 private:
  int64_t k_, stride_, pad_;
  PoolGeom geom_{};
  Tensor argmax_;
  bool have_argmax_ = false;  // whether the last forward wrote argmax_ (not a forward-only one)
};

}  // namespace

std::unique_ptr<Layer> make_max_pool(const proto::LayerConfig& cfg, int index) {
  return std::make_unique<MaxPool>(cfg, index);
}

}  // namespace deeptrain
