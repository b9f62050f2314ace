// CudaBackend's detection loss (the kernels: cuda_detect_kernels.cu). The targets are on the
// device: their labels were checked when the data set was loaded (a label outside the classes
// would match no heatmap channel here). The per-sample sums come back to the host (one
// synchronisation per call) and are added there in sample order, as CpuBackend does.
#include <vector>

#include "core/backend/cuda/cuda_backend_impl.h"
#include "core/error.h"

namespace deeptrain::cuda {

double CudaBackend::detection_loss(const Tensor& out, const Tensor& boxes,
                                   const DetectionLossSpec& spec, double scale, Tensor* dout) {
  const char* op = "detection_loss";
  if (out.shape().rank() != 4 || spec.heat_channel < 0 ||
      spec.heat_channel + spec.classes > out.dim(1) || spec.size_channel + 2 > out.dim(1) ||
      spec.offset_channel + 2 > out.dim(1))
    fail("cuda backend: {}: out {} does not hold the heads ({} classes)", op, out.shape().str(),
         spec.classes);
  const int64_t n = out.dim(0), C = out.dim(1), h = out.dim(2), w = out.dim(3);
  const float* pz = f32(out, op, "out");
  const int32_t* pb = static_cast<const int32_t*>(
      device_ptr(boxes, op, "boxes", n * spec.max_boxes * kBoxFields, DType::i32));
  float* pd = dout ? f32(*dout, op, "dout", out.numel()) : nullptr;
  enter(op);
  if (n == 0) return 0.0;
  double* sums = detect_sums_.get<double>(n, stream(), op);
  DT_CUDA(cuda::detection_loss(pz, pb, n, C, h, w, spec, scale,
                               detect_cell_loss_.get<double>(n * spec.classes * h * w, stream(), op),
                               sums, pd, stream()),
          op);
  if (dout) dout->set_layout(Layout::plain);
  std::vector<double> host(static_cast<size_t>(n));
  DT_CUDA(cudaMemcpyAsync(host.data(), sums, host.size() * sizeof(double), cudaMemcpyDeviceToHost,
                          stream()), op);
  sync(op);
  double sum = 0;
  for (double l : host) sum += l;
  return sum;
}

}  // namespace deeptrain::cuda
