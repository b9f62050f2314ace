// CudaBackend's life and memory: device choice, the stream and the library handles, device and
// page-locked host buffers, copies, the whole-buffer ops and the fused optimizer step.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>

#include "core/backend/cuda/cuda_backend_impl.h"
#include "core/backend/gpu_device.h"
#include "core/error.h"

namespace deeptrain {
namespace cuda {

// ---- errors ----
namespace {
// A fault inside a kernel is reported by the next call that waits for the stream, whichever op
// made it: say so.
std::string where_hint(const char* call) {
  const std::string c = call;
  return c.find("Synchronize") != std::string::npos || c.find("Memcpy") != std::string::npos
             ? " (an error of an earlier op on this stream is reported here)"
             : "";
}
}  // namespace

void check(cudaError_t e, const char* call, const char* op) {
  if (e == cudaSuccess) return;
  cudaGetLastError();  // clear a non-sticky error
  fail("cuda backend: {}: {} failed: {}: {}{}", op, call, cudaGetErrorName(e),
       cudaGetErrorString(e), where_hint(call));
}

void check(cublasStatus_t s, const char* call, const char* op) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  fail("cuda backend: {}: {} failed: {}: {}", op, call, cublasGetStatusName(s),
       cublasGetStatusString(s));
}

void check(cudnnStatus_t s, const char* call, const char* op) {
  if (s == CUDNN_STATUS_SUCCESS) return;
  char detail[512] = {0};
  cudnnGetLastErrorString(detail, sizeof detail);
  fail("cuda backend: {}: {} failed: {}{}{}", op, call, cudnnGetErrorString(s),
       detail[0] ? ": " : "", detail);
}

void* device_ptr(const Tensor& t, const char* op, const char* what, int64_t numel, DType type) {
  if (t.device() != Device::cuda)
    fail("cuda backend: {}: {} is a host tensor; the cuda backend's ops take device tensors (from "
         "its empty(); copy() moves data between host and device)", op, what);
  if (t.dtype() != type)
    fail("cuda backend: {}: {} is {}, expected {} (the cuda backend computes in f32)", op, what,
         dtype_name(t.dtype()), dtype_name(type));
  if (t.layout() != Layout::plain)
    fail("cuda backend: {}: {} has layout {}; the cuda backend takes plain tensors", op, what,
         layout_name(t.layout()));
  if (numel >= 0 && t.numel() != numel)
    fail("cuda backend: {}: {} {} has {} elements, expected {}", op, what, t.shape().str(),
         t.numel(), numel);
  if (t.numel() > 0 && !t.raw()) fail("cuda backend: {}: {} is undefined", op, what);
  return t.raw();
}

// ---- the stream and scratch memory ----
StreamOwner::~StreamOwner() {
  if (!stream) return;
  cudaStreamSynchronize(stream);  // errors ignored: this runs in destructors
  cudaStreamDestroy(stream);
}

void* Scratch::get(size_t bytes, cudaStream_t st, const char* op) {
  if (bytes <= size_) return ptr_;
  if (ptr_) {
    DT_CUDA(cudaFreeAsync(ptr_, st), op);
    ptr_ = nullptr;
    size_ = 0;
  }
  const size_t want = (bytes + (size_t(1) << 20) - 1) & ~((size_t(1) << 20) - 1);  // whole MiB
  if (cudaError_t e = cudaMallocAsync(&ptr_, want, st); e != cudaSuccess) {
    cudaGetLastError();
    ptr_ = nullptr;
    fail("cuda backend: {}: cudaMallocAsync of {} bytes of scratch failed: {}: {}", op, want,
         cudaGetErrorName(e), cudaGetErrorString(e));
  }
  size_ = want;
  return ptr_;
}

void Scratch::release(cudaStream_t st) {
  if (ptr_) cudaFreeAsync(ptr_, st);
  ptr_ = nullptr;
  size_ = 0;
}

// ---- life ----
CudaBackend::CudaBackend(CudaConv conv, MathMode math, int device)
    : conv_(conv), math_(math), device_(device) {}

void CudaBackend::init() {
  const char* op = "creating the backend";
  DT_CUDA(cudaSetDevice(device_), op);  // before any other call: the context is this device's
  cudaDeviceProp prop{};
  DT_CUDA(cudaGetDeviceProperties(&prop, device_), op);
  if (prop.major < 8)
    fail_input("GPU {} ({}) has compute capability {}.{}; this build of the cuda backend needs "
               "8.0 or newer (its kernels are built for sm_80 and sm_90)", device_, prop.name,
               prop.major, prop.minor);
  owner_ = std::make_shared<StreamOwner>();
  owner_->device = device_;
  DT_CUDA(cudaStreamCreateWithFlags(&owner_->stream, cudaStreamNonBlocking), op);
  // Freed device memory stays in the stream-ordered pool for the next step's tensors.
  cudaMemPool_t pool = nullptr;
  DT_CUDA(cudaDeviceGetDefaultMemPool(&pool, device_), op);
  uint64_t keep = std::numeric_limits<uint64_t>::max();
  DT_CUDA(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep), op);
  DT_CUDA(cublasCreate(&blas_), op);
  DT_CUDA(cublasSetStream(blas_, stream()), op);
  // The compute type of each call decides the math (cublasGemmEx): CUBLAS_COMPUTE_32F is IEEE
  // fp32 under the default math mode, CUBLAS_COMPUTE_32F_FAST_TF32 lets tensor cores use TF32.
  DT_CUDA(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH), op);
  if (conv_ == CudaConv::cudnn) {
    DT_CUDA(cudnnCreate(&dnn_), op);
    DT_CUDA(cudnnSetStream(dnn_, stream()), op);
  }
  DT_CUDA(cudaMallocHost(&host_words_, 64), op);
  DT_CUDA(cudaEventCreateWithFlags(&ids_copied_, cudaEventDisableTiming), op);
  DT_CUDA(cudaEventCreateWithFlags(&loss_copied_, cudaEventDisableTiming), op);
  name_ = fmt::format("{} ({}, {}) on GPU {}: {}", conv_ == CudaConv::cudnn ? "cuda" : "cuda-im2col",
                      conv_ == CudaConv::cudnn ? "cuDNN" : "im2col + cuBLAS", math_mode_name(math_),
                      device_, prop.name);
}

