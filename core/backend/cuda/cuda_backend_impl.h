#pragma once
// CudaBackend: the class behind make_cuda_backend (cuda_backend.h). Host code only (compiled by
// the C++ compiler); the kernels it launches are declared in cuda_kernels.h.
//   cuda_backend.cpp  device choice, stream, handles, memory, whole-buffer ops, optimizer step
//   cuda_conv.cpp     convolutions: im2col + cuBLAS, and cuDNN
//   cuda_ops.cpp      pooling, ReLU, affine (cuBLAS), dropout, scale, softmax cross-entropy
//   cuda_layers.cpp   BatchNorm's sums and maps, global average pooling, concat's row copies
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <map>
#include <memory>
#include <string>
#include <tuple>

#include "core/backend/backend.h"
#include "core/backend/cuda/cuda_backend.h"
#include "core/backend/cuda/cuda_kernels.h"

namespace deeptrain::cuda {

// The pointer of a plain f32 (or `type`) tensor in device memory with `numel` elements (any when
// numel < 0); otherwise an Error naming the op and the operand.
void* device_ptr(const Tensor& t, const char* op, const char* what, int64_t numel = -1,
                 DType type = DType::f32);
inline float* f32(const Tensor& t, const char* op, const char* what, int64_t numel = -1) {
  return static_cast<float*>(device_ptr(t, op, what, numel));
}

// Each throws Error("cuda backend: <op>: <call>: <error name>: <message>") on failure.
void check(cudaError_t e, const char* call, const char* op);
void check(cublasStatus_t s, const char* call, const char* op);
void check(cudnnStatus_t s, const char* call, const char* op);
#define DT_CUDA(call, op) ::deeptrain::cuda::check((call), #call, (op))

// The stream, shared by the backend and by the deleter of every buffer it allocated (buffers
// are freed in stream order, and may outlive the backend). Destroyed with the last of them.
struct StreamOwner {
  cudaStream_t stream = nullptr;
  int device = 0;
  ~StreamOwner();
};

// Device memory the backend reuses across ops (im2col columns, 16-bit copies, the cuDNN
// workspace): grown on demand, stream-ordered, never shrunk.
class Scratch {
 public:
  void* get(size_t bytes, cudaStream_t st, const char* op);
  template <class T> T* get(int64_t elems, cudaStream_t st, const char* op) {
    return static_cast<T*>(get(size_t(elems) * sizeof(T), st, op));
  }
  void release(cudaStream_t st);  // at the backend's end (errors ignored)

 private:
  void* ptr_ = nullptr;
  size_t size_ = 0;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(CudaConv conv, MathMode math, int device);  // allocates nothing
  void init();  // makes the device current, creates the stream, handles and buffers
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string name() const override { return name_; }
  Device device() const override { return Device::cuda; }
  cudaStream_t stream() const { return owner_->stream; }

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
  std::unique_ptr<PendingLoss> softmax_ce_forward_async(const Tensor& logits, const Tensor& labels,
                                                        double log_eps, Tensor& probs) override;
  // The pending loss's sums (m classes: for the message of a label out of range); or forget it.
  LossSums loss_sums(int64_t m);
  void forget_loss() { loss_pending_ = false; }
  void softmax_ce_backward(const Tensor& probs, const Tensor& labels, double scale,
                           Tensor& dlogits) override;
  Tensor to_plain(const Tensor& x) override;

  // The deeper nets' layers (cuda_layers.cpp).
  void bn_sums(const Tensor& x, const Tensor* mean, Tensor& sums) override;
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
  // Dense tasks (cuda_conv.cpp: transposed convolution; cuda_dense.cpp: crop, pixel loss).
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
                        double scale, Tensor* dout) override;  // cuda_detect.cpp
  void plane_mean(const Tensor& x, Tensor& y) override;
  void plane_mean_backward(const Tensor& dy, Layout layout, Tensor& dx) override;
  void add(const std::vector<Tensor>& xs, bool relu, Tensor& y) override;
  void copy_rows(const Tensor& src, int64_t src_offset, int64_t src_stride, Tensor& dst,
                 int64_t dst_offset, int64_t dst_stride, int64_t row_len, int64_t rows) override;
  void gather_samples(const Tensor& images, const Tensor& labels, const int64_t* ids, int64_t n,
                      Tensor& x, Tensor& t) override;

  Tensor empty(const Shape& s, DType t) override;
  Tensor empty_host(const Shape& s, DType t) override;
  void fill_zero(Tensor& x) override;
  void copy(const Tensor& src, Tensor& dst) override;
  void synchronize() override;
  Tensor to_host(const Tensor& x) override;
  void accumulate(Tensor& acc, const Tensor& x) override;
  bool scale_and_check_finite(Tensor& x, double alpha) override;
  bool optimizer_step(const OptimizerStep& s, Tensor& params, const Tensor& grads,
                      Tensor* state0, Tensor* state1, const Tensor* lr_scale) override;

