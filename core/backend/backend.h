#pragma once
// Backend: memory and the ops of one device. Layers describe *what* to compute with explicit
// geometry; a backend decides *how* (im2col + GEMM, oneDNN, CUDA). Every backend is checked
// op by op against CpuBackend, the reference (tests/test_backend_ops.cpp).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/backend/detection_targets.h"
#include "core/tensor.h"
#include "proto/deeptrain.pb.h"

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
  // The same geometry for n samples (a micro-shard's rows of the batch).
  ConvGeom with_batch(int64_t samples) const {
    ConvGeom g = *this;
    g.n = samples;
    return g;
  }
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

// One optimizer update's constants, as the fused device kernels take them. The rules are the
// book's (common/optimizer.py) and core/optim/optimizer.cpp's, element by element.
struct OptimizerStep {
  enum class Rule : uint8_t { sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw };
  Rule rule;
  float lr, momentum, beta1, beta2, decay_rate, eps, weight_decay;
  int64_t t;  // Adam's step count after this update (bias correction)
};

// An activation x (n rows) viewed as (n, C, S) for per-channel vectors of C elements (the
// BatchNorm ops); fails naming `op` (after `who`, e.g. "cuda backend: ") when it does not.
struct ChannelView {
  int64_t n, C, S;
};
ChannelView channel_view(const Tensor& x, int64_t C, const char* op, const char* who = "");

// softmax_ce_forward's sums on their way to the host (Backend::softmax_ce_forward_async).
struct LossSums {
  double loss = 0;      // the sum of the per-sample losses
  int64_t correct = 0;  // correct argmax predictions
  int64_t counted = 0;  // pixel losses: the pixels counted (not ignored); 0 for per-sample ones
};
class PendingLoss {
 public:
  virtual ~PendingLoss() = default;
  virtual LossSums get() = 0;  // waits for the sums; throws what the loss computation threw
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual Device device() const = 0;
  // Exact mode (core/micro_shards.h): ops may run concurrently from OpenMP threads on disjoint
  // micro-shards, and an op run on one thread gives the same result whatever the process's
  // thread count. The reference CPU backend; not oneDNN (its weight gradients change with the
  // thread count) nor a GPU.
  virtual bool exact_capable() const { return false; }

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
  // Forward where no backward follows: y only. scratch (i32, y's size) is the backend's to
  // use; the default writes the argmax there through maxpool2d_forward.
  virtual void maxpool2d_infer(const PoolGeom& g, const Tensor& x, Tensor& y, Tensor& scratch);

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
  // y = alpha * x, elementwise: y takes x's layout (the book's dropout at evaluation time; the
  // gradient of an input an add takes twice).
  virtual void scale(const Tensor& x, double alpha, Tensor& y) = 0;

  // Softmax cross-entropy: loss_i = -log(p_i[t_i] + log_eps); the book uses log_eps = 1e-7 so a
  // zero probability stays finite. logits (n, m), labels i32 (n). Writes probs; returns the
  // *sum* of per-sample losses (callers divide by the global batch) and adds the count of
  // correct argmax predictions to *correct.
  virtual double softmax_ce_forward(const Tensor& logits, const Tensor& labels, double log_eps,
                                    Tensor& probs, int64_t* correct) = 0;
  // The same without waiting for the sums: a device backend enqueues the kernels and the copy
  // back, and the step goes on while they run; get() waits for them (and reports a label out
  // of range). One may be pending per backend at a time. The default computes them at once.
  virtual std::unique_ptr<PendingLoss> softmax_ce_forward_async(const Tensor& logits,
                                                                const Tensor& labels,
                                                                double log_eps, Tensor& probs);
  // dlogits = scale * (p - onehot(t)): the book's gradient, exact for log_eps = 0 (it ignores
  // the 1e-7, a relative difference of 1e-7 / p_t; the book's reference gradients do the same).
  virtual void softmax_ce_backward(const Tensor& probs, const Tensor& labels, double scale,
                                   Tensor& dlogits) = 0;

