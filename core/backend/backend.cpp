#include "core/backend/backend.h"

#include <cmath>

#include "core/data/dataset.h"

namespace deeptrain {

static int64_t out_extent(int64_t in, int64_t k, int64_t stride, int64_t pad, const char* what) {
  int64_t span = in + 2 * pad - k;
  if (k <= 0 || stride <= 0 || pad < 0 || span < 0)
    fail_input("{}: kernel {} stride {} pad {} does not fit an input of extent {}", what, k,
               stride, pad, in);
  return span / stride + 1;
}

ConvGeom ConvGeom::make(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t r,
                        int64_t s, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                        int64_t pad_w) {
  return {n, c, h, w, k, r, s, stride_h, stride_w, pad_h, pad_w,
          out_extent(h, r, stride_h, pad_h, "convolution"),
          out_extent(w, s, stride_w, pad_w, "convolution")};
}

PoolGeom PoolGeom::make(int64_t n, int64_t c, int64_t h, int64_t w, int64_t r, int64_t s,
                        int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w) {
  return {n, c, h, w, r, s, stride_h, stride_w, pad_h, pad_w,
          out_extent(h, r, stride_h, pad_h, "max pooling"),
          out_extent(w, s, stride_w, pad_w, "max pooling")};
}

// ---- host defaults of the whole-buffer ops ----
namespace {
template <class F>
void on_host_floats(const Tensor& t, const char* op, F&& f) {
  DT_CHECK(t.device() == Device::cpu && t.layout() == Layout::plain, "{}: needs a plain host tensor", op);
  if (t.dtype() == DType::f32) f(static_cast<float*>(t.raw()));
  else if (t.dtype() == DType::f64) f(static_cast<double*>(t.raw()));
  else fail("{}: {} tensors are not supported", op, dtype_name(t.dtype()));
}
}  // namespace

ChannelView channel_view(const Tensor& x, int64_t C, const char* op, const char* who) {
  if (x.shape().rank() < 2 || x.dim(0) <= 0 || C <= 0 || x.numel() % (x.dim(0) * C) != 0)
    fail("{}{}: x {} does not split into {} channels per sample", who, op, x.shape().str(), C);
  return {x.dim(0), C, x.numel() / (x.dim(0) * C)};
}

namespace {
class ReadyLoss final : public PendingLoss {
 public:
  explicit ReadyLoss(LossSums s) : s_(s) {}
  LossSums get() override { return s_; }

 private:
  LossSums s_;
};
}  // namespace

std::unique_ptr<PendingLoss> Backend::softmax_ce_forward_async(const Tensor& logits,
                                                               const Tensor& labels,
                                                               double log_eps, Tensor& probs) {
  LossSums s;
  s.loss = softmax_ce_forward(logits, labels, log_eps, probs, &s.correct);
  return std::make_unique<ReadyLoss>(s);
}

void Backend::maxpool2d_infer(const PoolGeom& g, const Tensor& x, Tensor& y, Tensor& scratch) {
  maxpool2d_forward(g, x, y, scratch);
}

void Backend::gather_samples(const Tensor& images, const Tensor& labels, const int64_t* ids,
                             int64_t n, Tensor& x, Tensor& t) {
  DT_CHECK(images.device() == Device::cpu && x.device() == Device::cpu,
           "gather_samples on the host: the data and the batch in host memory");
  data::Dataset d;
  d.images = images;
  d.labels = labels;
  data::gather_batch(d, ids, n, x, t);
  x.set_layout(Layout::plain);
}

bool Backend::scale_and_check_finite(Tensor& x, double alpha) {
  bool finite = true;
  on_host_floats(x, "scale_and_check_finite", [&]<class T>(T* a) {
    const int64_t n = x.numel();
    for (int64_t i = 0; i < n; ++i) {
      a[i] = T(a[i] * alpha);
      finite = finite && std::isfinite(a[i]);
    }
  });
  return finite;
}

const char* math_mode_name(MathMode m) {
  switch (m) {
    case MathMode::fp32: return "fp32";
    case MathMode::tf32: return "tf32";
    case MathMode::bf16: return "bf16";
    case MathMode::fp16: return "fp16";
  }
  return "?";
}

}  // namespace deeptrain
