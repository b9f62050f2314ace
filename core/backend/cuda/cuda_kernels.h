#pragma once
// The launchers of the backend's own CUDA kernels (cuda_*_kernels.cu). Plain signatures:
// pointers, counts, a stream. The host code (.cpp: the Tensor API, fmt, cuBLAS, cuDNN) is
// compiled by the C++ compiler, the kernels by nvcc, which cannot parse fmt's compile-time
// format strings; this header is all the two sides share. Every launcher enqueues its kernels on
// `st` and returns cudaGetLastError() (a launch error); a fault inside a kernel shows up at the
// next synchronising call.
#include <cstdint>

#include <cuda_runtime_api.h>

#include "core/backend/detection_targets.h"

namespace deeptrain::cuda {

// What a GEMM or cuDNN call reads: the f32 tensors themselves or 16-bit copies of them.
enum class Elem : uint8_t { f32, f16, bf16 };
inline size_t elem_size(Elem e) { return e == Elem::f32 ? 4 : 2; }

// The geometry the kernels need (a copy of ConvGeom / PoolGeom, which nvcc cannot include).
struct ConvDims {
  int64_t n, c, h, w, k, r, s, stride_h, stride_w, pad_h, pad_w, p, q;
};
struct PoolDims {
  int64_t n, c, h, w, r, s, stride_h, stride_w, pad_h, pad_w, p, q;
};

// ---- conversions and convolution helpers (cuda_conv_kernels.cu) ----
// dst (type e) = src (f32), n elements; e == f32 copies.
cudaError_t convert_from_f32(const float* src, void* dst, Elem e, int64_t n, cudaStream_t st);
// Images [n0, n0 + nb) of x (f32) -> col (type e), rows (c, r, s), columns (image, p, q).
cudaError_t im2col(const ConvDims& g, const float* x, int64_t n0, int64_t nb, void* col, Elem e,
                   cudaStream_t st);
// dx images [n0, n0 + nb) = the sum of col (f32, im2col's layout) over the windows: overwrites.
cudaError_t col2im(const ConvDims& g, const float* col, int64_t n0, int64_t nb, float* dx,
                   cudaStream_t st);
// y images [n0, n0 + nb) = act(tmp + b), tmp (k, nb, p*q) as the GEMM wrote it; b may be null.
cudaError_t scatter_bias_act(const float* tmp, const float* b, float* y, int64_t k, int64_t nb,
                             int64_t pq, bool relu, cudaStream_t st);
// dst (k, nb, pq) in type e = src images (nb, k, pq) (f32): the GEMM layout of dy.
cudaError_t gather_to_gemm(const float* src, void* dst, Elem e, int64_t k, int64_t nb, int64_t pq,
                           cudaStream_t st);
// y (n, k, pq) f32 = act(src + b[k]), src of type e (may alias y when e == f32); b may be null.
cudaError_t bias_act(const void* src, Elem e, const float* b, float* y, int64_t n, int64_t k,
                     int64_t pq, bool relu, cudaStream_t st);
// out[c] = sum over (o, i) of x[(o * channels + c) * inner + i], summed in double, overwrites.
cudaError_t channel_sums(const float* x, float* out, int64_t outer, int64_t channels, int64_t inner,
                         cudaStream_t st);
// The fused-ReLU backward and db in one pass: dy = y > 0 ? dy : 0 in place (relu_backward's
// rule), and out[c] = channel_sums of the masked dy.
cudaError_t masked_channel_sums(const float* y, float* dy, float* out, int64_t outer,
                                int64_t channels, int64_t inner, cudaStream_t st);

// ---- elementwise, pooling, dropout, softmax (cuda_op_kernels.cu) ----
cudaError_t maxpool_forward(const PoolDims& g, const float* x, float* y, int32_t* argmax,
                            cudaStream_t st);
// Gathers, in the reference's order, so the sums are bit-identical to CpuBackend's.
cudaError_t maxpool_backward(const PoolDims& g, const float* dy, const int32_t* argmax, float* dx,
                             cudaStream_t st);
cudaError_t relu_forward(const float* x, float* y, int64_t n, cudaStream_t st);
// dx = y > 0 ? dy : 0 (dx may alias dy: the fused-ReLU mask of a backward pass).
cudaError_t relu_backward(const float* y, const float* dy, float* dx, int64_t n, cudaStream_t st);
// mask and y of CpuBackend::dropout_forward, bit for bit (Philox4x32-10 of core/random.h).
cudaError_t dropout_forward(uint64_t seed, uint64_t stream_id, const int64_t* sample_ids,
                            int64_t n, int64_t per, float ratio, float scale, const float* x,
                            float* y, uint8_t* mask, cudaStream_t st);
cudaError_t dropout_backward(float scale, const uint8_t* mask, const float* dy, float* dx,
                             int64_t n, cudaStream_t st);
cudaError_t scale(const float* x, float alpha, float* y, int64_t n, cudaStream_t st);
// probs; per-row results into rows (scratch of n doubles) and hits (n ints), then one block sums
// them in a fixed order into out[0] (loss), out[1] (correct), out[2] (first bad label's row + 1,
// 0 when every label is in range).
cudaError_t softmax_ce_forward(const float* logits, const int32_t* labels, int64_t n, int64_t m,
                               double log_eps, float* probs, double* rows, int32_t* hits,
                               double* out, cudaStream_t st);
cudaError_t softmax_ce_backward(const float* probs, const int32_t* labels, int64_t n, int64_t m,
                                float scale, float* dlogits, cudaStream_t st);
cudaError_t accumulate(float* acc, const float* x, int64_t n, cudaStream_t st);
// x = float(double(x) * alpha) (as the host default does); *bad = 1 when a result is not finite
// (the caller zeroes *bad first).
cudaError_t scale_check_finite(float* x, double alpha, int64_t n, int32_t* bad, cudaStream_t st);

// x[i, :] = images[ids[i], :] / 255 (an IEEE float division, as the host's), t[i] =
// labels[ids[i]], for i < n; `sample` pixels per image.
cudaError_t gather_samples(const uint8_t* images, const int32_t* labels, const int64_t* ids,
                           int64_t n, int64_t sample, float* x, int32_t* t, cudaStream_t st);

// ---- the deeper nets' layers (cuda_layer_kernels.cu); x viewed as (n, C, S) ----
// out[c] = sum of x over (n, s) in f64, or of (x - mean[c])^2 when mean is not null.
cudaError_t bn_sums(const float* x, const double* mean, double* out, int64_t n, int64_t C,
                    int64_t S, cudaStream_t st);
// g = dy, or dy where relu_y > 0 (relu_y may be null); out[c] = sum g, out[C + c] =
// sum g * (x - mean[c]).
cudaError_t bn_grad_sums(const float* x, const float* relu_y, const float* dy, const double* mean,
                         double* out, int64_t n, int64_t C, int64_t S, cudaStream_t st);
// y = (x - mean[c]) * scale[c] + shift[c] (in f64, rounded once), then max(0, .) when relu.
cudaError_t bn_apply(const float* x, const double* mean, const double* scale, const double* shift,
                     bool relu, float* y, int64_t n, int64_t C, int64_t S, cudaStream_t st);
// dx = k[c] * g + m[c] - r[c] * (x - mean[c]), g as in bn_grad_sums.
cudaError_t bn_input_grad(const float* x, const float* relu_y, const float* dy, const double* mean,
                          const double* k, const double* m, const double* r, float* dx, int64_t n,
                          int64_t C, int64_t S, cudaStream_t st);
// BatchNorm's per-channel statistics (C channels, f64; gamma, beta, dgamma, dbeta f32), one
// thread per channel, by the formulas of CpuBackend's (core/backend/cpu_bn.cpp).
cudaError_t bn_mean(const double* sums, double count, double* mean, int64_t C, cudaStream_t st);
// sq null: evaluation (mean = running mean, var = running var).
cudaError_t bn_normalizer(const double* sq, double count, double eps, double momentum,
                          const float* gamma, const float* beta, double* running_mean,
                          double* running_var, double* mean, double* invstd, double* scale,
                          double* shift, int64_t C, cudaStream_t st);
cudaError_t bn_param_grads(double* sums, const double* invstd, float* dgamma, float* dbeta,
                           int64_t C, cudaStream_t st);
cudaError_t bn_input_coefficients(const double* sums, const double* invstd, const float* gamma,
                                  double count, bool training, double* k, double* m, double* r,
                                  int64_t C, cudaStream_t st);
// y[p] = (f64 sum of plane p) / hw; backward dx[p * hw + s] = dy[p] / hw.
cudaError_t plane_mean(const float* x, float* y, int64_t planes, int64_t hw, cudaStream_t st);
cudaError_t plane_mean_backward(const float* dy, float* dx, int64_t planes, int64_t hw,
                                cudaStream_t st);

// ---- the fused optimizer update (cuda_optim_kernels.cu) ----
enum OptimRule : int { kSgd, kMomentum, kNesterov, kAdaGrad, kRmsProp, kAdam };  // kAdam: also AdamW
// The constants of core/optim/optimizer.cpp, computed on the host in the same precision.
struct OptimConsts {
  int rule;  // OptimRule
  float lr, l2, momentum, momentum_sq, lookahead_lr, decay, one_minus_decay, eps;
  float lr_t, one_minus_beta1, one_minus_beta2, decoupled_decay;
};
cudaError_t optimizer_step(const OptimConsts& k, float* params, const float* grads, float* s0,
                           float* s1, const float* lr_scale, int64_t n, cudaStream_t st);

// ---- dense tasks (cuda_dense_kernels.cu) ----
// y (planes, h, w) = x (planes, H, W) at rows oy.., columns ox..; backward: dx = dy there, 0
// elsewhere (overwrites).
cudaError_t crop2d(const float* x, float* y, int64_t planes, int64_t H, int64_t W, int64_t h,
                   int64_t w, int64_t oy, int64_t ox, cudaStream_t st);
cudaError_t crop2d_backward(const float* dy, float* dx, int64_t planes, int64_t H, int64_t W,
                            int64_t h, int64_t w, int64_t oy, int64_t ox, cudaStream_t st);
// Per-pixel softmax cross-entropy of logits (n, K, S) against labels (n, S): probs, and per
// sample (sample_sums, 4n doubles): the loss (weights[t] * -log(p_t + log_eps), weights null:
// 1), correct argmaxes, counted pixels, and the first pixel whose label is neither a class nor
// `ignore` (-1: none). Scratch: pixel_loss, pixel_hit, pixel_status (n * S each).
cudaError_t pixel_softmax_ce_forward(const float* logits, const int32_t* labels, int64_t n,
                                     int64_t K, int64_t S, int32_t ignore, const double* weights,
                                     double log_eps, float* probs, double* pixel_loss,
                                     int32_t* pixel_hit, int32_t* pixel_status, double* sample_sums,
                                     cudaStream_t st);
// dlogits = scale * weights[t] * (p - onehot(t)) at counted pixels, 0 at the others.
cudaError_t pixel_softmax_ce_backward(const float* probs, const int32_t* labels, int64_t n,
                                      int64_t K, int64_t S, int32_t ignore, const double* weights,
                                      double scale, float* dlogits, cudaStream_t st);

// ---- detection (cuda_detect_kernels.cu) ----
// The detection loss of out (n, C, h, w) against boxes (n, spec.max_boxes, 5): per sample into
// sample_loss (n doubles), as CpuBackend::detection_loss defines it; with dout (may be null),
// scale * its gradient (every element written). Scratch: cell_loss (n * classes * h * w).
cudaError_t detection_loss(const float* out, const int32_t* boxes, int64_t n, int64_t C,
                           int64_t h, int64_t w, DetectionLossSpec spec, double scale,
                           double* cell_loss, double* sample_loss, float* dout, cudaStream_t st);

}  // namespace deeptrain::cuda
