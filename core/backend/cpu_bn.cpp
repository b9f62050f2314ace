// CpuBackend's BatchNorm ops (Backend::bn_*): f32 and f64, plain layouts and the fast backend's
// blocked ones (nChw8c, nChw16c), which they read and write as they are.
//
// Sums run in f64, per (sample, channel) over the positions and then over the samples in order
// (sum_samples), so neither the thread count nor the layout changes them, and the sums of a
// micro-shard's rows (exact mode) are those of its samples alone. Training statistics come from
// one read of x (bn_sample_moments: each sample's sum and centred squares, the second pass over
// a (sample, channel block) finding it in cache), then combined per channel in sample order.
#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "core/backend/cpu.h"

namespace deeptrain {
namespace {

constexpr int64_t kParallelMin = int64_t{1} << 14;  // elements below which threads cost more

// An activation viewed as (n, C/B, S, B): n samples, C/B blocks of B channels, S positions, B
// lanes (B = 1: plain; the layouts of core/tensor.h's layout_block). "part" arrays hold one
// sum per (sample, channel) at i * C + c, which is (i * C/B + c/B) * B + c % B: the same index
// as a block's lanes.
struct Act {
  int64_t n, cb, s;
  int64_t blocks() const { return n * cb; }
};

// d where y > 0, else 0 (NaN and infinite d included), without a branch: GCC leaves loops
// with a select on a float compare unvectorised ("control flow in loop").
template <class T>
inline T relu_masked(T d, T y) {
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  const U keep = U(0) - U(y > T(0));
  return std::bit_cast<T>(std::bit_cast<U>(d) & keep);
}

// sums[c] = sum over samples i, in order, of part[i * C + c].
void sum_samples(int64_t n, int64_t C, const double* part, double* sums) {
  for (int64_t c = 0; c < C; ++c) sums[c] = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < C; ++c) sums[c] += part[i * C + c];
}

// The B per-channel constants v[c] of block p's lanes.
template <int B>
void lanes(const Act& a, int64_t p, const double* v, double* out) {
  const int64_t c0 = (p % a.cb) * B;
  for (int l = 0; l < B; ++l) out[l] = v[c0 + l];
}

// part[i * C + c] = sum over positions of x, or of (x - mean)^2 when mean is given.
template <class T, int B, bool kDev>
void sample_sums(const Act& a, const T* __restrict x, const double* mean, double* __restrict part) {
#pragma omp parallel for schedule(static) if (a.blocks() * a.s * B >= kParallelMin)
  for (int64_t p = 0; p < a.blocks(); ++p) {
    const T* xp = x + p * a.s * B;
    double mu[B] = {}, acc[B] = {};
    if (kDev) lanes<B>(a, p, mean, mu);
    for (int64_t s = 0; s < a.s; ++s)
#pragma omp simd
      for (int l = 0; l < B; ++l) {
        const double d = double(xp[s * B + l]) - mu[l];
        acc[l] += kDev ? d * d : double(xp[s * B + l]);
      }
    for (int l = 0; l < B; ++l) part[p * B + l] = acc[l];
  }
}

// For each sample i and channel c: mom[i * 2C + c] = the sum over positions, and
// mom[i * 2C + C + c] = the sum of squared deviations from the sample's own mean. The second
// pass over a block (S * B values: 50 KB for 28 x 28 x 16 floats) finds it in cache, so memory
// sees one read of x.
template <class T, int B>
void sample_moments(const Act& a, const T* __restrict x, int64_t C, double* __restrict mom) {
#pragma omp parallel for schedule(static) if (a.blocks() * a.s * B >= kParallelMin)
  for (int64_t p = 0; p < a.blocks(); ++p) {
    const T* xp = x + p * a.s * B;
    double sum[B] = {}, dev[B] = {}, mu[B];
    for (int64_t s = 0; s < a.s; ++s)
#pragma omp simd
      for (int l = 0; l < B; ++l) sum[l] += double(xp[s * B + l]);
    for (int l = 0; l < B; ++l) mu[l] = a.s > 0 ? sum[l] / double(a.s) : 0.0;
    for (int64_t s = 0; s < a.s; ++s)
#pragma omp simd
      for (int l = 0; l < B; ++l) {
        const double d = double(xp[s * B + l]) - mu[l];
        dev[l] += d * d;
      }
    const int64_t i = p / a.cb, c0 = (p % a.cb) * B;
    for (int l = 0; l < B; ++l) {
      mom[i * 2 * C + c0 + l] = sum[l];
      mom[i * 2 * C + C + c0 + l] = dev[l];
    }
  }
}

// y = (x - mean) * scale + shift, then max(0, .) when relu.
template <class T, int B, bool kRelu>
void apply(const Act& a, const T* __restrict x, const double* mean, const double* scale,
           const double* shift, T* __restrict y) {
#pragma omp parallel for schedule(static) if (a.blocks() * a.s * B >= kParallelMin)
  for (int64_t p = 0; p < a.blocks(); ++p) {
    const T* xp = x + p * a.s * B;
    T* yp = y + p * a.s * B;
    double mu[B], sc[B], sh[B];
    lanes<B>(a, p, mean, mu);
    lanes<B>(a, p, scale, sc);
    lanes<B>(a, p, shift, sh);
    for (int64_t s = 0; s < a.s; ++s)
#pragma omp simd
      for (int l = 0; l < B; ++l) {
        const T v = T((double(xp[s * B + l]) - mu[l]) * sc[l] + sh[l]);
        yp[s * B + l] = kRelu ? (v > T(0) ? v : T(0)) : v;
      }
  }
}

// g = dy, or dy masked by y > 0 when y (a fused ReLU's output) is given;
// part_g = sum of g, part_gx = sum of g * (x - mean). (Writing g back to dy would make GCC
// turn the mask into a conditional store and give up vectorising.)
template <class T, int B, bool kMask>
void grad_sums(const Act& a, const T* __restrict x, const T* __restrict y, const double* mean,
               const T* __restrict dy, double* __restrict part_g, double* __restrict part_gx) {
#pragma omp parallel for schedule(static) if (a.blocks() * a.s * B >= kParallelMin)
  for (int64_t p = 0; p < a.blocks(); ++p) {
    const int64_t o = p * a.s * B;
    double mu[B], sg[B] = {}, sgx[B] = {};
    lanes<B>(a, p, mean, mu);
    for (int64_t s = 0; s < a.s; ++s)
#pragma omp simd
      for (int l = 0; l < B; ++l) {
        const int64_t i = o + s * B + l;
        const T gv = kMask ? relu_masked(dy[i], y[i]) : dy[i];
        sg[l] += double(gv);
        sgx[l] += double(gv) * (double(x[i]) - mu[l]);
      }
    for (int l = 0; l < B; ++l) {
      part_g[p * B + l] = sg[l];
      part_gx[p * B + l] = sgx[l];
    }
  }
}

// dx = k * g + m - r * (x - mean), g as in grad_sums.
template <class T, int B, bool kMask>
void input_grad(const Act& a, const T* __restrict x, const T* __restrict y,
                const T* __restrict dy, const double* mean, const double* k, const double* m,
                const double* r, T* __restrict dx) {
#pragma omp parallel for schedule(static) if (a.blocks() * a.s * B >= kParallelMin)
  for (int64_t p = 0; p < a.blocks(); ++p) {
    const int64_t o = p * a.s * B;
    double mu[B], kl[B], ml[B], rl[B];
    lanes<B>(a, p, mean, mu);
    lanes<B>(a, p, k, kl);
    lanes<B>(a, p, m, ml);
    lanes<B>(a, p, r, rl);
    for (int64_t s = 0; s < a.s; ++s)
#pragma omp simd
      for (int l = 0; l < B; ++l) {
        const int64_t i = o + s * B + l;
        const T gv = kMask ? relu_masked(dy[i], y[i]) : dy[i];
        dx[i] = T(kl[l] * double(gv) + ml[l] - rl[l] * (double(x[i]) - mu[l]));
      }
  }
}

// Calls f.template operator()<T, B>(act) for x viewed as (n, C/B, S, B) with per-channel
// vectors of C elements; fails naming op when x is not such an activation.
template <class F>
void dispatch(const Tensor& x, int64_t C, const char* op, F&& f) {
  const ChannelView v = channel_view(x, C, op);
  const int B = layout_block(x.layout());
  const bool f64 = x.dtype() == DType::f64;
  DT_CHECK(x.device() == Device::cpu && (f64 || x.dtype() == DType::f32),
           "{}: x must be an f32 or f64 host tensor", op);
  DT_CHECK(B == 1 || (!f64 && x.shape().rank() == 4 && x.dim(1) == C && C % B == 0),
           "{}: a {} {} activation {} with {} channels", op, layout_name(x.layout()),
           dtype_name(x.dtype()), x.shape().str(), C);
  const Act a{v.n, v.C / B, v.S};
  if (B == 16) f.template operator()<float, 16>(a);
  else if (B == 8) f.template operator()<float, 8>(a);
  else if (f64) f.template operator()<double, 1>(a);
  else f.template operator()<float, 1>(a);
}

// Operands other than x: host tensors of the dtype and size the op needs.
template <class T>
T* host(const Tensor& t, const char* op, const char* what, int64_t numel) {
  DT_CHECK(t.device() == Device::cpu && t.dtype() == dtype_of<T>() && t.numel() == numel,
           "{}: {} must be a host {} tensor of {} elements, got {} {}", op, what,
           dtype_name(dtype_of<T>()), numel, dtype_name(t.dtype()), t.shape().str());
  return t.data<T>();
}
const double* vec(const Tensor& t, const char* op, const char* what, int64_t C) {
  return host<double>(t, op, what, C);
}
// An activation-sized operand of x's dtype and shape (y, dy, dx), in x's layout.
template <class T>
T* like(const Tensor& t, const Tensor& x, const char* op, const char* what) {
  DT_CHECK(t.layout() == x.layout(), "{}: {} is {}, x is {}", op, what, layout_name(t.layout()),
           layout_name(x.layout()));
  return host<T>(t, op, what, x.numel());
}

// Calls f.template operator()<T>() for the parameters' dtype (f32 or f64).
template <class F>
void dispatch_param(const Tensor& p, const char* op, F&& f) {
  if (p.dtype() == DType::f64) f.template operator()<double>();
  else if (p.dtype() == DType::f32) f.template operator()<float>();
  else fail("{}: {} parameters", op, dtype_name(p.dtype()));
}

}  // namespace

