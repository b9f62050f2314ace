// Dropout (inverted, or the book's), with masks keyed by global sample ids (Backend::dropout_*).
#include "core/layers/kinds.h"

namespace deeptrain {
namespace {

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

std::unique_ptr<Layer> make_dropout(const proto::LayerConfig& cfg, int index) {
  return std::make_unique<Dropout>(cfg, index);
}

}  // namespace deeptrain
