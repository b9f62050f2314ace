#pragma once
// MNIST-shaped synthetic data for the multi-rank tests: each image's class is the position of a
// bright 8x8 square (10 positions on a 4-wide grid) on a dim noisy background, so a small net
// learns it in a few steps. Labels and pixels come from one counter-based stream: the same data
// on every rank.
#include <cstdint>

#include "core/data/dataset.h"
#include "core/random.h"

namespace deeptrain::testing_util {

struct SquaresStyle {
  uint64_t seed, stream;
  int on_base, on_range;  // square pixels: on_base + uniform [0, on_range)
  int off_range;          // background pixels: uniform [0, off_range)
};

inline data::Dataset synthetic_squares(int64_t n, const SquaresStyle& s) {
  data::Dataset d;
  d.name = "synthetic";
  d.num_classes = 10;
  d.images = Tensor::empty({n, 1, 28, 28}, DType::u8);
  d.labels = Tensor::empty({n}, DType::i32);
  const RandomStream rs{s.seed, s.stream};
  for (int64_t i = 0; i < n; ++i) {
    const int label = int(rs.block(uint64_t(i), 1)[0] % 10);
    d.labels.data<int32_t>()[i] = label;
    uint8_t* img = d.images.data<uint8_t>() + i * 784;
    const int y0 = 2 + 6 * (label / 4), x0 = 2 + 6 * (label % 4);
    for (int p = 0; p < 784; ++p) {
      const int y = p / 28, x = p % 28;
      const bool on = y >= y0 && y < y0 + 8 && x >= x0 && x < x0 + 8;
      const uint32_t r = rs.block(uint64_t(i * 784 + p))[0];
      img[p] = uint8_t(on ? s.on_base + int(r % uint32_t(s.on_range)) : int(r % uint32_t(s.off_range)));
    }
  }
  return d;
}

}  // namespace deeptrain::testing_util
