#pragma once
// Helpers shared by the gradient-check tests: f64 random tensors and central differences.
#include <algorithm>
#include <cmath>
#include <functional>

#include <gtest/gtest.h>

#include "core/net.h"
#include "core/random.h"
#include "core/tensor.h"

namespace deeptrain::testing_util {

inline void fill_random(Tensor& t, uint64_t seed, double scale = 1.0, double offset = 0.0) {
  const RandomStream rs{seed, 7};
  for (int64_t i = 0; i < t.numel(); ++i)
    t.data<double>()[i] = offset + scale * rs.normal(uint64_t(i));
}

// An f32 tensor of normal samples (offset + scale * N(0, 1)), drawn as fill_random draws them.
inline Tensor random_f32(const Shape& shape, uint64_t seed, double scale = 1.0, double offset = 0.0) {
  Tensor t = Tensor::empty(shape, DType::f64);
  fill_random(t, seed, scale, offset);
  return t.to(DType::f32);
}

inline Shape batched(int64_t n, const Shape& s) {
  std::vector<int64_t> d{n};
  d.insert(d.end(), s.dims().begin(), s.dims().end());
  return Shape(d);
}

// Compares analytic and central-difference derivatives of f with respect to every element of
// `wrt`; returns the largest |analytic - numeric| / max(1, |numeric|).
inline double check(Tensor& wrt, const Tensor& analytic, const std::function<double()>& f) {
  const double h = 1e-6;
  double worst = 0;
  for (int64_t i = 0; i < wrt.numel(); ++i) {
    double& v = wrt.data<double>()[i];
    const double saved = v;
    v = saved + h;
    const double up = f();
    v = saved - h;
    const double down = f();
    v = saved;
    const double numeric = (up - down) / (2 * h);
    worst = std::max(worst, std::abs(analytic.data<double>()[i] - numeric) /
                                std::max(1.0, std::abs(numeric)));
  }
  return worst;
}

// Central differences of loss() for a spread of about `per_tensor` elements of every parameter
// tensor of an f64 Net, each expected to match `analytic` (the flat gradient) to 1e-6 relative.
// Returns how many elements were checked.
inline int check_net_params(Net& net, const Tensor& analytic, const std::function<double()>& loss,
                            int64_t per_tensor) {
  const double h = 1e-6;
  int checked = 0;
  for (const ParamEntry& e : net.param_entries()) {
    const int64_t count = e.shape.numel(), stride = std::max<int64_t>(1, count / per_tensor);
    for (int64_t i = 0; i < count; i += stride, ++checked) {
      double& v = net.mutable_params().data<double>()[e.offset + i];  // host nets only
      const double saved = v;
      v = saved + h;
      const double up = loss();
      v = saved - h;
      const double down = loss();
      v = saved;
      const double numeric = (up - down) / (2 * h);
      EXPECT_NEAR(analytic.data<double>()[e.offset + i], numeric,
                  1e-6 * std::max(1.0, std::abs(numeric)))
          << e.name << "[" << i << "]";
    }
  }
  return checked;
}

}  // namespace deeptrain::testing_util
