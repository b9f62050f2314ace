// The non-convolution kernels: max pooling, ReLU, dropout, scale, softmax cross-entropy, and the
// whole-buffer ops. Each mirrors core/backend/cpu_ops.cpp element by element; where the reference
// sums (pooling's backward) the kernel sums the same terms in the same order.
#include <cmath>

#include "core/backend/cuda/cuda_device.cuh"

namespace deeptrain::cuda {
namespace {

template <class I>
__global__ void maxpool_forward_kernel(PoolDims g, const float* x, float* y, int32_t* argmax) {
  const I pq = I(g.p * g.q), gq = I(g.q), total = I(g.n * g.c * g.p * g.q);
  DT_GRID_LOOP_T(I, o, total) {
    const I plane = o / pq, rest = o - plane * pq, pi = rest / gq;
    const int64_t p = pi, q = rest - pi * gq;
    const float* in = x + int64_t(plane) * g.h * g.w;
    float best = -INFINITY;
    int32_t at = -1;
    // Row-major window order; strict '>' keeps the first maximum (the reference's tie rule).
    for (int64_t r = 0; r < g.r; ++r) {
      const int64_t h = p * g.stride_h - g.pad_h + r;
      if (h < 0 || h >= g.h) continue;
      for (int64_t s = 0; s < g.s; ++s) {
        const int64_t w = q * g.stride_w - g.pad_w + s;
        if (w < 0 || w >= g.w) continue;
        const float v = in[h * g.w + w];
        if (at < 0 || v > best) { best = v; at = int32_t(h * g.w + w); }
      }
    }
    y[o] = best;
    argmax[o] = at;
  }
}

__device__ __forceinline__ int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// First output index whose window (extent k, stride, pad) covers input index i (an image's
// extents and windows are far below 2^31: 32-bit divisions).
__device__ __forceinline__ int64_t first_window(int64_t i, int64_t k, int64_t stride, int64_t pad) {
  return i + pad < k ? 0 : int32_t(i + pad - k) / int32_t(stride) + 1;
}

// One thread per input element: adds the dy of every window whose argmax is this element, in
// increasing output order (the order in which the reference adds them).
template <class I>
__global__ void maxpool_backward_kernel(PoolDims g, const float* dy, const int32_t* argmax,
                                        float* dx) {
  const int64_t pq = g.p * g.q;
  const I hw = I(g.h * g.w), gw = I(g.w), total = I(g.n * g.c * g.h * g.w);
  DT_GRID_LOOP_T(I, idx, total) {
    const I plane_i = idx / hw, rest = idx - plane_i * hw, h_i = rest / gw;
    const int64_t plane = plane_i, h = h_i, w = rest - h_i * gw;
    const int64_t p_end = imin(g.p, int32_t(h + g.pad_h) / int32_t(g.stride_h) + 1);
    const int64_t q_end = imin(g.q, int32_t(w + g.pad_w) / int32_t(g.stride_w) + 1);
    const int32_t self = int32_t(h * g.w + w);
    float sum = 0.0f;
    for (int64_t p = first_window(h, g.r, g.stride_h, g.pad_h); p < p_end; ++p)
      for (int64_t q = first_window(w, g.s, g.stride_w, g.pad_w); q < q_end; ++q) {
        const int64_t o = plane * pq + p * g.q + q;
        if (argmax[o] == self) sum += dy[o];
      }
    dx[idx] = sum;
  }
}

__global__ void relu_forward_kernel(const float* x, float* y, int64_t n) {
  DT_GRID_LOOP(i, n) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

__global__ void relu_backward_kernel(const float* y, const float* dy, float* dx, int64_t n) {
  DT_GRID_LOOP(i, n) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

// Philox4x32-10 exactly as core/random.h (which is host-only code).
__device__ __forceinline__ uint4 philox4x32_10(uint4 c, uint32_t k0, uint32_t k1) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t(M0) * c.x, p1 = uint64_t(M1) * c.z;
    c = make_uint4(uint32_t(p1 >> 32) ^ c.y ^ k0, uint32_t(p1), uint32_t(p0 >> 32) ^ c.w ^ k1,
                   uint32_t(p0));
    k0 += W0;
    k1 += W1;
  }
  return c;
}

__device__ __forceinline__ float unit_float(uint32_t x) { return float(x >> 8) * (1.0f / 16777216.0f); }

// One thread per 4 elements of a sample: RandomStream{seed, stream}.block(sample id, j / 4).
template <class I>
__global__ void dropout_forward_kernel(uint64_t seed, uint64_t stream, const int64_t* ids,
                                       int64_t n, int64_t per, float ratio, float scale,
                                       const float* x, float* y, uint8_t* mask) {
  const I quads = I((per + 3) / 4), total = I(n * ((per + 3) / 4));
  DT_GRID_LOOP_T(I, t, total) {
    const I i_ = t / quads;
    const int64_t i = i_, j0 = int64_t(t - i_ * quads) * 4;
    const uint64_t id = uint64_t(ids[i]);
    const uint4 r = philox4x32_10(
        make_uint4(uint32_t(id), uint32_t(id >> 32), uint32_t(j0 / 4), uint32_t(stream)),
        uint32_t(seed), uint32_t(seed >> 32) ^ uint32_t(stream >> 32));
    const uint32_t words[4] = {r.x, r.y, r.z, r.w};
    for (int u = 0; u < 4 && j0 + u < per; ++u) {
      const int64_t e = i * per + j0 + u;
      const bool keep = unit_float(words[u]) >= ratio;
      mask[e] = keep;
      y[e] = keep ? x[e] * scale : 0.0f;
    }
  }
}

__global__ void dropout_backward_kernel(float scale, const uint8_t* mask, const float* dy,
                                        float* dx, int64_t n) {
  DT_GRID_LOOP(i, n) dx[i] = mask[i] ? dy[i] * scale : 0.0f;
}

__global__ void scale_kernel(const float* x, float alpha, float* y, int64_t n) {
  DT_GRID_LOOP(i, n) y[i] = x[i] * alpha;
}

// One thread per pixel of the batch; __fdiv_rn: round-to-nearest whatever nvcc's flags.
template <class I>
__global__ void gather_samples_kernel(const uint8_t* images, const int32_t* labels,
                                      const int64_t* ids, I total, I sample, float* x,
                                      int32_t* t) {
  DT_GRID_LOOP_T(I, e, total) {
    const I i = e / sample, k = e - i * sample;
    const int64_t id = ids[i];
    x[e] = __fdiv_rn(float(images[id * sample + k]), 255.0f);
    if (k == 0) t[i] = labels[id];
  }
}

constexpr int kRowThreads = 128;

// One block per row: max and first argmax, sum of exponentials, probabilities, the row's loss.
__global__ void softmax_rows_kernel(const float* logits, const int32_t* labels, int64_t m,
                                    double log_eps, float* probs, double* rows, int32_t* hits) {
  __shared__ float best_v[kRowThreads];
  __shared__ int64_t best_j[kRowThreads];
  __shared__ float part[kRowThreads];
  const int64_t i = blockIdx.x;
  const float* z = logits + i * m;
  float* pr = probs + i * m;
  const int tid = threadIdx.x;
  // Each thread's first maximum over its strided columns, then a tree that keeps the smaller
  // column among equal values: the row's first maximum.
  float bv = -INFINITY;
  int64_t bj = -1;
  for (int64_t j = tid; j < m; j += blockDim.x)
    if (bj < 0 || z[j] > bv) { bv = z[j]; bj = j; }
  best_v[tid] = bv;
  best_j[tid] = bj;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (tid < half) {
      const float ov = best_v[tid + half];
      const int64_t oj = best_j[tid + half];
      const int64_t mj = best_j[tid];
      if (oj >= 0 && (mj < 0 || ov > best_v[tid] || (ov == best_v[tid] && oj < mj))) {
        best_v[tid] = ov;
        best_j[tid] = oj;
      }
    }
    __syncthreads();
  }
  const int64_t best = best_j[0] < 0 ? 0 : best_j[0];
  const float zmax = z[best];
  float sum = 0.0f;
  for (int64_t j = tid; j < m; j += blockDim.x) sum += expf(z[j] - zmax);
  part[tid] = sum;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (tid < half) part[tid] += part[tid + half];
    __syncthreads();
  }
  const float total = part[0];
  for (int64_t j = tid; j < m; j += blockDim.x) pr[j] = expf(z[j] - zmax) / total;
  if (tid == 0) {
    const int32_t t = labels[i];
    if (t < 0 || t >= m) {
      rows[i] = 0.0;
      hits[i] = -1;  // reported by the caller
    } else {
      const float pt = expf(z[t] - zmax) / total;
      rows[i] = -log(double(pt) + log_eps);
      hits[i] = best == t;
    }
  }
}

