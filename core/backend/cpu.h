#pragma once
// The reference CPU backend: the book's method (im2col + OpenBLAS GEMM) and straightforward
// loops, for f32 and f64, plain layouts; the elementwise ops and the deeper nets' layer ops
// (BatchNorm, add, global average pooling) also read the blocked layouts DnnlBackend writes. Threads: OpenMP loops and OpenBLAS, both set by
// set_cpu_threads() (core/threads.h).
#include <memory>
#include <mutex>
#include <vector>

#include "core/backend/backend.h"

namespace deeptrain {

class CpuBackend : public Backend {
 public:
  std::string name() const override { return "cpu-ref"; }
  Device device() const override { return Device::cpu; }
  bool exact_capable() const override { return true; }

  void conv2d_forward(const ConvGeom& g, const Tensor& x, const Tensor& w, const Tensor& b,
                      Tensor& y, bool fuse_relu) override;
  void conv2d_backward(const ConvGeom& g, const Tensor& x, const Tensor& w, const Tensor& y,
                       Tensor& dy, bool fuse_relu, Tensor* dx, Tensor& dw, Tensor* db) override;
  void maxpool2d_forward(const PoolGeom& g, const Tensor& x, Tensor& y, Tensor& argmax) override;
  void maxpool2d_backward(const PoolGeom& g, const Tensor& dy, const Tensor& argmax,
                          Tensor& dx) override;
  void relu_forward(const Tensor& x, Tensor& y) override;
  void relu_backward(const Tensor& y, const Tensor& dy, Tensor& dx) override;
  void affine_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y,
                      bool fuse_relu) override;
  void affine_backward(const Tensor& x, const Tensor& w, const Tensor& y, Tensor& dy,
                       bool fuse_relu, Tensor* dx, Tensor& dw, Tensor* db) override;
  void dropout_forward(const DropoutKey& key, float ratio, float scale, const Tensor& x,
                       Tensor& y, Tensor& mask) override;
  void dropout_backward(float scale, const Tensor& mask, const Tensor& dy, Tensor& dx) override;
  void scale(const Tensor& x, double alpha, Tensor& y) override;
  double softmax_ce_forward(const Tensor& logits, const Tensor& labels, double log_eps,
                            Tensor& probs, int64_t* correct) override;
  void softmax_ce_backward(const Tensor& probs, const Tensor& labels, double scale,
                           Tensor& dlogits) override;
  Tensor to_plain(const Tensor& x) override;
  // Dense tasks (cpu_conv.cpp: transposed convolution; cpu_dense_ops.cpp: crop, pixel loss).
  void deconv2d_forward(const ConvGeom& g, const Tensor& x, const Tensor& w, const Tensor& b,
                        Tensor& y) override;
  void deconv2d_backward(const ConvGeom& g, const Tensor& x, const Tensor& w, const Tensor& dy,
                         Tensor* dx, Tensor& dw, Tensor* db) override;
  void crop2d(const Tensor& x, int64_t oy, int64_t ox, Tensor& y) override;
  void crop2d_backward(const Tensor& dy, int64_t oy, int64_t ox, Tensor& dx) override;
  LossSums pixel_softmax_ce_forward(const Tensor& logits, const Tensor& labels, int ignore_label,
                                    const std::vector<double>& weights, double log_eps,
                                    Tensor& probs) override;
  void pixel_softmax_ce_backward(const Tensor& probs, const Tensor& labels, int ignore_label,
                                 const std::vector<double>& weights, double scale,
                                 Tensor& dlogits) override;
  double detection_loss(const Tensor& out, const Tensor& boxes, const DetectionLossSpec& spec,
                        double scale, Tensor* dout) override;  // cpu_detect_ops.cpp

  // The deeper nets' layers, on plain and blocked layouts (cpu_bn.cpp, cpu_graph_ops.cpp).
  void bn_sums(const Tensor& x, const Tensor* mean, Tensor& sums) override;
  bool bn_sample_moments(const Tensor& x, Tensor& moments) override;
  void bn_moment_sums(const Tensor& moments, int64_t positions, const Tensor* mean,
                      Tensor& sums) override;
  void bn_apply(const Tensor& x, const Tensor& mean, const Tensor& scale, const Tensor& shift,
                bool relu, Tensor& y) override;
  void bn_grad_sums(const Tensor& x, const Tensor* relu_y, const Tensor& dy, const Tensor& mean,
                    Tensor& sums) override;
  void bn_input_grad(const Tensor& x, const Tensor* relu_y, const Tensor& dy, const Tensor& mean,
                     const Tensor& k, const Tensor& m, const Tensor& r, Tensor& dx) override;
  void bn_mean(const Tensor& sums, double count, Tensor& mean) override;
  void bn_normalizer(const Tensor* sq, double count, double eps, double momentum,
                     const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                     Tensor& running_var, Tensor& mean, Tensor& invstd, Tensor& scale,
                     Tensor& shift) override;
  void bn_param_grads(Tensor& sums, const Tensor& invstd, Tensor& dgamma, Tensor& dbeta) override;
  void bn_input_coefficients(const Tensor& sums, const Tensor& invstd, const Tensor& gamma,
                             double count, bool training, Tensor& k, Tensor& m,
                             Tensor& r) override;
  void plane_mean(const Tensor& x, Tensor& y) override;
  void plane_mean_backward(const Tensor& dy, Layout layout, Tensor& dx) override;
  void add(const std::vector<Tensor>& xs, bool relu, Tensor& y) override;
  void copy_rows(const Tensor& src, int64_t src_offset, int64_t src_stride, Tensor& dst,
                 int64_t dst_offset, int64_t dst_stride, int64_t row_len, int64_t rows) override;
  void accumulate(Tensor& acc, const Tensor& x) override;
  void copy(const Tensor& src, Tensor& dst) override;  // on all threads when large

 private:
  // im2col scratch per OpenMP thread (exact mode runs micro-shards concurrently), grown on
  // demand and reused across steps.
  std::mutex scratch_mutex_;
  std::vector<std::unique_ptr<Tensor>> cols_;
  Tensor& scratch(int64_t elems, DType t);
};

}  // namespace deeptrain
