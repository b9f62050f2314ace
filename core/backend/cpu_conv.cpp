// Convolution the book's way: im2col, then one GEMM per chunk of images (OpenBLAS).
// col layout: rows (c, r, s), columns (image in chunk, p, q), so a chunk is one wide GEMM.
#include <algorithm>

#include <cblas.h>
#include <omp.h>

#include "core/backend/cpu.h"

namespace deeptrain {
namespace {

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, alpha, a, lda, b, ldb, beta, c, ldc);
}
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
          int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// Images [n0, n0 + nb) of x -> col (c*r*s, nb*p*q).
template <class T>
void im2col(const ConvGeom& g, const T* x, int64_t n0, int64_t nb, T* col) {
  const int64_t pq = g.p * g.q, cols = nb * pq;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t c = 0; c < g.c; ++c)
    for (int64_t rs = 0; rs < g.r * g.s; ++rs) {
      const int64_t r = rs / g.s, s = rs % g.s;
      T* row = col + (c * g.r * g.s + rs) * cols;
      for (int64_t i = 0; i < nb; ++i) {
        const T* plane = x + ((n0 + i) * g.c + c) * g.h * g.w;
        for (int64_t p = 0; p < g.p; ++p) {
          const int64_t h = p * g.stride_h - g.pad_h + r;
          T* out = row + i * pq + p * g.q;
          if (h < 0 || h >= g.h) { std::fill(out, out + g.q, T(0)); continue; }
          for (int64_t q = 0; q < g.q; ++q) {
            const int64_t w = q * g.stride_w - g.pad_w + s;
            out[q] = (w >= 0 && w < g.w) ? plane[h * g.w + w] : T(0);
          }
        }
      }
    }
}

// Adds col back into images [n0, n0 + nb) of dx (which the caller zeroed).
template <class T>
void col2im(const ConvGeom& g, const T* col, int64_t n0, int64_t nb, T* dx) {
  const int64_t pq = g.p * g.q, cols = nb * pq;
  // Parallel over (image, channel) planes: each plane is written by one thread only.
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t i = 0; i < nb; ++i)
    for (int64_t c = 0; c < g.c; ++c) {
      T* plane = dx + ((n0 + i) * g.c + c) * g.h * g.w;
      for (int64_t rs = 0; rs < g.r * g.s; ++rs) {
        const int64_t r = rs / g.s, s = rs % g.s;
        const T* row = col + (c * g.r * g.s + rs) * cols + i * pq;
        for (int64_t p = 0; p < g.p; ++p) {
          const int64_t h = p * g.stride_h - g.pad_h + r;
          if (h < 0 || h >= g.h) continue;
          for (int64_t q = 0; q < g.q; ++q) {
            const int64_t w = q * g.stride_w - g.pad_w + s;
            if (w >= 0 && w < g.w) plane[h * g.w + w] += row[p * g.q + q];
          }
        }
      }
    }
}

// Images per GEMM: wide enough to keep both cores busy, small enough to stay in cache-ish memory.
int64_t chunk_images(const ConvGeom& g) {
  const int64_t per_image = g.c * g.r * g.s * g.p * g.q;
  return std::clamp<int64_t>((int64_t(1) << 21) / std::max<int64_t>(per_image, 1), 1, g.n);
}

template <class T>
void conv_forward(const ConvGeom& g, const T* x, const T* w, const T* b, T* y, bool relu,
                  T* col, T* tmp) {
  const int64_t crs = g.c * g.r * g.s, pq = g.p * g.q, chunk = chunk_images(g);
  for (int64_t n0 = 0; n0 < g.n; n0 += chunk) {
    const int64_t nb = std::min(chunk, g.n - n0);
    im2col(g, x, n0, nb, col);
    gemm(false, false, g.k, nb * pq, crs, T(1), w, crs, col, nb * pq, T(0), tmp, nb * pq);
    // tmp (k, nb, pq) -> y (nb, k, pq), adding the bias and applying a fused ReLU.
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t i = 0; i < nb; ++i)
      for (int64_t k = 0; k < g.k; ++k) {
        const T* src = tmp + (k * nb + i) * pq;
        T* dst = y + ((n0 + i) * g.k + k) * pq;
        const T bias = b ? b[k] : T(0);
        for (int64_t j = 0; j < pq; ++j) {
          T v = src[j] + bias;
          dst[j] = relu && !(v > T(0)) ? T(0) : v;
        }
      }
  }
}

