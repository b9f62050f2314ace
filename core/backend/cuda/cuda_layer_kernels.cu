// The deeper nets' layers on the GPU: BatchNorm's per-channel sums and elementwise maps, and
// global average pooling. Mirrors core/layers/batch_norm.cpp and merge_layers.cpp element by
// element (f64 where the host computes in f64); the sums run in a fixed order (cuda_reduce.cuh),
// so they are deterministic but not in the host's order.
#include <cmath>

#include "core/backend/cuda/cuda_reduce.cuh"

namespace deeptrain::cuda {
namespace {

// d where y > 0, else 0 (the host's relu_masked: NaN and infinite d included).
__device__ __forceinline__ float masked(float d, float y) { return y > 0.0f ? d : 0.0f; }

// Channel c's sum of x, or of (x - mean[c])^2 when mean is set.
struct BnSums {
  const float* x;
  const double* mean;
  __device__ void operator()(int64_t i, int64_t c, double* acc) const {
    const double v = double(x[i]);
    if (mean) {
      const double d = v - mean[c];
      acc[0] += d * d;
    } else {
      acc[0] += v;
    }
  }
};

// Channel c's sum of g and of g * (x - mean[c]), g = dy (masked by relu_y when set).
struct BnGradSums {
  const float *x, *relu_y, *dy;
  const double* mean;
  __device__ void operator()(int64_t i, int64_t c, double* acc) const {
    const double g = double(relu_y ? masked(dy[i], relu_y[i]) : dy[i]);
    acc[0] += g;
    acc[1] += g * (double(x[i]) - mean[c]);
  }
};

template <class I>
__global__ void bn_apply_kernel(const float* x, const double* mean, const double* scale,
                                const double* shift, bool relu, float* y, I total, I C, I S) {
  DT_GRID_LOOP_T(I, i, total) {
    const I c = (i / S) % C;
    const float v = float((double(x[i]) - mean[c]) * scale[c] + shift[c]);
    y[i] = relu ? (v > 0.0f ? v : 0.0f) : v;
  }
}

template <class I>
__global__ void bn_input_grad_kernel(const float* x, const float* relu_y, const float* dy,
                                     const double* mean, const double* k, const double* m,
                                     const double* r, float* dx, I total, I C, I S) {
  DT_GRID_LOOP_T(I, i, total) {
    const I c = (i / S) % C;
    const float g = relu_y ? masked(dy[i], relu_y[i]) : dy[i];
    dx[i] = float(k[c] * double(g) + m[c] - r[c] * (double(x[i]) - mean[c]));
  }
}

// One warp-sized group per plane would be faster for small planes; one thread per plane keeps
// the host's order (position by position) and is plenty for the 7x7 planes ResNets end with.
__global__ void plane_mean_kernel(const float* x, float* y, int64_t planes, int64_t hw) {
  DT_GRID_LOOP(p, planes) {
    double acc = 0.0;
    for (int64_t s = 0; s < hw; ++s) acc += double(x[p * hw + s]);
    y[p] = float(acc / double(hw));
  }
}

__global__ void plane_mean_backward_kernel(const float* dy, float* dx, int64_t planes, int64_t hw) {
  DT_GRID_LOOP(i, planes * hw) dx[i] = float(double(dy[i / hw]) / double(hw));
}

}  // namespace

cudaError_t bn_sums(const float* x, const double* mean, double* out, int64_t n, int64_t C,
                    int64_t S, cudaStream_t st) {
  return channel_reduce<1>(BnSums{x, mean}, n, C, S, out, nullptr, st);
}

cudaError_t bn_grad_sums(const float* x, const float* relu_y, const float* dy, const double* mean,
                         double* out, int64_t n, int64_t C, int64_t S, cudaStream_t st) {
  return channel_reduce<2>(BnGradSums{x, relu_y, dy, mean}, n, C, S, out, nullptr, st);
}

cudaError_t bn_apply(const float* x, const double* mean, const double* scale, const double* shift,
                     bool relu, float* y, int64_t n, int64_t C, int64_t S, cudaStream_t st) {
  const int64_t total = n * C * S;
  if (total <= 0) return cudaSuccess;
  DT_DISPATCH_INDEX(total, I, bn_apply_kernel<I><<<grid_for(total), kThreads, 0, st>>>(
                                  x, mean, scale, shift, relu, y, I(total), I(C), I(S)));
  return launched();
}

cudaError_t bn_input_grad(const float* x, const float* relu_y, const float* dy, const double* mean,
                          const double* k, const double* m, const double* r, float* dx, int64_t n,
                          int64_t C, int64_t S, cudaStream_t st) {
  const int64_t total = n * C * S;
  if (total <= 0) return cudaSuccess;
  DT_DISPATCH_INDEX(total, I, bn_input_grad_kernel<I><<<grid_for(total), kThreads, 0, st>>>(
                                  x, relu_y, dy, mean, k, m, r, dx, I(total), I(C), I(S)));
  return launched();
}

cudaError_t plane_mean(const float* x, float* y, int64_t planes, int64_t hw, cudaStream_t st) {
  if (planes <= 0) return cudaSuccess;
  plane_mean_kernel<<<grid_for(planes), kThreads, 0, st>>>(x, y, planes, hw);
  return launched();
}

cudaError_t plane_mean_backward(const float* dy, float* dx, int64_t planes, int64_t hw,
                                cudaStream_t st) {
  if (planes * hw <= 0) return cudaSuccess;
  plane_mean_backward_kernel<<<grid_for(planes * hw), kThreads, 0, st>>>(dy, dx, planes, hw);
  return launched();
}

}  // namespace deeptrain::cuda