// One block: the loss sum, the correct count and the first bad label, in a fixed order.
__global__ void softmax_total_kernel(const double* rows, const int32_t* hits, int64_t n,
                                     double* out) {
  __shared__ double loss[kThreads];
  __shared__ int64_t good[kThreads];
  __shared__ int64_t bad[kThreads];
  const int tid = threadIdx.x;
  double l = 0.0;
  int64_t g = 0, b = n;  // b: the first row with a bad label (n: none)
  for (int64_t i = tid; i < n; i += blockDim.x) {
    l += rows[i];
    if (hits[i] > 0) ++g;
    if (hits[i] < 0 && i < b) b = i;
  }
  loss[tid] = l;
  good[tid] = g;
  bad[tid] = b;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (tid < half) {
      loss[tid] += loss[tid + half];
      good[tid] += good[tid + half];
      bad[tid] = imin(bad[tid], bad[tid + half]);
    }
    __syncthreads();
  }
  if (tid == 0) {
    out[0] = loss[0];
    out[1] = double(good[0]);
    out[2] = bad[0] < n ? double(bad[0] + 1) : 0.0;
  }
}

__global__ void softmax_backward_kernel(const float* probs, const int32_t* labels, int64_t m,
                                        float scale, float* dz, int64_t total) {
  DT_GRID_LOOP(idx, total) {
    const int64_t i = idx / m, j = idx % m;
    dz[idx] = scale * (probs[idx] - (j == labels[i] ? 1.0f : 0.0f));
  }
}

