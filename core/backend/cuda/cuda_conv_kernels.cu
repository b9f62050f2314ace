// Convolution helpers: im2col / col2im (the book's layout: rows (c, r, s), columns (image, p, q),
// as core/backend/cpu_conv.cpp), the moves between the GEMM's (k, image, pq) and NCHW, bias and
// ReLU, f32 -> 16-bit copies, and the per-channel sums of db (cuda_reduce.cuh). One thread per
// output element; every sum runs in a fixed order, so results do not vary from run to run.
#include "core/backend/cuda/cuda_reduce.cuh"

namespace deeptrain::cuda {
namespace {

template <class T>
__global__ void convert_kernel(const float* src, T* dst, int64_t n) {
  DT_GRID_LOOP(i, n) dst[i] = from_f32<T>(src[i]);
}

template <class T>
__global__ void im2col_kernel(ConvDims g, const float* x, int64_t n0, int64_t nb, T* col) {
  const int64_t pq = g.p * g.q, cols = nb * pq, rs = g.r * g.s, total = g.c * rs * cols;
  DT_GRID_LOOP(idx, total) {
    const int64_t row = idx / cols, j = idx % cols;
    const int64_t c = row / rs, r = (row % rs) / g.s, s = row % g.s;
    const int64_t i = j / pq, p = (j % pq) / g.q, q = j % g.q;
    const int64_t h = p * g.stride_h - g.pad_h + r, w = q * g.stride_w - g.pad_w + s;
    float v = 0.0f;
    if (h >= 0 && h < g.h && w >= 0 && w < g.w) v = x[((n0 + i) * g.c + c) * g.h * g.w + h * g.w + w];
    col[idx] = from_f32<T>(v);
  }
}

// One thread per input element: gathers every column entry that im2col read from it, in the
// reference's (r, s) order.
__global__ void col2im_kernel(ConvDims g, const float* col, int64_t n0, int64_t nb, float* dx) {
  const int64_t hw = g.h * g.w, pq = g.p * g.q, cols = nb * pq, total = nb * g.c * hw;
  DT_GRID_LOOP(idx, total) {
    const int64_t i = idx / (g.c * hw), c = (idx / hw) % g.c, h = (idx % hw) / g.w, w = idx % g.w;
    float sum = 0.0f;
    for (int64_t r = 0; r < g.r; ++r) {
      const int64_t ph = h + g.pad_h - r;  // = p * stride_h
      if (ph < 0 || ph % g.stride_h) continue;
      const int64_t p = ph / g.stride_h;
      if (p >= g.p) continue;
      for (int64_t s = 0; s < g.s; ++s) {
        const int64_t qw = w + g.pad_w - s;
        if (qw < 0 || qw % g.stride_w) continue;
        const int64_t q = qw / g.stride_w;
        if (q >= g.q) continue;
        sum += col[((c * g.r + r) * g.s + s) * cols + i * pq + p * g.q + q];
      }
    }
    dx[(n0 + i) * g.c * hw + c * hw + h * g.w + w] = sum;
  }
}

__device__ __forceinline__ float act(float v, bool relu) { return relu && !(v > 0.0f) ? 0.0f : v; }

__global__ void scatter_bias_act_kernel(const float* tmp, const float* b, float* y, int64_t k,
                                        int64_t nb, int64_t pq, bool relu) {
  DT_GRID_LOOP(idx, nb * k * pq) {
    const int64_t i = idx / (k * pq), kk = (idx / pq) % k, j = idx % pq;
    const float v = tmp[(kk * nb + i) * pq + j];
    y[idx] = act(v + (b ? b[kk] : 0.0f), relu);  // + 0 as the reference: -0 -> +0
  }
}

template <class T>
__global__ void gather_to_gemm_kernel(const float* src, T* dst, int64_t k, int64_t nb, int64_t pq) {
  DT_GRID_LOOP(idx, k * nb * pq) {
    const int64_t kk = idx / (nb * pq), i = (idx / pq) % nb, j = idx % pq;
    dst[idx] = from_f32<T>(src[(i * k + kk) * pq + j]);
  }
}

template <class T, class I>
__global__ void bias_act_kernel(const T* src, const float* b, float* y, I total, I k, I pq,
                                bool relu) {
  DT_GRID_LOOP_T(I, idx, total) {
    const float v = to_f32(src[idx]);
    y[idx] = act(v + (b ? b[(idx / pq) % k] : 0.0f), relu);
  }
}

// db of a convolution or an affine layer: the sum over (image, position) of each channel.
struct SumOf {
  const float* x;
  __device__ void operator()(int64_t i, int64_t, double* acc) const { acc[0] += double(x[i]); }
};

// The same sums over dy masked by the ReLU's output, writing the mask back (each element is
// visited once).
struct MaskedSumOf {
  const float* y;
  float* dy;
  __device__ void operator()(int64_t i, int64_t, double* acc) const {
    const float v = y[i] > 0.0f ? dy[i] : 0.0f;
    dy[i] = v;
    acc[0] += double(v);
  }
};

}  // namespace

cudaError_t convert_from_f32(const float* src, void* dst, Elem e, int64_t n, cudaStream_t st) {
  if (n <= 0) return cudaSuccess;
  DT_DISPATCH_ELEM(e, T, convert_kernel<T><<<grid_for(n), kThreads, 0, st>>>(src, static_cast<T*>(dst), n));
  return launched();
}

cudaError_t im2col(const ConvDims& g, const float* x, int64_t n0, int64_t nb, void* col, Elem e,
                   cudaStream_t st) {
  const int64_t total = g.c * g.r * g.s * nb * g.p * g.q;
  if (total <= 0) return cudaSuccess;
  DT_DISPATCH_ELEM(e, T, im2col_kernel<T><<<grid_for(total), kThreads, 0, st>>>(g, x, n0, nb, static_cast<T*>(col)));
  return launched();
}

cudaError_t col2im(const ConvDims& g, const float* col, int64_t n0, int64_t nb, float* dx,
                   cudaStream_t st) {
  const int64_t total = nb * g.c * g.h * g.w;
  if (total <= 0) return cudaSuccess;
  col2im_kernel<<<grid_for(total), kThreads, 0, st>>>(g, col, n0, nb, dx);
  return launched();
}

cudaError_t scatter_bias_act(const float* tmp, const float* b, float* y, int64_t k, int64_t nb,
                             int64_t pq, bool relu, cudaStream_t st) {
  const int64_t total = nb * k * pq;
  if (total <= 0) return cudaSuccess;
  scatter_bias_act_kernel<<<grid_for(total), kThreads, 0, st>>>(tmp, b, y, k, nb, pq, relu);
  return launched();
}

cudaError_t gather_to_gemm(const float* src, void* dst, Elem e, int64_t k, int64_t nb, int64_t pq,
                           cudaStream_t st) {
  const int64_t total = k * nb * pq;
  if (total <= 0) return cudaSuccess;
  DT_DISPATCH_ELEM(e, T, gather_to_gemm_kernel<T><<<grid_for(total), kThreads, 0, st>>>(src, static_cast<T*>(dst), k, nb, pq));
  return launched();
}

cudaError_t bias_act(const void* src, Elem e, const float* b, float* y, int64_t n, int64_t k,
                     int64_t pq, bool relu, cudaStream_t st) {
  const int64_t total = n * k * pq;
  if (total <= 0) return cudaSuccess;
  DT_DISPATCH_INDEX(total, I, DT_DISPATCH_ELEM(e, T, bias_act_kernel<T, I><<<grid_for(total), kThreads, 0, st>>>(
                            static_cast<const T*>(src), b, y, I(total), I(k), I(pq), relu)));
  return launched();
}

cudaError_t channel_sums(const float* x, float* out, int64_t outer, int64_t channels, int64_t inner,
                         cudaStream_t st) {
  return channel_reduce<1>(SumOf{x}, outer, channels, inner, nullptr, out, st);
}

cudaError_t masked_channel_sums(const float* y, float* dy, float* out, int64_t outer,
                                int64_t channels, int64_t inner, cudaStream_t st) {
  return channel_reduce<1>(MaskedSumOf{y, dy}, outer, channels, inner, nullptr, out, st);
}

}  // namespace deeptrain::cuda
