#pragma once
// Backend: memory and the ops of one device. Layers describe *what* to compute with explicit
// geometry; a backend decides *how* (im2col + GEMM, oneDNN, CUDA). Every backend is checked
// op by op against CpuBackend, the reference (tests/test_backend_ops.cpp).
#include <cstdint>
#include <memory>
#include <string>

#include "core/tensor.h"

namespace deeptrain {

// 2-d convolution: x (n, c, h, w) * w (k, c, r, s) + b (k) -> y (n, k, p, q).
struct ConvGeom {
  int64_t n, c, h, w;         // input
  int64_t k, r, s;            // filters
  int64_t stride_h, stride_w, pad_h, pad_w;
  int64_t p, q;               // output height and width
  static ConvGeom make(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t r,
                       int64_t s, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                       int64_t pad_w);
  double flops_forward() const { return 2.0 * n * k * p * q * c * r * s; }
};

// Max pooling of x (n, c, h, w) with an r x s window -> y (n, c, p, q).
struct PoolGeom {
  int64_t n, c, h, w, r, s, stride_h, stride_w, pad_h, pad_w, p, q;
  static PoolGeom make(int64_t n, int64_t c, int64_t h, int64_t w, int64_t r, int64_t s,
                       int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w);
};

// Identifies the random stream of one dropout layer in one step; each sample's mask is drawn
// from (seed, step, layer, global sample index), so it does not depend on ranks or threads.
struct DropoutKey {
  uint64_t seed;
  int64_t step;
  int32_t layer;
  const int64_t* sample_ids;  // n global sample indices
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual Device device() const = 0;

  // Ops read plain or backend-native layouts and may write backend-native ones (Tensor::layout).
  // Parameter gradients (dw, db) are overwritten, not accumulated. `dy` is scratch: a backend
  // may modify it in place (e.g. to apply a fused ReLU's mask).

  // conv; fuse_relu: y = max(0, conv(x) + b). b may be undefined (no bias).
  virtual void conv2d_forward(const ConvGeom& g, const Tensor& x, const Tensor& w,
                              const Tensor& b, Tensor& y, bool fuse_relu) = 0;
  // y is the forward output (needed for a fused ReLU's mask). dx may be null (first layer).
  virtual void conv2d_backward(const ConvGeom& g, const Tensor& x, const Tensor& w,
                               const Tensor& y, Tensor& dy, bool fuse_relu, Tensor* dx,
                               Tensor& dw, Tensor* db) = 0;

  // argmax: i32, one entry per output element: the flat input index (within its (n, c) plane)
  // of the window's first maximum in row-major order, which receives the gradient.
  virtual void maxpool2d_forward(const PoolGeom& g, const Tensor& x, Tensor& y,
                                 Tensor& argmax) = 0;
  virtual void maxpool2d_backward(const PoolGeom& g, const Tensor& dy, const Tensor& argmax,
                                  Tensor& dx) = 0;

  virtual void relu_forward(const Tensor& x, Tensor& y) = 0;
  virtual void relu_backward(const Tensor& y, const Tensor& dy, Tensor& dx) = 0;

  // Affine: x (n, d) . w (d, m) + b (m) -> y (n, m); the book's weight layout (in, out).
  virtual void affine_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y,
                              bool fuse_relu) = 0;
  virtual void affine_backward(const Tensor& x, const Tensor& w, const Tensor& y, Tensor& dy,
                               bool fuse_relu, Tensor* dx, Tensor& dw, Tensor* db) = 0;

  // Dropout at training time: y = x * mask * scale, where mask (u8, kept for backward) keeps
  // an element with probability 1 - ratio; scale is 1 / (1 - ratio) for inverted dropout and
  // 1 for the book's.
  virtual void dropout_forward(const DropoutKey& key, float ratio, float scale, const Tensor& x,
                               Tensor& y, Tensor& mask) = 0;
  virtual void dropout_backward(float scale, const Tensor& mask, const Tensor& dy,
                                Tensor& dx) = 0;
  // y = alpha * x (the book's dropout at evaluation time).
  virtual void scale(const Tensor& x, double alpha, Tensor& y) = 0;

  // Softmax cross-entropy: loss_i = -log(p_i[t_i] + log_eps); the book uses log_eps = 1e-7 so a
  // zero probability stays finite. logits (n, m), labels i32 (n). Writes probs; returns the
  // *sum* of per-sample losses (callers divide by the global batch) and adds the count of
  // correct argmax predictions to *correct.
  virtual double softmax_ce_forward(const Tensor& logits, const Tensor& labels, double log_eps,
                                    Tensor& probs, int64_t* correct) = 0;
  // dlogits = scale * (p - onehot(t)): the book's gradient, exact for log_eps = 0 (it ignores
  // the 1e-7, a relative difference of 1e-7 / p_t; the book's reference gradients do the same).
  virtual void softmax_ce_backward(const Tensor& probs, const Tensor& labels, double scale,
                                   Tensor& dlogits) = 0;

  // A plain-layout copy (or x itself when it is already plain).
  virtual Tensor to_plain(const Tensor& x) = 0;
};

// "cpu" (the fast path where built: oneDNN), "cpu-ref" (im2col + OpenBLAS, the book's method).
std::unique_ptr<Backend> make_backend(const std::string& name);

}  // namespace deeptrain
