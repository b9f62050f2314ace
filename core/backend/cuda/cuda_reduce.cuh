#pragma once
// Per-channel sums of data viewed as (n, C, S) in two deterministic passes. One block per channel
// (as before) leaves an H200 with 16 busy SMs of 132 on a 16-channel layer, so each channel's
// n * S values are cut into chunks of whole images, a block per (channel, chunk) sums its chunk
// (a fixed per-thread stride, a fixed tree), and one block per channel adds the chunks' partial
// sums in a fixed order. The chunking depends on (n, S) only: a run repeats bit for bit, on any
// GPU. Included by .cu files only.
#include <algorithm>

#include "core/backend/cuda/cuda_device.cuh"

namespace deeptrain::cuda {

// Sums one f64 value per thread over the block in a fixed tree; every thread gets the total.
// part: kThreads doubles of shared memory. Ends with a barrier, so part may be reused at once.
__device__ __forceinline__ double block_sum(double v, double* part) {
  part[threadIdx.x] = v;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (int(threadIdx.x) < half) part[threadIdx.x] += part[threadIdx.x + half];
    __syncthreads();
  }
  const double total = part[0];
  __syncthreads();
  return total;
}

struct Chunking {
  int64_t chunks, images_per_chunk;
};

// About 64 values per thread per block; chunks are whole images, at least one.
inline Chunking chunking_for(int64_t n, int64_t S) {
  constexpr int64_t kValuesPerBlock = 64 * kThreads;
  if (n <= 0 || S <= 0) return {1, 0};
  const int64_t want = std::clamp<int64_t>((n * S + kValuesPerBlock - 1) / kValuesPerBlock, 1, n);
  const int64_t per = (n + want - 1) / want;
  return {(n + per - 1) / per, per};
}

// F: a functor with `__device__ void operator()(int64_t i, int64_t c, double* acc) const` that
// adds element i (of channel c) into its K accumulators.
template <int K, class F>
__global__ void chunk_sums_kernel(F f, int64_t n, int64_t C, int64_t S, Chunking ch, double* part) {
  __shared__ double sh[kThreads];
  const int64_t c = blockIdx.x / ch.chunks, g = blockIdx.x % ch.chunks;
  const int64_t o0 = g * ch.images_per_chunk;
  const int64_t end = o0 + ch.images_per_chunk, images = (end < n ? end : n) - o0;
  // A chunk holds about kValuesPerBlock values, or one image: 32-bit index arithmetic.
  const uint32_t count = uint32_t(images * S), s32 = uint32_t(S);
  double acc[K];
  for (int k = 0; k < K; ++k) acc[k] = 0.0;
  for (uint32_t t = threadIdx.x; t < count; t += blockDim.x) {
    const uint32_t o = t / s32, s = t - o * s32;
    f(((o0 + o) * C + c) * S + s, c, acc);
  }
  for (int k = 0; k < K; ++k) {
    const double total = block_sum(acc[k], sh);
    if (threadIdx.x == 0) part[(k * C + c) * ch.chunks + g] = total;
  }
}

// out[k * C + c] = the sum of channel c's K-th partials, in chunk order; f64 or rounded to f32.
template <int K>
__global__ void finish_sums_kernel(const double* part, int64_t C, int64_t chunks, double* out64,
                                   float* out32) {
  __shared__ double sh[kThreads];
  const int64_t c = blockIdx.x;
  for (int k = 0; k < K; ++k) {
    double v = 0.0;
    for (int64_t g = threadIdx.x; g < chunks; g += blockDim.x) v += part[(k * C + c) * chunks + g];
    const double total = block_sum(v, sh);
    if (threadIdx.x == 0) {
      if (out64) out64[k * C + c] = total;
      else out32[k * C + c] = float(total);
    }
  }
}

// The two passes, with the partials in stream-ordered memory from the device's pool (the
// backend keeps the pool's memory, so this allocates nothing after the first steps).
template <int K, class F>
cudaError_t channel_reduce(F f, int64_t n, int64_t C, int64_t S, double* out64, float* out32,
                           cudaStream_t st) {
  if (C <= 0) return cudaSuccess;
  const Chunking ch = chunking_for(n, S);
  if (C * ch.chunks > 0x7fffffff || ch.images_per_chunk * S > 0xffffffffLL)
    return cudaErrorInvalidValue;
  double* part = nullptr;
  cudaError_t e = cudaMallocAsync(reinterpret_cast<void**>(&part), sizeof(double) * K * C * ch.chunks, st);
  if (e != cudaSuccess) return e;
  chunk_sums_kernel<K><<<unsigned(C * ch.chunks), kThreads, 0, st>>>(f, n, C, S, ch, part);
  e = cudaGetLastError();
  if (e == cudaSuccess) {
    finish_sums_kernel<K><<<unsigned(C), kThreads, 0, st>>>(part, C, ch.chunks, out64, out32);
    e = cudaGetLastError();
  }
  const cudaError_t freed = cudaFreeAsync(part, st);
  return e != cudaSuccess ? e : freed;
}

}  // namespace deeptrain::cuda
