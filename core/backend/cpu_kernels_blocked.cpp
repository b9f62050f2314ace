#include "core/backend/cpu_kernels_blocked.h"

#include <algorithm>
#include <bit>
#include <cstring>

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
// Vectors go in and out by reference: by value they would change the ABI on targets without
// AVX (-Wpsabi), where the vector kernels are emulated.
template <class V, class T> inline void load(V& v, const T* p) { std::memcpy(&v, p, sizeof v); }
template <class V, class T> inline void store(T* p, const V& v) { std::memcpy(p, &v, sizeof v); }

// The one block the vector kernels are instantiated for (without AVX-512 a 64-byte vector
// would be emulated with narrower ones).
#ifdef __AVX512F__
constexpr int kBlock = 16;
#else
constexpr int kBlock = 8;
#endif

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
        F best;
        load(best, xp + idx * B);
        I best_idx = I{} + idx;
        for (int64_t ih = h_lo; ih < h_hi; ++ih) {
          for (int64_t iw = ih == h_lo ? w_lo + 1 : w_lo; iw < w_hi; ++iw) {
            idx = static_cast<int32_t>(ih * g.w + iw);
            F v;
            load(v, xp + idx * B);
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
        F d;
        I a;
        load(d, dyp + (oh * g.q + ow) * B);
        load(a, ap + (oh * g.q + ow) * B);
        for (int64_t ih = h_lo; ih < h_hi; ++ih) {
          for (int64_t iw = w_lo; iw < w_hi; ++iw) {
            const int32_t idx = static_cast<int32_t>(ih * g.w + iw);
            F cur;
            load(cur, dxp + idx * B);
            cur += (a == I{} + idx) ? d : F{};
            store(dxp + idx * B, cur);
          }
        }
      }
    }
  }
}

// Channels past c in the last block (when c % block != 0) are zeros in dst, skipped in src.
template <class T>
void to_blocked(const T* src, T* dst, int64_t n, int64_t c, int64_t hw, int block) {
  const int64_t cb_count = (c + block - 1) / block;
#pragma omp parallel for collapse(2) schedule(static) if (n * c * hw > kParallelMin)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t cb = 0; cb < cb_count; ++cb) {
      const int64_t lanes = std::min<int64_t>(block, c - cb * block);
      const T* s = src + (i * c + cb * block) * hw;
      T* d = dst + (i * cb_count + cb) * hw * block;
      if (lanes == block) {
        for (int64_t j = 0; j < hw; ++j)
          for (int l = 0; l < block; ++l) d[j * block + l] = s[l * hw + j];
        continue;
      }
      for (int64_t j = 0; j < hw; ++j)
        for (int l = 0; l < block; ++l) d[j * block + l] = l < lanes ? s[l * hw + j] : T(0);
    }
}

template <class T>
void from_blocked(const T* src, T* dst, int64_t n, int64_t c, int64_t hw, int block) {
  const int64_t cb_count = (c + block - 1) / block;
#pragma omp parallel for collapse(2) schedule(static) if (n * c * hw > kParallelMin)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t cb = 0; cb < cb_count; ++cb) {
      const int64_t lanes = std::min<int64_t>(block, c - cb * block);
      const T* s = src + (i * cb_count + cb) * hw * block;
      T* d = dst + (i * c + cb * block) * hw;
      for (int l = 0; l < lanes; ++l)
        for (int64_t j = 0; j < hw; ++j) d[l * hw + j] = s[j * block + l];
    }
}

}  // namespace

int preferred_block() { return kBlock; }

void plain_to_blocked(const void* src, void* dst, int64_t n, int64_t c, int64_t hw, int block) {
  DT_CHECK(c % block == 0, "{} channels do not fill blocks of {}", c, block);
  to_blocked(static_cast<const uint32_t*>(src), static_cast<uint32_t*>(dst), n, c, hw, block);
}

void blocked_to_plain(const void* src, void* dst, int64_t n, int64_t c, int64_t hw, int block) {
  DT_CHECK(c % block == 0, "{} channels do not fill blocks of {}", c, block);
  from_blocked(static_cast<const uint32_t*>(src), static_cast<uint32_t*>(dst), n, c, hw, block);
}

void plain_to_padded_blocked(const void* src, void* dst, int64_t n, int64_t c, int64_t hw,
                             int block) {
  to_blocked(static_cast<const uint32_t*>(src), static_cast<uint32_t*>(dst), n, c, hw, block);
}

void padded_blocked_to_plain(const void* src, void* dst, int64_t n, int64_t c, int64_t hw,
                             int block) {
  from_blocked(static_cast<const uint32_t*>(src), static_cast<uint32_t*>(dst), n, c, hw, block);
}

void copy_into_padded_blocked(const float* x, float* dst, int64_t planes, int64_t h, int64_t w,
                              int64_t hp, int64_t wp, int64_t top, int64_t left, int block) {
#pragma omp parallel for collapse(2) schedule(static) if (planes * h * w * block > kParallelMin)
  for (int64_t pl = 0; pl < planes; ++pl)
    for (int64_t i = 0; i < h; ++i)
      std::memcpy(dst + ((pl * hp + top + i) * wp + left) * block, x + (pl * h + i) * w * block,
                  w * block * sizeof(float));
}

void f32_to_bf16(const float* src, uint16_t* dst, int64_t count) {
#pragma omp parallel for simd schedule(static) if (count >= (int64_t{1} << 16))
  for (int64_t i = 0; i < count; ++i) {
    const uint32_t u = std::bit_cast<uint32_t>(src[i]);
    const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    dst[i] = uint16_t(nan ? (u >> 16) | 0x40u : rounded);
  }
}

void relu_mask(float* dy, const float* y, int64_t count) {
#pragma omp parallel for simd schedule(static) if (parallel: count > kParallelMin)
  for (int64_t i = 0; i < count; ++i) dy[i] = y[i] > 0.f ? dy[i] : 0.f;
}

void maxpool_forward_blocked(const PoolGeom& g, int block, const float* x, float* y,
                             int32_t* argmax) {
  DT_CHECK(block == kBlock && g.c % block == 0 && g.pad_h < g.r && g.pad_w < g.s,
           "maxpool on nChw{}c", block);
  maxpool_fwd<kBlock>(g, x, y, argmax);
}

void maxpool_backward_blocked(const PoolGeom& g, int block, const float* dy,
                              const int32_t* argmax, float* dx) {
  DT_CHECK(block == kBlock && g.c % block == 0, "maxpool backward on nChw{}c", block);
  maxpool_bwd<kBlock>(g, dy, argmax, dx);
}

}  // namespace deeptrain::kernels
