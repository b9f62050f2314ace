// The deeper nets' layers on the GPU: BatchNorm's per-channel sums and elementwise maps, and
// global average pooling. Mirrors core/layers/batch_norm.cpp and merge_layers.cpp element by
// element (f64 where the host computes in f64); the sums run in a fixed order (a fixed
// per-thread stride, then a fixed tree), so they are deterministic but not in the host's order.
#include <cmath>

#include "core/backend/cuda/cuda_device.cuh"

namespace deeptrain::cuda {
namespace {

// Sums one f64 value per thread over the block in a fixed tree; thread 0 gets the total.
__device__ double block_sum(double v, double* part) {
  part[threadIdx.x] = v;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (int(threadIdx.x) < half) part[threadIdx.x] += part[threadIdx.x + half];
    __syncthreads();
  }
  return part[0];
}

// d where y > 0, else 0 (the host's relu_masked: NaN and infinite d included).
__device__ __forceinline__ float masked(float d, float y) { return y > 0.0f ? d : 0.0f; }

// One block per channel c of x viewed as (n, C, S): sum of x, or of (x - mean[c])^2.
__global__ void bn_sums_kernel(const float* x, const double* mean, double* out, int64_t n,
                               int64_t C, int64_t S) {
  __shared__ double part[kThreads];
  const int64_t c = blockIdx.x, total = n * S;
  const double mu = mean ? mean[c] : 0.0;
  double sum = 0.0;
  for (int64_t t = threadIdx.x; t < total; t += blockDim.x) {
    const double v = double(x[((t / S) * C + c) * S + t % S]);
    sum += mean ? (v - mu) * (v - mu) : v;
  }
  const double s = block_sum(sum, part);
  if (threadIdx.x == 0) out[c] = s;
}

// One block per channel: out[c] = sum g, out[C + c] = sum g * (x - mean[c]).
__global__ void bn_grad_sums_kernel(const float* x, const float* relu_y, const float* dy,
                                    const double* mean, double* out, int64_t n, int64_t C,
                                    int64_t S) {
  __shared__ double part[kThreads];
  const int64_t c = blockIdx.x, total = n * S;
  const double mu = mean[c];
  double sg = 0.0, sgx = 0.0;
  for (int64_t t = threadIdx.x; t < total; t += blockDim.x) {
    const int64_t i = ((t / S) * C + c) * S + t % S;
    const double g = double(relu_y ? masked(dy[i], relu_y[i]) : dy[i]);
    sg += g;
    sgx += g * (double(x[i]) - mu);
  }
  const double a = block_sum(sg, part);
  if (threadIdx.x == 0) out[c] = a;
  __syncthreads();  // part is reused
  const double b = block_sum(sgx, part);
  if (threadIdx.x == 0) out[C + c] = b;
}

__global__ void bn_apply_kernel(const float* x, const double* mean, const double* scale,
                                const double* shift, bool relu, float* y, int64_t n, int64_t C,
                                int64_t S) {
  DT_GRID_LOOP(i, n * C * S) {
    const int64_t c = (i / S) % C;
    const float v = float((double(x[i]) - mean[c]) * scale[c] + shift[c]);
    y[i] = relu ? (v > 0.0f ? v : 0.0f) : v;
  }
}

__global__ void bn_input_grad_kernel(const float* x, const float* relu_y, const float* dy,
                                     const double* mean, const double* k, const double* m,
                                     const double* r, float* dx, int64_t n, int64_t C, int64_t S) {
  DT_GRID_LOOP(i, n * C * S) {
    const int64_t c = (i / S) % C;
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

bool fits_grid(int64_t blocks) { return blocks > 0 && blocks <= 0x7fffffff; }

}  // namespace

cudaError_t bn_sums(const float* x, const double* mean, double* out, int64_t n, int64_t C,
                    int64_t S, cudaStream_t st) {
  if (C <= 0) return cudaSuccess;
  if (!fits_grid(C)) return cudaErrorInvalidValue;
  bn_sums_kernel<<<unsigned(C), kThreads, 0, st>>>(x, mean, out, n, C, S);
  return launched();
}

cudaError_t bn_grad_sums(const float* x, const float* relu_y, const float* dy, const double* mean,
                         double* out, int64_t n, int64_t C, int64_t S, cudaStream_t st) {
  if (C <= 0) return cudaSuccess;
  if (!fits_grid(C)) return cudaErrorInvalidValue;
  bn_grad_sums_kernel<<<unsigned(C), kThreads, 0, st>>>(x, relu_y, dy, mean, out, n, C, S);
  return launched();
}

cudaError_t bn_apply(const float* x, const double* mean, const double* scale, const double* shift,
                     bool relu, float* y, int64_t n, int64_t C, int64_t S, cudaStream_t st) {
  const int64_t total = n * C * S;
  if (total <= 0) return cudaSuccess;
  bn_apply_kernel<<<grid_for(total), kThreads, 0, st>>>(x, mean, scale, shift, relu, y, n, C, S);
  return launched();
}

cudaError_t bn_input_grad(const float* x, const float* relu_y, const float* dy, const double* mean,
                          const double* k, const double* m, const double* r, float* dx, int64_t n,
                          int64_t C, int64_t S, cudaStream_t st) {
  const int64_t total = n * C * S;
  if (total <= 0) return cudaSuccess;
  bn_input_grad_kernel<<<grid_for(total), kThreads, 0, st>>>(x, relu_y, dy, mean, k, m, r, dx, n,
                                                             C, S);
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
