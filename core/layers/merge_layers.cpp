// Global average pooling and the two joins of a layer graph: the residual add (ResNet's skip
// connections) and the channel concatenation (Inception's branches). Plain loops, f32 and f64;
// the add and the pooling read blocked activations as they are (extra_layers.h).
#include <cstring>
#include <type_traits>

#include "core/layers/extra_layers.h"

namespace deeptrain {
namespace {

constexpr int64_t kParallelMin = int64_t{1} << 14;  // elements below which threads cost more

// (C, H, W) -> (C): y[n, c] = mean of x[n, c, :, :].
class GlobalAvgPool : public Layer {
 public:
  using Layer::Layer;
  const char* type() const override { return "global_avg_pool"; }
  Shape setup(const std::vector<Shape>& in) override {
    if (in.size() != 1 || in[0].rank() != 3)
      fail_input("layer '{}': global_avg_pool expects one (C, H, W) input per sample", name_);
    c_ = in[0][0];
    hw_ = in[0][1] * in[0][2];
    return {c_};
  }
  void forward(StepContext& ctx, const std::vector<Tensor*>& in, Tensor& out) override {
    const Tensor& x = *in[0];
    if (ctx.backend.device() != Device::cpu) return ctx.backend.plane_mean(x, out);
    if (x.dtype() == DType::f64) forward_impl<double>(ctx, x, out);
    else forward_impl<float>(ctx, x, out);
    out.set_layout(Layout::plain);
  }
  void backward(StepContext& ctx, const std::vector<Tensor*>& in, const Tensor& out,
                Tensor& dout, const std::vector<Tensor*>& din) override {
    if (!din[0]) return;
    if (ctx.backend.device() != Device::cpu) return ctx.backend.plane_mean_backward(dout, *din[0]);
    // dx takes the input's layout, as the layer before wrote it (blocked or plain).
    const int block = layout_block(in[0]->layout());
    const Tensor dy = ctx.backend.to_plain(dout);
    if (dy.dtype() == DType::f64) backward_impl<double>(dy, block, *din[0]);
    else backward_impl<float>(dy, block, *din[0]);
    din[0]->set_layout(in[0]->layout());
  }

 private:
  // Plain inputs go plane by plane; blocked ones (f32 only) a block of B channels at a time,
  // each channel's sum in the same order (position by position) as the plain loop.
  template <class T>
  void forward_impl(StepContext& ctx, const Tensor& x, Tensor& out) const {
    const int block = layout_block(x.layout());
    if (block != 1 && !std::is_same_v<T, float>) {
      forward_impl<T>(ctx, ctx.backend.to_plain(x), out);
      return;
    }
    const int64_t n = x.dim(0), hw = hw_, cb_count = c_ / block;
    const T* xd = x.data<T>();
    T* y = out.data<T>();
#pragma omp parallel for schedule(static) if (n * c_ * hw >= kParallelMin)
    for (int64_t p = 0; p < n * cb_count; ++p) {
      const int64_t i = p / cb_count, c0 = (p % cb_count) * block;
      for (int l = 0; l < block; ++l) {
        double acc = 0;
        for (int64_t s = 0; s < hw; ++s) acc += double(xd[(p * hw + s) * block + l]);
        y[i * c_ + c0 + l] = T(acc / double(hw));
      }
    }
  }
  template <class T>
  void backward_impl(const Tensor& dy, int block, Tensor& dx) const {
    const int64_t n = dy.dim(0), hw = hw_, cb_count = c_ / block;
    const T* g = dy.data<T>();
    T* d = dx.data<T>();
#pragma omp parallel for schedule(static) if (n * c_ * hw >= kParallelMin)
    for (int64_t p = 0; p < n * cb_count; ++p) {
      const int64_t i = p / cb_count, c0 = (p % cb_count) * block;
      for (int64_t s = 0; s < hw; ++s)
        for (int l = 0; l < block; ++l)
          d[(p * hw + s) * block + l] = T(double(g[i * c_ + c0 + l]) / double(hw));
    }
  }
  int64_t c_ = 0, hw_ = 0;
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
    if (ctx.backend.device() != Device::cpu) return forward_device(ctx.backend, xs, out);
    if (out.dtype() == DType::f64) forward_impl<double>(xs, out);
    else forward_impl<float>(xs, out);
    out.set_layout(xs[0].layout());
  }
  void backward(StepContext& ctx, const std::vector<Tensor*>& in, const Tensor& out,
                Tensor& dout, const std::vector<Tensor*>& din) override {
    // The fused ReLU's mask reads y, so y and dy must share a layout; each dx takes dy's.
    const bool one_layout = !fused_relu_ || out.layout() == dout.layout();
    const Tensor y = one_layout ? out : ctx.backend.to_plain(out);
    const Tensor dy = one_layout ? dout : ctx.backend.to_plain(dout);
    if (ctx.backend.device() != Device::cpu) return backward_device(ctx.backend, y, dy, din);
    if (dy.dtype() == DType::f64) backward_impl<double>(y, dy, din);
    else backward_impl<float>(y, dy, din);
  }