 private:
  // cuDNN's descriptors and algorithms for one geometry (made in cuda_conv.cpp). `usable` is
  // false when cuDNN offers no algorithm for it (then the GEMM path runs it).
  struct CudnnPlan {
    cudnnTensorDescriptor_t x = nullptr, y = nullptr;
    cudnnFilterDescriptor_t w = nullptr;
    cudnnConvolutionDescriptor_t conv = nullptr;
    cudnnConvolutionFwdAlgo_t fwd{};
    cudnnConvolutionBwdDataAlgo_t bwd_data{};
    cudnnConvolutionBwdFilterAlgo_t bwd_filter{};
    cudnnMathType_t fwd_math{}, data_math{}, filter_math{};
    size_t fwd_ws = 0, data_ws = 0, filter_ws = 0;
    bool usable = false;
    CudnnPlan() = default;
    CudnnPlan(const CudnnPlan&) = delete;
    CudnnPlan& operator=(const CudnnPlan&) = delete;
    ~CudnnPlan();
  };
  using GeomKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                             int64_t, int64_t, int64_t, int64_t>;
  CudnnPlan* cudnn_plan(const ConvGeom& g);  // null: cuDNN cannot run it (the GEMM path does)
  CudnnPlan* give_up(CudnnPlan& plan, const ConvGeom& g, const std::string& why);  // says so; null
  void conv_forward_gemm(const ConvGeom& g, const float* x, const float* w, const float* b,
                         float* y, bool relu);
  void conv_backward_gemm(const ConvGeom& g, const float* x, const float* w, const float* dy,
                          float* dx, float* dw);
  // false: cuDNN refused to run it (the plan is then marked unusable; the caller runs the GEMM path)
  bool conv_forward_cudnn(CudnnPlan& plan, const ConvGeom& g, const float* x, const float* w,
                          const float* b, float* y, bool relu);
  bool conv_backward_cudnn(CudnnPlan& plan, const ConvGeom& g, const float* x, const float* w,
                           const float* dy, float* dx, float* dw);

  // Row-major C (m, n) = op(A) (m, k) . op(B) (k, n) + beta C; A and B of type elem(), C f32.
  void gemm(const char* op, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void* a,
            const void* b, float beta, float* c);
  // What the GEMMs and cuDNN read in this math mode: f32 itself, or 16-bit copies.
  Elem elem() const;
  // src as elem(): src itself for f32, else a copy in `into`.
  const void* as_elem(const float* src, int64_t n, Scratch& into, const char* op);
  // as_elem, and 16-byte aligned (a copy in `into` when src is not): cuDNN's inputs.
  const void* cudnn_input(const float* src, int64_t n, Scratch& into, const char* op);
  // n sample ids to the device (ids_ scratch, valid for the ops enqueued before the next upload).
  const int64_t* upload_ids(const int64_t* host_ids, int64_t n, const char* op);
  // Makes this backend's device current for the calling thread (ops may come from any thread).
  void enter(const char* op);
  // Waits for the stream, then throws when the stream faulted (for ops that read results back).
  void sync(const char* op);

  CudaConv conv_;
  MathMode math_;
  int device_;
  std::string name_;
  std::shared_ptr<StreamOwner> owner_;
  cublasHandle_t blas_ = nullptr;
  cudnnHandle_t dnn_ = nullptr;
  // Scratch, by role: no two roles of one op share a buffer.
  Scratch col_, colf_, tmp_, w16_, x16_, dy16_, out16_, workspace_, small_, ids_;
  // The per-pixel loss's per-pixel terms, per-sample sums and class weights.
  Scratch pixel_loss_, pixel_hit_, pixel_status_, pixel_sums_, class_weights_;
  Scratch detect_cell_loss_, detect_sums_;
  // Page-locked host words that results come back through (the finite flag at 0, the loss sums
  // at kLossWords, complete once `loss_copied_` has passed), and the staging buffer of sample ids
  // (dropout's, the batch's), reused once `ids_copied_` has passed.
  static constexpr size_t kLossWords = 32;
  void* host_words_ = nullptr;
  cudaEvent_t loss_copied_ = nullptr;
  bool loss_pending_ = false;
  int64_t* host_ids_ = nullptr;
  int64_t host_ids_cap_ = 0;
  int64_t ids_uploaded_ = 0;  // the ids in host_ids_ are on the device (ids_) too
  cudaEvent_t ids_copied_ = nullptr;
  std::map<GeomKey, std::unique_ptr<CudnnPlan>> plans_;
};

}  // namespace deeptrain::cuda
