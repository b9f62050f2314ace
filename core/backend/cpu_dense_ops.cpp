// CpuBackend's ops for dense predictions: cropping a score map to its skip partner, and the
// per-pixel softmax cross-entropy. f32 and f64, plain layouts; every sum in a fixed order.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/backend/cpu.h"
#include "core/backend/cpu_dispatch.h"

namespace deeptrain {
namespace {

void check_crop(const char* op, const Tensor& big, const Tensor& small, int64_t oy, int64_t ox) {
  DT_CHECK(big.shape().rank() == 4 && small.shape().rank() == 4 && big.dim(0) == small.dim(0) &&
               big.dim(1) == small.dim(1) && oy >= 0 && ox >= 0 &&
               oy + small.dim(2) <= big.dim(2) && ox + small.dim(3) <= big.dim(3) &&
               big.dtype() == small.dtype() && big.layout() == Layout::plain,
           "{}: window {} at ({}, {}) is not inside {} (plain, one dtype)", op,
           small.shape().str(), oy, ox, big.shape().str());
}

double class_weight(const std::vector<double>& w, int32_t t) { return w.empty() ? 1.0 : w[size_t(t)]; }

}  // namespace

void CpuBackend::crop2d(const Tensor& x, int64_t oy, int64_t ox, Tensor& y) {
  check_crop("crop2d", x, y, oy, ox);
  const int64_t planes = x.dim(0) * x.dim(1), H = x.dim(2), W = x.dim(3), h = y.dim(2), w = y.dim(3);
  dispatch_host_float(x, "crop2d", [&]<class T>() {
    const T* px = x.data<T>();
    T* py = y.data<T>();
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < planes; ++p)
      for (int64_t i = 0; i < h; ++i)
        std::copy_n(px + (p * H + oy + i) * W + ox, w, py + (p * h + i) * w);
  });
  y.set_layout(Layout::plain);
}

void CpuBackend::crop2d_backward(const Tensor& dy, int64_t oy, int64_t ox, Tensor& dx) {
  dx.set_layout(Layout::plain);
  check_crop("crop2d_backward", dx, dy, oy, ox);
  const int64_t planes = dx.dim(0) * dx.dim(1), H = dx.dim(2), W = dx.dim(3), h = dy.dim(2),
                w = dy.dim(3);
  dispatch_host_float(dx, "crop2d_backward", [&]<class T>() {
    const T* pdy = dy.data<T>();
    T* pdx = dx.data<T>();
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < planes; ++p) {
      std::fill(pdx + p * H * W, pdx + (p + 1) * H * W, T(0));
      for (int64_t i = 0; i < h; ++i)
        std::copy_n(pdy + (p * h + i) * w, w, pdx + (p * H + oy + i) * W + ox);
    }
  });
}

LossSums CpuBackend::pixel_softmax_ce_forward(const Tensor& logits, const Tensor& labels,
                                              int ignore_label, const std::vector<double>& weights,
                                              double log_eps, Tensor& probs) {
  const char* op = "pixel_softmax_ce_forward";
  DT_CHECK(logits.shape().rank() == 4 && logits.layout() == Layout::plain &&
               labels.dtype() == DType::i32 &&
               labels.numel() == logits.dim(0) * logits.dim(2) * logits.dim(3) &&
               probs.numel() == logits.numel() && probs.dtype() == logits.dtype() &&
               (weights.empty() || int64_t(weights.size()) == logits.dim(1)),
           "{}: logits {} (plain, (n, K, H, W)), labels {}, probs {}, {} weights do not fit", op,
           logits.shape().str(), labels.shape().str(), probs.shape().str(), weights.size());
  const int64_t n = logits.dim(0), K = logits.dim(1), S = logits.dim(2) * logits.dim(3);
  std::vector<double> loss(size_t(n), 0.0);
  std::vector<int64_t> correct(size_t(n), 0), counted(size_t(n), 0), bad(size_t(n), -1);
  dispatch_host_float(logits, op, [&]<class T>() {
    const T* z = logits.data<T>();
    T* p = probs.data<T>();
    const int32_t* t = labels.data<int32_t>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const T* zi = z + i * K * S;
      T* pi = p + i * K * S;
      for (int64_t s = 0; s < S; ++s) {
        int64_t best = 0;
        T mx = zi[s];
        for (int64_t k = 1; k < K; ++k)
          if (zi[k * S + s] > mx) mx = zi[k * S + s], best = k;
        double sum = 0;
        for (int64_t k = 0; k < K; ++k) sum += std::exp(double(zi[k * S + s] - mx));
        for (int64_t k = 0; k < K; ++k) pi[k * S + s] = T(std::exp(double(zi[k * S + s] - mx)) / sum);
        const int32_t ts = t[i * S + s];
        if (ts == ignore_label) continue;
        if (ts < 0 || ts >= K) {
          if (bad[size_t(i)] < 0) bad[size_t(i)] = s;
          continue;
        }
        loss[size_t(i)] += class_weight(weights, ts) * -std::log(double(pi[ts * S + s]) + log_eps);
        correct[size_t(i)] += best == ts;
        ++counted[size_t(i)];
      }
    }
  });
  LossSums r;
  for (int64_t i = 0; i < n; ++i) {
    if (bad[size_t(i)] >= 0)
      fail_input("{}: sample {} of the batch has label {} at pixel {}: not a class in [0, {}) nor "
                 "the ignore label {}", op, i, labels.data<int32_t>()[i * S + bad[size_t(i)]],
                 bad[size_t(i)], K, ignore_label);
    r.loss += loss[size_t(i)];
    r.correct += correct[size_t(i)];
    r.counted += counted[size_t(i)];
  }
  probs.set_layout(Layout::plain);
  return r;
}

void CpuBackend::pixel_softmax_ce_backward(const Tensor& probs, const Tensor& labels,
                                           int ignore_label, const std::vector<double>& weights,
                                           double scale, Tensor& dlogits) {
  const char* op = "pixel_softmax_ce_backward";
  DT_CHECK(probs.shape().rank() == 4 && dlogits.numel() == probs.numel() &&
               labels.numel() == probs.dim(0) * probs.dim(2) * probs.dim(3),
           "{}: probs {}, labels {}, dlogits {} do not fit", op, probs.shape().str(),
           labels.shape().str(), dlogits.shape().str());
  const int64_t n = probs.dim(0), K = probs.dim(1), S = probs.dim(2) * probs.dim(3);
  dispatch_host_float(probs, op, [&]<class T>() {
    const T* p = probs.data<T>();
    T* d = dlogits.data<T>();
    const int32_t* t = labels.data<int32_t>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t s = 0; s < S; ++s) {
        const int32_t ts = t[i * S + s];
        const bool counted = ts != ignore_label && ts >= 0 && ts < K;
        const double f = counted ? scale * class_weight(weights, ts) : 0.0;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t e = (i * K + k) * S + s;
          d[e] = T(f * (double(p[e]) - (k == ts ? 1.0 : 0.0)));
        }
      }
  });
  dlogits.set_layout(Layout::plain);
}

}  // namespace deeptrain
