#include "core/backend/cpu_kernels_blocked.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace deeptrain::kernels {
namespace {

// One vector per pixel of a block: B channel lanes of f32 or i32. (Spelled out per B: GCC
// silently drops a vector_size that depends on a template parameter.)
template <int B> struct Lanes;
template <> struct Lanes<8> {
  typedef float F __attribute__((vector_size(32)));
  typedef int32_t I __attribute__((vector_size(32)));
};
template <> struct Lanes<16> {
  typedef float F __attribute__((vector_size(64)));
  typedef int32_t I __attribute__((vector_size(64)));
};
template <class V, class T> inline V load(const T* p) {
  static_assert(sizeof(V) >= 32);
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class V, class T> inline void store(T* p, V v) { std::memcpy(p, &v, sizeof v); }

// Parallelise only when the loop is worth a fork/join (~1-2 us).
constexpr int64_t kParallelMin = 1 << 15;

template <int B>
void maxpool_fwd(const PoolGeom& g, const float* x, float* y, int32_t* argmax) {
  using F = typename Lanes<B>::F;
  using I = typename Lanes<B>::I;
  const int64_t planes = g.n * (g.c / B), in_plane = g.h * g.w * B, out_plane = g.p * g.q * B;
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl) {
    const float* xp = x + pl * in_plane;
    float* yp = y + pl * out_plane;
    int32_t* ap = argmax + pl * out_plane;
    for (int64_t oh = 0; oh < g.p; ++oh) {
      const int64_t h0 = oh * g.stride_h - g.pad_h;
      const int64_t h_lo = std::max<int64_t>(h0, 0), h_hi = std::min(h0 + g.r, g.h);
      for (int64_t ow = 0; ow < g.q; ++ow) {
        const int64_t w0 = ow * g.stride_w - g.pad_w;
        const int64_t w_lo = std::max<int64_t>(w0, 0), w_hi = std::min(w0 + g.s, g.w);
        // Start from the window's first element; strictly greater replaces, so ties keep
        // the first maximum in row-major order, as the reference does.
        int32_t idx = static_cast<int32_t>(h_lo * g.w + w_lo);
        F best = load<F>(xp + idx * B);
        I best_idx = I{} + idx;
        for (int64_t ih = h_lo; ih < h_hi; ++ih) {
          for (int64_t iw = ih == h_lo ? w_lo + 1 : w_lo; iw < w_hi; ++iw) {
            idx = static_cast<int32_t>(ih * g.w + iw);
            F v = load<F>(xp + idx * B);
            I gt = v > best;
            best = gt ? v : best;
            best_idx = gt ? I{} + idx : best_idx;
          }
        }
        store(yp + (oh * g.q + ow) * B, best);
        store(ap + (oh * g.q + ow) * B, best_idx);
      }
    }
  }
}

template <int B>
void maxpool_bwd(const PoolGeom& g, const float* dy, const int32_t* argmax, float* dx) {
  using F = typename Lanes<B>::F;
  using I = typename Lanes<B>::I;
  const int64_t planes = g.n * (g.c / B), in_plane = g.h * g.w * B, out_plane = g.p * g.q * B;
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl) {
    const float* dyp = dy + pl * out_plane;
    const int32_t* ap = argmax + pl * out_plane;
    float* dxp = dx + pl * in_plane;
    // Zero the plane, then add: correct for overlapping windows, and the plane (<= 50 KB
    // for DeepConvNet) stays in cache between the two passes.
    std::memset(dxp, 0, in_plane * sizeof(float));
    for (int64_t oh = 0; oh < g.p; ++oh) {
      const int64_t h0 = oh * g.stride_h - g.pad_h;
      const int64_t h_lo = std::max<int64_t>(h0, 0), h_hi = std::min(h0 + g.r, g.h);
      for (int64_t ow = 0; ow < g.q; ++ow) {
        const int64_t w0 = ow * g.stride_w - g.pad_w;
        const int64_t w_lo = std::max<int64_t>(w0, 0), w_hi = std::min(w0 + g.s, g.w);
        const F d = load<F>(dyp + (oh * g.q + ow) * B);
        const I a = load<I>(ap + (oh * g.q + ow) * B);
        for (int64_t ih = h_lo; ih < h_hi; ++ih) {
          for (int64_t iw = w_lo; iw < w_hi; ++iw) {
            const int32_t idx = static_cast<int32_t>(ih * g.w + iw);
            F cur = load<F>(dxp + idx * B);
            cur += (a == I{} + idx) ? d : F{};
            store(dxp + idx * B, cur);
          }
        }
      }
    }
  }
}

