// Global average pooling (global_avg_pool), through Backend::plane_mean.
#include "core/layers/kinds.h"

namespace deeptrain {
namespace {

// (C, H, W) -> (C): y[n, c] = mean of x[n, c, :, :].
class GlobalAvgPool : public Layer {
 public:
  using Layer::Layer;
  const char* type() const override { return "global_avg_pool"; }
  Shape setup(const std::vector<Shape>& in) override {
    if (in.size() != 1 || in[0].rank() != 3)
      fail_input("layer '{}': global_avg_pool expects one (C, H, W) input per sample", name_);
    return {in[0][0]};
  }
  void forward(StepContext& ctx, const std::vector<Tensor*>& in, Tensor& out) override {
    ctx.backend.plane_mean(*in[0], out);
  }
  void backward(StepContext& ctx, const std::vector<Tensor*>& in, const Tensor& out,
                Tensor& dout, const std::vector<Tensor*>& din) override {
    // dx takes the input's layout, as the layer before wrote it (blocked or plain).
    if (din[0]) ctx.backend.plane_mean_backward(dout, in[0]->layout(), *din[0]);
  }
};

}  // namespace

std::unique_ptr<Layer> make_global_avg_pool(const proto::LayerConfig& cfg, int index) {
  return std::make_unique<GlobalAvgPool>(cfg.name(), index);
}

}  // namespace deeptrain