template <class T>
void conv_backward(const ConvGeom& g, const T* x, const T* w, const T* y, T* dy, bool relu,
                   T* dx, T* dw, T* db, T* col, T* tmp) {
  const int64_t crs = g.c * g.r * g.s, pq = g.p * g.q, chunk = chunk_images(g);
  if (relu) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < g.n * g.k * pq; ++i)
      if (!(y[i] > T(0))) dy[i] = T(0);
  }
  if (db) {
    for (int64_t k = 0; k < g.k; ++k) db[k] = T(0);
    for (int64_t i = 0; i < g.n; ++i)
      for (int64_t k = 0; k < g.k; ++k) {
        const T* d = dy + (i * g.k + k) * pq;
        T s = T(0);
        for (int64_t j = 0; j < pq; ++j) s += d[j];
        db[k] += s;
      }
  }
  if (dx) std::fill(dx, dx + g.n * g.c * g.h * g.w, T(0));
  for (int64_t n0 = 0; n0 < g.n; n0 += chunk) {
    const int64_t nb = std::min(chunk, g.n - n0);
    // dy (nb, k, pq) -> tmp (k, nb, pq), the GEMM's layout.
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t k = 0; k < g.k; ++k)
      for (int64_t i = 0; i < nb; ++i)
        std::copy_n(dy + ((n0 + i) * g.k + k) * pq, pq, tmp + (k * nb + i) * pq);
    im2col(g, x, n0, nb, col);
    gemm(false, true, g.k, crs, nb * pq, T(1), tmp, nb * pq, col, nb * pq, n0 ? T(1) : T(0), dw,
         crs);
    if (dx) {
      gemm(true, false, crs, nb * pq, g.k, T(1), w, crs, tmp, nb * pq, T(0), col, nb * pq);
      col2im(g, col, n0, nb, dx);
    }
  }
}

// Transposed convolution: for each chunk, col = W^T . x (crs, nb*pq), then col2im into y (the
// conv's input gradient), then the bias.
template <class T>
void deconv_forward(const ConvGeom& g, const T* x, const T* w, const T* b, T* y, T* col, T* tmp) {
  const int64_t crs = g.c * g.r * g.s, pq = g.p * g.q, hw = g.h * g.w, chunk = chunk_images(g);
  std::fill(y, y + g.n * g.c * hw, T(0));
  for (int64_t n0 = 0; n0 < g.n; n0 += chunk) {
    const int64_t nb = std::min(chunk, g.n - n0);
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t k = 0; k < g.k; ++k)
      for (int64_t i = 0; i < nb; ++i)
        std::copy_n(x + ((n0 + i) * g.k + k) * pq, pq, tmp + (k * nb + i) * pq);
    gemm(true, false, crs, nb * pq, g.k, T(1), w, crs, tmp, nb * pq, T(0), col, nb * pq);
    col2im(g, col, n0, nb, y);
  }
  if (b) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t i = 0; i < g.n; ++i)
      for (int64_t c = 0; c < g.c; ++c)
        for (int64_t j = 0; j < hw; ++j) y[(i * g.c + c) * hw + j] += b[c];
  }
}

}  // namespace

void CpuBackend::deconv2d_forward(const ConvGeom& g, const Tensor& x_in, const Tensor& w,
                                  const Tensor& b, Tensor& y) {
  const Tensor x = to_plain(x_in);
  DT_CHECK(x.numel() == g.n * g.k * g.p * g.q && y.numel() == g.n * g.c * g.h * g.w &&
               w.numel() == g.k * g.c * g.r * g.s,
           "deconv2d_forward: x {} / w {} / y {} do not fit the geometry", x.shape().str(),
           w.shape().str(), y.shape().str());
  const int64_t chunk = chunk_images(g), col_elems = g.c * g.r * g.s * chunk * g.p * g.q,
                tmp_elems = g.k * chunk * g.p * g.q;
  void* base = scratch(col_elems + tmp_elems, x.dtype()).raw();
  if (x.dtype() == DType::f64) {
    double* col = static_cast<double*>(base);
    deconv_forward(g, x.data<double>(), w.data<double>(), b.raw() ? b.data<double>() : nullptr,
                   y.data<double>(), col, col + col_elems);
  } else {
    float* col = static_cast<float*>(base);
    deconv_forward(g, x.data<float>(), w.data<float>(), b.raw() ? b.data<float>() : nullptr,
                   y.data<float>(), col, col + col_elems);
  }
  y.set_layout(Layout::plain);
}

