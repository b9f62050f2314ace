#include "core/backend/cpu_kernels_blocked.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <vector>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

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

// One plane of B channels (nChwBc): x h*w*B, y and argmax p*q*B (argmax only with kArgmax).
template <int B, bool kArgmax>
void pool_plane_fwd(const PoolGeom& g, const float* xp, float* yp, int32_t* ap) {
  using F = typename Lanes<B>::F;
  using I = typename Lanes<B>::I;
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
      if constexpr (kArgmax) store(ap + (oh * g.q + ow) * B, best_idx);
    }
  }
}

// One plane of B channels: dx (h*w*B) from dy and argmax (p*q*B). Zeroes the plane, then
// adds: correct for overlapping windows, and the plane (<= 50 KB for DeepConvNet) stays in
// cache between the two passes.
template <int B>
void pool_plane_bwd(const PoolGeom& g, const float* dyp, const int32_t* ap, float* dxp) {
  using F = typename Lanes<B>::F;
  using I = typename Lanes<B>::I;
  std::memset(dxp, 0, g.h * g.w * B * sizeof(float));
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

// GCC 12's AVX-512 headers seed their shuffles' pass-through operand with an uninitialised
// vector on purpose (_mm512_undefined_ps), which -Wmaybe-uninitialized reports where inlined.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#ifdef __AVX512F__
// r[i][j] <-> r[j][i] for a 16 x 16 tile of 4-byte elements (bits moved, never computed on):
// pairs, then quads within 128-bit lanes, then the lanes themselves.
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xee);
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xee);
  }
  for (int h = 0; h < 16; h += 8)
    for (int i = 0; i < 4; ++i) {
      t[h + i] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0x88);
      t[h + i + 4] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0xdd);
    }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
  }
}
#endif

// One block: `lanes` (<= block) planes of hw 4-byte elements, s plain (plane l at s + l*hw),
// d blocked (element (j, l) at d + j*block + l); lanes past `lanes` are zero in d (to) or
// skipped (from). Blocks of 16 go through in 16 x 16 tiles transposed in registers where
// AVX-512 is there (the elements' bits only move: the i32 argmax passes too); the scalar
// loops take the rest (and every block of 8).
void block_to(const uint32_t* s, uint32_t* d, int64_t lanes, int64_t hw, int block) {
  int64_t j = 0;
#ifdef __AVX512F__
  if (block == 16)
    for (; j + 16 <= hw; j += 16) {
      __m512 r[16];
      for (int l = 0; l < 16; ++l)
        r[l] = l < lanes ? _mm512_loadu_ps(reinterpret_cast<const float*>(s + l * hw + j))
                         : _mm512_setzero_ps();
      transpose16(r);
      for (int k = 0; k < 16; ++k)
        _mm512_storeu_ps(reinterpret_cast<float*>(d + (j + k) * 16), r[k]);
    }
#endif
  for (; j < hw; ++j)
    for (int l = 0; l < block; ++l) d[j * block + l] = l < lanes ? s[l * hw + j] : 0u;
}

void block_from(const uint32_t* s, uint32_t* d, int64_t lanes, int64_t hw, int block) {
  int64_t j0 = 0;
#ifdef __AVX512F__
  if (block == 16)
    for (; j0 + 16 <= hw; j0 += 16) {
      __m512 r[16];
      for (int k = 0; k < 16; ++k)
        r[k] = _mm512_loadu_ps(reinterpret_cast<const float*>(s + (j0 + k) * 16));
      transpose16(r);
      for (int l = 0; l < lanes; ++l)
        _mm512_storeu_ps(reinterpret_cast<float*>(d + l * hw + j0), r[l]);
    }
#endif
  for (int l = 0; l < lanes; ++l)
    for (int64_t j = j0; j < hw; ++j) d[l * hw + j] = s[j * block + l];
}

void to_blocked(const uint32_t* src, uint32_t* dst, int64_t n, int64_t c, int64_t hw, int block) {
  const int64_t cb_count = c / block;
#pragma omp parallel for collapse(2) schedule(static) if (n * c * hw > kParallelMin)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t cb = 0; cb < cb_count; ++cb)
      block_to(src + (i * c + cb * block) * hw, dst + (i * cb_count + cb) * hw * block, block,
               hw, block);
}

