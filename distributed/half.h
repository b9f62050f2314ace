#pragma once
// f32 <-> f16 (IEEE binary16) and bf16 conversions with round-to-nearest-even, bit-exact and
// portable (no F16C needed), for gradient compression on the wire.
#include <cstdint>
#include <cstring>

namespace deeptrain {

inline uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float bits_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float bf16_to_f32(uint16_t h) { return bits_f32(uint32_t(h) << 16); }

inline uint16_t f32_to_f16(float f) {
  const uint32_t u = f32_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) return uint16_t(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0u));
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520: infinity
  if (a < 0x38800000u) {  // below the smallest normal f16 (2^-14): subnormal or zero
    if (a < 0x33000000u) return uint16_t(sign);  // < 2^-25: rounds to 0
    const uint32_t e = a >> 23;                  // 102..112
    const uint32_t m = (a & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;              // 14..24
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return uint16_t(sign | r);
  }
  uint32_t r = ((a - 0x38000000u) >> 13);  // rebias exponent 127 -> 15
  const uint32_t rem = a & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
  return uint16_t(sign | r);
}

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) {
    if (m == 0) return bits_f32(sign);
    return (sign ? -1.0f : 1.0f) * float(m) * (1.0f / 16777216.0f);  // m * 2^-24
  }
  if (e == 31) return bits_f32(sign | 0x7f800000u | (m << 13));
  return bits_f32(sign | ((e + 112) << 23) | (m << 13));
}

}  // namespace deeptrain

// Array versions, with the F16C instructions where the build has them (-march=native on x86).
// They round exactly like the scalar functions above (round to nearest even, subnormals kept),
// so ranks on hosts with and without F16C compute bit-identical sums.
#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#endif

namespace deeptrain {

// dst[i] = f16(src[i] * scale)
inline void f32_to_f16_array(const float* src, uint16_t* dst, int64_t n, float scale) {
  int64_t i = 0;
#if defined(__F16C__) && defined(__AVX__)
  const __m256 s = _mm256_set1_ps(scale);
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(src + i), s);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  }
#endif
  for (; i < n; ++i) dst[i] = f32_to_f16(src[i] * scale);
}

// dst[i] = f32(src[i]) * scale
inline void f16_to_f32_array(const uint16_t* src, float* dst, int64_t n, float scale) {
  int64_t i = 0;
#if defined(__F16C__) && defined(__AVX__)
  const __m256 s = _mm256_set1_ps(scale);
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
    _mm256_storeu_ps(dst + i, _mm256_mul_ps(v, s));
  }
#endif
  for (; i < n; ++i) dst[i] = f16_to_f32(src[i]) * scale;
}

// inout[i] = f16(f32(in[i]) + f32(inout[i])): one rounding per addition.
inline void f16_sum_array(const uint16_t* in, uint16_t* inout, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__) && defined(__AVX__)
  for (; i + 8 <= n; i += 8) {
    const __m256 a = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i)));
    const __m256 b = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(inout + i)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(inout + i),
                     _mm256_cvtps_ph(_mm256_add_ps(a, b), _MM_FROUND_TO_NEAREST_INT));
  }
#endif
  for (; i < n; ++i) inout[i] = f32_to_f16(f16_to_f32(in[i]) + f16_to_f32(inout[i]));
}

}  // namespace deeptrain
