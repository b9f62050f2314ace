// CpuBackend's ops for the joins and the head of a layer graph: the residual add, a concat's
// row copies, gradient accumulation and global average pooling. f32 and f64; the add, the
// accumulation and the pooling read the fast backend's blocked activations (nChw8c, nChw16c)
// as they are.
#include <algorithm>
#include <cstring>
#include <vector>

#include "core/backend/cpu.h"
#include "core/backend/cpu_dispatch.h"

namespace deeptrain {
namespace {

constexpr int64_t kParallelMin = int64_t{1} << 14;  // elements below which threads cost more

// Two inputs (every residual block) get a loop of their own that GCC vectorises.
template <class T, bool kRelu>
void add2(const T* __restrict a, const T* __restrict b, int64_t n, T* __restrict y) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const T v = a[i] + b[i];
    y[i] = kRelu ? (v > T(0) ? v : T(0)) : v;
  }
}

}  // namespace

void CpuBackend::add(const std::vector<Tensor>& xs, bool relu, Tensor& y) {
  DT_CHECK(!xs.empty(), "add: no inputs");
  for (const Tensor& x : xs)
    DT_CHECK(x.dtype() == y.dtype() && x.numel() == y.numel() && x.layout() == xs[0].layout(),
             "add: {} {} {} into {} {}: inputs of one dtype, size and layout", dtype_name(x.dtype()),
             layout_name(x.layout()), x.shape().str(), dtype_name(y.dtype()), y.shape().str());
  dispatch_host_float(y, "add", [&]<class T>() {
    const int64_t n = y.numel();
    std::vector<const T*> x;
    for (const Tensor& t : xs) x.push_back(t.data<T>());
    T* py = y.data<T>();
    if (x.size() == 2 && relu) return add2<T, true>(x[0], x[1], n, py);
    if (x.size() == 2) return add2<T, false>(x[0], x[1], n, py);
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      T v = x[0][i];
      for (size_t k = 1; k < x.size(); ++k) v += x[k][i];
      py[i] = relu && !(v > T(0)) ? T(0) : v;
    }
  });
  y.set_layout(xs[0].layout());
}

void CpuBackend::accumulate(Tensor& acc, const Tensor& x) {
  DT_CHECK(acc.dtype() == x.dtype() && acc.numel() == x.numel() && acc.layout() == x.layout(),
           "accumulate: {} {} {} += {} {} {}", dtype_name(acc.dtype()), layout_name(acc.layout()),
           acc.shape().str(), dtype_name(x.dtype()), layout_name(x.layout()), x.shape().str());
  DT_CHECK(x.device() == Device::cpu, "accumulate: needs host tensors");
  // Elementwise, so any layout will do as long as both share it.
  dispatch_host_float(acc, "accumulate", [&]<class T>() {
    T* a = acc.data<T>();
    const T* b = x.data<T>();
    const int64_t n = acc.numel();
    // One addition per element: the result does not depend on the split.
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) a[i] += b[i];
  });
}

void CpuBackend::copy(const Tensor& src, Tensor& dst) {
  DT_CHECK(src.dtype() == dst.dtype() && src.numel() == dst.numel() &&
               src.device() == Device::cpu && dst.device() == Device::cpu,
           "copy {} {} -> {} {} on the host", dtype_name(src.dtype()), src.shape().str(),
           dtype_name(dst.dtype()), dst.shape().str());
  // One memcpy per thread: a single core does not reach the memory bandwidth of two.
  const int64_t bytes = src.numel() * int64_t(dtype_size(src.dtype()));
  const char* s = static_cast<const char*>(src.raw());
  char* d = static_cast<char*>(dst.raw());
  const int64_t chunk = int64_t{1} << 18;
#pragma omp parallel for schedule(static) if (bytes >= 4 * chunk)
  for (int64_t b = 0; b < bytes; b += chunk)
    std::memcpy(d + b, s + b, size_t(std::min(chunk, bytes - b)));
  dst.set_layout(src.layout());
}

