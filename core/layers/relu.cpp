// ReLU (relu), when not fused into the layer before it (Layer::can_fuse_relu).
#include "core/layers/kinds.h"

namespace deeptrain {
namespace {

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

}  // namespace

std::unique_ptr<Layer> make_relu(const proto::LayerConfig& cfg, int index) {
  return std::make_unique<Relu>(cfg.name(), index);
}

}  // namespace deeptrain
