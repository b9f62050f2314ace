#pragma once
// The convolution and pooling geometries every backend's op tests run (test_backend_ops: the fast CPU path
// against the reference; test_backend_ops_gpu: the GPU against the reference).
#include <memory>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "core/backend/backend.h"
#include "core/error.h"

namespace deeptrain::testing_util {

// The "cpu" backend with these options, or null and why there is none (a processor without
// the feature asked for: the test is then skipped with that reason).
inline std::unique_ptr<Backend> cpu_backend_or_reason(const BackendOptions& opt, std::string* why) {
  try {
    return make_backend("cpu", opt);
  } catch (const InputError& e) {
    *why = e.what();
    return nullptr;
  }
}

// Values uniform in [-1, 1) from std::mt19937(seed): the bound tests' inputs.
inline Tensor uniform_f32(Shape shape, uint32_t seed) {
  Tensor t = Tensor::empty(std::move(shape), DType::f32);
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = dist(gen);
  return t;
}

struct ConvCase {
  const char* name;
  int64_t n, c, h, w, k, r, s, stride, pad;
  ConvGeom geom() const { return ConvGeom::make(n, c, h, w, k, r, s, stride, stride, pad, pad); }
};

inline const ConvCase kConvCases[] = {
    // DeepConvNet at batch 100.
    {"deep1_c1", 100, 1, 28, 28, 16, 3, 3, 1, 1},
    {"deep2", 100, 16, 28, 28, 16, 3, 3, 1, 1},
    {"deep3", 100, 16, 14, 14, 32, 3, 3, 1, 1},
    {"deep4_pad2", 100, 32, 14, 14, 32, 3, 3, 1, 2},
    {"deep5", 100, 32, 8, 8, 64, 3, 3, 1, 1},
    {"deep6", 100, 64, 8, 8, 64, 3, 3, 1, 1},
    // Batch 1, strides, paddings, 1x1 and 5x5 kernels, odd sizes, channel counts that fill no
    // block of the blocked layouts.
    {"batch1_c1", 1, 1, 28, 28, 16, 3, 3, 1, 1},
    {"batch1_stride2", 1, 16, 7, 7, 32, 3, 3, 2, 1},
    {"stride2_pad0", 4, 16, 15, 15, 16, 3, 3, 2, 0},
    {"stride2_uneven", 3, 16, 28, 28, 32, 3, 3, 2, 0},  // last input row unused
    {"pad2_c1_5x5", 2, 1, 12, 12, 16, 5, 5, 1, 2},
    {"c2_5x5_stride2", 3, 2, 13, 13, 32, 5, 5, 2, 1},
    {"pointwise", 3, 32, 9, 9, 16, 1, 1, 1, 0},
    {"pointwise_stride2", 2, 16, 5, 5, 48, 1, 1, 2, 0},
    {"rgb_k24", 2, 3, 11, 11, 24, 3, 3, 1, 1},
    {"c24_k8", 2, 24, 6, 6, 8, 3, 3, 1, 1},
    {"c16_k10", 5, 16, 4, 4, 10, 3, 3, 1, 0},
    {"odd_c5_k7", 3, 5, 9, 11, 7, 3, 3, 1, 1},
};

struct PoolCase {
  const char* name;
  int64_t n, c, h, w, r, stride, pad;
  PoolGeom geom() const { return PoolGeom::make(n, c, h, w, r, r, stride, stride, pad, pad); }
};

inline const PoolCase kPoolCases[] = {
    {"deep1", 100, 16, 28, 28, 2, 2, 0},
    {"deep2", 100, 32, 14, 14, 2, 2, 0},
    {"deep3", 100, 64, 8, 8, 2, 2, 0},
    {"batch1", 1, 32, 16, 16, 2, 2, 0},
    {"odd_extent", 3, 32, 7, 7, 2, 2, 0},    // last row and column in no window
    {"overlap_pad1", 2, 16, 9, 9, 3, 2, 1},  // windows overlap and hang over the edge
    {"overlap_stride1", 2, 16, 8, 8, 3, 1, 0},
    {"c3", 2, 3, 6, 6, 2, 2, 0},             // channels that fill no block
    {"c56_stride1_pad1", 3, 56, 9, 9, 3, 1, 1},   // Inception's pool branch, 3.5 blocks of 16
    {"c24_odd_extent", 2, 24, 7, 7, 2, 2, 0},      // 1.5 blocks, last row and column unused
    {"c40_overlap_pad1", 2, 40, 9, 9, 3, 2, 1},
    {"c88_wide", 2, 88, 5, 21, 3, 1, 1},           // rows of 21: a tile of 16 and a tail
};

// The parameterised tests' names: the case's name.
template <class Case>
std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  return info.param.name;
}

}  // namespace deeptrain::testing_util