__global__ void accumulate_kernel(float* acc, const float* x, int64_t n) {
  DT_GRID_LOOP(i, n) acc[i] += x[i];
}

__global__ void scale_check_finite_kernel(float* x, double alpha, int64_t n, int32_t* bad) {
  DT_GRID_LOOP(i, n) {
    const float v = float(double(x[i]) * alpha);
    x[i] = v;
    if (!isfinite(v)) *bad = 1;
  }
}

}  // namespace

cudaError_t maxpool_forward(const PoolDims& g, const float* x, float* y, int32_t* argmax,
                            cudaStream_t st) {
  const int64_t total = g.n * g.c * g.p * g.q;
  if (total <= 0) return cudaSuccess;
  DT_DISPATCH_INDEX(total, I, maxpool_forward_kernel<I><<<grid_for(total), kThreads, 0, st>>>(g, x, y, argmax));
  return launched();
}

cudaError_t maxpool_backward(const PoolDims& g, const float* dy, const int32_t* argmax, float* dx,
                             cudaStream_t st) {
  const int64_t total = g.n * g.c * g.h * g.w;
  if (total <= 0) return cudaSuccess;
  DT_DISPATCH_INDEX(total, I, maxpool_backward_kernel<I><<<grid_for(total), kThreads, 0, st>>>(g, dy, argmax, dx));
  return launched();
}

