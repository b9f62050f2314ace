// The deeper nets' layers on the GPU: BatchNorm's per-channel sums and elementwise maps, and
// global average pooling. Mirrors core/layers/batch_norm.cpp and merge_layers.cpp element by
// element (f64 where the host computes in f64); the sums run in a fixed order (cuda_reduce.cuh),
// so they are deterministic but not in the host's order.
#include <cmath>

#include "core/backend/cuda/cuda_reduce.cuh"

namespace deeptrain::cuda {
namespace {

// d where y > 0, else 0 (CpuBackend's relu_masked, cpu_bn.cpp: NaN and infinite d included).
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

// BatchNorm's statistics: CpuBackend's formulas (cpu_bn.cpp) with every f64 operation rounded
// on its own (__dmul_rn and friends: no contracted multiply-adds), as the host writes them.
__global__ void bn_mean_kernel(const double* sums, double count, double* mean, int64_t C) {
  DT_GRID_LOOP(c, C) mean[c] = count > 0 ? __ddiv_rn(sums[c], count) : 0.0;
}

__global__ void bn_normalizer_kernel(const double* sq, double count, double eps, double momentum,
                                     const float* gamma, const float* beta, double* rm,
                                     double* rv, double* mean, double* invstd, double* scale,
                                     double* shift, int64_t C) {
  const double keep = __dadd_rn(1.0, -momentum);
  DT_GRID_LOOP(c, C) {
    double var;
    if (sq) {
      var = count > 0 ? __ddiv_rn(sq[c], count) : 0.0;
      rm[c] = __dadd_rn(__dmul_rn(momentum, rm[c]), __dmul_rn(keep, mean[c]));
      rv[c] = __dadd_rn(__dmul_rn(momentum, rv[c]), __dmul_rn(keep, var));
    } else {
      mean[c] = rm[c];
      var = rv[c];
    }
    invstd[c] = __ddiv_rn(1.0, __dsqrt_rn(__dadd_rn(var, eps)));
    scale[c] = __dmul_rn(double(gamma[c]), invstd[c]);
    shift[c] = double(beta[c]);
  }
}

__global__ void bn_param_grads_kernel(double* sums, const double* invstd, float* dgamma,
                                      float* dbeta, int64_t C) {
  DT_GRID_LOOP(c, C) {
    sums[C + c] = __dmul_rn(sums[C + c], invstd[c]);
    dbeta[c] = float(sums[c]);
    dgamma[c] = float(sums[C + c]);
  }
}

__global__ void bn_input_coefficients_kernel(const double* sums, const double* invstd,
                                             const float* gamma, double count, bool training,
                                             double* k, double* m, double* r, int64_t C) {
  const double inv_count = count > 0 ? __ddiv_rn(1.0, count) : 0.0;
  DT_GRID_LOOP(c, C) {
    const double kc = __dmul_rn(double(gamma[c]), invstd[c]);
    k[c] = kc;
    m[c] = training ? __dmul_rn(__dmul_rn(-kc, sums[c]), inv_count) : 0.0;
    r[c] = training ? __dmul_rn(__dmul_rn(__dmul_rn(kc, invstd[c]), sums[C + c]), inv_count) : 0.0;
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

cudaError_t bn_mean(const double* sums, double count, double* mean, int64_t C, cudaStream_t st) {
  if (C <= 0) return cudaSuccess;
  bn_mean_kernel<<<grid_for(C), kThreads, 0, st>>>(sums, count, mean, C);
  return launched();
}

cudaError_t bn_normalizer(const double* sq, double count, double eps, double momentum,
                          const float* gamma, const float* beta, double* running_mean,
                          double* running_var, double* mean, double* invstd, double* scale,
                          double* shift, int64_t C, cudaStream_t st) {
  if (C <= 0) return cudaSuccess;
  bn_normalizer_kernel<<<grid_for(C), kThreads, 0, st>>>(sq, count, eps, momentum, gamma, beta,
                                                         running_mean, running_var, mean, invstd,
                                                         scale, shift, C);
  return launched();
}

cudaError_t bn_param_grads(double* sums, const double* invstd, float* dgamma, float* dbeta,
                           int64_t C, cudaStream_t st) {
  if (C <= 0) return cudaSuccess;
  bn_param_grads_kernel<<<grid_for(C), kThreads, 0, st>>>(sums, invstd, dgamma, dbeta, C);
  return launched();
}

cudaError_t bn_input_coefficients(const double* sums, const double* invstd, const float* gamma,
                                  double count, bool training, double* k, double* m, double* r,
                                  int64_t C, cudaStream_t st) {
  if (C <= 0) return cudaSuccess;
  bn_input_coefficients_kernel<<<grid_for(C), kThreads, 0, st>>>(sums, invstd, gamma, count,
                                                                 training, k, m, r, C);
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