 private:
  template <class T>
  void forward_impl(const std::vector<Tensor>& xs, Tensor& out) const {
    const int64_t n = out.numel();
    std::vector<const T*> x;
    for (const Tensor& t : xs) x.push_back(t.data<T>());
    T* y = out.data<T>();
    // Two inputs (every residual block) get a loop of their own that GCC vectorises.
    if (x.size() == 2 && fused_relu_) add2<T, true>(x[0], x[1], n, y);
    else if (x.size() == 2) add2<T, false>(x[0], x[1], n, y);
    else {
      const bool relu = fused_relu_;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
      for (int64_t i = 0; i < n; ++i) {
        T v = x[0][i];
        for (size_t k = 1; k < x.size(); ++k) v += x[k][i];
        y[i] = relu && !(v > T(0)) ? T(0) : v;
      }
    }
  }
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

  // The device: y = x0, y += x1, ... (the host loop's order), then the ReLU in place.
  void forward_device(Backend& be, const std::vector<Tensor>& xs, Tensor& out) const {
    be.copy(xs[0], out);
    for (size_t k = 1; k < xs.size(); ++k) be.accumulate(out, xs[k]);
    if (fused_relu_) be.relu_forward(out, out);
  }
  void backward_device(Backend& be, const Tensor& y, const Tensor& dy,
                       const std::vector<Tensor*>& din) const {
    for (size_t k = 0; k < din.size(); ++k) {
      const int times = times_given(din, k);
      if (times == 0) continue;
      Tensor& dx = *din[k];
      // times * (y > 0 ? dy : 0), as the host computes it (relu_masked(m * g, y)).
      if (times > 1) be.scale(dy, double(times), dx);
      else if (dx.raw() != dy.raw()) be.copy(dy, dx);
      if (fused_relu_) be.relu_backward(y, dx, dx);
    }
  }

  template <class T, bool kRelu>
  static void add2(const T* __restrict a, const T* __restrict b, int64_t n, T* __restrict y) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      const T v = a[i] + b[i];
      y[i] = kRelu ? (v > T(0) ? v : T(0)) : v;
    }
  }
  template <class T>
  void backward_impl(const Tensor& out, const Tensor& dy, const std::vector<Tensor*>& din) const {
    const int64_t n = dy.numel();
    const T* y = out.data<T>();
    const T* g = dy.data<T>();
    for (size_t k = 0; k < din.size(); ++k) {
      const int times = times_given(din, k);
      if (times == 0) continue;
      T* dx = din[k]->data<T>();
      const T m = T(times);
      if (fused_relu_) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
        for (int64_t i = 0; i < n; ++i) dx[i] = relu_masked(T(m * g[i]), y[i]);
      } else if (times > 1) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
        for (int64_t i = 0; i < n; ++i) dx[i] = m * g[i];
      } else if (dx != g) {
        std::memcpy(dx, g, size_t(n) * sizeof(T));
      }
      din[k]->set_layout(dy.layout());
    }
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

int layout_block(Layout l) {
  switch (l) {
    case Layout::plain: return 1;
    case Layout::nChw8c: return 8;
    case Layout::nChw16c: return 16;
  }
  fail("layout_block: unknown layout {}", int(l));
}

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
