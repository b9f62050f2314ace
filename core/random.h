#pragma once
// Counter-based random numbers (Philox4x32-10, Salmon et al., SC'11; the generator cuRAND also
// offers). A draw is a pure function of (key, counter), so a sample's dropout mask or
// augmentation depends only on (seed, step, global sample index), never on rank or thread.
#include <array>
#include <cmath>
#include <cstdint>

namespace deeptrain {

using Philox4x32 = std::array<uint32_t, 4>;

inline Philox4x32 philox4x32_10(Philox4x32 ctr, std::array<uint32_t, 2> key) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = uint64_t(M0) * ctr[0], p1 = uint64_t(M1) * ctr[2];
    ctr = {uint32_t(p1 >> 32) ^ ctr[1] ^ key[0], uint32_t(p1), uint32_t(p0 >> 32) ^ ctr[3] ^ key[1],
           uint32_t(p0)};
    key[0] += W0;
    key[1] += W1;
  }
  return ctr;
}

// A uniform float in [0, 1) from 24 random bits (exactly representable, same on every device).
inline float u32_to_unit_float(uint32_t x) { return float(x >> 8) * (1.0f / 16777216.0f); }

// Streams of independent draws: (seed, stream, index) -> 4 words.
struct RandomStream {
  uint64_t seed;
  uint64_t stream;  // what the numbers are for (a layer, a step, a purpose tag)
  Philox4x32 block(uint64_t index, uint32_t sub = 0) const {
    return philox4x32_10({uint32_t(index), uint32_t(index >> 32), sub, uint32_t(stream)},
                         {uint32_t(seed), uint32_t(seed >> 32) ^ uint32_t(stream >> 32)});
  }
  // A standard normal number for element i (Box-Muller on one block).
  double normal(uint64_t i) const {
    Philox4x32 r = block(i, 0x6e6f726d);  // "norm"
    double u1 = (double(r[0]) + 1.0) / 4294967297.0;  // (0, 1): log stays finite
    double u2 = double(r[1]) / 4294967296.0;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
};

}  // namespace deeptrain
