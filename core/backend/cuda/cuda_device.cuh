#pragma once
// What the kernel files share: the launch shape, the grid-stride loop, f32 <-> 16-bit conversions
// and the host-side dispatch on Elem. Included by .cu files only.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "core/backend/cuda/cuda_kernels.h"

namespace deeptrain::cuda {

constexpr int kThreads = 256;

// Blocks for n elements, one per thread, capped (the loops stride over the grid).
inline unsigned grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, int64_t(1) << 20));
}

#define DT_GRID_LOOP(i, n)                                                              \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n);           \
       i += int64_t(gridDim.x) * blockDim.x)

// The same loop with index type I. Kernels that split an index into coordinates take I =
// uint32_t when n <= 2^31 (DT_DISPATCH_INDEX), so their divisions are 32-bit: a 64-bit division
// is emulated in tens of instructions, and those made elementwise kernels compute-bound.
// (i + stride stays below 2^31 + 2^28: no wrap-around.)
#define DT_GRID_LOOP_T(I, i, n)                                                         \
  for (I i = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); i < (n);                   \
       i += I(gridDim.x) * I(blockDim.x))

#define DT_DISPATCH_INDEX(n, I, ...)            \
  if ((n) <= (int64_t(1) << 31)) {              \
    using I = uint32_t;                         \
    __VA_ARGS__;                                \
  } else {                                      \
    using I = int64_t;                          \
    __VA_ARGS__;                                \
  }

template <class T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

// Runs the statements with T the C++ type of e (C++17: no template lambdas in nvcc's dialect).
#define DT_DISPATCH_ELEM(e, T, ...)                     \
  switch (e) {                                          \
    case Elem::f32: { using T = float; __VA_ARGS__; } break;          \
    case Elem::f16: { using T = __half; __VA_ARGS__; } break;         \
    case Elem::bf16: { using T = __nv_bfloat16; __VA_ARGS__; } break; \
  }

// A launch's error (configuration, missing kernel image), cleared so it is reported once.
inline cudaError_t launched() { return cudaGetLastError(); }

}  // namespace deeptrain::cuda
