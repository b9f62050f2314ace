#include "core/backend/backend.h"

#include <cmath>
#include <cstring>

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

void Backend::accumulate(Tensor& acc, const Tensor& x) {
  DT_CHECK(acc.dtype() == x.dtype() && acc.numel() == x.numel() && acc.layout() == x.layout(),
           "accumulate: {} {} {} += {} {} {}", dtype_name(acc.dtype()), layout_name(acc.layout()),
           acc.shape().str(), dtype_name(x.dtype()), layout_name(x.layout()), x.shape().str());
  DT_CHECK(acc.device() == Device::cpu && x.device() == Device::cpu, "accumulate: needs host tensors");
  // Elementwise, so any layout will do as long as both share it.
  auto add = [n = acc.numel()]<class T>(T* a, const T* b) {
    for (int64_t i = 0; i < n; ++i) a[i] += b[i];
  };
  if (acc.dtype() == DType::f32) add(acc.data<float>(), x.data<float>());
  else if (acc.dtype() == DType::f64) add(acc.data<double>(), x.data<double>());
  else fail("accumulate: {} tensors are not supported", dtype_name(acc.dtype()));
}

ChannelView channel_view(const Tensor& x, int64_t C, const char* op, const char* who) {
  if (x.shape().rank() < 2 || x.dim(0) <= 0 || C <= 0 || x.numel() % (x.dim(0) * C) != 0)
    fail("{}{}: x {} does not split into {} channels per sample", who, op, x.shape().str(), C);
  return {x.dim(0), C, x.numel() / (x.dim(0) * C)};
}

void Backend::copy_rows(const Tensor& src, int64_t src_offset, int64_t src_stride, Tensor& dst,
                        int64_t dst_offset, int64_t dst_stride, int64_t row_len, int64_t rows) {
  DT_CHECK(src.dtype() == dst.dtype() && src.device() == Device::cpu && dst.device() == Device::cpu,
           "copy_rows: {} -> {} on the host", dtype_name(src.dtype()), dtype_name(dst.dtype()));
  DT_CHECK(rows == 0 || (src_offset + (rows - 1) * src_stride + row_len <= src.numel() &&
                         dst_offset + (rows - 1) * dst_stride + row_len <= dst.numel()),
           "copy_rows: {} rows of {} out of range", rows, row_len);
  const size_t elem = dtype_size(src.dtype());
  const char* s = static_cast<const char*>(src.raw());
  char* d = static_cast<char*>(dst.raw());
  for (int64_t i = 0; i < rows; ++i)
    std::memcpy(d + (dst_offset + i * dst_stride) * elem, s + (src_offset + i * src_stride) * elem,
                size_t(row_len) * elem);
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
