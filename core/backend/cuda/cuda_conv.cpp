// Convolutions on the GPU, two ways:
//  - im2col + cuBLAS (CudaConv::im2col, the book's method, as core/backend/cpu_conv.cpp): per chunk
//    of images, im2col, one GEMM, and a kernel that adds the bias, applies the ReLU and moves the
//    result to NCHW. Backward: dW accumulates one GEMM per chunk, dx is a GEMM and col2im.
//  - cuDNN (CudaConv::cudnn): cudnnConvolutionForward / BackwardData / BackwardFilter with the
//    algorithms chosen once per geometry from cuDNN's heuristics; bias and ReLU in one kernel.
// In the bf16 and fp16 modes both read 16-bit copies of x, w and dy; the outputs are f32 (the
// GEMM writes f32; cuDNN writes 16-bit, converted to f32 by the kernel that adds the bias).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <vector>

#include "core/backend/cuda/cuda_backend_impl.h"
#include "core/error.h"

namespace deeptrain {
namespace cuda {
namespace {

ConvDims dims(const ConvGeom& g) {
  return {g.n, g.c, g.h, g.w, g.k, g.r, g.s, g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.p, g.q};
}

// Images per GEMM: the im2col buffer holds at most 2^25 elements (128 MiB in f32).
int64_t chunk_images(const ConvGeom& g) {
  const int64_t per_image = std::max<int64_t>(g.c * g.r * g.s * g.p * g.q, 1);
  return std::clamp<int64_t>((int64_t(1) << 25) / per_image, 1, std::max<int64_t>(g.n, 1));
}

// A 16-bit buffer (or f32 itself) -> f32: the bias kernel without a bias.
cudaError_t to_f32(const void* src, Elem e, float* dst, int64_t n, cudaStream_t st) {
  if (e == Elem::f32 && src == dst) return cudaSuccess;
  return bias_act(src, e, nullptr, dst, 1, 1, n, false, st);
}

constexpr size_t kMaxWorkspace = size_t(1) << 30;

// fp32 mode takes only algorithms that sum products directly (no FFT, no Winograd), so its
// results round like a plain fp32 GEMM.
bool direct_sum(cudnnConvolutionFwdAlgo_t a) {
  return a == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM ||
         a == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM ||
         a == CUDNN_CONVOLUTION_FWD_ALGO_GEMM || a == CUDNN_CONVOLUTION_FWD_ALGO_DIRECT;
}
bool direct_sum(cudnnConvolutionBwdDataAlgo_t a) {
  return a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_0 || a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
}
bool direct_sum(cudnnConvolutionBwdFilterAlgo_t a) {
  return a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 || a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1 ||
         a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3;
}

// The best-ranked of cuDNN's results (heuristic, or timed with DEEPTRAIN_CUDNN_FIND) that this
// math mode allows, deterministic when one is, whose workspace (asked with the math type it will
// run with) fits. Returns its index and sets *ws and *run_math, or returns -1. fp32 runs
// everything as CUDNN_FMA_MATH (an algorithm that cannot fails the workspace query and is skipped).
template <class Perf, class Workspace>
int choose(const std::vector<Perf>& perf, int got, MathMode math, bool any_determinism,
           Workspace&& workspace, size_t* ws, cudnnMathType_t* run_math) {
  for (int pass = any_determinism ? 1 : 0; pass < 2; ++pass)
    for (int i = 0; i < got; ++i) {
      const Perf& p = perf[i];
      if (p.status != CUDNN_STATUS_SUCCESS) continue;
      if (pass == 0 && p.determinism != CUDNN_DETERMINISTIC) continue;
      const bool fp32 = math == MathMode::fp32;
      if (fp32 && (!direct_sum(p.algo) ||
                   (p.mathType != CUDNN_FMA_MATH && p.mathType != CUDNN_DEFAULT_MATH)))
        continue;
      const cudnnMathType_t m = fp32 ? CUDNN_FMA_MATH : p.mathType;
      size_t need = 0;
      if (!workspace(p.algo, m, &need) || need > kMaxWorkspace) continue;
      *ws = need;
      *run_math = m;
      return i;
    }
  return -1;
}

// A cuDNN status: true on success; false, with the reason in *why, when cuDNN does not support
// the configuration (then the GEMM path runs it); any other failure is an Error.
bool supported(cudnnStatus_t s, const char* call, const char* op, std::string* why) {
  if (s == CUDNN_STATUS_SUCCESS) return true;
  if (int(s) / 1000 == int(CUDNN_STATUS_NOT_SUPPORTED) / 1000 ||
      s == CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER) {
    char detail[256] = {0};
    cudnnGetLastErrorString(detail, sizeof detail);
    *why = fmt::format("{}: {}{}{}", call, cudnnGetErrorString(s), detail[0] ? ": " : "", detail);
    return false;
  }
  check(s, call, op);
  return false;
}

std::string geom_text(const ConvGeom& g) {
  return fmt::format("n={} c={} {}x{} k={} {}x{} stride {}x{} pad {}x{}", g.n, g.c, g.h, g.w, g.k,
                     g.r, g.s, g.stride_h, g.stride_w, g.pad_h, g.pad_w);
}

// cuDNN's kernels may need 16-byte aligned operands; views into the flat parameter buffer (w, dw)
// need not be. Misaligned operands go through aligned scratch.
bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

cudnnDataType_t cudnn_type(Elem e) {
  return e == Elem::f32 ? CUDNN_DATA_FLOAT : e == Elem::f16 ? CUDNN_DATA_HALF : CUDNN_DATA_BFLOAT16;
}

}  // namespace

CudaBackend::CudnnPlan::~CudnnPlan() {
  if (x) cudnnDestroyTensorDescriptor(x);
  if (y) cudnnDestroyTensorDescriptor(y);
  if (w) cudnnDestroyFilterDescriptor(w);
  if (conv) cudnnDestroyConvolutionDescriptor(conv);
}

CudaBackend::CudnnPlan* CudaBackend::cudnn_plan(const ConvGeom& g) {
  const GeomKey key{g.n, g.c, g.h, g.w, g.k, g.r, g.s, g.stride_h, g.stride_w, g.pad_h, g.pad_w};
  if (auto it = plans_.find(key); it != plans_.end()) return it->second->usable ? it->second.get() : nullptr;
  const char* op = "conv2d (cuDNN setup)";
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  for (int64_t v : {g.n, g.c, g.h, g.w, g.k, g.r, g.s, g.stride_h, g.stride_w, g.pad_h, g.pad_w})
    if (v > kMax) fail("cuda backend: {}: a dimension of {} exceeds cuDNN's int", op, v);
  auto plan = std::make_unique<CudnnPlan>();
  CudnnPlan& P = *plan;
  CudnnPlan* result = plan.get();
  plans_.emplace(key, std::move(plan));  // cached even when unusable: decided once
  std::string why;
#define DT_CUDNN_OK(call) supported((call), #call, op, &why)
  const cudnnDataType_t dt = cudnn_type(elem());
  DT_CUDA(cudnnCreateTensorDescriptor(&P.x), op);
  DT_CUDA(cudnnCreateTensorDescriptor(&P.y), op);
  DT_CUDA(cudnnCreateFilterDescriptor(&P.w), op);
  DT_CUDA(cudnnCreateConvolutionDescriptor(&P.conv), op);
  // fp32: FMA kernels only (cuDNN's default math may use TF32 on Ampere and newer).
  const cudnnMathType_t want = math_ == MathMode::fp32   ? CUDNN_FMA_MATH
                               : math_ == MathMode::tf32 ? CUDNN_DEFAULT_MATH
                                                         : CUDNN_TENSOR_OP_MATH;
  const bool described =
      DT_CUDNN_OK(cudnnSetTensor4dDescriptor(P.x, CUDNN_TENSOR_NCHW, dt, int(g.n), int(g.c), int(g.h), int(g.w))) &&
      DT_CUDNN_OK(cudnnSetFilter4dDescriptor(P.w, dt, CUDNN_TENSOR_NCHW, int(g.k), int(g.c), int(g.r), int(g.s))) &&
      DT_CUDNN_OK(cudnnSetConvolution2dDescriptor(P.conv, int(g.pad_h), int(g.pad_w), int(g.stride_h),
                                                  int(g.stride_w), 1, 1, CUDNN_CROSS_CORRELATION,
                                                  CUDNN_DATA_FLOAT)) &&
      DT_CUDNN_OK(cudnnSetTensor4dDescriptor(P.y, CUDNN_TENSOR_NCHW, dt, int(g.n), int(g.k), int(g.p), int(g.q))) &&
      DT_CUDNN_OK(cudnnSetConvolutionMathType(P.conv, want));
  if (!described) return give_up(P, g, why);
  int on = 0, ok_ = 0, op_ = 0, oq = 0;
  DT_CUDA(cudnnGetConvolution2dForwardOutputDim(P.conv, P.x, P.w, &on, &ok_, &op_, &oq), op);
  if (on != g.n || ok_ != g.k || op_ != g.p || oq != g.q)
    fail("cuda backend: {}: cuDNN's output ({}, {}, {}, {}) differs from the geometry's ({}, {}, {}, {})",
         op, on, ok_, op_, oq, g.n, g.k, g.p, g.q);

  // DEEPTRAIN_CUDNN_FIND=1: rank the algorithms by running them (cudnnFind*, as PyTorch's
  // cudnn.benchmark does; once per geometry, with memory cuDNN allocates itself) instead of by
  // cuDNN's heuristics. `choose` then takes the fastest allowed one. Off by default until a GPU
  // run shows it pays.
  // DEEPTRAIN_CUDNN_NONDETERMINISTIC=1: take the best-ranked algorithm even when it sums in a
  // varying order (atomics), as PyTorch does by default; runs then no longer repeat bit for bit.
  // For measuring what determinism costs; off by default.
  auto env_on = [](const char* name) {
    const char* v = std::getenv(name);
    return v && *v && *v != '0';
  };
  const bool timed = env_on("DEEPTRAIN_CUDNN_FIND");
  const bool any_det = env_on("DEEPTRAIN_CUDNN_NONDETERMINISTIC");
  if (timed) sync(op);  // Find runs synchronously; nothing of ours may be in flight on the GPU
  {  // forward
    int count = 0, got = 0;
    DT_CUDA(cudnnGetConvolutionForwardAlgorithmMaxCount(dnn_, &count), op);
    std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(std::max(count, 1));
    if (!(timed ? DT_CUDNN_OK(cudnnFindConvolutionForwardAlgorithm(dnn_, P.x, P.w, P.conv, P.y, count, &got, perf.data()))
                : DT_CUDNN_OK(cudnnGetConvolutionForwardAlgorithm_v7(dnn_, P.x, P.w, P.conv, P.y, count, &got, perf.data()))))
      return give_up(P, g, why);
    const int i = choose(perf, got, math_, any_det, [&](cudnnConvolutionFwdAlgo_t a, cudnnMathType_t m, size_t* ws) {
      return cudnnSetConvolutionMathType(P.conv, m) == CUDNN_STATUS_SUCCESS &&
             cudnnGetConvolutionForwardWorkspaceSize(dnn_, P.x, P.w, P.conv, P.y, a, ws) == CUDNN_STATUS_SUCCESS;
    }, &P.fwd_ws, &P.fwd_math);
    DT_CUDA(cudnnSetConvolutionMathType(P.conv, want), op);
    if (i < 0) return give_up(P, g, "no forward algorithm fits");
    P.fwd = perf[i].algo;
  }
  {  // backward data
    int count = 0, got = 0;
    DT_CUDA(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(dnn_, &count), op);
    std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(std::max(count, 1));
    if (!(timed ? DT_CUDNN_OK(cudnnFindConvolutionBackwardDataAlgorithm(dnn_, P.w, P.y, P.conv, P.x, count, &got, perf.data()))
                : DT_CUDNN_OK(cudnnGetConvolutionBackwardDataAlgorithm_v7(dnn_, P.w, P.y, P.conv, P.x, count, &got, perf.data()))))
      return give_up(P, g, why);
    const int i = choose(perf, got, math_, any_det, [&](cudnnConvolutionBwdDataAlgo_t a, cudnnMathType_t m, size_t* ws) {
      return cudnnSetConvolutionMathType(P.conv, m) == CUDNN_STATUS_SUCCESS &&
             cudnnGetConvolutionBackwardDataWorkspaceSize(dnn_, P.w, P.y, P.conv, P.x, a, ws) == CUDNN_STATUS_SUCCESS;
    }, &P.data_ws, &P.data_math);
    DT_CUDA(cudnnSetConvolutionMathType(P.conv, want), op);
    if (i < 0) return give_up(P, g, "no backward-data algorithm fits");
    P.bwd_data = perf[i].algo;
  }
  {  // backward filter
    int count = 0, got = 0;
    DT_CUDA(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(dnn_, &count), op);
    std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perf(std::max(count, 1));
    if (!(timed ? DT_CUDNN_OK(cudnnFindConvolutionBackwardFilterAlgorithm(dnn_, P.x, P.y, P.conv, P.w, count, &got, perf.data()))
                : DT_CUDNN_OK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(dnn_, P.x, P.y, P.conv, P.w, count, &got, perf.data()))))
      return give_up(P, g, why);
    const int i = choose(perf, got, math_, any_det, [&](cudnnConvolutionBwdFilterAlgo_t a, cudnnMathType_t m, size_t* ws) {
      return cudnnSetConvolutionMathType(P.conv, m) == CUDNN_STATUS_SUCCESS &&
             cudnnGetConvolutionBackwardFilterWorkspaceSize(dnn_, P.x, P.y, P.conv, P.w, a, ws) == CUDNN_STATUS_SUCCESS;
    }, &P.filter_ws, &P.filter_math);
    DT_CUDA(cudnnSetConvolutionMathType(P.conv, want), op);
    if (i < 0) return give_up(P, g, "no backward-filter algorithm fits");
    P.bwd_filter = perf[i].algo;
  }
#undef DT_CUDNN_OK
  P.usable = true;
  if (const char* v = std::getenv("DEEPTRAIN_CUDA_LOG"); v && *v && *v != '0')
    std::fprintf(stderr,
                 "deeptrain: cuda backend (%s): conv %s: cuDNN algorithms forward %d (math %d, "
                 "workspace %zu), backward-data %d (math %d, %zu), backward-filter %d (math %d, %zu)\n",
                 math_mode_name(math_), geom_text(g).c_str(), int(P.fwd), int(P.fwd_math), P.fwd_ws,
                 int(P.bwd_data), int(P.data_math), P.data_ws, int(P.bwd_filter),
                 int(P.filter_math), P.filter_ws);
  return result;
}

CudaBackend::CudnnPlan* CudaBackend::give_up(CudnnPlan& P, const ConvGeom& g, const std::string& why) {
  P.usable = false;
  std::fprintf(stderr,
               "deeptrain: cuda backend (%s): cuDNN cannot run the convolution %s (%s); it runs as "
               "im2col + cuBLAS instead\n",
               math_mode_name(math_), geom_text(g).c_str(), why.c_str());
  return nullptr;
}

const void* CudaBackend::cudnn_input(const float* src, int64_t n, Scratch& into, const char* op) {
  if (elem() != Elem::f32 || aligned16(src)) return as_elem(src, n, into, op);
  void* dst = into.get(size_t(n) * sizeof(float), stream(), op);
  DT_CUDA(cudaMemcpyAsync(dst, src, size_t(n) * sizeof(float), cudaMemcpyDeviceToDevice, stream()), op);
  return dst;
}

bool CudaBackend::conv_forward_cudnn(CudnnPlan& P, const ConvGeom& g, const float* x,
                                     const float* w, const float* b, float* y, bool relu) {
  const char* op = "conv2d_forward (cuDNN)";
  const Elem e = elem();
  const void* xi = cudnn_input(x, g.n * g.c * g.h * g.w, x16_, op);
  const void* wi = cudnn_input(w, g.k * g.c * g.r * g.s, w16_, op);
  const int64_t ny = g.n * g.k * g.p * g.q;
  void* out = e == Elem::f32 && aligned16(y) ? static_cast<void*>(y)
                                              : out16_.get(size_t(ny) * elem_size(e), stream(), op);
  void* ws = workspace_.get(P.fwd_ws, stream(), op);
  const float alpha = 1.0f, beta = 0.0f;
  std::string why;
  DT_CUDA(cudnnSetConvolutionMathType(P.conv, P.fwd_math), op);
  if (!supported(cudnnConvolutionForward(dnn_, &alpha, P.x, xi, P.w, wi, P.conv, P.fwd, ws,
                                         P.fwd_ws, &beta, P.y, out),
                 "cudnnConvolutionForward", op, &why))
    return give_up(P, g, why), false;
  if (out != y || b || relu)  // bias, ReLU, and the move from scratch (converted to f32)
    DT_CUDA(bias_act(out, e, b, y, g.n, g.k, g.p * g.q, relu, stream()), op);
  return true;
}

bool CudaBackend::conv_backward_cudnn(CudnnPlan& P, const ConvGeom& g, const float* x,
                                      const float* w, const float* dy, float* dx, float* dw) {
  const char* op = "conv2d_backward (cuDNN)";
  const Elem e = elem();
  const float alpha = 1.0f, beta = 0.0f;
  std::string why;
  const void* dyi = cudnn_input(dy, g.n * g.k * g.p * g.q, dy16_, op);
  void* ws = workspace_.get(std::max(P.filter_ws, P.data_ws), stream(), op);
  // dW (overwritten: beta 0)
  const int64_t nw = g.k * g.c * g.r * g.s;
  const void* xi = cudnn_input(x, g.n * g.c * g.h * g.w, x16_, op);
  void* dwo = e == Elem::f32 && aligned16(dw) ? static_cast<void*>(dw)
                                               : out16_.get(size_t(nw) * elem_size(e), stream(), op);
  DT_CUDA(cudnnSetConvolutionMathType(P.conv, P.filter_math), op);
  if (!supported(cudnnConvolutionBackwardFilter(dnn_, &alpha, P.x, xi, P.y, dyi, P.conv, P.bwd_filter,
                                                ws, P.filter_ws, &beta, P.w, dwo),
                 "cudnnConvolutionBackwardFilter", op, &why))
    return give_up(P, g, why), false;
  DT_CUDA(to_f32(dwo, e, dw, nw, stream()), op);
  if (!dx) return true;
  const int64_t nx = g.n * g.c * g.h * g.w;
  const void* wi = cudnn_input(w, nw, w16_, op);
  void* dxo = e == Elem::f32 && aligned16(dx) ? static_cast<void*>(dx)
                                               : out16_.get(size_t(nx) * elem_size(e), stream(), op);
  DT_CUDA(cudnnSetConvolutionMathType(P.conv, P.data_math), op);
  if (!supported(cudnnConvolutionBackwardData(dnn_, &alpha, P.w, wi, P.y, dyi, P.conv, P.bwd_data, ws,
                                              P.data_ws, &beta, P.x, dxo),
                 "cudnnConvolutionBackwardData", op, &why))
    return give_up(P, g, why), false;
  DT_CUDA(to_f32(dxo, e, dx, nx, stream()), op);
  return true;
}

void CudaBackend::conv_forward_gemm(const ConvGeom& g, const float* x, const float* w,
                                    const float* b, float* y, bool relu) {
  const char* op = "conv2d_forward (im2col)";
  const Elem e = elem();
  const ConvDims d = dims(g);
  const int64_t crs = g.c * g.r * g.s, pq = g.p * g.q, chunk = chunk_images(g);
  const void* wi = as_elem(w, g.k * crs, w16_, op);
  void* col = col_.get(size_t(crs * chunk * pq) * elem_size(e), stream(), op);
  float* tmp = tmp_.get<float>(g.k * chunk * pq, stream(), op);
  for (int64_t n0 = 0; n0 < g.n; n0 += chunk) {
    const int64_t nb = std::min(chunk, g.n - n0);
    DT_CUDA(im2col(d, x, n0, nb, col, e, stream()), op);
    gemm(op, false, false, g.k, nb * pq, crs, wi, col, 0.0f, tmp);
    DT_CUDA(scatter_bias_act(tmp, b, y + n0 * g.k * pq, g.k, nb, pq, relu, stream()), op);
  }
}

void CudaBackend::conv_backward_gemm(const ConvGeom& g, const float* x, const float* w,
                                     const float* dy, float* dx, float* dw) {
  const char* op = "conv2d_backward (im2col)";
  const Elem e = elem();
  const ConvDims d = dims(g);
  const int64_t crs = g.c * g.r * g.s, pq = g.p * g.q, chunk = chunk_images(g);
  void* col = col_.get(size_t(crs * chunk * pq) * elem_size(e), stream(), op);
  void* tmp = tmp_.get(size_t(g.k * chunk * pq) * elem_size(e), stream(), op);
  float* colf = dx ? colf_.get<float>(crs * chunk * pq, stream(), op) : nullptr;
  const void* wi = dx ? as_elem(w, g.k * crs, w16_, op) : nullptr;
  for (int64_t n0 = 0; n0 < g.n; n0 += chunk) {
    const int64_t nb = std::min(chunk, g.n - n0);
    DT_CUDA(gather_to_gemm(dy + n0 * g.k * pq, tmp, e, g.k, nb, pq, stream()), op);
    DT_CUDA(im2col(d, x, n0, nb, col, e, stream()), op);
    // dW (k, crs) (+)= dy (k, nb pq) . col^T: the first chunk overwrites.
    gemm(op, false, true, g.k, crs, nb * pq, tmp, col, n0 ? 1.0f : 0.0f, dw);
    if (dx) {
      gemm(op, true, false, crs, nb * pq, g.k, wi, tmp, 0.0f, colf);
      DT_CUDA(col2im(d, colf, n0, nb, dx, stream()), op);
    }
  }
}

void CudaBackend::conv2d_forward(const ConvGeom& g, const Tensor& x, const Tensor& w,
                                 const Tensor& b, Tensor& y, bool fuse_relu) {
  const char* op = "conv2d_forward";
  const float* px = f32(x, op, "x", g.n * g.c * g.h * g.w);
  const float* pw = f32(w, op, "w", g.k * g.c * g.r * g.s);
  const float* pb = b.raw() ? f32(b, op, "b", g.k) : nullptr;
  float* py = f32(y, op, "y", g.n * g.k * g.p * g.q);
  enter(op);
  if (y.numel() > 0) {
    CudnnPlan* plan = conv_ == CudaConv::cudnn ? cudnn_plan(g) : nullptr;
    if (!plan || !conv_forward_cudnn(*plan, g, px, pw, pb, py, fuse_relu))
      conv_forward_gemm(g, px, pw, pb, py, fuse_relu);
  }
  y.set_layout(Layout::plain);
}

void CudaBackend::conv2d_backward(const ConvGeom& g, const Tensor& x, const Tensor& w,
                                  const Tensor& y, Tensor& dy, bool fuse_relu, Tensor* dx,
                                  Tensor& dw, Tensor* db) {
  const char* op = "conv2d_backward";
  const int64_t ny = g.n * g.k * g.p * g.q;
  const float* px = f32(x, op, "x", g.n * g.c * g.h * g.w);
  const float* pw = f32(w, op, "w", g.k * g.c * g.r * g.s);
  float* pdy = f32(dy, op, "dy", ny);
  float* pdw = f32(dw, op, "dw", g.k * g.c * g.r * g.s);
  float* pdb = db ? f32(*db, op, "db", g.k) : nullptr;
  float* pdx = dx ? f32(*dx, op, "dx", g.n * g.c * g.h * g.w) : nullptr;
  const float* py = fuse_relu ? f32(y, op, "y", ny) : nullptr;
  enter(op);
  if (ny == 0) {  // no outputs: zero gradients
    if (pdw) DT_CUDA(cudaMemsetAsync(pdw, 0, dw.nbytes(), stream()), op);
    if (pdb) DT_CUDA(cudaMemsetAsync(pdb, 0, db->nbytes(), stream()), op);
    if (pdx) DT_CUDA(cudaMemsetAsync(pdx, 0, dx->nbytes(), stream()), op);
  } else {
    // dy masked in place, and db: one pass when both
    if (fuse_relu && pdb) DT_CUDA(masked_channel_sums(py, pdy, pdb, g.n, g.k, g.p * g.q, stream()), op);
    else if (fuse_relu) DT_CUDA(cuda::relu_backward(py, pdy, pdy, ny, stream()), op);
    else if (pdb) DT_CUDA(channel_sums(pdy, pdb, g.n, g.k, g.p * g.q, stream()), op);
    CudnnPlan* plan = conv_ == CudaConv::cudnn ? cudnn_plan(g) : nullptr;
    if (!plan || !conv_backward_cudnn(*plan, g, px, pw, pdy, pdx, pdw))
      conv_backward_gemm(g, px, pw, pdy, pdx, pdw);  // dy is masked already: the mask is idempotent
  }
  if (dx) dx->set_layout(Layout::plain);
}

// Transposed convolution through the im2col GEMMs: forward is the conv's input gradient (col =
// W^T . x, col2im), backward the conv's forward (dx) and weight gradient (input dy, output
// gradient x).
void CudaBackend::deconv2d_forward(const ConvGeom& g, const Tensor& x, const Tensor& w,
                                   const Tensor& b, Tensor& y) {
  const char* op = "deconv2d_forward";
  const float* px = f32(x, op, "x", g.n * g.k * g.p * g.q);
  const float* pw = f32(w, op, "w", g.k * g.c * g.r * g.s);
  const float* pb = b.raw() ? f32(b, op, "b", g.c) : nullptr;
  float* py = f32(y, op, "y", g.n * g.c * g.h * g.w);
  enter(op);
  const Elem e = elem();
  const ConvDims d = dims(g);
  const int64_t crs = g.c * g.r * g.s, pq = g.p * g.q, hw = g.h * g.w, chunk = chunk_images(g);
  if (y.numel() > 0) {
    const void* wi = as_elem(pw, g.k * crs, w16_, op);
    void* tmp = tmp_.get(size_t(g.k * chunk * pq) * elem_size(e), stream(), op);
    float* colf = colf_.get<float>(crs * chunk * pq, stream(), op);
    for (int64_t n0 = 0; n0 < g.n; n0 += chunk) {
      const int64_t nb = std::min(chunk, g.n - n0);
      DT_CUDA(gather_to_gemm(px + n0 * g.k * pq, tmp, e, g.k, nb, pq, stream()), op);
      gemm(op, true, false, crs, nb * pq, g.k, wi, tmp, 0.0f, colf);
      DT_CUDA(col2im(d, colf, n0, nb, py, stream()), op);
    }
    if (pb) DT_CUDA(bias_act(py, Elem::f32, pb, py, g.n, g.c, hw, false, stream()), op);
  }
  y.set_layout(Layout::plain);
}

void CudaBackend::deconv2d_backward(const ConvGeom& g, const Tensor& x, const Tensor& w,
                                    const Tensor& dy, Tensor* dx, Tensor& dw, Tensor* db) {
  const char* op = "deconv2d_backward";
  const float* px = f32(x, op, "x", g.n * g.k * g.p * g.q);
  const float* pw = f32(w, op, "w", g.k * g.c * g.r * g.s);
  const float* pdy = f32(dy, op, "dy", g.n * g.c * g.h * g.w);
  float* pdw = f32(dw, op, "dw", g.k * g.c * g.r * g.s);
  float* pdb = db ? f32(*db, op, "db", g.c) : nullptr;
  float* pdx = dx ? f32(*dx, op, "dx", g.n * g.k * g.p * g.q) : nullptr;
  enter(op);
  if (g.n == 0) {  // no samples: zero gradients
    DT_CUDA(cudaMemsetAsync(pdw, 0, dw.nbytes(), stream()), op);
    if (pdb) DT_CUDA(cudaMemsetAsync(pdb, 0, db->nbytes(), stream()), op);
  } else {
    if (pdb) DT_CUDA(channel_sums(pdy, pdb, g.n, g.c, g.h * g.w, stream()), op);
    if (pdx) conv_forward_gemm(g, pdy, pw, nullptr, pdx, false);
    conv_backward_gemm(g, pdy, pw, px, nullptr, pdw);
  }
  if (dx) dx->set_layout(Layout::plain);
}

}  // namespace cuda
}  // namespace deeptrain
