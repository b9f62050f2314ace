// The 16-bit wire formats of the gradient reduction (distributed/half.h): f16 and bf16 round to
// nearest even, every f16 value round-trips, and the array versions round like the scalar ones.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "distributed/half.h"

using namespace deeptrain;

TEST(WireFormats, F16RoundTripsEveryHalfExactly) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const uint16_t x = uint16_t(h);
    const float f = f16_to_f32(x);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
      continue;
    }
    ASSERT_EQ(f32_to_f16(f), x) << std::hex << h;
  }
}

TEST(WireFormats, F16RoundsToNearestEven) {
  EXPECT_EQ(f16_to_f32(f32_to_f16(1.0f)), 1.0f);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);         // below the halfway point to 65536
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);         // halfway: rounds to even = infinity
  EXPECT_EQ(f32_to_f16(1e-8f), 0x0000);            // below half the smallest subnormal
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);  // the smallest subnormal
  EXPECT_EQ(f32_to_f16(std::ldexp(1.5f, -24)), 0x0002);  // tie between 1 and 2 ulps: even
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);  // tie between 0 and 1 ulp: even
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie: stays at even 1.0
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(3.0f, -11)), 0x3c02);  // tie: up to even
  EXPECT_EQ(f32_to_f16(-2.0f), 0xc000);
  // Against every float in a sweep: the result is one of the two neighbours, the nearer one.
  for (int i = -200000; i <= 200000; ++i) {
    const float f = float(i) * 0.000731f;
    const float r = f16_to_f32(f32_to_f16(f));
    ASSERT_LE(std::fabs(r - f), std::ldexp(std::fabs(f), -11) + std::ldexp(1.0f, -25)) << f;
  }
}

TEST(WireFormats, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);       // tie: even
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(3.0f, -8)), 0x3f82);       // tie: even (up)
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::nanf("")))));
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = bf16_to_f32(uint16_t(h));
    if (!std::isnan(f)) ASSERT_EQ(f32_to_bf16(f), uint16_t(h));
  }
}

TEST(WireFormats, ArrayVersionsRoundLikeTheScalarOnes) {
  // The arrays use F16C where compiled in; hosts with and without it must agree bit for bit.
  std::vector<float> x;
  for (uint32_t h = 0; h < 0x10000; h += 1) {
    const float f = f16_to_f32(uint16_t(h));
    if (std::isnan(f)) continue;
    x.push_back(f);
    x.push_back(std::nextafter(f, 1e9f));   // just above: rounding, ties' neighbours
    x.push_back(std::nextafter(f, -1e9f));
  }
  for (int i = 0; i < 100000; ++i) x.push_back(std::ldexp(float((i * 2654435761u) % 1000003) - 500000.0f, -30 + i % 40));
  const int64_t n = int64_t(x.size());
  std::vector<uint16_t> a(n), b(n);
  f32_to_f16_array(x.data(), a.data(), n, 3.0f);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(a[i], f32_to_f16(x[i] * 3.0f)) << x[i];
  std::vector<float> back(n);
  f16_to_f32_array(a.data(), back.data(), n, 0.25f);
  for (int64_t i = 0; i < n; ++i)
    if (!std::isnan(back[i])) ASSERT_EQ(back[i], f16_to_f32(a[i]) * 0.25f);
  f32_to_f16_array(x.data(), b.data(), n, 1.0f);
  std::vector<uint16_t> c = b;
  f16_sum_array(a.data(), c.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    const float want = f16_to_f32(f32_to_f16(f16_to_f32(a[i]) + f16_to_f32(b[i])));
    const float got = f16_to_f32(c[i]);
    if (!std::isnan(want)) ASSERT_EQ(got, want) << i;
  }
}