void CpuBackend::bn_sums(const Tensor& x, const Tensor* mean, Tensor& sums) {
  const char* op = "bn_sums";
  const int64_t C = sums.numel();
  double* out = host<double>(sums, op, "sums", C);
  const double* pm = mean ? vec(*mean, op, "mean", C) : nullptr;
  std::vector<double> part;
  dispatch(x, C, op, [&]<class T, int B>(const Act& a) {
    part.resize(size_t(a.n * C));
    if (pm) sample_sums<T, B, true>(a, x.data<T>(), pm, part.data());
    else sample_sums<T, B, false>(a, x.data<T>(), nullptr, part.data());
    sum_samples(a.n, C, part.data(), out);
  });
}

bool CpuBackend::bn_sample_moments(const Tensor& x, Tensor& moments) {
  const char* op = "bn_sample_moments";
  DT_CHECK(x.shape().rank() >= 1 && x.dim(0) > 0 && moments.numel() % (2 * x.dim(0)) == 0,
           "{}: {} moments for x {}", op, moments.numel(), x.shape().str());
  const int64_t C = moments.numel() / (2 * x.dim(0));
  dispatch(x, C, op, [&]<class T, int B>(const Act& a) {
    sample_moments<T, B>(a, x.data<T>(), C, host<double>(moments, op, "moments", a.n * 2 * C));
  });
  return true;
}

