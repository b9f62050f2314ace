// The fused optimizer update: one kernel over the flat buffers, the formulas of
// core/optim/optimizer.cpp element by element. That file keeps every float operation separately
// rounded (no FMA contraction); so does this one, through the _rn intrinsics, which the compiler
// never fuses. With the constants computed on the host as that file computes them, the update is
// bit-identical to the host optimizer's.
#include "core/backend/cuda/cuda_device.cuh"

namespace deeptrain::cuda {
namespace {

__device__ __forceinline__ float add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float sub(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float div(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ float root(float a) { return __fsqrt_rn(a); }

__global__ void optimizer_kernel(OptimConsts k, float* params, const float* grads, float* s0,
                                 float* s1, const float* lr_scale, int64_t n) {
  DT_GRID_LOOP(i, n) {
    const float s = lr_scale ? lr_scale[i] : 1.0f;
    if (s == 0.0f) continue;  // frozen: params and state untouched
    float p = params[i];
    // L2 weight decay (AdamW passes l2 = 0: its decay is decoupled). Only when asked: adding
    // 0 * p would turn a -0 gradient into +0.
    const float g = k.l2 != 0.0f ? add(grads[i], mul(k.l2, p)) : grads[i];
    switch (k.rule) {
      case kSgd:
        p = sub(p, mul(mul(k.lr, s), g));
        break;
      case kMomentum: {
        const float v = sub(mul(k.momentum, s0[i]), mul(mul(k.lr, s), g));
        s0[i] = v;
        p = add(p, v);
        break;
      }
      case kNesterov: {
        float v = mul(s0[i], k.momentum);
        v = sub(v, mul(mul(k.lr, s), g));
        s0[i] = v;
        p = add(p, mul(k.momentum_sq, v));
        p = sub(p, mul(mul(k.lookahead_lr, s), g));
        break;
      }
      case kAdaGrad: {
        const float h = add(s0[i], mul(g, g));
        s0[i] = h;
        p = sub(p, div(mul(mul(k.lr, s), g), add(root(h), k.eps)));
        break;
      }
      case kRmsProp: {
        float h = mul(s0[i], k.decay);
        h = add(h, mul(mul(k.one_minus_decay, g), g));
        s0[i] = h;
        p = sub(p, div(mul(mul(k.lr, s), g), add(root(h), k.eps)));
        break;
      }
      case kAdam: {
        if (k.decoupled_decay != 0.0f) p = sub(p, mul(mul(k.decoupled_decay, s), p));
        const float m = add(s0[i], mul(k.one_minus_beta1, sub(g, s0[i])));
        const float v = add(s1[i], mul(k.one_minus_beta2, sub(mul(g, g), s1[i])));
        s0[i] = m;
        s1[i] = v;
        p = sub(p, div(mul(mul(k.lr_t, s), m), add(root(v), k.eps)));
        break;
      }
    }
    params[i] = p;
  }
}

}  // namespace

cudaError_t optimizer_step(const OptimConsts& k, float* params, const float* grads, float* s0,
                           float* s1, const float* lr_scale, int64_t n, cudaStream_t st) {
  if (n <= 0) return cudaSuccess;
  optimizer_kernel<<<grid_for(n), kThreads, 0, st>>>(k, params, grads, s0, s1, lr_scale, n);
  return launched();
}

}  // namespace deeptrain::cuda