cudaError_t relu_forward(const float* x, float* y, int64_t n, cudaStream_t st) {
  if (n <= 0) return cudaSuccess;
  relu_forward_kernel<<<grid_for(n), kThreads, 0, st>>>(x, y, n);
  return launched();
}

cudaError_t relu_backward(const float* y, const float* dy, float* dx, int64_t n, cudaStream_t st) {
  if (n <= 0) return cudaSuccess;
  relu_backward_kernel<<<grid_for(n), kThreads, 0, st>>>(y, dy, dx, n);
  return launched();
}

cudaError_t dropout_forward(uint64_t seed, uint64_t stream_id, const int64_t* sample_ids,
                            int64_t n, int64_t per, float ratio, float scale, const float* x,
                            float* y, uint8_t* mask, cudaStream_t st) {
  const int64_t threads = n * ((per + 3) / 4);
  if (threads <= 0) return cudaSuccess;
  DT_DISPATCH_INDEX(threads, I, dropout_forward_kernel<I><<<grid_for(threads), kThreads, 0, st>>>(
                                    seed, stream_id, sample_ids, n, per, ratio, scale, x, y, mask));
  return launched();
}

cudaError_t dropout_backward(float scale, const uint8_t* mask, const float* dy, float* dx,
                             int64_t n, cudaStream_t st) {
  if (n <= 0) return cudaSuccess;
  dropout_backward_kernel<<<grid_for(n), kThreads, 0, st>>>(scale, mask, dy, dx, n);
  return launched();
}

cudaError_t scale(const float* x, float alpha, float* y, int64_t n, cudaStream_t st) {
  if (n <= 0) return cudaSuccess;
  scale_kernel<<<grid_for(n), kThreads, 0, st>>>(x, alpha, y, n);
  return launched();
}

cudaError_t softmax_ce_forward(const float* logits, const int32_t* labels, int64_t n, int64_t m,
                               double log_eps, float* probs, double* rows, int32_t* hits,
                               double* out, cudaStream_t st) {
  if (n <= 0 || m <= 0 || n > 0x7fffffff) return cudaErrorInvalidValue;
  softmax_rows_kernel<<<unsigned(n), kRowThreads, 0, st>>>(logits, labels, m, log_eps, probs,
                                                           rows, hits);
  if (cudaError_t e = launched(); e != cudaSuccess) return e;
  softmax_total_kernel<<<1, kThreads, 0, st>>>(rows, hits, n, out);
  return launched();
}

cudaError_t softmax_ce_backward(const float* probs, const int32_t* labels, int64_t n, int64_t m,
                                float scale, float* dlogits, cudaStream_t st) {
  if (n * m <= 0) return cudaSuccess;
  softmax_backward_kernel<<<grid_for(n * m), kThreads, 0, st>>>(probs, labels, m, scale, dlogits,
                                                                n * m);
  return launched();
}

cudaError_t accumulate(float* acc, const float* x, int64_t n, cudaStream_t st) {
  if (n <= 0) return cudaSuccess;
  accumulate_kernel<<<grid_for(n), kThreads, 0, st>>>(acc, x, n);
  return launched();
}

cudaError_t scale_check_finite(float* x, double alpha, int64_t n, int32_t* bad, cudaStream_t st) {
  if (n <= 0) return cudaSuccess;
  scale_check_finite_kernel<<<grid_for(n), kThreads, 0, st>>>(x, alpha, n, bad);
  return launched();
}

cudaError_t gather_samples(const uint8_t* images, const int32_t* labels, const int64_t* ids,
                           int64_t n, int64_t sample, float* x, int32_t* t, cudaStream_t st) {
  if (n <= 0 || sample <= 0) return cudaSuccess;
  DT_DISPATCH_INDEX(n * sample, I, gather_samples_kernel<I><<<grid_for(n * sample), kThreads, 0, st>>>(
                                        images, labels, ids, I(n * sample), I(sample), x, t));
  return launched();
}

}  // namespace deeptrain::cuda
