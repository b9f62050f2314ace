// Crop (FCN's alignment of a skip connection): input 0 (C, H, W) cut to input 1's height and
// width at (offset_h, offset_w). Input 1 only gives the size: its gradient is zero.
#include "core/layers/kinds.h"

namespace deeptrain {
namespace {

class Crop : public Layer {
 public:
  Crop(const proto::LayerConfig& cfg, int index) : Layer(cfg.name(), index), p_(cfg.crop()) {
    if (p_.offset_h() < 0 || p_.offset_w() < 0)
      fail_input("layer '{}': crop offsets must be >= 0, got ({}, {})", name_, p_.offset_h(),
                 p_.offset_w());
  }
  const char* type() const override { return "crop"; }
  Shape setup(const std::vector<Shape>& in) override {
    expect_inputs(name_, in, 2, 3);
    if (in[1].rank() != 3)
      fail_input("layer '{}': the reference (input 2) must be (C, H, W), got {}", name_, in[1].str());
    if (p_.offset_h() + in[1][1] > in[0][1] || p_.offset_w() + in[1][2] > in[0][2])
      fail_input("layer '{}': a {}x{} window at ({}, {}) does not fit inside input {} (the "
                 "reference {} is larger than what can be cut from it)", name_, in[1][1], in[1][2],
                 p_.offset_h(), p_.offset_w(), in[0].str(), in[1].str());
    return {in[0][0], in[1][1], in[1][2]};
  }
  void forward(StepContext& ctx, const std::vector<Tensor*>& in, Tensor& out) override {
    ctx.backend.crop2d(ctx.backend.to_plain(*in[0]), p_.offset_h(), p_.offset_w(), out);
  }
  void backward(StepContext& ctx, const std::vector<Tensor*>&, const Tensor&, Tensor& dout,
                const std::vector<Tensor*>& din) override {
    if (din[0]) ctx.backend.crop2d_backward(ctx.backend.to_plain(dout), p_.offset_h(), p_.offset_w(), *din[0]);
    if (din[1]) {
      ctx.backend.fill_zero(*din[1]);
      din[1]->set_layout(Layout::plain);
    }
  }

 private:
  proto::CropParam p_;
};

}  // namespace

std::unique_ptr<Layer> make_crop(const proto::LayerConfig& cfg, int index) {
  return std::make_unique<Crop>(cfg, index);
}

}  // namespace deeptrain