void CpuBackend::bn_moment_sums(const Tensor& moments, int64_t positions, const Tensor* mean,
                                Tensor& sums) {
  const char* op = "bn_moment_sums";
  const int64_t C = sums.numel();
  DT_CHECK(moments.numel() % (2 * C) == 0, "{}: {} moments for {} channels", op,
           moments.numel(), C);
  const int64_t n = moments.numel() / (2 * C);
  const double* pmo = host<double>(moments, op, "moments", n * 2 * C);
  const double* pm = mean ? vec(*mean, op, "mean", C) : nullptr;
  double* out = host<double>(sums, op, "sums", C);
  const double S = double(positions);
  for (int64_t c = 0; c < C; ++c) out[c] = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double* sum = pmo + i * 2 * C;  // then the centred squares at sum + C
    if (!pm) {
      for (int64_t c = 0; c < C; ++c) out[c] += sum[c];
      continue;
    }
    for (int64_t c = 0; c < C; ++c) {
      const double d = (S > 0 ? sum[c] / S : 0.0) - pm[c];
      out[c] += sum[C + c] + S * d * d;
    }
  }
}

void CpuBackend::bn_apply(const Tensor& x, const Tensor& mean, const Tensor& scale,
                          const Tensor& shift, bool relu, Tensor& y) {
  const char* op = "bn_apply";
  const int64_t C = mean.numel();
  const double* pm = vec(mean, op, "mean", C);
  const double* psc = vec(scale, op, "scale", C);
  const double* psh = vec(shift, op, "shift", C);
  y.set_layout(x.layout());
  dispatch(x, C, op, [&]<class T, int B>(const Act& a) {
    T* py = like<T>(y, x, op, "y");
    if (relu) apply<T, B, true>(a, x.data<T>(), pm, psc, psh, py);
    else apply<T, B, false>(a, x.data<T>(), pm, psc, psh, py);
  });
}

