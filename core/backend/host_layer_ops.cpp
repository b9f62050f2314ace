// The host defaults of the deeper nets' backend ops (BatchNorm's sums, statistics and maps,
// global average pooling), on plain host tensors: the element formulas a device backend
// implements, so a backend without its own (a stand-in device in tests) runs the layers' device
// paths on the host. The host layers themselves do not call these: they read blocked layouts
// in place and sum in their own order (core/layers).
#include <cmath>

#include "core/backend/backend.h"

namespace deeptrain {
namespace {

template <class T>
T* host(const Tensor& t, const char* op, const char* what, int64_t numel) {
  DT_CHECK(t.device() == Device::cpu && t.layout() == Layout::plain && t.numel() == numel,
           "{}: {} must be a plain host tensor of {} elements, got {} {}", op, what, numel,
           layout_name(t.layout()), t.shape().str());
  return t.data<T>();
}

// d where y > 0, else 0 (relu_masked's rule).
float masked(float d, float y) { return y > 0.0f ? d : 0.0f; }

}  // namespace

void Backend::bn_sums(const Tensor& x, const Tensor* mean, Tensor& sums) {
  const char* op = "bn_sums";
  const ChannelView v = channel_view(x, sums.numel(), op);
  const float* px = host<float>(x, op, "x", x.numel());
  const double* pm = mean ? host<double>(*mean, op, "mean", v.C) : nullptr;
  double* out = host<double>(sums, op, "sums", v.C);
  for (int64_t c = 0; c < v.C; ++c) {
    double s = 0.0;
    for (int64_t i = 0; i < v.n; ++i)
      for (int64_t k = 0; k < v.S; ++k) {
        const double d = double(px[(i * v.C + c) * v.S + k]) - (pm ? pm[c] : 0.0);
        s += pm ? d * d : d;
      }
    out[c] = s;
  }
}

void Backend::bn_apply(const Tensor& x, const Tensor& mean, const Tensor& scale,
                       const Tensor& shift, bool relu, Tensor& y) {
  const char* op = "bn_apply";
  const ChannelView v = channel_view(x, mean.numel(), op);
  const float* px = host<float>(x, op, "x", x.numel());
  const double* pm = host<double>(mean, op, "mean", v.C);
  const double* psc = host<double>(scale, op, "scale", v.C);
  const double* psh = host<double>(shift, op, "shift", v.C);
  float* py = host<float>(y, op, "y", x.numel());
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t c = (i / v.S) % v.C;
    const float r = float((double(px[i]) - pm[c]) * psc[c] + psh[c]);
    py[i] = relu ? (r > 0.0f ? r : 0.0f) : r;
  }
  y.set_layout(Layout::plain);
}

void Backend::bn_grad_sums(const Tensor& x, const Tensor* relu_y, const Tensor& dy,
                           const Tensor& mean, Tensor& sums) {
  const char* op = "bn_grad_sums";
  const ChannelView v = channel_view(x, mean.numel(), op);
  const float* px = host<float>(x, op, "x", x.numel());
  const float* pr = relu_y ? host<float>(*relu_y, op, "relu_y", x.numel()) : nullptr;
  const float* pdy = host<float>(dy, op, "dy", x.numel());
  const double* pm = host<double>(mean, op, "mean", v.C);
  double* out = host<double>(sums, op, "sums", 2 * v.C);
  for (int64_t c = 0; c < v.C; ++c) {
    double sg = 0.0, sgx = 0.0;
    for (int64_t i = 0; i < v.n; ++i)
      for (int64_t k = 0; k < v.S; ++k) {
        const int64_t e = (i * v.C + c) * v.S + k;
        const double g = double(pr ? masked(pdy[e], pr[e]) : pdy[e]);
        sg += g;
        sgx += g * (double(px[e]) - pm[c]);
      }
    out[c] = sg;
    out[v.C + c] = sgx;
  }
}

void Backend::bn_input_grad(const Tensor& x, const Tensor* relu_y, const Tensor& dy,
                            const Tensor& mean, const Tensor& k, const Tensor& m, const Tensor& r,
                            Tensor& dx) {
  const char* op = "bn_input_grad";
  const ChannelView v = channel_view(x, mean.numel(), op);
  const float* px = host<float>(x, op, "x", x.numel());
  const float* pr = relu_y ? host<float>(*relu_y, op, "relu_y", x.numel()) : nullptr;
  const float* pdy = host<float>(dy, op, "dy", x.numel());
  const double* pm = host<double>(mean, op, "mean", v.C);
  const double* pk = host<double>(k, op, "k", v.C);
  const double* pmm = host<double>(m, op, "m", v.C);
  const double* prr = host<double>(r, op, "r", v.C);
  float* pdx = host<float>(dx, op, "dx", x.numel());
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t c = (i / v.S) % v.C;
    const float g = pr ? masked(pdy[i], pr[i]) : pdy[i];
    pdx[i] = float(pk[c] * double(g) + pmm[c] - prr[c] * (double(px[i]) - pm[c]));
  }
  dx.set_layout(Layout::plain);
}

