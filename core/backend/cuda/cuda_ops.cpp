// CudaBackend's non-convolution ops: pooling, ReLU, affine (cuBLAS), dropout, scale and softmax
// cross-entropy. The operands are checked (device, f32, plain, element counts) before anything is
// enqueued; the kernels are in cuda_op_kernels.cu.
#include <cstring>

#include "core/backend/cuda/cuda_backend_impl.h"
#include "core/error.h"

namespace deeptrain {
namespace cuda {
namespace {

PoolDims dims(const PoolGeom& g) {
  return {g.n, g.c, g.h, g.w, g.r, g.s, g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.p, g.q};
}

int64_t rows_of(const Tensor& t, const char* op, const char* what) {
  if (t.shape().rank() < 1 || t.dim(0) <= 0)
    fail("cuda backend: {}: {} {} has no rows", op, what, t.shape().str());
  return t.dim(0);
}

// Rows of a layer's batch, which may be empty: with synchronised BatchNorm a rank without samples
// still runs forward and backward (an empty shard), as the host's ops allow.
int64_t batch_rows_of(const Tensor& t, const char* op, const char* what) {
  if (t.shape().rank() < 1) fail("cuda backend: {}: {} {} has no rows", op, what, t.shape().str());
  return t.dim(0);
}

}  // namespace

void CudaBackend::maxpool2d_forward(const PoolGeom& g, const Tensor& x, Tensor& y, Tensor& argmax) {
  const char* op = "maxpool2d_forward";
  const int64_t ny = g.n * g.c * g.p * g.q;
  const float* px = f32(x, op, "x", g.n * g.c * g.h * g.w);
  float* py = f32(y, op, "y", ny);
  auto* pa = static_cast<int32_t*>(device_ptr(argmax, op, "argmax", ny, DType::i32));
  enter(op);
  DT_CUDA(cuda::maxpool_forward(dims(g), px, py, pa, stream()), op);
  y.set_layout(Layout::plain);
}

void CudaBackend::maxpool2d_backward(const PoolGeom& g, const Tensor& dy, const Tensor& argmax,
                                     Tensor& dx) {
  const char* op = "maxpool2d_backward";
  const int64_t ny = g.n * g.c * g.p * g.q;
  const float* pdy = f32(dy, op, "dy", ny);
  const auto* pa = static_cast<const int32_t*>(device_ptr(argmax, op, "argmax", ny, DType::i32));
  float* pdx = f32(dx, op, "dx", g.n * g.c * g.h * g.w);
  enter(op);
  DT_CUDA(cuda::maxpool_backward(dims(g), pdy, pa, pdx, stream()), op);
  dx.set_layout(Layout::plain);
}

void CudaBackend::relu_forward(const Tensor& x, Tensor& y) {
  const char* op = "relu_forward";
  const float* px = f32(x, op, "x");
  float* py = f32(y, op, "y", x.numel());
  enter(op);
  DT_CUDA(cuda::relu_forward(px, py, x.numel(), stream()), op);
  y.set_layout(Layout::plain);
}

void CudaBackend::relu_backward(const Tensor& y, const Tensor& dy, Tensor& dx) {
  const char* op = "relu_backward";
  const float* py = f32(y, op, "y");
  const float* pdy = f32(dy, op, "dy", y.numel());
  float* pdx = f32(dx, op, "dx", y.numel());
  enter(op);
  DT_CUDA(cuda::relu_backward(py, pdy, pdx, y.numel(), stream()), op);
  dx.set_layout(Layout::plain);
}

void CudaBackend::affine_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y,
                                 bool fuse_relu) {
  const char* op = "affine_forward";
  if (w.shape().rank() != 2) fail("cuda backend: {}: weights {} are not (in, out)", op, w.shape().str());
  const int64_t n = batch_rows_of(x, op, "x"), d = w.dim(0), m = w.dim(1);
  const float* px = f32(x, op, "x (n, in)", n * d);
  const float* pw = f32(w, op, "w");
  const float* pb = b.raw() ? f32(b, op, "b", m) : nullptr;
  float* py = f32(y, op, "y", n * m);
  y.set_layout(Layout::plain);
  if (n == 0) return;
  enter(op);
  // y (n, m) = x (n, d) . w (d, m), then bias and ReLU in one pass.
  gemm(op, false, false, n, m, d, as_elem(px, n * d, x16_, op), as_elem(pw, d * m, w16_, op), 0.0f, py);
  if (pb || fuse_relu) DT_CUDA(bias_act(py, Elem::f32, pb, py, n, m, 1, fuse_relu, stream()), op);
}

void CudaBackend::affine_backward(const Tensor& x, const Tensor& w, const Tensor& y, Tensor& dy,
                                  bool fuse_relu, Tensor* dx, Tensor& dw, Tensor* db) {
  const char* op = "affine_backward";
  if (w.shape().rank() != 2) fail("cuda backend: {}: weights {} are not (in, out)", op, w.shape().str());
  const int64_t n = batch_rows_of(x, op, "x"), d = w.dim(0), m = w.dim(1);
  const float* px = f32(x, op, "x (n, in)", n * d);
  const float* pw = f32(w, op, "w");
  float* pdy = f32(dy, op, "dy", n * m);
  float* pdw = f32(dw, op, "dw", d * m);
  float* pdx = dx ? f32(*dx, op, "dx", n * d) : nullptr;
  float* pdb = db ? f32(*db, op, "db", m) : nullptr;
  const float* py = fuse_relu ? f32(y, op, "y", n * m) : nullptr;
  if (dx) dx->set_layout(Layout::plain);
  if (n == 0) {  // no samples: the gradients of no samples are zero
    fill_zero(dw);
    if (db) fill_zero(*db);
    return;
  }
  enter(op);
  if (fuse_relu) DT_CUDA(cuda::relu_backward(py, pdy, pdy, n * m, stream()), op);  // in place
  const void* dyi = as_elem(pdy, n * m, dy16_, op);
  // dW (d, m) = x^T (d, n) . dy (n, m); dx (n, d) = dy (n, m) . w^T (m, d)
  gemm(op, true, false, d, m, n, as_elem(px, n * d, x16_, op), dyi, 0.0f, pdw);
  if (pdx) gemm(op, false, true, n, d, m, dyi, as_elem(pw, d * m, w16_, op), 0.0f, pdx);
  if (pdb) DT_CUDA(channel_sums(pdy, pdb, n, m, 1, stream()), op);
}

void CudaBackend::dropout_forward(const DropoutKey& key, float ratio, float scale, const Tensor& x,
                                  Tensor& y, Tensor& mask) {
  const char* op = "dropout_forward";
  const int64_t n = batch_rows_of(x, op, "x"), per = n ? x.numel() / n : 0;
  const float* px = f32(x, op, "x");
  float* py = f32(y, op, "y", x.numel());
  auto* pm = static_cast<uint8_t*>(device_ptr(mask, op, "mask", x.numel(), DType::u8));
  y.set_layout(Layout::plain);
  if (n == 0) return;
  if (!key.sample_ids) fail("cuda backend: {}: no sample ids", op);
  enter(op);
  const int64_t* ids = upload_ids(key.sample_ids, n, op);
  // The reference's stream: RandomStream{seed, (step << 16) ^ layer}.
  const uint64_t stream_id = (uint64_t(key.step) << 16) ^ uint64_t(key.layer);
  DT_CUDA(cuda::dropout_forward(key.seed, stream_id, ids, n, per, ratio, scale, px, py, pm, stream()), op);
}

const int64_t* CudaBackend::upload_ids(const int64_t* host_ids, int64_t n, const char* op) {
  // The ids go up through a page-locked staging buffer (an asynchronous copy); the buffer is
  // rewritten only after the previous copy from it has finished. The device copy is scratch
  // that the next upload reuses: stream order keeps it valid for the ops enqueued before.
  // A step's batch gather and its dropout layers ask for the same ids: the staging buffer
  // still holds the last upload, so those go up once, without waiting on the GPU.
  const size_t id_bytes = size_t(n) * sizeof(int64_t);
  if (n > 0 && n == ids_uploaded_ && std::memcmp(host_ids_, host_ids, id_bytes) == 0)
    return ids_.get<int64_t>(n, stream(), op);
  ids_uploaded_ = 0;
  DT_CUDA(cudaEventSynchronize(ids_copied_), op);
  if (n > host_ids_cap_) {
    if (host_ids_) DT_CUDA(cudaFreeHost(host_ids_), op);
    host_ids_ = nullptr;
    host_ids_cap_ = 0;
    void* p = nullptr;
    DT_CUDA(cudaMallocHost(&p, id_bytes), op);
    host_ids_ = static_cast<int64_t*>(p);
    host_ids_cap_ = n;
  }
  std::memcpy(host_ids_, host_ids, id_bytes);
  int64_t* ids = ids_.get<int64_t>(n, stream(), op);
  DT_CUDA(cudaMemcpyAsync(ids, host_ids_, id_bytes, cudaMemcpyHostToDevice, stream()), op);
  DT_CUDA(cudaEventRecord(ids_copied_, stream()), op);
  ids_uploaded_ = n;
  return ids;
}

void CudaBackend::gather_samples(const Tensor& images, const Tensor& labels, const int64_t* ids,
                                 int64_t n, Tensor& x, Tensor& t) {
  const char* op = "gather_samples";
  const int64_t count = images.shape().rank() > 0 ? images.dim(0) : 0;
  const int64_t sample = count > 0 ? images.numel() / count : 0;
  const auto* pi = static_cast<const uint8_t*>(device_ptr(images, op, "images", -1, DType::u8));
  const auto* pl = static_cast<const int32_t*>(device_ptr(labels, op, "labels", count, DType::i32));
  float* px = f32(x, op, "x", n * sample);
  auto* pt = static_cast<int32_t*>(device_ptr(t, op, "t", n, DType::i32));
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= count)
      fail("cuda backend: {}: sample id {} out of range [0, {})", op, ids[i], count);
  if (n == 0) return;
  enter(op);
  DT_CUDA(cuda::gather_samples(pi, pl, upload_ids(ids, n, op), n, sample, px, pt, stream()), op);
  x.set_layout(Layout::plain);
}

