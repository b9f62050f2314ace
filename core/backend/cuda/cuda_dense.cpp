// CudaBackend's crop and per-pixel softmax cross-entropy (the kernels: cuda_dense_kernels.cu).
// Operands are checked before anything is enqueued. The loss's per-sample sums come back to the
// host (one synchronisation per call) and are added there in sample order, as CpuBackend does.
#include <vector>

#include "core/backend/cuda/cuda_backend_impl.h"
#include "core/error.h"

namespace deeptrain::cuda {
namespace {

void check_crop(const char* op, const Tensor& big, const Tensor& small, int64_t oy, int64_t ox) {
  if (big.shape().rank() != 4 || small.shape().rank() != 4 || big.dim(0) != small.dim(0) ||
      big.dim(1) != small.dim(1) || oy < 0 || ox < 0 || oy + small.dim(2) > big.dim(2) ||
      ox + small.dim(3) > big.dim(3))
    fail("cuda backend: {}: window {} at ({}, {}) is not inside {}", op, small.shape().str(), oy,
         ox, big.shape().str());
}

}  // namespace

void CudaBackend::crop2d(const Tensor& x, int64_t oy, int64_t ox, Tensor& y) {
  const char* op = "crop2d";
  check_crop(op, x, y, oy, ox);
  const float* px = f32(x, op, "x");
  float* py = f32(y, op, "y");
  enter(op);
  DT_CUDA(cuda::crop2d(px, py, x.dim(0) * x.dim(1), x.dim(2), x.dim(3), y.dim(2), y.dim(3), oy, ox,
                       stream()), op);
  y.set_layout(Layout::plain);
}

void CudaBackend::crop2d_backward(const Tensor& dy, int64_t oy, int64_t ox, Tensor& dx) {
  const char* op = "crop2d_backward";
  check_crop(op, dx, dy, oy, ox);
  dx.set_layout(Layout::plain);
  const float* pdy = f32(dy, op, "dy");
  float* pdx = f32(dx, op, "dx");
  enter(op);
  DT_CUDA(cuda::crop2d_backward(pdy, pdx, dx.dim(0) * dx.dim(1), dx.dim(2), dx.dim(3), dy.dim(2),
                                dy.dim(3), oy, ox, stream()), op);
}

namespace {
// The class weights in device memory (null when empty: all 1). A pageable source: the copy is
// staged before cudaMemcpyAsync returns.
const double* upload_weights(const std::vector<double>& w, Scratch& into, cudaStream_t st,
                             const char* op) {
  if (w.empty()) return nullptr;
  double* d = into.get<double>(int64_t(w.size()), st, op);
  DT_CUDA(cudaMemcpyAsync(d, w.data(), w.size() * sizeof(double), cudaMemcpyHostToDevice, st), op);
  return d;
}
}  // namespace

LossSums CudaBackend::pixel_softmax_ce_forward(const Tensor& logits, const Tensor& labels,
                                               int ignore_label, const std::vector<double>& weights,
                                               double log_eps, Tensor& probs) {
  const char* op = "pixel_softmax_ce_forward";
  if (logits.shape().rank() != 4)
    fail("cuda backend: {}: logits {} are not (n, K, H, W)", op, logits.shape().str());
  const int64_t n = logits.dim(0), K = logits.dim(1), S = logits.dim(2) * logits.dim(3);
  if (!weights.empty() && int64_t(weights.size()) != K)
    fail("cuda backend: {}: {} class weights for {} classes", op, weights.size(), K);
  const float* pz = f32(logits, op, "logits");
  const int32_t* pt = static_cast<const int32_t*>(device_ptr(labels, op, "labels", n * S, DType::i32));
  float* pp = f32(probs, op, "probs", logits.numel());
  enter(op);
  LossSums r;
  if (n * S == 0) return r;
  const double* pw = upload_weights(weights, class_weights_, stream(), op);
  double* sums = pixel_sums_.get<double>(4 * n, stream(), op);
  DT_CUDA(cuda::pixel_softmax_ce_forward(
              pz, pt, n, K, S, ignore_label, pw, log_eps, pp,
              pixel_loss_.get<double>(n * S, stream(), op), pixel_hit_.get<int32_t>(n * S, stream(), op),
              pixel_status_.get<int32_t>(n * S, stream(), op), sums, stream()),
          op);
  std::vector<double> host(size_t(4 * n));
  DT_CUDA(cudaMemcpyAsync(host.data(), sums, host.size() * sizeof(double), cudaMemcpyDeviceToHost,
                          stream()), op);
  sync(op);
  for (int64_t i = 0; i < n; ++i) {
    if (host[size_t(4 * i + 3)] >= 0)
      fail_input("{}: sample {} of the batch has a label at pixel {} that is not a class in [0, {}) "
                 "nor the ignore label {}", op, i, int64_t(host[size_t(4 * i + 3)]), K, ignore_label);
    r.loss += host[size_t(4 * i)];
    r.correct += int64_t(host[size_t(4 * i + 1)]);
    r.counted += int64_t(host[size_t(4 * i + 2)]);
  }
  probs.set_layout(Layout::plain);
  return r;
}

void CudaBackend::pixel_softmax_ce_backward(const Tensor& probs, const Tensor& labels,
                                            int ignore_label, const std::vector<double>& weights,
                                            double scale, Tensor& dlogits) {
  const char* op = "pixel_softmax_ce_backward";
  if (probs.shape().rank() != 4)
    fail("cuda backend: {}: probs {} are not (n, K, H, W)", op, probs.shape().str());
  const int64_t n = probs.dim(0), K = probs.dim(1), S = probs.dim(2) * probs.dim(3);
  const float* pp = f32(probs, op, "probs");
  const int32_t* pt = static_cast<const int32_t*>(device_ptr(labels, op, "labels", n * S, DType::i32));
  float* pd = f32(dlogits, op, "dlogits", probs.numel());
  enter(op);
  const double* pw = upload_weights(weights, class_weights_, stream(), op);
  DT_CUDA(cuda::pixel_softmax_ce_backward(pp, pt, n, K, S, ignore_label, pw, scale, pd, stream()), op);
  dlogits.set_layout(Layout::plain);
}

}  // namespace deeptrain::cuda