// ---- BatchNorm's statistics: the formulas of core/layers/batch_norm.cpp's host code ----
void Backend::bn_mean(const Tensor& sums, double count, Tensor& mean) {
  const char* op = "bn_mean";
  const int64_t C = mean.numel();
  const double* ps = host<double>(sums, op, "sums", C);
  double* pm = host<double>(mean, op, "mean", C);
  for (int64_t c = 0; c < C; ++c) pm[c] = count > 0 ? ps[c] / count : 0.0;
}

void Backend::bn_normalizer(const Tensor* sq, double count, double eps, double momentum,
                            const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                            Tensor& running_var, Tensor& mean, Tensor& invstd, Tensor& scale,
                            Tensor& shift) {
  const char* op = "bn_normalizer";
  const int64_t C = mean.numel();
  const double* pq = sq ? host<double>(*sq, op, "sq", C) : nullptr;
  const float* pg = host<float>(gamma, op, "gamma", C);
  const float* pb = host<float>(beta, op, "beta", C);
  double* rm = host<double>(running_mean, op, "running_mean", C);
  double* rv = host<double>(running_var, op, "running_var", C);
  double* pm = host<double>(mean, op, "mean", C);
  double* pi = host<double>(invstd, op, "invstd", C);
  double* psc = host<double>(scale, op, "scale", C);
  double* psh = host<double>(shift, op, "shift", C);
  for (int64_t c = 0; c < C; ++c) {
    double var;
    if (pq) {
      var = count > 0 ? pq[c] / count : 0.0;
      rm[c] = momentum * rm[c] + (1.0 - momentum) * pm[c];
      rv[c] = momentum * rv[c] + (1.0 - momentum) * var;
    } else {
      pm[c] = rm[c];
      var = rv[c];
    }
    pi[c] = 1.0 / std::sqrt(var + eps);
    psc[c] = double(pg[c]) * pi[c];
    psh[c] = double(pb[c]);
  }
}

void Backend::bn_param_grads(Tensor& sums, const Tensor& invstd, Tensor& dgamma, Tensor& dbeta) {
  const char* op = "bn_param_grads";
  const int64_t C = invstd.numel();
  double* ps = host<double>(sums, op, "sums", 2 * C);
  const double* pi = host<double>(invstd, op, "invstd", C);
  float* pdg = host<float>(dgamma, op, "dgamma", C);
  float* pdb = host<float>(dbeta, op, "dbeta", C);
  for (int64_t c = 0; c < C; ++c) {
    ps[C + c] *= pi[c];
    pdb[c] = float(ps[c]);
    pdg[c] = float(ps[C + c]);
  }
}

void Backend::bn_input_coefficients(const Tensor& sums, const Tensor& invstd, const Tensor& gamma,
                                    double count, bool training, Tensor& k, Tensor& m, Tensor& r) {
  const char* op = "bn_input_coefficients";
  const int64_t C = invstd.numel();
  const double* ps = host<double>(sums, op, "sums", 2 * C);
  const double* pi = host<double>(invstd, op, "invstd", C);
  const float* pg = host<float>(gamma, op, "gamma", C);
  double* pk = host<double>(k, op, "k", C);
  double* pmm = host<double>(m, op, "m", C);
  double* prr = host<double>(r, op, "r", C);
  const double inv_count = count > 0 ? 1.0 / count : 0.0;
  for (int64_t c = 0; c < C; ++c) {
    pk[c] = double(pg[c]) * pi[c];
    pmm[c] = training ? -pk[c] * ps[c] * inv_count : 0.0;
    prr[c] = training ? pk[c] * pi[c] * ps[C + c] * inv_count : 0.0;
  }
}

void Backend::plane_mean(const Tensor& x, Tensor& y) {
  const char* op = "plane_mean";
  if (x.shape().rank() != 4) fail("{}: x {} is not (n, C, H, W)", op, x.shape().str());
  const int64_t planes = x.dim(0) * x.dim(1), hw = x.dim(2) * x.dim(3);
  const float* px = host<float>(x, op, "x", x.numel());
  float* py = host<float>(y, op, "y", planes);
  for (int64_t p = 0; p < planes; ++p) {
    double acc = 0.0;
    for (int64_t s = 0; s < hw; ++s) acc += double(px[p * hw + s]);
    py[p] = float(acc / double(hw));
  }
  y.set_layout(Layout::plain);
}

void Backend::plane_mean_backward(const Tensor& dy, Tensor& dx) {
  const char* op = "plane_mean_backward";
  if (dx.shape().rank() != 4) fail("{}: dx {} is not (n, C, H, W)", op, dx.shape().str());
  const int64_t planes = dx.dim(0) * dx.dim(1), hw = dx.dim(2) * dx.dim(3);
  const float* pdy = host<float>(dy, op, "dy", planes);
  float* pdx = host<float>(dx, op, "dx", dx.numel());
  for (int64_t i = 0; i < planes * hw; ++i) pdx[i] = float(double(pdy[i / hw]) / double(hw));
  dx.set_layout(Layout::plain);
}

}  // namespace deeptrain
