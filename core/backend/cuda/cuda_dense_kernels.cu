// Kernels of the dense-task ops (cuda_dense.cpp): crop and its gradient, and the per-pixel
// softmax cross-entropy, whose sums run per sample in pixel order (one thread a sample, in
// double), so the totals do not depend on the launch shape.
#include <cmath>

#include "core/backend/cuda/cuda_device.cuh"

namespace deeptrain::cuda {
namespace {

__global__ void crop_kernel(const float* x, float* y, int64_t H, int64_t W, int64_t h, int64_t w,
                            int64_t oy, int64_t ox, int64_t n) {
  DT_GRID_LOOP(i, n) {  // i over y: (plane, row, column)
    const int64_t j = i % w, r = (i / w) % h, p = i / (w * h);
    y[i] = x[(p * H + oy + r) * W + ox + j];
  }
}

__global__ void crop_backward_kernel(const float* dy, float* dx, int64_t H, int64_t W, int64_t h,
                                     int64_t w, int64_t oy, int64_t ox, int64_t n) {
  DT_GRID_LOOP(i, n) {  // i over dx
    const int64_t c = i % W, r = (i / W) % H, p = i / (W * H);
    const int64_t yr = r - oy, yc = c - ox;
    dx[i] = (yr >= 0 && yr < h && yc >= 0 && yc < w) ? dy[(p * h + yr) * w + yc] : 0.0f;
  }
}

__device__ double class_weight(const double* w, int32_t t) { return w ? w[t] : 1.0; }

// One thread a pixel: the softmax over K, its loss (double; 0 when not counted), whether the
// first maximum is the label, and the pixel's status (1 counted, 0 ignored, -1 a bad label).
__global__ void pixel_softmax_kernel(const float* z, const int32_t* t, int64_t K, int64_t S,
                                     int32_t ignore, const double* w, double log_eps, float* p,
                                     double* loss, int32_t* hit, int32_t* status, int64_t n) {
  DT_GRID_LOOP(i, n) {  // i = sample * S + s
    const int64_t b = i / S, s = i % S;
    const float* zi = z + b * K * S + s;
    float* pi = p + b * K * S + s;
    int64_t best = 0;
    float mx = zi[0];
    for (int64_t k = 1; k < K; ++k)
      if (zi[k * S] > mx) mx = zi[k * S], best = k;
    double sum = 0;
    for (int64_t k = 0; k < K; ++k) sum += exp(double(zi[k * S] - mx));
    for (int64_t k = 0; k < K; ++k) pi[k * S] = float(exp(double(zi[k * S] - mx)) / sum);
    const int32_t ts = t[i];
    loss[i] = 0;
    hit[i] = 0;
    if (ts == ignore) { status[i] = 0; continue; }
    if (ts < 0 || ts >= K) { status[i] = -1; continue; }
    status[i] = 1;
    loss[i] = class_weight(w, ts) * -log(double(pi[ts * S]) + log_eps);
    hit[i] = best == ts;
  }
}

// One thread a sample: its sums in pixel order; bad: the first pixel with a bad label, or -1.
__global__ void pixel_sample_sums_kernel(const double* loss, const int32_t* hit,
                                         const int32_t* status, int64_t S, int64_t n, double* out) {
  DT_GRID_LOOP(b, n) {
    double l = 0, hits = 0, counted = 0, bad = -1;
    for (int64_t s = 0; s < S; ++s) {
      const int64_t i = b * S + s;
      l += loss[i];
      hits += hit[i];
      counted += status[i] == 1;
      if (status[i] < 0 && bad < 0) bad = double(s);
    }
    out[4 * b] = l;
    out[4 * b + 1] = hits;
    out[4 * b + 2] = counted;
    out[4 * b + 3] = bad;
  }
}

__global__ void pixel_backward_kernel(const float* p, const int32_t* t, int64_t K, int64_t S,
                                      int32_t ignore, const double* w, double scale, float* d,
                                      int64_t n) {
  DT_GRID_LOOP(e, n) {  // e over (sample, k, s)
    const int64_t s = e % S, k = (e / S) % K, b = e / (K * S);
    const int32_t ts = t[b * S + s];
    const bool counted = ts != ignore && ts >= 0 && ts < K;
    const double f = counted ? scale * class_weight(w, ts) : 0.0;
    d[e] = float(f * (double(p[e]) - (k == ts ? 1.0 : 0.0)));
  }
}

}  // namespace

cudaError_t crop2d(const float* x, float* y, int64_t planes, int64_t H, int64_t W, int64_t h,
                   int64_t w, int64_t oy, int64_t ox, cudaStream_t st) {
  const int64_t n = planes * h * w;
  if (n <= 0) return cudaSuccess;
  crop_kernel<<<grid_for(n), kThreads, 0, st>>>(x, y, H, W, h, w, oy, ox, n);
  return launched();
}

cudaError_t crop2d_backward(const float* dy, float* dx, int64_t planes, int64_t H, int64_t W,
                            int64_t h, int64_t w, int64_t oy, int64_t ox, cudaStream_t st) {
  const int64_t n = planes * H * W;
  if (n <= 0) return cudaSuccess;
  crop_backward_kernel<<<grid_for(n), kThreads, 0, st>>>(dy, dx, H, W, h, w, oy, ox, n);
  return launched();
}

cudaError_t pixel_softmax_ce_forward(const float* logits, const int32_t* labels, int64_t n,
                                     int64_t K, int64_t S, int32_t ignore, const double* weights,
                                     double log_eps, float* probs, double* pixel_loss,
                                     int32_t* pixel_hit, int32_t* pixel_status, double* sample_sums,
                                     cudaStream_t st) {
  if (n * S <= 0) return cudaSuccess;
  pixel_softmax_kernel<<<grid_for(n * S), kThreads, 0, st>>>(logits, labels, K, S, ignore, weights,
                                                              log_eps, probs, pixel_loss, pixel_hit,
                                                              pixel_status, n * S);
  if (cudaError_t e = launched(); e != cudaSuccess) return e;
  pixel_sample_sums_kernel<<<grid_for(n), kThreads, 0, st>>>(pixel_loss, pixel_hit, pixel_status, S,
                                                              n, sample_sums);
  return launched();
}

cudaError_t pixel_softmax_ce_backward(const float* probs, const int32_t* labels, int64_t n,
                                      int64_t K, int64_t S, int32_t ignore, const double* weights,
                                      double scale, float* dlogits, cudaStream_t st) {
  if (n * K * S <= 0) return cudaSuccess;
  pixel_backward_kernel<<<grid_for(n * K * S), kThreads, 0, st>>>(probs, labels, K, S, ignore,
                                                                   weights, scale, dlogits, n * K * S);
  return launched();
}

}  // namespace deeptrain::cuda