void CpuBackend::bn_grad_sums(const Tensor& x, const Tensor* relu_y, const Tensor& dy,
                              const Tensor& mean, Tensor& sums) {
  const char* op = "bn_grad_sums";
  const int64_t C = mean.numel();
  const double* pm = vec(mean, op, "mean", C);
  double* out = host<double>(sums, op, "sums", 2 * C);
  std::vector<double> part;
  dispatch(x, C, op, [&]<class T, int B>(const Act& a) {
    const T* py = relu_y ? like<T>(*relu_y, x, op, "relu_y") : nullptr;
    const T* pdy = like<T>(dy, x, op, "dy");
    part.resize(size_t(2 * a.n * C));
    double* part_g = part.data();
    double* part_gx = part_g + a.n * C;
    if (py) grad_sums<T, B, true>(a, x.data<T>(), py, pm, pdy, part_g, part_gx);
    else grad_sums<T, B, false>(a, x.data<T>(), nullptr, pm, pdy, part_g, part_gx);
    sum_samples(a.n, C, part_g, out);
    sum_samples(a.n, C, part_gx, out + C);
  });
}

void CpuBackend::bn_input_grad(const Tensor& x, const Tensor* relu_y, const Tensor& dy,
                               const Tensor& mean, const Tensor& k, const Tensor& m,
                               const Tensor& r, Tensor& dx) {
  const char* op = "bn_input_grad";
  const int64_t C = mean.numel();
  const double* pm = vec(mean, op, "mean", C);
  const double* pk = vec(k, op, "k", C);
  const double* pmm = vec(m, op, "m", C);
  const double* prr = vec(r, op, "r", C);
  dx.set_layout(x.layout());
  dispatch(x, C, op, [&]<class T, int B>(const Act& a) {
    const T* py = relu_y ? like<T>(*relu_y, x, op, "relu_y") : nullptr;
    const T* pdy = like<T>(dy, x, op, "dy");
    T* pdx = like<T>(dx, x, op, "dx");
    if (py) input_grad<T, B, true>(a, x.data<T>(), py, pdy, pm, pk, pmm, prr, pdx);
    else input_grad<T, B, false>(a, x.data<T>(), nullptr, pdy, pm, pk, pmm, prr, pdx);
  });
}