// dw[k][c][r][s] = sum over n, p, q of dy[n][k][p][q] * xpad[n][c][p*sh + r][q*sw + s]:
// k runs along the lanes of one dy vector, each x value is a scalar broadcast, and the R*S
// accumulators of one (image, channel, k-block) stay in registers.
template <int B, int R, int S>
void conv_bwd_weights_small_c(const ConvGeom& g, const float* x, const float* dy, float* dw,
                              float* db) {
  using F = typename Lanes<B>::F;
  const int64_t kb_count = g.k / B, pq = g.p * g.q;
  const int64_t hp = (g.p - 1) * g.stride_h + R, wp = (g.q - 1) * g.stride_w + S;
  const int64_t dw_size = g.k * g.c * R * S, part_size = dw_size + g.k;
  const int threads = omp_get_max_threads();
  std::vector<float> partial(static_cast<size_t>(threads) * part_size, 0.f);
#pragma omp parallel num_threads(threads)
  {
    float* part = partial.data() + omp_get_thread_num() * part_size;
    std::vector<float> xpad(hp * wp, 0.f);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < g.n; ++n) {
      for (int64_t c = 0; c < g.c; ++c) {
        // Zero-padded copy of the input plane, so the hot loop has no bounds checks.
        const float* xc = x + (n * g.c + c) * g.h * g.w;
        for (int64_t i = 0; i < hp; ++i) {
          const int64_t ih = i - g.pad_h;
          for (int64_t j = 0; j < wp; ++j) {
            const int64_t iw = j - g.pad_w;
            xpad[i * wp + j] = ih >= 0 && ih < g.h && iw >= 0 && iw < g.w ? xc[ih * g.w + iw] : 0.f;
          }
        }
        for (int64_t kb = 0; kb < kb_count; ++kb) {
          const float* dyp = dy + (n * kb_count + kb) * pq * B;
          F acc[R * S] = {};
          F acc_bias = {};
          for (int64_t oh = 0; oh < g.p; ++oh) {
            for (int64_t ow = 0; ow < g.q; ++ow) {
              const F d = load<F>(dyp + (oh * g.q + ow) * B);
              const float* xr = xpad.data() + oh * g.stride_h * wp + ow * g.stride_w;
              for (int r = 0; r < R; ++r)
                for (int s = 0; s < S; ++s) acc[r * S + s] += d * xr[r * wp + s];
              acc_bias += d;
            }
          }
          float lanes[R * S + 1][B];
          for (int rs = 0; rs < R * S; ++rs) store(lanes[rs], acc[rs]);
          store(lanes[R * S], acc_bias);
          for (int l = 0; l < B; ++l) {
            float* dst = part + ((kb * B + l) * g.c + c) * R * S;
            for (int rs = 0; rs < R * S; ++rs) dst[rs] += lanes[rs][l];
            if (c == 0) part[dw_size + kb * B + l] += lanes[R * S][l];
          }
        }
      }
    }
  }
  // Fixed-order reduction: the result depends on the thread count, not on the schedule.
  for (int64_t i = 0; i < dw_size; ++i) {
    float sum = 0.f;
    for (int t = 0; t < threads; ++t) sum += partial[t * part_size + i];
    dw[i] = sum;
  }
  if (db) {
    for (int64_t k = 0; k < g.k; ++k) {
      float sum = 0.f;
      for (int t = 0; t < threads; ++t) sum += partial[t * part_size + dw_size + k];
      db[k] = sum;
    }
  }
}

template <int B>
void conv_bwd_weights_small_c_rs(const ConvGeom& g, const float* x, const float* dy, float* dw,
                                 float* db) {
  if (g.r == 3 && g.s == 3) return conv_bwd_weights_small_c<B, 3, 3>(g, x, dy, dw, db);
  if (g.r == 5 && g.s == 5) return conv_bwd_weights_small_c<B, 5, 5>(g, x, dy, dw, db);
  return conv_bwd_weights_small_c<B, 1, 1>(g, x, dy, dw, db);
}

