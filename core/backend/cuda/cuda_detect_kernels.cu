// Kernels of the detection loss (cuda_detect.cpp). The targets and per-cell losses come from
// detection_targets.h, the CPU op's own definitions; the per-sample sums run in one thread a
// sample in the CPU op's order (heatmap cells, then boxes), in double.
#include "core/backend/cuda/cuda_device.cuh"

namespace deeptrain::cuda {
namespace {

// One thread a heatmap cell (i, k, s): its loss into cell_loss, its gradient into dout.
__global__ void heat_kernel(const float* out, const int32_t* boxes, int64_t C, int64_t oh,
                            int64_t ow, DetectionLossSpec spec, double scale, double* cell_loss,
                            float* dout, int64_t n_cells) {
  DT_GRID_LOOP(e, n_cells) {
    const int64_t S = oh * ow, K = spec.classes;
    const int64_t s = e % S, k = (e / S) % K, i = e / (S * K);
    const int32_t* b = boxes + i * spec.max_boxes * kBoxFields;
    int64_t count = 0;
    for (int32_t j = 0; j < spec.max_boxes; ++j) count += b[j * kBoxFields] >= 0;
    const double norm = 1.0 / double(count > 0 ? count : 1);
    const double t = heat_target(b, spec.max_boxes, int32_t(k), int32_t(s / ow), int32_t(s % ow),
                                 spec.stride, int32_t(oh), int32_t(ow));
    const int64_t at = (i * C + spec.heat_channel + k) * S + s;
    double g;
    cell_loss[e] = heat_loss(double(out[at]), t, spec.heat_bce, spec.alpha, spec.beta, &g);
    if (dout) dout[at] = float(scale * spec.heat_weight * norm * g);
  }
}

// One thread a sample: the box heads at each centre cell, then the sample's sum.
__global__ void sample_kernel(const float* out, const int32_t* boxes, int64_t C, int64_t oh,
                              int64_t ow, DetectionLossSpec spec, double scale,
                              const double* cell_loss, double* sample_loss, float* dout, int64_t n) {
  DT_GRID_LOOP(i, n) {
    const int64_t S = oh * ow, K = spec.classes;
    const int32_t* b = boxes + i * spec.max_boxes * kBoxFields;
    int64_t count = 0;
    for (int32_t j = 0; j < spec.max_boxes; ++j) count += b[j * kBoxFields] >= 0;
    const double norm = 1.0 / double(count > 0 ? count : 1);
    double heat = 0, size = 0, offset = 0;
    for (int64_t c = 0; c < K * S; ++c) heat += cell_loss[i * K * S + c];
    for (int32_t j = 0; j < spec.max_boxes; ++j) {
      const CenterObject o = center_object(b + j * kBoxFields, spec.stride, int32_t(oh), int32_t(ow));
      if (!o.valid) continue;
      const int64_t cell = int64_t(o.py) * ow + o.px;
      for (int head = 0; head < 2; ++head) {
        const int32_t channel = head ? spec.offset_channel : spec.size_channel;
        if (channel < 0) continue;
        const bool smooth = head ? spec.offset_smooth : spec.size_smooth;
        const double weight = head ? spec.offset_weight : spec.size_weight;
        const double want[2] = {head ? o.cx - o.px : o.w, head ? o.cy - o.py : o.h};
        for (int c = 0; c < 2; ++c) {
          const int64_t at = (i * C + channel + c) * S + cell;
          double g;
          (head ? offset : size) += box_loss(double(out[at]) - want[c], smooth, &g);
          if (dout) dout[at] += float(scale * weight * norm * g);
        }
      }
    }
    sample_loss[i] =
        (spec.heat_weight * heat + spec.size_weight * size + spec.offset_weight * offset) * norm;
  }
}

}  // namespace

cudaError_t detection_loss(const float* out, const int32_t* boxes, int64_t n, int64_t C,
                           int64_t h, int64_t w, DetectionLossSpec spec, double scale,
                           double* cell_loss, double* sample_loss, float* dout, cudaStream_t st) {
  if (n <= 0) return cudaSuccess;
  if (dout) {
    if (cudaError_t e = cudaMemsetAsync(dout, 0, size_t(n * C * h * w) * sizeof(float), st);
        e != cudaSuccess)
      return e;
  }
  const int64_t cells = n * spec.classes * h * w;
  heat_kernel<<<grid_for(cells), kThreads, 0, st>>>(out, boxes, C, h, w, spec, scale, cell_loss,
                                                    dout, cells);
  if (cudaError_t e = launched(); e != cudaSuccess) return e;
  sample_kernel<<<grid_for(n), kThreads, 0, st>>>(out, boxes, C, h, w, spec, scale, cell_loss,
                                                  sample_loss, dout, n);
  return launched();
}

}  // namespace deeptrain::cuda