  // ---- dense tasks (segmentation; core/layers/deconv.cpp, crop.cpp, core/loss.cpp) ----
  // Transposed convolution, the adjoint of conv2d with geometry g: x (n, g.k, g.p, g.q),
  // w (g.k, g.c, g.r, g.s) -> y (n, g.c, g.h, g.w) = conv2d's input gradient for output
  // gradient x, plus b (g.c) when defined. Inputs in any layout the backend writes; y plain.
  virtual void deconv2d_forward(const ConvGeom& g, const Tensor& x, const Tensor& w,
                                const Tensor& b, Tensor& y) = 0;
  // dx (may be null) = conv2d(dy, w) without bias; dw = the conv weight gradient of input dy
  // and output gradient x; db (may be null) = dy summed per channel. dx plain.
  virtual void deconv2d_backward(const ConvGeom& g, const Tensor& x, const Tensor& w,
                                 const Tensor& dy, Tensor* dx, Tensor& dw, Tensor* db) = 0;
  // y (n, C, h, w) = x (n, C, H, W) at rows oy.., columns ox.. (the window inside x), plain in,
  // plain out. Backward: dx is dy inside the window and 0 elsewhere.
  virtual void crop2d(const Tensor& x, int64_t oy, int64_t ox, Tensor& y) = 0;
  virtual void crop2d_backward(const Tensor& dy, int64_t oy, int64_t ox, Tensor& dx) = 0;
  // Per-pixel softmax cross-entropy: logits (n, K, H, W) plain, labels i32 (n, H, W) in
  // [0, K) or ignore_label. Writes probs (the softmax over K at each pixel) and returns, over
  // the pixels not ignored, loss = sum of w[t] * -log(p[t] + log_eps) (w: weights, one per
  // class, or all 1 when empty), correct = argmax (first maximum) == t, counted = their
  // number. Sums in f64: per sample in pixel order, then the samples in order. A label
  // outside both is an InputError naming the sample and pixel.
  virtual LossSums pixel_softmax_ce_forward(const Tensor& logits, const Tensor& labels,
                                            int ignore_label, const std::vector<double>& weights,
                                            double log_eps, Tensor& probs) = 0;
  // dlogits = scale * w[t] * (p - onehot(t)) at counted pixels, 0 at ignored ones.
  virtual void pixel_softmax_ce_backward(const Tensor& probs, const Tensor& labels,
                                         int ignore_label, const std::vector<double>& weights,
                                         double scale, Tensor& dlogits) = 0;

  // CenterNet-style detection loss (core/backend/detection_targets.h): out (n, C, h, w) plain
  // holds the heads at spec's channels, boxes i32 (n, M, 5) the targets. Returns the sum over
  // the samples of (heat_weight * heat + size_weight * size + offset_weight * offset) / N, N
  // the sample's boxes (at least 1): heat over every class and cell, size and offset at each
  // box's centre cell. Sums in f64, per sample then in sample order. With dout (out's shape):
  // also writes scale * its gradient (0 in channels no head reads). A box label outside
  // [0, classes) is an InputError naming the sample of the batch.
  virtual double detection_loss(const Tensor& out, const Tensor& boxes,
                                const DetectionLossSpec& spec, double scale, Tensor* dout) = 0;

  // A plain-layout copy (or x itself when it is already plain).
  virtual Tensor to_plain(const Tensor& x) = 0;