void CpuBackend::copy_rows(const Tensor& src, int64_t src_offset, int64_t src_stride, Tensor& dst,
                           int64_t dst_offset, int64_t dst_stride, int64_t row_len, int64_t rows) {
  DT_CHECK(src.dtype() == dst.dtype() && src.device() == Device::cpu && dst.device() == Device::cpu,
           "copy_rows: {} -> {} on the host", dtype_name(src.dtype()), dtype_name(dst.dtype()));
  DT_CHECK(rows == 0 || (src_offset + (rows - 1) * src_stride + row_len <= src.numel() &&
                         dst_offset + (rows - 1) * dst_stride + row_len <= dst.numel()),
           "copy_rows: {} rows of {} out of range", rows, row_len);
  const size_t elem = dtype_size(src.dtype());
  const char* s = static_cast<const char*>(src.raw());
  char* d = static_cast<char*>(dst.raw());
  for (int64_t i = 0; i < rows; ++i)
    std::memcpy(d + (dst_offset + i * dst_stride) * elem, s + (src_offset + i * src_stride) * elem,
                size_t(row_len) * elem);
}

// Plain inputs go plane by plane; blocked ones (f32 only) a block of B channels at a time,
// each channel's sum in the same order (position by position) as the plain loop.
void CpuBackend::plane_mean(const Tensor& x, Tensor& y) {
  const char* op = "plane_mean";
  DT_CHECK(x.shape().rank() == 4 && y.numel() == x.dim(0) * x.dim(1) && y.dtype() == x.dtype(),
           "{}: x {} is not (n, C, H, W) for y {}", op, x.shape().str(), y.shape().str());
  const int block = layout_block(x.layout());
  DT_CHECK(block == 1 || x.dtype() == DType::f32, "{}: a {} {} x", op, layout_name(x.layout()),
           dtype_name(x.dtype()));
  const int64_t n = x.dim(0), c = x.dim(1), hw = x.dim(2) * x.dim(3), cb_count = c / block;
  dispatch_host_float(x, op, [&]<class T>() {
    const T* xd = x.data<T>();
    T* py = y.data<T>();
#pragma omp parallel for schedule(static) if (n * c * hw >= kParallelMin)
    for (int64_t p = 0; p < n * cb_count; ++p) {
      const int64_t i = p / cb_count, c0 = (p % cb_count) * block;
      for (int l = 0; l < block; ++l) {
        double acc = 0;
        for (int64_t s = 0; s < hw; ++s) acc += double(xd[(p * hw + s) * block + l]);
        py[i * c + c0 + l] = T(acc / double(hw));
      }
    }
  });
  y.set_layout(Layout::plain);
}

void CpuBackend::plane_mean_backward(const Tensor& dy, Layout layout, Tensor& dx) {
  const char* op = "plane_mean_backward";
  DT_CHECK(dx.shape().rank() == 4 && dy.numel() == dx.dim(0) * dx.dim(1) &&
               dy.dtype() == dx.dtype() && dy.layout() == Layout::plain,
           "{}: dx {} is not (n, C, H, W) for a plain dy {}", op, dx.shape().str(), dy.shape().str());
  const int block = layout_block(layout);
  DT_CHECK(block == 1 || dx.dtype() == DType::f32, "{}: a {} {} dx", op, layout_name(layout),
           dtype_name(dx.dtype()));
  const int64_t n = dx.dim(0), c = dx.dim(1), hw = dx.dim(2) * dx.dim(3), cb_count = c / block;
  dispatch_host_float(dx, op, [&]<class T>() {
    const T* g = dy.data<T>();
    T* d = dx.data<T>();
#pragma omp parallel for schedule(static) if (n * c * hw >= kParallelMin)
    for (int64_t p = 0; p < n * cb_count; ++p) {
      const int64_t i = p / cb_count, c0 = (p % cb_count) * block;
      for (int64_t s = 0; s < hw; ++s)
        for (int l = 0; l < block; ++l)
          d[(p * hw + s) * block + l] = T(double(g[i * c + c0 + l]) / double(hw));
    }
  });
  dx.set_layout(layout);
}

}  // namespace deeptrain