CudaBackend::~CudaBackend() {
  // No throwing here: errors are ignored.
  cudaSetDevice(device_);
  if (owner_ && owner_->stream) cudaStreamSynchronize(owner_->stream);
  plans_.clear();
  cudaStream_t st = owner_ ? owner_->stream : nullptr;
  for (Scratch* s : {&col_, &colf_, &tmp_, &w16_, &x16_, &dy16_, &out16_, &workspace_, &small_, &ids_,
                     &pixel_loss_, &pixel_hit_, &pixel_status_, &pixel_sums_, &class_weights_,
                     &detect_cell_loss_, &detect_sums_})
    s->release(st);
  if (dnn_) cudnnDestroy(dnn_);
  if (blas_) cublasDestroy(blas_);
  if (ids_copied_) cudaEventDestroy(ids_copied_);
  if (loss_copied_) cudaEventDestroy(loss_copied_);
  if (host_ids_) cudaFreeHost(host_ids_);
  if (host_words_) cudaFreeHost(host_words_);
  owner_.reset();  // the stream lives on while tensors of this backend do
}

void CudaBackend::enter(const char* op) { DT_CUDA(cudaSetDevice(device_), op); }

void CudaBackend::sync(const char* op) { DT_CUDA(cudaStreamSynchronize(stream()), op); }

Elem CudaBackend::elem() const {
  switch (math_) {
    case MathMode::bf16: return Elem::bf16;
    case MathMode::fp16: return Elem::f16;
    default: return Elem::f32;
  }
}

const void* CudaBackend::as_elem(const float* src, int64_t n, Scratch& into, const char* op) {
  if (elem() == Elem::f32) return src;
  void* dst = into.get(size_t(n) * elem_size(elem()), stream(), op);
  DT_CUDA(convert_from_f32(src, dst, elem(), n, stream()), op);
  return dst;
}

void CudaBackend::gemm(const char* op, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                       const void* a, const void* b, float beta, float* c) {
  if (m <= 0 || n <= 0) return;
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  if (m > kMax || n > kMax || k > kMax)
    fail("cuda backend: {}: GEMM {}x{}x{} exceeds cuBLAS's 32-bit sizes", op, m, n, k);
  const cudaDataType_t t = elem() == Elem::f32 ? CUDA_R_32F
                           : elem() == Elem::f16 ? CUDA_R_16F
                                                 : CUDA_R_16BF;
  const cublasComputeType_t compute =
      math_ == MathMode::tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const float alpha = 1.0f;
  // cuBLAS is column-major: the row-major C (m, n) is C^T (n, m) = op(B)^T op(A)^T there.
  const int lda = int(ta ? m : k), ldb = int(tb ? k : n);
  DT_CUDA(cublasGemmEx(blas_, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                       int(n), int(m), int(k), &alpha, b, t, ldb, a, t, lda, &beta, c, CUDA_R_32F,
                       int(n), compute, CUBLAS_GEMM_DEFAULT),
          op);
}

