// The dense-task ops (transposed convolution, crop, per-pixel softmax cross-entropy) on CUDA.
// Not written for the GPU yet: each fails naming itself, so a segmentation model on a GPU
// backend stops at its first step with a message instead of computing on wrong assumptions.
#include "core/backend/cuda/cuda_backend_impl.h"

namespace deeptrain::cuda {
namespace {
[[noreturn]] void not_on_gpu(const char* op) {
  fail_input("cuda backend: {} does not run on the GPU yet; train dense models with run.backend: "
             "BACKEND_CPU or BACKEND_CPU_REF", op);
}
}  // namespace

void CudaBackend::deconv2d_forward(const ConvGeom&, const Tensor&, const Tensor&, const Tensor&,
                                   Tensor&) {
  not_on_gpu("deconv2d_forward");
}
void CudaBackend::deconv2d_backward(const ConvGeom&, const Tensor&, const Tensor&, const Tensor&,
                                    Tensor*, Tensor&, Tensor*) {
  not_on_gpu("deconv2d_backward");
}
void CudaBackend::crop2d(const Tensor&, int64_t, int64_t, Tensor&) { not_on_gpu("crop2d"); }
void CudaBackend::crop2d_backward(const Tensor&, int64_t, int64_t, Tensor&) {
  not_on_gpu("crop2d_backward");
}
LossSums CudaBackend::pixel_softmax_ce_forward(const Tensor&, const Tensor&, int,
                                               const std::vector<double>&, double, Tensor&) {
  not_on_gpu("pixel_softmax_ce_forward");
}
void CudaBackend::pixel_softmax_ce_backward(const Tensor&, const Tensor&, int,
                                            const std::vector<double>&, double, Tensor&) {
  not_on_gpu("pixel_softmax_ce_backward");
}

}  // namespace deeptrain::cuda