void from_blocked(const uint32_t* src, uint32_t* dst, int64_t n, int64_t c, int64_t hw,
                  int block) {
  const int64_t cb_count = c / block;
#pragma omp parallel for collapse(2) schedule(static) if (n * c * hw > kParallelMin)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t cb = 0; cb < cb_count; ++cb)
      block_from(src + (i * cb_count + cb) * hw * block, dst + (i * c + cb * block) * hw, block,
                 hw, block);
}

const uint32_t* bits(const void* p) { return static_cast<const uint32_t*>(p); }
uint32_t* bits(void* p) { return static_cast<uint32_t*>(p); }

#pragma GCC diagnostic pop

}  // namespace

int preferred_block() { return kBlock; }

void plain_to_blocked(const void* src, void* dst, int64_t n, int64_t c, int64_t hw, int block) {
  DT_CHECK(c % block == 0, "{} channels do not fill blocks of {}", c, block);
  to_blocked(bits(src), bits(dst), n, c, hw, block);
}

void blocked_to_plain(const void* src, void* dst, int64_t n, int64_t c, int64_t hw, int block) {
  DT_CHECK(c % block == 0, "{} channels do not fill blocks of {}", c, block);
  from_blocked(bits(src), bits(dst), n, c, hw, block);
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
  const int64_t planes = g.n * (g.c / kBlock), in_plane = g.h * g.w * kBlock,
                out_plane = g.p * g.q * kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl) {
    if (argmax)
      pool_plane_fwd<kBlock, true>(g, x + pl * in_plane, y + pl * out_plane,
                                   argmax + pl * out_plane);
    else
      pool_plane_fwd<kBlock, false>(g, x + pl * in_plane, y + pl * out_plane, nullptr);
  }
}

void maxpool_backward_blocked(const PoolGeom& g, int block, const float* dy,
                              const int32_t* argmax, float* dx) {
  DT_CHECK(block == kBlock && g.c % block == 0, "maxpool backward on nChw{}c", block);
  const int64_t planes = g.n * (g.c / kBlock), in_plane = g.h * g.w * kBlock,
                out_plane = g.p * g.q * kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl)
    pool_plane_bwd<kBlock>(g, dy + pl * out_plane, argmax + pl * out_plane, dx + pl * in_plane);
}

// Plain tensors, any c: each group of B planes (the last one zero-padded) is transposed into
// an L1-sized blocked scratch plane, pooled there by the vector kernel, and transposed back,
// so memory sees one read of the input and one write of each output.
void maxpool_forward_plain(const PoolGeom& g, const float* x, float* y, int32_t* argmax) {
  DT_CHECK(g.pad_h < g.r && g.pad_w < g.s, "maxpool with padding {}x{} of a {}x{} window",
           g.pad_h, g.pad_w, g.r, g.s);
  const int64_t groups = (g.c + kBlock - 1) / kBlock, hw = g.h * g.w, pq = g.p * g.q;
#pragma omp parallel if (g.n * g.c * hw > kParallelMin)
  {
    std::vector<uint32_t> xb(hw * kBlock), yb(pq * kBlock), ab(argmax ? pq * kBlock : 0);
#pragma omp for collapse(2) schedule(static)
    for (int64_t i = 0; i < g.n; ++i)
      for (int64_t cb = 0; cb < groups; ++cb) {
        const int64_t c0 = cb * kBlock, lanes = std::min<int64_t>(kBlock, g.c - c0);
        block_to(bits(x + (i * g.c + c0) * hw), xb.data(), lanes, hw, kBlock);
        const float* xf = reinterpret_cast<const float*>(xb.data());
        float* yf = reinterpret_cast<float*>(yb.data());
        if (argmax)
          pool_plane_fwd<kBlock, true>(g, xf, yf, reinterpret_cast<int32_t*>(ab.data()));
        else
          pool_plane_fwd<kBlock, false>(g, xf, yf, nullptr);
        block_from(yb.data(), bits(y + (i * g.c + c0) * pq), lanes, pq, kBlock);
        if (argmax) block_from(ab.data(), bits(argmax + (i * g.c + c0) * pq), lanes, pq, kBlock);
      }
  }
}

}  // namespace deeptrain::kernels