  // ---- the deeper nets' layers (core/layers/batch_norm.cpp, add.cpp, concat.cpp, ...) ----
  // Activations are viewed as (n, C, S) with per-channel f64 vectors (C), all in this
  // backend's memory. Outputs take x's layout. Sums over (n, s) run in f64 in a fixed order
  // that neither the thread count nor the layout changes; CpuBackend sums each sample's
  // positions, then the samples in order, so a micro-shard's sums (exact mode) are those of its
  // samples alone. CpuBackend also reads and writes blocked f32 activations (nChw8c, nChw16c)
  // as they are, and takes f64 activations with f64 gamma and beta (gradient checks); CUDA
  // takes plain f32.
  // sums[c] = sum of x, or of (x - mean[c])^2 when mean is given.
  virtual void bn_sums(const Tensor& x, const Tensor* mean, Tensor& sums) = 0;
  // The training statistics' sums from one read of x, in place of two bn_sums calls (a backend
  // without this op returns false, and the layer reads x twice). moments (n * 2C) holds, for
  // sample i, at i * 2C + c the sum of x over channel c's positions, and at i * 2C + C + c the
  // sum of squared deviations from that sample's own mean of channel c (computed while the
  // sample's channel is in cache).
  virtual bool bn_sample_moments(const Tensor& x, Tensor& moments) { return false; }
  // sums (C) over the samples of moments (n * 2C), in sample order: the sums of x, or with
  // mean, the sums of (x - mean[c])^2 = sum_i [M2_i + S (sum_i / S - mean[c])^2], S the
  // positions per channel (Chan et al.'s pairwise update).
  virtual void bn_moment_sums(const Tensor& moments, int64_t positions, const Tensor* mean,
                              Tensor& sums) {
    fail("bn_moment_sums: backend {} has no bn_sample_moments", name());
  }
  // y = (x - mean[c]) * scale[c] + shift[c], then max(0, .) when relu.
  virtual void bn_apply(const Tensor& x, const Tensor& mean, const Tensor& scale,
                        const Tensor& shift, bool relu, Tensor& y) = 0;
  // g = dy, or dy where y > 0 when relu_y (a fused ReLU's output) is given; sums (2C) =
  // [sum of g | sum of g * (x - mean[c])].
  virtual void bn_grad_sums(const Tensor& x, const Tensor* relu_y, const Tensor& dy,
                            const Tensor& mean, Tensor& sums) = 0;
  // dx = k[c] * g + m[c] - r[c] * (x - mean[c]), g as in bn_grad_sums.
  virtual void bn_input_grad(const Tensor& x, const Tensor* relu_y, const Tensor& dy,
                             const Tensor& mean, const Tensor& k, const Tensor& m,
                             const Tensor& r, Tensor& dx) = 0;
  // BatchNorm's per-channel statistics from those sums, so that a device keeps them in its
  // memory (no readback per step). All f64 (C) but gamma and beta (the layer's parameters, of
  // the net's dtype) and dgamma, dbeta (its gradients, the same).
  // mean = sums / count (0 when count is 0).
  virtual void bn_mean(const Tensor& sums, double count, Tensor& mean) = 0;
  // Training (sq: the sums of (x - mean)^2): var = sq / count (0 when count is 0), and
  // running = momentum * running + (1 - momentum) * (mean, var). Evaluation (sq null):
  // mean = running_mean, var = running_var. Then invstd = 1 / sqrt(var + eps),
  // scale = gamma * invstd, shift = beta.
  virtual void bn_normalizer(const Tensor* sq, double count, double eps, double momentum,
                             const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                             Tensor& running_var, Tensor& mean, Tensor& invstd, Tensor& scale,
                             Tensor& shift) = 0;
  // sums (2C, bn_grad_sums'): the second half is scaled by invstd into sum of g * xhat; then
  // dbeta = sums[c], dgamma = sums[C + c].
  virtual void bn_param_grads(Tensor& sums, const Tensor& invstd, Tensor& dgamma,
                              Tensor& dbeta) = 0;
  // bn_input_grad's coefficients from those (scaled) sums: k = gamma * invstd; in training
  // m = -k * sums[c] / count and r = k * invstd * sums[C + c] / count, in evaluation m = r = 0.
  virtual void bn_input_coefficients(const Tensor& sums, const Tensor& invstd,
                                     const Tensor& gamma, double count, bool training, Tensor& k,
                                     Tensor& m, Tensor& r) = 0;
  // Global average pooling of x (n, C, H, W) -> y (n, C), plain: each plane's f64 sum, in
  // position order, / (H * W). Backward: every element of a plane gets dy / (H * W), dx
  // written in `layout` (the forward input's).
  virtual void plane_mean(const Tensor& x, Tensor& y) = 0;
  virtual void plane_mean_backward(const Tensor& dy, Layout layout, Tensor& dx) = 0;
  // y = xs[0] + xs[1] + ... (added in that order), then max(0, .) when relu: elementwise over
  // inputs of one dtype, numel and layout, which y takes (the residual add).
  virtual void add(const std::vector<Tensor>& xs, bool relu, Tensor& y) = 0;
  // rows times: dst[dst_offset + i * dst_stride + j] = src[src_offset + i * src_stride + j] for
  // j < row_len (elements; equal dtypes; both in this backend's memory): the channel blocks of
  // a concat.
  virtual void copy_rows(const Tensor& src, int64_t src_offset, int64_t src_stride, Tensor& dst,
                         int64_t dst_offset, int64_t dst_stride, int64_t row_len,
                         int64_t rows) = 0;
  // acc += x, with equal dtype, numel and layout (a gradient that several layers add to).
  virtual void accumulate(Tensor& acc, const Tensor& x) = 0;