// The conv ops with the roles swapped: dx is the conv of dy; dw is the conv weight gradient of
// input dy and output gradient x (conv_backward reads its dy argument only, without a ReLU).
void CpuBackend::deconv2d_backward(const ConvGeom& g, const Tensor& x_in, const Tensor& w,
                                   const Tensor& dy_in, Tensor* dx, Tensor& dw, Tensor* db) {
  const Tensor x = to_plain(x_in), dy = to_plain(dy_in);
  const int64_t chunk = chunk_images(g), col_elems = g.c * g.r * g.s * chunk * g.p * g.q,
                tmp_elems = g.k * chunk * g.p * g.q, hw = g.h * g.w;
  void* base = scratch(col_elems + tmp_elems, x.dtype()).raw();
  auto run = [&]<class T>(T* col) {
    const T* pdy = dy.data<T>();
    if (dx) conv_forward(g, pdy, w.data<T>(), static_cast<const T*>(nullptr), dx->data<T>(), false,
                         col, col + col_elems);
    conv_backward(g, pdy, w.data<T>(), static_cast<const T*>(nullptr), const_cast<T*>(x.data<T>()),
                  false, static_cast<T*>(nullptr), dw.data<T>(), static_cast<T*>(nullptr), col,
                  col + col_elems);
    if (db) {
      T* pdb = db->data<T>();
      for (int64_t c = 0; c < g.c; ++c) pdb[c] = T(0);
      for (int64_t i = 0; i < g.n; ++i)
        for (int64_t c = 0; c < g.c; ++c) {
          T s = T(0);
          for (int64_t j = 0; j < hw; ++j) s += pdy[(i * g.c + c) * hw + j];
          pdb[c] += s;
        }
    }
  };
  if (x.dtype() == DType::f64) run(static_cast<double*>(base));
  else run(static_cast<float*>(base));
  if (dx) dx->set_layout(Layout::plain);
}

Tensor& CpuBackend::scratch(int64_t elems, DType t) {
  const int64_t bytes = elems * int64_t(dtype_size(t));
  Tensor* col;
  {
    const std::lock_guard<std::mutex> lock(scratch_mutex_);
    const size_t i = size_t(omp_get_thread_num());
    if (cols_.size() <= i) cols_.resize(i + 1);
    if (!cols_[i]) cols_[i] = std::make_unique<Tensor>();
    col = cols_[i].get();  // stable: the vector holds pointers
  }
  if (!col->defined() || col->numel() == 0 || int64_t(col->nbytes()) < bytes)
    *col = Tensor::empty({bytes}, DType::u8);
  return *col;
}

void CpuBackend::conv2d_forward(const ConvGeom& g, const Tensor& x, const Tensor& w,
                                const Tensor& b, Tensor& y, bool fuse_relu) {
  const int64_t chunk = chunk_images(g), col_elems = g.c * g.r * g.s * chunk * g.p * g.q,
                tmp_elems = g.k * chunk * g.p * g.q;
  void* base = scratch(col_elems + tmp_elems, x.dtype()).raw();
  if (x.dtype() == DType::f64) {
    double* col = static_cast<double*>(base);
    conv_forward(g, x.data<double>(), w.data<double>(), b.raw() ? b.data<double>() : nullptr,
                 y.data<double>(), fuse_relu, col, col + col_elems);
  } else {
    float* col = static_cast<float*>(base);
    conv_forward(g, x.data<float>(), w.data<float>(), b.raw() ? b.data<float>() : nullptr,
                 y.data<float>(), fuse_relu, col, col + col_elems);
  }
  y.set_layout(Layout::plain);
}

void CpuBackend::conv2d_backward(const ConvGeom& g, const Tensor& x, const Tensor& w,
                                 const Tensor& y, Tensor& dy, bool fuse_relu, Tensor* dx,
                                 Tensor& dw, Tensor* db) {
  const int64_t chunk = chunk_images(g), col_elems = g.c * g.r * g.s * chunk * g.p * g.q,
                tmp_elems = g.k * chunk * g.p * g.q;
  void* base = scratch(col_elems + tmp_elems, x.dtype()).raw();
  if (x.dtype() == DType::f64) {
    double* col = static_cast<double*>(base);
    conv_backward(g, x.data<double>(), w.data<double>(), y.data<double>(), dy.data<double>(),
                  fuse_relu, dx ? dx->data<double>() : nullptr, dw.data<double>(),
                  db ? db->data<double>() : nullptr, col, col + col_elems);
  } else {
    float* col = static_cast<float*>(base);
    conv_backward(g, x.data<float>(), w.data<float>(), y.data<float>(), dy.data<float>(),
                  fuse_relu, dx ? dx->data<float>() : nullptr, dw.data<float>(),
                  db ? db->data<float>() : nullptr, col, col + col_elems);
  }
  if (dx) dx->set_layout(Layout::plain);
}

}  // namespace deeptrain