// ---- memory ----
Tensor CudaBackend::empty(const Shape& s, DType t) {
  for (int64_t d : s.dims())
    if (d < 0) fail("cuda backend: empty: negative dimension in {}", s.str());
  const size_t bytes = size_t(s.numel()) * dtype_size(t);
  if (bytes == 0) return Tensor::view(nullptr, s, t, Device::cuda);
  enter("empty");
  void* p = nullptr;
  if (cudaError_t e = cudaMallocAsync(&p, bytes, stream()); e != cudaSuccess) {
    cudaGetLastError();
    fail("cuda backend: out of device memory? cudaMallocAsync of {} bytes for a {} tensor {} "
         "failed: {}: {}", bytes, dtype_name(t), s.str(), cudaGetErrorName(e), cudaGetErrorString(e));
  }
  std::shared_ptr<StreamOwner> owner = owner_;
  std::shared_ptr<void> storage(p, [owner](void* q) { cudaFreeAsync(q, owner->stream); });
  return Tensor::view(p, s, t, Device::cuda, std::move(storage));
}

Tensor CudaBackend::empty_host(const Shape& s, DType t) {
  for (int64_t d : s.dims())
    if (d < 0) fail("cuda backend: empty_host: negative dimension in {}", s.str());
  const size_t bytes = size_t(s.numel()) * dtype_size(t);
  if (bytes == 0) return Tensor::empty(s, t);
  enter("empty_host");
  void* p = nullptr;
  if (cudaError_t e = cudaMallocHost(&p, bytes); e != cudaSuccess) {
    cudaGetLastError();
    fail("cuda backend: cudaMallocHost of {} page-locked bytes for a {} tensor {} failed: {}: {}",
         bytes, dtype_name(t), s.str(), cudaGetErrorName(e), cudaGetErrorString(e));
  }
  std::shared_ptr<void> storage(p, [](void* q) { cudaFreeHost(q); });
  return Tensor::view(p, s, t, Device::cpu, std::move(storage));
}

void CudaBackend::fill_zero(Tensor& x) {
  if (x.device() == Device::cpu) return x.fill_zero();
  enter("fill_zero");
  if (x.nbytes()) DT_CUDA(cudaMemsetAsync(x.raw(), 0, x.nbytes(), stream()), "fill_zero");
  x.set_layout(Layout::plain);
}

void CudaBackend::copy(const Tensor& src, Tensor& dst) {
  if (src.dtype() != dst.dtype() || src.numel() != dst.numel())
    fail("cuda backend: copy {} {} -> {} {}: dtype and element count must match",
         dtype_name(src.dtype()), src.shape().str(), dtype_name(dst.dtype()), dst.shape().str());
  if (src.layout() != Layout::plain)
    fail("cuda backend: copy: the source has layout {}; plain tensors only", layout_name(src.layout()));
  if (src.nbytes() == 0) return;
  if (!src.raw() || !dst.raw()) fail("cuda backend: copy: undefined tensor");
  enter("copy");
  // Ordered on the stream in every direction (host memory may be pageable or page-locked).
  DT_CUDA(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDefault, stream()), "copy");
  dst.set_layout(Layout::plain);
}

void CudaBackend::synchronize() {
  enter("synchronize");
  sync("synchronize");
}

Tensor CudaBackend::to_host(const Tensor& x) {
  if (x.device() == Device::cpu) {
    synchronize();  // it may be the target of a copy still in flight
    return x.clone();
  }
  Tensor h = Tensor::empty(x.shape(), x.dtype());
  copy(x, h);
  sync("to_host");
  return h;
}

Tensor CudaBackend::to_plain(const Tensor& x) {
  if (x.layout() != Layout::plain)
    fail("cuda backend: to_plain: a {} tensor; the cuda backend only makes plain ones",
         layout_name(x.layout()));
  return x;
}

// ---- whole-buffer ops ----
void CudaBackend::accumulate(Tensor& acc, const Tensor& x) {
  const char* op = "accumulate";
  float* a = f32(acc, op, "acc");
  const float* b = f32(x, op, "x", acc.numel());
  enter(op);
  DT_CUDA(cuda::accumulate(a, b, acc.numel(), stream()), op);
}

bool CudaBackend::scale_and_check_finite(Tensor& x, double alpha) {
  const char* op = "scale_and_check_finite";
  float* p = f32(x, op, "x");
  enter(op);
  int32_t* bad = small_.get<int32_t>(1, stream(), op);
  DT_CUDA(cudaMemsetAsync(bad, 0, sizeof(int32_t), stream()), op);
  DT_CUDA(scale_check_finite(p, alpha, x.numel(), bad, stream()), op);
  DT_CUDA(cudaMemcpyAsync(host_words_, bad, sizeof(int32_t), cudaMemcpyDeviceToHost, stream()), op);
  sync(op);
  return *static_cast<int32_t*>(host_words_) == 0;
}

