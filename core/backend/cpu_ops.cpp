// The reference CPU backend's non-convolution ops: plain loops over plain layouts.
#include <cmath>
#include <limits>

#include <cblas.h>

#include "core/backend/cpu.h"
#include "core/random.h"

namespace deeptrain {
namespace {

// Calls f.template operator()<T>() with T = float or double, from the tensor's dtype.
template <class F>
void dispatch_float(DType t, F&& f) {
  if (t == DType::f32) f.template operator()<float>();
  else if (t == DType::f64) f.template operator()<double>();
  else fail("cpu backend: unsupported dtype {}", dtype_name(t));
}

void require_plain(const Tensor& t, const char* op) {
  DT_CHECK(t.layout() == Layout::plain, "{}: cpu-ref takes plain tensors, got {}", op,
           layout_name(t.layout()));
}

}  // namespace

void CpuBackend::maxpool2d_forward(const PoolGeom& g, const Tensor& x, Tensor& y, Tensor& argmax) {
  require_plain(x, "maxpool2d_forward");
  dispatch_float(x.dtype(), [&]<class T>() {
    const T* px = x.data<T>();
    T* py = y.data<T>();
    int32_t* pa = argmax.data<int32_t>();
#pragma omp parallel for schedule(static)
    for (int64_t plane = 0; plane < g.n * g.c; ++plane) {
      const T* in = px + plane * g.h * g.w;
      for (int64_t p = 0; p < g.p; ++p) {
        // The window's rows and columns inside the image (padding holds no candidates).
        const int64_t h0 = p * g.stride_h - g.pad_h;
        const int64_t h_begin = std::max<int64_t>(h0, 0), h_end = std::min(h0 + g.r, g.h);
        for (int64_t q = 0; q < g.q; ++q) {
          const int64_t w0 = q * g.stride_w - g.pad_w;
          const int64_t w_begin = std::max<int64_t>(w0, 0), w_end = std::min(w0 + g.s, g.w);
          // Row-major window order from its first element; strict '>' keeps the first maximum
          // (the book's tie rule), and a NaN is never taken over a number. Selects, not
          // branches: the comparisons' outcomes are data and would mispredict.
          const int64_t o = plane * g.p * g.q + p * g.q + q;
          if (h_begin >= h_end || w_begin >= w_end) {  // a window all padding: no maximum
            py[o] = -std::numeric_limits<T>::infinity();
            pa[o] = -1;
            continue;
          }
          int32_t at = int32_t(h_begin * g.w + w_begin);
          T best = in[at];
          for (int64_t h = h_begin; h < h_end; ++h)
            for (int64_t w = w_begin; w < w_end; ++w) {
              const T v = in[h * g.w + w];
              const bool greater = v > best;
              best = greater ? v : best;
              at = greater ? int32_t(h * g.w + w) : at;
            }
          py[o] = best;
          pa[o] = at;
        }
      }
    }
  });
  y.set_layout(Layout::plain);
}

void CpuBackend::maxpool2d_backward(const PoolGeom& g, const Tensor& dy, const Tensor& argmax,
                                    Tensor& dx) {
  dispatch_float(dy.dtype(), [&]<class T>() {
    const T* pdy = dy.data<T>();
    const int32_t* pa = argmax.data<int32_t>();
    T* pdx = dx.data<T>();
#pragma omp parallel for schedule(static)
    for (int64_t plane = 0; plane < g.n * g.c; ++plane) {
      T* out = pdx + plane * g.h * g.w;
      std::fill(out, out + g.h * g.w, T(0));
      for (int64_t o = plane * g.p * g.q; o < (plane + 1) * g.p * g.q; ++o) out[pa[o]] += pdy[o];
    }
  });
  dx.set_layout(Layout::plain);
}

void CpuBackend::relu_forward(const Tensor& x, Tensor& y) {
  dispatch_float(x.dtype(), [&]<class T>() {
    const T* px = x.data<T>();
    T* py = y.data<T>();
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < x.numel(); ++i) py[i] = px[i] > T(0) ? px[i] : T(0);
  });
  y.set_layout(x.layout());
}

void CpuBackend::relu_backward(const Tensor& y, const Tensor& dy, Tensor& dx) {
  dispatch_float(y.dtype(), [&]<class T>() {
    const T* py = y.data<T>();
    const T* pdy = dy.data<T>();
    T* pdx = dx.data<T>();
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < y.numel(); ++i) pdx[i] = py[i] > T(0) ? pdy[i] : T(0);
  });
  dx.set_layout(y.layout());
}

namespace {
void gemm_rm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, const float* b,
             float beta, float* c) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, 1.0f, a, ta ? m : k, b, tb ? k : n, beta, c, n);
}
void gemm_rm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const double* a, const double* b,
             double beta, double* c) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, 1.0, a, ta ? m : k, b, tb ? k : n, beta, c, n);
}
}  // namespace

void CpuBackend::affine_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y,
                                bool fuse_relu) {
  require_plain(x, "affine_forward");
  const int64_t n = x.dim(0), d = w.dim(0), m = w.dim(1);
  DT_CHECK(x.numel() == n * d, "affine: input {} vs weights {}", x.shape().str(), w.shape().str());
  dispatch_float(x.dtype(), [&]<class T>() {
    T* py = y.data<T>();
    gemm_rm(false, false, n, m, d, x.data<T>(), w.data<T>(), T(0), py);
    const T* pb = b.raw() ? b.data<T>() : nullptr;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < m; ++j) {
        T v = py[i * m + j] + (pb ? pb[j] : T(0));
        py[i * m + j] = fuse_relu && !(v > T(0)) ? T(0) : v;
      }
  });
  y.set_layout(Layout::plain);
}