void CudaBackend::dropout_backward(float scale, const Tensor& mask, const Tensor& dy, Tensor& dx) {
  const char* op = "dropout_backward";
  const float* pdy = f32(dy, op, "dy");
  const auto* pm = static_cast<const uint8_t*>(device_ptr(mask, op, "mask", dy.numel(), DType::u8));
  float* pdx = f32(dx, op, "dx", dy.numel());
  enter(op);
  DT_CUDA(cuda::dropout_backward(scale, pm, pdy, pdx, dy.numel(), stream()), op);
  dx.set_layout(Layout::plain);
}

void CudaBackend::scale(const Tensor& x, double alpha, Tensor& y) {
  const char* op = "scale";
  const float* px = f32(x, op, "x");
  float* py = f32(y, op, "y", x.numel());
  enter(op);
  DT_CUDA(cuda::scale(px, float(alpha), py, x.numel(), stream()), op);
  y.set_layout(Layout::plain);
}

namespace {
class CudaPendingLoss final : public PendingLoss {
 public:
  CudaPendingLoss(CudaBackend& be, int64_t m) : be_(be), m_(m) {}
  ~CudaPendingLoss() override {
    if (!read_) be_.forget_loss();  // never read (an error in between): the next may come
  }
  LossSums get() override {
    DT_CHECK(!read_, "softmax_ce_forward: the loss was read already");
    read_ = true;
    return be_.loss_sums(m_);
  }

