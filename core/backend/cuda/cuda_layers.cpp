// CudaBackend's ops for the deeper nets' layers: BatchNorm's per-channel sums, statistics and
// elementwise maps (all in device memory: no readback per step), global average pooling, the
// residual add and the strided row copies of a concat. Operands are checked before anything is enqueued; the
// kernels are in cuda_layer_kernels.cu.
#include "core/backend/cuda/cuda_backend_impl.h"
#include "core/error.h"

namespace deeptrain {
namespace cuda {
namespace {

// x (f32, n rows) viewed as (n, C, S); the message names this backend.
ChannelView view_of(const Tensor& x, int64_t C, const char* op) {
  return channel_view(x, C, op, "cuda backend: ");
}

const double* f64(const Tensor& t, const char* op, const char* what, int64_t numel) {
  return static_cast<const double*>(device_ptr(t, op, what, numel, DType::f64));
}
double* f64_out(Tensor& t, const char* op, const char* what, int64_t numel) {
  return static_cast<double*>(device_ptr(t, op, what, numel, DType::f64));
}
const float* f32_in(const Tensor& t, const char* op, const char* what, int64_t numel) {
  return static_cast<const float*>(device_ptr(t, op, what, numel, DType::f32));
}
float* f32_out(Tensor& t, const char* op, const char* what, int64_t numel) {
  return static_cast<float*>(device_ptr(t, op, what, numel, DType::f32));
}

}  // namespace

void CudaBackend::bn_sums(const Tensor& x, const Tensor* mean, Tensor& sums) {
  const char* op = "bn_sums";
  const ChannelView v = view_of(x, sums.numel(), op);
  const float* px = f32(x, op, "x");
  const double* pm = mean ? f64(*mean, op, "mean", v.C) : nullptr;
  auto* out = static_cast<double*>(device_ptr(sums, op, "sums", v.C, DType::f64));
  enter(op);
  DT_CUDA(cuda::bn_sums(px, pm, out, v.n, v.C, v.S, stream()), op);
}

void CudaBackend::bn_apply(const Tensor& x, const Tensor& mean, const Tensor& scale,
                           const Tensor& shift, bool relu, Tensor& y) {
  const char* op = "bn_apply";
  const ChannelView v = view_of(x, mean.numel(), op);
  const float* px = f32(x, op, "x");
  const double* pm = f64(mean, op, "mean", v.C);
  const double* ps = f64(scale, op, "scale", v.C);
  const double* pb = f64(shift, op, "shift", v.C);
  float* py = f32(y, op, "y", x.numel());
  enter(op);
  DT_CUDA(cuda::bn_apply(px, pm, ps, pb, relu, py, v.n, v.C, v.S, stream()), op);
  y.set_layout(Layout::plain);
}

void CudaBackend::bn_grad_sums(const Tensor& x, const Tensor* relu_y, const Tensor& dy,
                               const Tensor& mean, Tensor& sums) {
  const char* op = "bn_grad_sums";
  const ChannelView v = view_of(x, mean.numel(), op);
  const float* px = f32(x, op, "x");
  const float* pr = relu_y ? f32(*relu_y, op, "relu_y", x.numel()) : nullptr;
  const float* pdy = f32(dy, op, "dy", x.numel());
  const double* pm = f64(mean, op, "mean", v.C);
  auto* out = static_cast<double*>(device_ptr(sums, op, "sums", 2 * v.C, DType::f64));
  enter(op);
  DT_CUDA(cuda::bn_grad_sums(px, pr, pdy, pm, out, v.n, v.C, v.S, stream()), op);
}

void CudaBackend::bn_input_grad(const Tensor& x, const Tensor* relu_y, const Tensor& dy,
                                const Tensor& mean, const Tensor& k, const Tensor& m,
                                const Tensor& r, Tensor& dx) {
  const char* op = "bn_input_grad";
  const ChannelView v = view_of(x, mean.numel(), op);
  const float* px = f32(x, op, "x");
  const float* pr = relu_y ? f32(*relu_y, op, "relu_y", x.numel()) : nullptr;
  const float* pdy = f32(dy, op, "dy", x.numel());
  float* pdx = f32(dx, op, "dx", x.numel());
  enter(op);
  DT_CUDA(cuda::bn_input_grad(px, pr, pdy, f64(mean, op, "mean", v.C), f64(k, op, "k", v.C),
                              f64(m, op, "m", v.C), f64(r, op, "r", v.C), pdx, v.n, v.C, v.S,
                              stream()),
          op);
  dx.set_layout(Layout::plain);
}

// ---- BatchNorm's statistics: per-channel vectors, one thread per channel ----
void CudaBackend::bn_mean(const Tensor& sums, double count, Tensor& mean) {
  const char* op = "bn_mean";
  const int64_t C = mean.numel();
  const double* ps = f64(sums, op, "sums", C);
  double* pm = f64_out(mean, op, "mean", C);
  enter(op);
  DT_CUDA(cuda::bn_mean(ps, count, pm, C, stream()), op);
}

void CudaBackend::bn_normalizer(const Tensor* sq, double count, double eps, double momentum,
                                const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                                Tensor& running_var, Tensor& mean, Tensor& invstd, Tensor& scale,
                                Tensor& shift) {
  const char* op = "bn_normalizer";
  const int64_t C = mean.numel();
  const double* pq = sq ? f64(*sq, op, "sq", C) : nullptr;
  const float* pg = f32_in(gamma, op, "gamma", C);
  const float* pb = f32_in(beta, op, "beta", C);
  double* rm = f64_out(running_mean, op, "running_mean", C);
  double* rv = f64_out(running_var, op, "running_var", C);
  double* pm = f64_out(mean, op, "mean", C);
  double* pi = f64_out(invstd, op, "invstd", C);
  double* psc = f64_out(scale, op, "scale", C);
  double* psh = f64_out(shift, op, "shift", C);
  enter(op);
  DT_CUDA(cuda::bn_normalizer(pq, count, eps, momentum, pg, pb, rm, rv, pm, pi, psc, psh, C,
                              stream()),
          op);
}

void CudaBackend::bn_param_grads(Tensor& sums, const Tensor& invstd, Tensor& dgamma,
                                 Tensor& dbeta) {
  const char* op = "bn_param_grads";
  const int64_t C = invstd.numel();
  double* ps = f64_out(sums, op, "sums", 2 * C);
  const double* pi = f64(invstd, op, "invstd", C);
  float* pdg = f32_out(dgamma, op, "dgamma", C);
  float* pdb = f32_out(dbeta, op, "dbeta", C);
  enter(op);
  DT_CUDA(cuda::bn_param_grads(ps, pi, pdg, pdb, C, stream()), op);
}

void CudaBackend::bn_input_coefficients(const Tensor& sums, const Tensor& invstd,
                                        const Tensor& gamma, double count, bool training,
                                        Tensor& k, Tensor& m, Tensor& r) {
  const char* op = "bn_input_coefficients";
  const int64_t C = invstd.numel();
  const double* ps = f64(sums, op, "sums", 2 * C);
  const double* pi = f64(invstd, op, "invstd", C);
  const float* pg = f32_in(gamma, op, "gamma", C);
  double* pk = f64_out(k, op, "k", C);
  double* pmm = f64_out(m, op, "m", C);
  double* prr = f64_out(r, op, "r", C);
  enter(op);
  DT_CUDA(cuda::bn_input_coefficients(ps, pi, pg, count, training, pk, pmm, prr, C, stream()), op);
}

void CudaBackend::plane_mean(const Tensor& x, Tensor& y) {
  const char* op = "plane_mean";
  if (x.shape().rank() != 4) fail("cuda backend: {}: x {} is not (n, C, H, W)", op, x.shape().str());
  const int64_t planes = x.dim(0) * x.dim(1), hw = x.dim(2) * x.dim(3);
  const float* px = f32(x, op, "x");
  float* py = f32(y, op, "y", planes);
  enter(op);
  DT_CUDA(cuda::plane_mean(px, py, planes, hw, stream()), op);
  y.set_layout(Layout::plain);
}

void CudaBackend::plane_mean_backward(const Tensor& dy, Layout layout, Tensor& dx) {
  const char* op = "plane_mean_backward";
  if (dx.shape().rank() != 4)
    fail("cuda backend: {}: dx {} is not (n, C, H, W)", op, dx.shape().str());
  if (layout != Layout::plain)
    fail("cuda backend: {}: a {} dx (this backend writes plain layouts)", op, layout_name(layout));
  const int64_t planes = dx.dim(0) * dx.dim(1), hw = dx.dim(2) * dx.dim(3);
  const float* pdy = f32(dy, op, "dy", planes);
  float* pdx = f32(dx, op, "dx");
  enter(op);
  DT_CUDA(cuda::plane_mean_backward(pdy, pdx, planes, hw, stream()), op);
  dx.set_layout(Layout::plain);
}

// y = x0, y += x1, ... (CpuBackend's order of additions), then the ReLU in place.
void CudaBackend::add(const std::vector<Tensor>& xs, bool relu, Tensor& y) {
  if (xs.empty()) fail("cuda backend: add: no inputs");
  copy(xs[0], y);
  for (size_t k = 1; k < xs.size(); ++k) accumulate(y, xs[k]);
  if (relu) relu_forward(y, y);
  y.set_layout(Layout::plain);
}

void CudaBackend::copy_rows(const Tensor& src, int64_t src_offset, int64_t src_stride, Tensor& dst,
                            int64_t dst_offset, int64_t dst_stride, int64_t row_len, int64_t rows) {
  const char* op = "copy_rows";
  if (src.dtype() != dst.dtype())
    fail("cuda backend: {}: {} -> {}", op, dtype_name(src.dtype()), dtype_name(dst.dtype()));
  device_ptr(src, op, "src", -1, src.dtype());
  device_ptr(dst, op, "dst", -1, dst.dtype());
  if (rows <= 0 || row_len <= 0) return;
  if (src_offset < 0 || dst_offset < 0 || row_len > src_stride || row_len > dst_stride ||
      src_offset + (rows - 1) * src_stride + row_len > src.numel() ||
      dst_offset + (rows - 1) * dst_stride + row_len > dst.numel())
    fail("cuda backend: {}: {} rows of {} out of range ({} -> {})", op, rows, row_len,
         src.shape().str(), dst.shape().str());
  const size_t elem = dtype_size(src.dtype());
  enter(op);
  DT_CUDA(cudaMemcpy2DAsync(static_cast<char*>(dst.raw()) + dst_offset * elem, dst_stride * elem,
                            static_cast<const char*>(src.raw()) + src_offset * elem,
                            src_stride * elem, row_len * elem, size_t(rows),
                            cudaMemcpyDeviceToDevice, stream()),
          op);
}

}  // namespace cuda
}  // namespace deeptrain