void CpuBackend::affine_backward(const Tensor& x, const Tensor& w, const Tensor& y, Tensor& dy,
                                 bool fuse_relu, Tensor* dx, Tensor& dw, Tensor* db) {
  const int64_t n = x.dim(0), d = w.dim(0), m = w.dim(1);
  dispatch_float(x.dtype(), [&]<class T>() {
    T* pdy = dy.data<T>();
    if (fuse_relu) {
      const T* py = y.data<T>();
      for (int64_t i = 0; i < n * m; ++i)
        if (!(py[i] > T(0))) pdy[i] = T(0);
    }
    gemm_rm(true, false, d, m, n, x.data<T>(), pdy, T(0), dw.data<T>());
    if (dx) gemm_rm(false, true, n, d, m, pdy, w.data<T>(), T(0), dx->data<T>());
    if (db) {
      T* pdb = db->data<T>();
      for (int64_t j = 0; j < m; ++j) pdb[j] = T(0);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < m; ++j) pdb[j] += pdy[i * m + j];
    }
  });
  if (dx) dx->set_layout(Layout::plain);
}

void CpuBackend::dropout_forward(const DropoutKey& key, float ratio, float scale,
                                 const Tensor& x, Tensor& y, Tensor& mask) {
  require_plain(x, "dropout_forward");
  const int64_t n = x.dim(0), per = n ? x.numel() / n : 0;  // (an empty shard: synchronised BN)
  uint8_t* pm = mask.data<uint8_t>();
  const RandomStream stream{key.seed, (uint64_t(key.step) << 16) ^ uint64_t(key.layer)};
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    // Element j of global sample g takes word j % 4 of block (g, j / 4).
    for (int64_t j = 0; j < per; j += 4) {
      const Philox4x32 r = stream.block(uint64_t(key.sample_ids[i]), uint32_t(j / 4));
      for (int64_t u = 0; u < 4 && j + u < per; ++u)
        pm[i * per + j + u] = u32_to_unit_float(r[u]) >= ratio;
    }
  }
  dispatch_float(x.dtype(), [&]<class T>() {
    const T* px = x.data<T>();
    T* py = y.data<T>();
    const T s = T(scale);
    for (int64_t i = 0; i < x.numel(); ++i) py[i] = pm[i] ? px[i] * s : T(0);
  });
  y.set_layout(Layout::plain);
}

void CpuBackend::dropout_backward(float scale, const Tensor& mask, const Tensor& dy, Tensor& dx) {
  const uint8_t* pm = mask.data<uint8_t>();
  dispatch_float(dy.dtype(), [&]<class T>() {
    const T* pdy = dy.data<T>();
    T* pdx = dx.data<T>();
    const T s = T(scale);
    for (int64_t i = 0; i < dy.numel(); ++i) pdx[i] = pm[i] ? pdy[i] * s : T(0);
  });
  dx.set_layout(Layout::plain);
}

void CpuBackend::scale(const Tensor& x, double alpha, Tensor& y) {
  dispatch_float(x.dtype(), [&]<class T>() {
    const T* px = x.data<T>();
    T* py = y.data<T>();
    const T a = T(alpha);
    for (int64_t i = 0; i < x.numel(); ++i) py[i] = px[i] * a;
  });
  y.set_layout(x.layout());  // elementwise: any layout
}

double CpuBackend::softmax_ce_forward(const Tensor& logits, const Tensor& labels,
                                      double log_eps, Tensor& probs, int64_t* correct) {
  const int64_t n = logits.dim(0), m = logits.numel() / n;
  const int32_t* t = labels.data<int32_t>();
  double loss = 0;
  int64_t hits = 0;
  dispatch_float(logits.dtype(), [&]<class T>() {
    const T* z = logits.data<T>();
    T* pr = probs.data<T>();
    for (int64_t i = 0; i < n; ++i) {
      const T* zi = z + i * m;
      T* pi = pr + i * m;
      int64_t best = 0;
      for (int64_t j = 1; j < m; ++j)
        if (zi[j] > zi[best]) best = j;
      T sum = T(0);
      for (int64_t j = 0; j < m; ++j) sum += (pi[j] = std::exp(zi[j] - zi[best]));
      for (int64_t j = 0; j < m; ++j) pi[j] /= sum;
      DT_CHECK(t[i] >= 0 && t[i] < m, "label {} of sample {} outside [0, {})", t[i], i, m);
      loss -= std::log(double(pi[t[i]]) + log_eps);
      hits += best == t[i];
    }
  });
  if (correct) *correct += hits;
  return loss;
}

void CpuBackend::softmax_ce_backward(const Tensor& probs, const Tensor& labels, double scale,
                                     Tensor& dlogits) {
  const int64_t n = probs.dim(0), m = probs.numel() / n;
  const int32_t* t = labels.data<int32_t>();
  dispatch_float(probs.dtype(), [&]<class T>() {
    const T* pr = probs.data<T>();
    T* dz = dlogits.data<T>();
    for (int64_t i = 0; i < n; ++i) {
      const T f = T(scale);
      for (int64_t j = 0; j < m; ++j)
        dz[i * m + j] = f * (pr[i * m + j] - (j == t[i] ? T(1) : T(0)));
    }
  });
  dlogits.set_layout(Layout::plain);
}

Tensor CpuBackend::to_plain(const Tensor& x) {
  require_plain(x, "to_plain");
  return x;
}

}  // namespace deeptrain
