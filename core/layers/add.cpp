// The residual add (add): ResNet's skip connections, through Backend::add.
#include "core/layers/kinds.h"

namespace deeptrain {
namespace {

// y = x_0 + x_1 + ... (in input order), optionally followed by a fused ReLU (a residual
// block's closing ReLU). Every input receives the same gradient.
class Add : public Layer {
 public:
  using Layer::Layer;
  const char* type() const override { return "add"; }
  bool can_fuse_relu() const override { return true; }
  Shape setup(const std::vector<Shape>& in) override {
    if (in.size() < 2) fail_input("layer '{}': add needs 2 or more inputs, got {}", name_, in.size());
    for (size_t k = 1; k < in.size(); ++k)
      if (in[k] != in[0])
        fail_input("layer '{}': add needs inputs of one shape: input 0 is {}, input {} is {} "
                   "(project the shortcut with a 1x1 conv of matching channels and stride)",
                   name_, in[0].str(), k, in[k].str());
    return in[0];
  }
  void forward(StepContext& ctx, const std::vector<Tensor*>& in, Tensor& out) override {
    // Inputs in one layout are added as they are (an elementwise op does not care which);
    // mixed layouts meet in plain.
    bool one_layout = true;
    for (Tensor* t : in) one_layout = one_layout && t->layout() == in[0]->layout();
    std::vector<Tensor> xs;
    for (Tensor* t : in) xs.push_back(one_layout ? *t : ctx.backend.to_plain(*t));
    ctx.backend.add(xs, fused_relu_, out);
  }
  void backward(StepContext& ctx, const std::vector<Tensor*>& in, const Tensor& out,
                Tensor& dout, const std::vector<Tensor*>& din) override {
    Backend& be = ctx.backend;
    // The fused ReLU's mask reads y, so y and dy must share a layout; each dx takes dy's.
    const bool one_layout = !fused_relu_ || out.layout() == dout.layout();
    const Tensor y = one_layout ? out : be.to_plain(out);
    const Tensor dy = one_layout ? dout : be.to_plain(dout);
    const Tensor* masked = nullptr;  // an input's gradient that already holds dy masked by y > 0
    for (size_t k = 0; k < din.size(); ++k) {
      const int times = times_given(din, k);
      if (times == 0) continue;
      Tensor& dx = *din[k];
      // times * dy, where y > 0 when the ReLU is fused.
      if (times > 1) {
        be.scale(dy, double(times), dx);
        if (fused_relu_) be.relu_backward(y, dx, dx);
      } else if (fused_relu_ && masked) {
        be.copy(*masked, dx);  // two reads (y, dy) become one
      } else if (fused_relu_) {
        be.relu_backward(y, dy, dx);
        masked = &dx;
      } else if (dx.raw() != dy.raw()) {
        be.copy(dy, dx);
      }
      dx.set_layout(dy.layout());
    }
  }

 private:
  // How many times gradient tensor din[k] is given (the same layer added to itself, x + x,
  // arrives as one tensor given twice): 0 when it is null or an earlier k gave it already.
  static int times_given(const std::vector<Tensor*>& din, size_t k) {
    if (!din[k]) return 0;
    int times = 0;
    for (size_t j = 0; j < din.size(); ++j) {
      if (din[j] == din[k] && j < k) return 0;
      times += din[j] == din[k];
    }
    return times;
  }
};

}  // namespace

std::unique_ptr<Layer> make_add(const proto::LayerConfig& cfg, int index) {
  return std::make_unique<Add>(cfg.name(), index);
}

}  // namespace deeptrain