bool CudaBackend::optimizer_step(const OptimizerStep& s, Tensor& params, const Tensor& grads,
                                 Tensor* state0, Tensor* state1, const Tensor* lr_scale) {
  const char* op = "optimizer_step";
  const int64_t n = params.numel();
  float* p = f32(params, op, "params");
  const float* g = f32(grads, op, "grads", n);
  const float* sc = lr_scale ? f32(*lr_scale, op, "lr_scale", n) : nullptr;
  if (!(std::isfinite(s.lr) && s.lr >= 0.0f)) fail("cuda backend: {}: learning rate {}", op, s.lr);
  // The constants exactly as core/optim/optimizer.cpp computes them: in double from the float
  // hyperparameters, rounded to float once.
  OptimConsts k{};
  int states = 0;
  switch (s.rule) {
    case OptimizerStep::Rule::sgd: k.rule = kSgd; break;
    case OptimizerStep::Rule::momentum: k.rule = kMomentum; states = 1; break;
    case OptimizerStep::Rule::nesterov: k.rule = kNesterov; states = 1; break;
    case OptimizerStep::Rule::adagrad: k.rule = kAdaGrad; states = 1; break;
    case OptimizerStep::Rule::rmsprop: k.rule = kRmsProp; states = 1; break;
    case OptimizerStep::Rule::adam:
    case OptimizerStep::Rule::adamw: k.rule = kAdam; states = 2; break;
    default: fail("cuda backend: {}: unknown rule {}", op, int(s.rule));
  }
  const bool decoupled = s.rule == OptimizerStep::Rule::adamw;
  k.lr = s.lr;
  k.l2 = decoupled ? 0.0f : s.weight_decay;
  k.momentum = s.momentum;
  k.momentum_sq = float(double(s.momentum) * double(s.momentum));
  k.lookahead_lr = float((1.0 + double(s.momentum)) * s.lr);
  k.decay = s.decay_rate;
  k.one_minus_decay = float(1.0 - double(s.decay_rate));
  k.eps = s.eps;
  if (k.rule == kAdam) {
    if (s.t < 1) fail("cuda backend: {}: Adam's step count t = {} (it counts this update: >= 1)", op, s.t);
    const double t = double(s.t);
    k.lr_t = float(s.lr * std::sqrt(1.0 - std::pow(double(s.beta2), t)) /
                   (1.0 - std::pow(double(s.beta1), t)));
    k.one_minus_beta1 = float(1.0 - double(s.beta1));
    k.one_minus_beta2 = float(1.0 - double(s.beta2));
    k.decoupled_decay = decoupled ? float(s.lr * double(s.weight_decay)) : 0.0f;
  }
  float* s0 = nullptr;
  float* s1 = nullptr;
  if (states >= 1) {
    if (!state0) fail("cuda backend: {}: this rule needs its state tensor (state0)", op);
    s0 = f32(*state0, op, "state0", n);
  }
  if (states >= 2) {
    if (!state1) fail("cuda backend: {}: Adam needs its second state tensor (state1: v)", op);
    s1 = f32(*state1, op, "state1", n);
  }
  enter(op);
  DT_CUDA(cuda::optimizer_step(k, p, g, s0, s1, sc, n, stream()), op);
  return true;
}

}  // namespace cuda

// ---- the public API ----
int cuda_device_count(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear it: it is not this process's last word on CUDA
    if (why) *why = fmt::format("cudaGetDeviceCount: {}: {}", cudaGetErrorName(e), cudaGetErrorString(e));
    return 0;
  }
  if (n <= 0 && why) *why = "the CUDA runtime found no device";
  return n;
}

std::unique_ptr<Backend> make_cuda_backend(CudaConv conv, const BackendOptions& opt) {
  std::string why;
  const int count = cuda_device_count(&why);
  const int dev = choose_gpu(opt.device,
                             local_rank_from_env([](const char* v) { return std::getenv(v); }),
                             count, why);
  auto backend = std::make_unique<cuda::CudaBackend>(conv, opt.math, dev);
  try {
    backend->init();
  } catch (const InputError&) {
    throw;
  } catch (const Error& e) {
    throw InputError(fmt::format("GPU {} is not usable: {}", dev, e.what()));
  }
  return backend;
}

void* cuda_stream_of(Backend& backend) {
  auto* b = dynamic_cast<cuda::CudaBackend*>(&backend);
  return b ? static_cast<void*>(b->stream()) : nullptr;
}

}  // namespace deeptrain