template <class T>
void to_blocked(const T* src, T* dst, int64_t n, int64_t c, int64_t hw, int block) {
  const int64_t cb_count = c / block;
#pragma omp parallel for collapse(2) schedule(static) if (n * c * hw > kParallelMin)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t cb = 0; cb < cb_count; ++cb) {
      const T* s = src + (i * c + cb * block) * hw;
      T* d = dst + (i * cb_count + cb) * hw * block;
      for (int64_t j = 0; j < hw; ++j)
        for (int l = 0; l < block; ++l) d[j * block + l] = s[l * hw + j];
    }
}

template <class T>
void from_blocked(const T* src, T* dst, int64_t n, int64_t c, int64_t hw, int block) {
  const int64_t cb_count = c / block;
#pragma omp parallel for collapse(2) schedule(static) if (n * c * hw > kParallelMin)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t cb = 0; cb < cb_count; ++cb) {
      const T* s = src + (i * cb_count + cb) * hw * block;
      T* d = dst + (i * c + cb * block) * hw;
      for (int l = 0; l < block; ++l)
        for (int64_t j = 0; j < hw; ++j) d[l * hw + j] = s[j * block + l];
    }
}

}  // namespace

int preferred_block() {
#ifdef __AVX512F__
  return 16;
#else
  return 8;
#endif
}

void plain_to_blocked(const void* src, void* dst, int64_t n, int64_t c, int64_t hw, int block) {
  DT_CHECK(c % block == 0, "{} channels do not fill blocks of {}", c, block);
  to_blocked(static_cast<const uint32_t*>(src), static_cast<uint32_t*>(dst), n, c, hw, block);
}

void blocked_to_plain(const void* src, void* dst, int64_t n, int64_t c, int64_t hw, int block) {
  DT_CHECK(c % block == 0, "{} channels do not fill blocks of {}", c, block);
  from_blocked(static_cast<const uint32_t*>(src), static_cast<uint32_t*>(dst), n, c, hw, block);
}

void relu(const float* x, float* y, int64_t count) {
#pragma omp parallel for simd schedule(static) if (parallel: count > kParallelMin)
  for (int64_t i = 0; i < count; ++i) y[i] = x[i] > 0.f ? x[i] : 0.f;
}

void relu_mask(float* dy, const float* y, int64_t count) {
#pragma omp parallel for simd schedule(static) if (parallel: count > kParallelMin)
  for (int64_t i = 0; i < count; ++i) dy[i] = y[i] > 0.f ? dy[i] : 0.f;
}

void relu_backward(const float* y, const float* dy, float* dx, int64_t count) {
#pragma omp parallel for simd schedule(static) if (parallel: count > kParallelMin)
  for (int64_t i = 0; i < count; ++i) dx[i] = y[i] > 0.f ? dy[i] : 0.f;
}

void maxpool_forward_blocked(const PoolGeom& g, int block, const float* x, float* y,
                             int32_t* argmax) {
  DT_CHECK(g.c % block == 0 && g.pad_h < g.r && g.pad_w < g.s, "maxpool on nChw{}c", block);
  if (block == 16) maxpool_fwd<16>(g, x, y, argmax);
  else maxpool_fwd<8>(g, x, y, argmax);
}

void maxpool_backward_blocked(const PoolGeom& g, int block, const float* dy,
                              const int32_t* argmax, float* dx) {
  DT_CHECK(g.c % block == 0, "maxpool backward on nChw{}c", block);
  if (block == 16) maxpool_bwd<16>(g, dy, argmax, dx);
  else maxpool_bwd<8>(g, dy, argmax, dx);
}

bool conv_backward_weights_small_c_supported(const ConvGeom& g, int block) {
  const bool rs = (g.r == 1 && g.s == 1) || (g.r == 3 && g.s == 3) || (g.r == 5 && g.s == 5);
  return rs && (block == 8 || block == 16) && g.k % block == 0 && g.c <= 4;
}

void conv_backward_weights_small_c(const ConvGeom& g, int block, const float* x,
                                   const float* dy, float* dw, float* db) {
  DT_CHECK(conv_backward_weights_small_c_supported(g, block), "small-c conv backward-weights");
  if (block == 16) conv_bwd_weights_small_c_rs<16>(g, x, dy, dw, db);
  else conv_bwd_weights_small_c_rs<8>(g, x, dy, dw, db);
}

}  // namespace deeptrain::kernels