  // ---- input batches from a data set kept in this backend's memory ----
  // x (f32, (n, C, H, W)) = images[ids[i]] as pixel / 255.0f (data::gather_batch's arithmetic,
  // bit for bit), t (i32, (n)) = labels[ids[i]], for a data set copied here once: images u8
  // (N, C, H, W), labels i32 (N). ids: n host values, each checked against N. So a GPU trains
  // without converting and copying every batch on the host. The default runs on the host.
  virtual void gather_samples(const Tensor& images, const Tensor& labels, const int64_t* ids,
                              int64_t n, Tensor& x, Tensor& t);

  // ---- memory and whole-buffer ops ----
  // Host backends keep everything in host memory (these defaults). A device backend overrides
  // them all: its tensors live on its device, its ops run in order on one stream of its own, and
  // data crosses to the host only through copy() (then synchronize() before reading it there).
  virtual Tensor empty(const Shape& s, DType t) { return Tensor::empty(s, t); }
  // Host memory for staging input batches (page-locked on a GPU backend, so that copies to the
  // device run asynchronously).
  virtual Tensor empty_host(const Shape& s, DType t) { return Tensor::empty(s, t); }
  Tensor zeros(const Shape& s, DType t) {
    Tensor x = empty(s, t);
    fill_zero(x);
    return x;
  }
  virtual void fill_zero(Tensor& x) { x.fill_zero(); }
  // dst = src: equal dtype and numel, each in host memory or this backend's (any direction).
  virtual void copy(const Tensor& src, Tensor& dst) { dst.copy_from(src); }
  // Waits until every op issued so far has finished (host backends: at once).
  virtual void synchronize() {}
  // A plain host copy of x, complete on return (for evaluation, checkpoints and tests).
  virtual Tensor to_host(const Tensor& x) { return to_plain(x).clone(); }
  // x *= alpha; returns whether every element of the result is finite (loss scaling's check).
  virtual bool scale_and_check_finite(Tensor& x, double alpha);
  // The fused optimizer update over the flat buffers (device backends; the host update lives in
  // core/optim). Returns false when this backend leaves the update to the host.
  virtual bool optimizer_step(const OptimizerStep& s, Tensor& params, const Tensor& grads,
                              Tensor* state0, Tensor* state1, const Tensor* lr_scale) {
    return false;
  }
};

// How a GPU backend computes: the math of convolutions and matrix products. fp32 is exact IEEE
// float; tf32 lets the tensor cores round the inputs to 10 mantissa bits; bf16 and fp16 feed
// them 16-bit copies of the inputs (activations, weights and gradients stay f32: the master
// weights and the optimizer are always f32) and accumulate in f32.
enum class MathMode : uint8_t { fp32, tf32, bf16, fp16 };

// How BACKEND_CPU computes 3x3 convolutions (proto::ConvAlgorithm): direct, or Winograd
// F(4x4, 3x3) where oneDNN has it (DnnlBackend; the other backends refuse winograd).
enum class ConvAlgo : uint8_t { direct, winograd };

struct BackendOptions {
  MathMode math = MathMode::fp32;
  ConvAlgo conv = ConvAlgo::direct;
  int device = -1;  // the GPU index (-1: chosen from the rank's local rank, see gpu_device.h)
};

// The backends of proto::Backend (proto/deeptrain.proto): BACKEND_CPU (the fast path where
// built: oneDNN), BACKEND_CPU_REF (im2col + OpenBLAS, the book's method), BACKEND_CUDA (cuDNN
// convolutions) and BACKEND_CUDA_IM2COL (im2col + cuBLAS, the book's method on the GPU) where
// built with CUDA. A GPU backend on a machine without a usable GPU is an InputError that says
// why.
std::unique_ptr<Backend> make_backend(proto::Backend kind, const BackendOptions& opt = {});
// The same by its word ("cpu-ref"; core/config.h: backend_word), for tests and tools.
std::unique_ptr<Backend> make_backend(const std::string& word, const BackendOptions& opt = {});
inline std::unique_ptr<Backend> make_backend(const char* word, const BackendOptions& opt = {}) {
  return make_backend(std::string(word), opt);
}
MathMode math_mode(proto::MathMode m);
// "fp32", "tf32", ...: the words of proto::MathMode (core/config.h: math_word).
const char* math_mode_name(MathMode m);

}  // namespace deeptrain