// ---- the per-channel statistics (C elements; cheap next to the passes over x) ----
void CpuBackend::bn_mean(const Tensor& sums, double count, Tensor& mean) {
  const char* op = "bn_mean";
  const int64_t C = mean.numel();
  const double* ps = vec(sums, op, "sums", C);
  double* pm = host<double>(mean, op, "mean", C);
  for (int64_t c = 0; c < C; ++c) pm[c] = count > 0 ? ps[c] / count : 0.0;
}

void CpuBackend::bn_normalizer(const Tensor* sq, double count, double eps, double momentum,
                               const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                               Tensor& running_var, Tensor& mean, Tensor& invstd, Tensor& scale,
                               Tensor& shift) {
  const char* op = "bn_normalizer";
  const int64_t C = mean.numel();
  const double* pq = sq ? vec(*sq, op, "sq", C) : nullptr;
  double* rm = host<double>(running_mean, op, "running_mean", C);
  double* rv = host<double>(running_var, op, "running_var", C);
  double* pm = host<double>(mean, op, "mean", C);
  double* pi = host<double>(invstd, op, "invstd", C);
  double* psc = host<double>(scale, op, "scale", C);
  double* psh = host<double>(shift, op, "shift", C);
  dispatch_param(gamma, op, [&]<class P>() {
    const P* pg = host<P>(gamma, op, "gamma", C);
    const P* pb = host<P>(beta, op, "beta", C);
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
  });
}

void CpuBackend::bn_param_grads(Tensor& sums, const Tensor& invstd, Tensor& dgamma,
                                Tensor& dbeta) {
  const char* op = "bn_param_grads";
  const int64_t C = invstd.numel();
  double* ps = host<double>(sums, op, "sums", 2 * C);
  const double* pi = vec(invstd, op, "invstd", C);
  dispatch_param(dgamma, op, [&]<class P>() {
    P* pdg = host<P>(dgamma, op, "dgamma", C);
    P* pdb = host<P>(dbeta, op, "dbeta", C);
    for (int64_t c = 0; c < C; ++c) {
      ps[C + c] *= pi[c];
      pdb[c] = P(ps[c]);
      pdg[c] = P(ps[C + c]);
    }
  });
}

void CpuBackend::bn_input_coefficients(const Tensor& sums, const Tensor& invstd,
                                       const Tensor& gamma, double count, bool training,
                                       Tensor& k, Tensor& m, Tensor& r) {
  const char* op = "bn_input_coefficients";
  const int64_t C = invstd.numel();
  const double* ps = vec(sums, op, "sums", 2 * C);
  const double* pi = vec(invstd, op, "invstd", C);
  double* pk = host<double>(k, op, "k", C);
  double* pmm = host<double>(m, op, "m", C);
  double* prr = host<double>(r, op, "r", C);
  const double inv_count = count > 0 ? 1.0 / count : 0.0;
  dispatch_param(gamma, op, [&]<class P>() {
    const P* pg = host<P>(gamma, op, "gamma", C);
    for (int64_t c = 0; c < C; ++c) {
      pk[c] = double(pg[c]) * pi[c];
      pmm[c] = training ? -pk[c] * ps[c] * inv_count : 0.0;
      prr[c] = training ? pk[c] * pi[c] * ps[C + c] * inv_count : 0.0;
    }
  });
}

}  // namespace deeptrain
