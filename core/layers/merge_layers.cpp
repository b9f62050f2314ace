// Global average pooling and the two joins of a layer graph: the residual add (ResNet's skip
// connections) and the channel concatenation (Inception's branches), each through its backend
// ops (plane_mean, add, copy_rows; the CPU backends' read blocked activations as they are).
#include "core/layers/extra_layers.h"

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
    for (size_t k = 0; k < din.size(); ++k) {
      const int times = times_given(din, k);
      if (times == 0) continue;
      Tensor& dx = *din[k];
      // times * dy, where y > 0 when the ReLU is fused.
      if (times > 1) {
        be.scale(dy, double(times), dx);
        if (fused_relu_) be.relu_backward(y, dx, dx);
      } else if (fused_relu_) {
        be.relu_backward(y, dy, dx);
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

// Concatenation along axis 1 of the batch (the channels of (C, H, W) inputs, the features of
// (D) inputs); every other dimension must agree.
class Concat : public Layer {
 public:
  using Layer::Layer;
  const char* type() const override { return "concat"; }
  Shape setup(const std::vector<Shape>& in) override {
    if (in.size() < 2)
      fail_input("layer '{}': concat needs 2 or more inputs, got {}", name_, in.size());
    std::vector<int64_t> dims = in[0].dims();
    if (dims.empty()) fail_input("layer '{}': concat of scalars", name_);
    channels_.clear();
    for (size_t k = 0; k < in.size(); ++k) {
      bool same = in[k].rank() == in[0].rank();
      for (int d = 1; same && d < in[0].rank(); ++d) same = in[k][d] == in[0][d];
      if (!same)
        fail_input("layer '{}': concat joins channels, the other dimensions must agree: "
                   "input 0 is {}, input {} is {}", name_, in[0].str(), k, in[k].str());
      channels_.push_back(in[k][0]);
      if (k > 0) dims[0] += in[k][0];
    }
    inner_ = in[0].numel() / in[0][0];
    out_channels_ = dims[0];
    return Shape(dims);
  }
  // Each input's samples are rows of channels_[k] * inner_ elements; in the output they sit at
  // a channel offset within rows of out_channels_ * inner_ (Backend::copy_rows, host or device).
  void forward(StepContext& ctx, const std::vector<Tensor*>& in, Tensor& out) override {
    const int64_t n = out.dim(0), row = out_channels_ * inner_;
    int64_t offset = 0;  // in channels
    for (size_t k = 0; k < in.size(); ++k) {
      const Tensor x = ctx.backend.to_plain(*in[k]);
      const int64_t block = channels_[k] * inner_;
      ctx.backend.copy_rows(x, 0, block, out, offset * inner_, row, block, n);
      offset += channels_[k];
    }
    out.set_layout(Layout::plain);
  }
  void backward(StepContext& ctx, const std::vector<Tensor*>& in, const Tensor& out,
                Tensor& dout, const std::vector<Tensor*>& din) override {
    const Tensor dy = ctx.backend.to_plain(dout);
    const int64_t n = dy.dim(0), row = out_channels_ * inner_;
    int64_t offset = 0;
    for (size_t k = 0; k < din.size(); ++k) {
      const int64_t block = channels_[k] * inner_;
      bool again = false;  // the same layer concatenated twice: its gradients add up
      for (size_t j = 0; j < k; ++j) again |= din[j] && din[j] == din[k];
      if (again) {
        Tensor part = ctx.backend.empty(din[k]->shape(), dy.dtype());
        ctx.backend.copy_rows(dy, offset * inner_, row, part, 0, block, block, n);
        ctx.backend.accumulate(*din[k], part);
      } else if (din[k]) {
        ctx.backend.copy_rows(dy, offset * inner_, row, *din[k], 0, block, block, n);
        din[k]->set_layout(Layout::plain);
      }
      offset += channels_[k];
    }
  }

 private:
  std::vector<int64_t> channels_;  // of each input
  int64_t inner_ = 0;               // elements per channel (H * W, or 1)
  int64_t out_channels_ = 0;
};

}  // namespace

std::unique_ptr<Layer> make_global_avg_pool(const proto::LayerConfig& cfg, int index) {
  return std::make_unique<GlobalAvgPool>(cfg.name(), index);
}
std::unique_ptr<Layer> make_add(const proto::LayerConfig& cfg, int index) {
  return std::make_unique<Add>(cfg.name(), index);
}
std::unique_ptr<Layer> make_concat(const proto::LayerConfig& cfg, int index) {
  return std::make_unique<Concat>(cfg.name(), index);
}

}  // namespace deeptrain