 private:
  CudaBackend& be_;
  const int64_t m_;
  bool read_ = false;
};
}  // namespace

std::unique_ptr<PendingLoss> CudaBackend::softmax_ce_forward_async(const Tensor& logits,
                                                                   const Tensor& labels,
                                                                   double log_eps, Tensor& probs) {
  const char* op = "softmax_ce_forward";
  DT_CHECK(!loss_pending_, "cuda backend: {}: the previous loss was not read yet", op);
  const int64_t n = rows_of(logits, op, "logits"), m = logits.numel() / n;
  const float* pz = f32(logits, op, "logits");
  const auto* pt = static_cast<const int32_t*>(device_ptr(labels, op, "labels", n, DType::i32));
  float* pp = f32(probs, op, "probs", logits.numel());
  enter(op);
  // small_: 3 result doubles, then n per-row losses (double), then n per-row hits (int32).
  char* base = static_cast<char*>(small_.get(64 + size_t(n) * 12, stream(), op));
  auto* out = reinterpret_cast<double*>(base);
  auto* rows = reinterpret_cast<double*>(base + 64);
  auto* hits = reinterpret_cast<int32_t*>(base + 64 + size_t(n) * 8);
  DT_CUDA(cuda::softmax_ce_forward(pz, pt, n, m, log_eps, pp, rows, hits, out, stream()), op);
  // The sums come back while the step goes on: nothing waits here.
  DT_CUDA(cudaMemcpyAsync(static_cast<char*>(host_words_) + kLossWords, out, 3 * sizeof(double),
                          cudaMemcpyDeviceToHost, stream()),
          op);
  DT_CUDA(cudaEventRecord(loss_copied_, stream()), op);
  loss_pending_ = true;
  probs.set_layout(Layout::plain);
  return std::make_unique<CudaPendingLoss>(*this, m);
}

LossSums CudaBackend::loss_sums(int64_t m) {
  const char* op = "softmax_ce_forward";
  DT_CHECK(loss_pending_, "cuda backend: {}: no loss is pending", op);
  loss_pending_ = false;
  enter(op);
  DT_CUDA(cudaEventSynchronize(loss_copied_), op);
  const auto* r = reinterpret_cast<const double*>(static_cast<char*>(host_words_) + kLossWords);
  if (r[2] != 0.0)
    fail("cuda backend: {}: the label of sample {} is outside [0, {})", op, int64_t(r[2]) - 1, m);
  return {r[0], int64_t(r[1])};
}

double CudaBackend::softmax_ce_forward(const Tensor& logits, const Tensor& labels, double log_eps,
                                       Tensor& probs, int64_t* correct) {
  const LossSums s = softmax_ce_forward_async(logits, labels, log_eps, probs)->get();
  if (correct) *correct += s.correct;
  return s.loss;
}

void CudaBackend::softmax_ce_backward(const Tensor& probs, const Tensor& labels, double scale,
                                      Tensor& dlogits) {
  const char* op = "softmax_ce_backward";
  const int64_t n = rows_of(probs, op, "probs"), m = probs.numel() / n;
  const float* pp = f32(probs, op, "probs");
  const auto* pt = static_cast<const int32_t*>(device_ptr(labels, op, "labels", n, DType::i32));
  float* pd = f32(dlogits, op, "dlogits", probs.numel());
  enter(op);
  DT_CUDA(cuda::softmax_ce_backward(pp, pt, n, m, float(scale), pd, stream()), op);
  dlogits.set_layout(Layout::plain);
}

}  // namespace cuda
}  // namespace deeptrain
