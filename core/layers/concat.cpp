// Channel concatenation (concat): Inception's branches, through Backend::copy_rows.
#include "core/layers/kinds.h"

namespace deeptrain {
namespace {

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
  //
  // The same copies join blocked inputs (nChwBc): when every input's channels fill whole
  // blocks, a sample's part of input k is still one run of channels_[k] * inner_ elements, at
  // the same offset of the output's row. So inputs that share a blocked layout stay in it
  // (GoogLeNet's 112-channel module: no conversion to plain and back for the next layer).
  void forward(StepContext& ctx, const std::vector<Tensor*>& in, Tensor& out) override {
    const int64_t n = out.dim(0), row = out_channels_ * inner_;
    const Layout layout = shared_blocked_layout(in);
    int64_t offset = 0;  // in channels
    for (size_t k = 0; k < in.size(); ++k) {
      const Tensor x = layout == Layout::plain ? ctx.backend.to_plain(*in[k]) : *in[k];
      const int64_t block = channels_[k] * inner_;
      ctx.backend.copy_rows(x, 0, block, out, offset * inner_, row, block, n);
      offset += channels_[k];
    }
    out.set_layout(layout);
  }
  void backward(StepContext& ctx, const std::vector<Tensor*>& in, const Tensor& out,
                Tensor& dout, const std::vector<Tensor*>& din) override {
    // A blocked dout (from a blocked forward) is split as it is, and din takes its layout.
    const Layout layout = fills_blocks(dout.layout()) ? dout.layout() : Layout::plain;
    const Tensor dy = layout == Layout::plain ? ctx.backend.to_plain(dout) : dout;
    const int64_t n = dy.dim(0), row = out_channels_ * inner_;
    int64_t offset = 0;
    for (size_t k = 0; k < din.size(); ++k) {
      const int64_t block = channels_[k] * inner_;
      bool again = false;  // the same layer concatenated twice: its gradients add up
      for (size_t j = 0; j < k; ++j) again |= din[j] && din[j] == din[k];
      if (again) {
        Tensor part = ctx.backend.empty(din[k]->shape(), dy.dtype());
        ctx.backend.copy_rows(dy, offset * inner_, row, part, 0, block, block, n);
        part.set_layout(layout);
        ctx.backend.accumulate(*din[k], part);
      } else if (din[k]) {
        ctx.backend.copy_rows(dy, offset * inner_, row, *din[k], 0, block, block, n);
        din[k]->set_layout(layout);
      }
      offset += channels_[k];
    }
  }

 private:
  // Whether a (C, H, W) tensor in `layout`, blocked, has every input's channels in whole blocks.
  bool fills_blocks(Layout layout) const {
    if (layout == Layout::plain || inner_ == 1) return false;
    for (int64_t c : channels_)
      if (c % layout_block(layout)) return false;
    return true;
  }
  // The blocked layout all inputs share, when the copies can keep it; else plain.
  Layout shared_blocked_layout(const std::vector<Tensor*>& in) const {
    const Layout layout = in[0]->layout();
    for (const Tensor* x : in)
      if (x->layout() != layout || x->shape().rank() != 4) return Layout::plain;
    return fills_blocks(layout) ? layout : Layout::plain;
  }

  std::vector<int64_t> channels_;  // of each input
  int64_t inner_ = 0;               // elements per channel (H * W, or 1)
  int64_t out_channels_ = 0;
};

}  // namespace

std::unique_ptr<Layer> make_concat(const proto::LayerConfig& cfg, int index) {
  return std::make_unique<Concat>(cfg.name(), index);
}

}  // namespace deeptrain
