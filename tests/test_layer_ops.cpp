// The CPU backends' layer ops (Backend::bn_*, plane_mean, add, copy_rows, accumulate) against
// their formulas, and in the blocked layouts the fast backend writes against plain.
//
// Formulas: a long double reference of each op's definition. Tolerances are rounding bounds of
// the op's f64 arithmetic, with u = 2^-53: a sum of N terms is within N * u * sum|term| of the
// exact one (recursive summation; CpuBackend's two-level sum does no worse), each further
// operation adds one u relative to the magnitudes it combines, and an f32 result adds one
// rounding of 2^-24 relative. Layouts and thread counts: bit for bit, since every channel's
// sums run in the same order whatever the layout and the threads (backend.h).
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/backend/cpu.h"
#include "core/micro_shards.h"
#include "core/threads.h"
#include "gradcheck_util.h"
#ifdef DEEPTRAIN_HAVE_DNNL
#include "core/backend/cpu_dnnl.h"
#endif

using namespace deeptrain;
using testing_util::random_f32;

namespace {

using Ld = long double;
constexpr double kU = 0x1p-53;

double unit_roundoff(DType t) { return t == DType::f32 ? 0x1p-24 : kU; }

Tensor random_t(const Shape& s, uint64_t seed, DType t, double scale = 1.0, double offset = 0.0) {
  Tensor x = random_f32(s, seed, scale, offset);
  return t == DType::f32 ? x : x.to(DType::f64);
}
double at(const Tensor& t, int64_t i) {
  return t.dtype() == DType::f32 ? double(t.data<float>()[i]) : t.data<double>()[i];
}

// |got[i] - ref[i]| <= bound[i] for every i (got plain, of ref's size).
::testing::AssertionResult within(const Tensor& got, const std::vector<Ld>& ref,
                                  const std::vector<double>& bound, const char* what) {
  if (got.numel() != int64_t(ref.size()) || got.layout() != Layout::plain)
    return ::testing::AssertionFailure() << what << ": " << got.shape().str() << " "
                                         << layout_name(got.layout()) << " for " << ref.size();
  for (size_t i = 0; i < ref.size(); ++i) {
    const double err = std::fabs(double(Ld(at(got, int64_t(i))) - ref[i]));
    if (!(err <= bound[i]))
      return ::testing::AssertionFailure() << what << "[" << i << "] = " << at(got, int64_t(i))
                                           << ", formula " << double(ref[i]) << ", bound "
                                           << bound[i];
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult same_bits(const Tensor& a, const Tensor& b, const std::string& what) {
  if (a.nbytes() != b.nbytes() || std::memcmp(a.raw(), b.raw(), a.nbytes()) != 0)
    return ::testing::AssertionFailure() << what << " differs";
  return ::testing::AssertionSuccess();
}

// The layout formula of core/tensor.h, written out independently of the backend's kernels.
Tensor to_blocked(const Tensor& plain, int B) {
  const int64_t n = plain.dim(0), c = plain.dim(1), s = plain.dim(2) * plain.dim(3);
  Tensor out = Tensor::empty(plain.shape(), DType::f32);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t p = 0; p < s; ++p)
        out.data<float>()[((i * (c / B) + ch / B) * s + p) * B + ch % B] =
            plain.data<float>()[(i * c + ch) * s + p];
  out.set_layout(B == 16 ? Layout::nChw16c : Layout::nChw8c);
  return out;
}
Tensor from_blocked(const Tensor& t) {
  const int B = layout_block(t.layout());
  if (B == 1) return t;
  const int64_t n = t.dim(0), c = t.dim(1), s = t.dim(2) * t.dim(3);
  Tensor out = Tensor::empty(t.shape(), DType::f32);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t p = 0; p < s; ++p)
        out.data<float>()[(i * c + ch) * s + p] =
            t.data<float>()[((i * (c / B) + ch / B) * s + p) * B + ch % B];
  return out;
}

// An activation (n, C, ...) as (n, C, S): element (i, c, s).
struct View {
  int64_t n, C, S;
  int64_t at(int64_t i, int64_t c, int64_t s) const { return (i * C + c) * S + s; }
};
View view_of(const Tensor& x, int64_t C) { return {x.dim(0), C, x.numel() / (x.dim(0) * C)}; }
Ld relu_g(const Tensor& dy, const Tensor* y, int64_t e) {
  return y && !(at(*y, e) > 0) ? Ld(0) : Ld(at(dy, e));
}

// The activations the tests run on: 4-d per channel, 2-d per feature, 4-d per activation.
struct Case {
  const char* name;
  Shape shape;
  int64_t C;
};
const Case kCases[] = {{"per_channel", {5, 6, 4, 3}, 6},
                       {"per_feature", {7, 9}, 9},
                       {"per_activation", {3, 2, 3, 2}, 12}};

TEST(BatchNormOps, SumsMatchTheFormula) {
  CpuBackend be;
  for (DType dt : {DType::f32, DType::f64})
    for (const Case& k : kCases) {
      SCOPED_TRACE(testing::Message() << k.name << " " << dtype_name(dt));
      const Tensor x = random_t(k.shape, 1, dt, 3.0, 2.0), dy = random_t(k.shape, 2, dt);
      const Tensor relu_y = random_t(k.shape, 3, dt);
      const View v = view_of(x, k.C);
      const double N = double(v.n * v.S);
      Tensor mean = random_t({k.C}, 4, DType::f64, 0.5, 2.0);
      Tensor sums = Tensor::empty({k.C}, DType::f64), sq = Tensor::empty({k.C}, DType::f64);
      be.bn_sums(x, nullptr, sums);
      be.bn_sums(x, &mean, sq);
      std::vector<Ld> r_s(k.C), r_q(k.C);
      std::vector<double> b_s(k.C), b_q(k.C);
      for (int64_t c = 0; c < k.C; ++c) {
        Ld s = 0, q = 0, as = 0;
        for (int64_t i = 0; i < v.n; ++i)
          for (int64_t p = 0; p < v.S; ++p) {
            const Ld xv = at(x, v.at(i, c, p)), d = xv - Ld(at(mean, c));
            s += xv;
            as += std::fabs(xv);
            q += d * d;
          }
        r_s[c] = s;
        r_q[c] = q;
        b_s[c] = N * kU * double(as);
        b_q[c] = (N + 3) * kU * double(q);  // each term: a difference and a square
      }
      EXPECT_TRUE(within(sums, r_s, b_s, "sums"));
      EXPECT_TRUE(within(sq, r_q, b_q, "centred squares"));

      for (const Tensor* ry : {static_cast<const Tensor*>(nullptr), &relu_y}) {
        Tensor gs = Tensor::empty({2 * k.C}, DType::f64);
        be.bn_grad_sums(x, ry, dy, mean, gs);
        std::vector<Ld> ref(2 * k.C);
        std::vector<double> bound(2 * k.C);
        for (int64_t c = 0; c < k.C; ++c) {
          Ld g = 0, gx = 0, ag = 0, agx = 0;
          for (int64_t i = 0; i < v.n; ++i)
            for (int64_t p = 0; p < v.S; ++p) {
              const int64_t e = v.at(i, c, p);
              const Ld gv = relu_g(dy, ry, e), t = gv * (Ld(at(x, e)) - Ld(at(mean, c)));
              g += gv;
              gx += t;
              ag += std::fabs(gv);
              agx += std::fabs(t);
            }
          ref[c] = g;
          ref[k.C + c] = gx;
          bound[c] = N * kU * double(ag);
          bound[k.C + c] = (N + 3) * kU * double(agx);
        }
        EXPECT_TRUE(within(gs, ref, bound, ry ? "masked gradient sums" : "gradient sums"));
      }
    }
}

TEST(BatchNormOps, MapsMatchTheFormula) {
  CpuBackend be;
  for (DType dt : {DType::f32, DType::f64})
    for (const Case& k : kCases) {
      const Tensor x = random_t(k.shape, 11, dt, 3.0, 2.0), dy = random_t(k.shape, 12, dt);
      const View v = view_of(x, k.C);
      const Tensor mean = random_t({k.C}, 13, DType::f64, 0.5, 2.0);
      const Tensor scale = random_t({k.C}, 14, DType::f64), shift = random_t({k.C}, 15, DType::f64);
      const Tensor kk = random_t({k.C}, 16, DType::f64), m = random_t({k.C}, 17, DType::f64);
      const Tensor r = random_t({k.C}, 18, DType::f64, 0.1);
      const double uo = unit_roundoff(dt);
      for (bool relu : {false, true}) {
        SCOPED_TRACE(testing::Message() << k.name << " " << dtype_name(dt) << " relu " << relu);
        Tensor y = Tensor::empty(x.shape(), dt), dx = Tensor::empty(x.shape(), dt);
        be.bn_apply(x, mean, scale, shift, relu, y);
        be.bn_input_grad(x, relu ? &y : nullptr, dy, mean, kk, m, r, dx);
        std::vector<Ld> ry(x.numel()), rdx(x.numel());
        std::vector<double> by(x.numel()), bdx(x.numel());
        for (int64_t i = 0; i < v.n; ++i)
          for (int64_t c = 0; c < k.C; ++c)
            for (int64_t p = 0; p < v.S; ++p) {
              const int64_t e = v.at(i, c, p);
              const Ld d = Ld(at(x, e)) - Ld(at(mean, c));
              const Ld t = d * Ld(at(scale, c)), yv = t + Ld(at(shift, c));
              ry[e] = relu && !(yv > 0) ? 0 : yv;
              // three f64 roundings (difference, product, sum), then the result's
              by[e] = uo * std::fabs(double(yv)) + 4 * kU * double(std::fabs(t) + std::fabs(Ld(at(shift, c))));
              const Ld g = relu && !(at(y, e) > 0) ? 0 : Ld(at(dy, e));
              const Ld a = Ld(at(kk, c)) * g, b = Ld(at(r, c)) * d;
              rdx[e] = a + Ld(at(m, c)) - b;
              bdx[e] = uo * std::fabs(double(rdx[e])) +
                       6 * kU * double(std::fabs(a) + std::fabs(Ld(at(m, c))) + std::fabs(b));
            }
        EXPECT_TRUE(within(y, ry, by, "y"));
        EXPECT_TRUE(within(dx, rdx, bdx, "dx"));
      }
    }
}

TEST(BatchNormOps, StatisticsMatchTheFormula) {
  CpuBackend be;
  const int64_t C = 11;
  const double eps = 1e-5, mom = 0.9;
  for (DType pt : {DType::f32, DType::f64})
    for (double count : {0.0, 123.0})
      for (bool training : {true, false}) {
        SCOPED_TRACE(testing::Message() << dtype_name(pt) << " count " << count << " training "
                                        << training);
        const Tensor gamma = random_t({C}, 21, pt, 0.5, 1.0), beta = random_t({C}, 22, pt);
        const Tensor sums = random_t({C}, 23, DType::f64, 50.0);
        Tensor sq = random_t({C}, 24, DType::f64, 20.0, 40.0);
        for (int64_t c = 0; c < C; ++c) sq.data<double>()[c] = std::fabs(sq.data<double>()[c]);
        const Tensor rm0 = random_t({C}, 25, DType::f64), rv0 = random_t({C}, 26, DType::f64, 0.1, 1.0);
        Tensor grad_sums = random_t({2 * C}, 27, DType::f64, 10.0);
        const Tensor grad_sums0 = grad_sums.clone();
        Tensor rm = rm0.clone(), rv = rv0.clone();
        Tensor mean = Tensor::zeros({C}, DType::f64), invstd = Tensor::zeros({C}, DType::f64);
        Tensor scale = Tensor::zeros({C}, DType::f64), shift = Tensor::zeros({C}, DType::f64);
        Tensor k = Tensor::zeros({C}, DType::f64), m = Tensor::zeros({C}, DType::f64);
        Tensor r = Tensor::zeros({C}, DType::f64);
        Tensor dgamma = Tensor::zeros({C}, pt), dbeta = Tensor::zeros({C}, pt);
        if (training) be.bn_mean(sums, count, mean);
        be.bn_normalizer(training ? &sq : nullptr, count, eps, mom, gamma, beta, rm, rv, mean,
                         invstd, scale, shift);
        be.bn_param_grads(grad_sums, invstd, dgamma, dbeta);
        be.bn_input_coefficients(grad_sums, invstd, gamma, count, training, k, m, r);

        std::vector<Ld> f_mean(C), f_invstd(C), f_rm(C), f_rv(C), f_scale(C), f_shift(C);
        std::vector<Ld> f_gs(2 * C), f_dg(C), f_db(C), f_k(C), f_m(C), f_r(C);
        std::vector<double> b_mean(C), b_invstd(C), b_rm(C), b_rv(C), b_scale(C), b_shift(C, 0.0);
        std::vector<double> b_gs(2 * C), b_dg(C), b_db(C), b_k(C), b_m(C), b_r(C);
        const double up = unit_roundoff(pt);
        for (int64_t c = 0; c < C; ++c) {
          Ld mu, var;
          if (training) {
            mu = count > 0 ? Ld(at(sums, c)) / count : 0;
            var = count > 0 ? Ld(at(sq, c)) / count : 0;
            const Ld a = Ld(mom) * at(rm0, c), b = (1 - Ld(mom)) * mu;
            const Ld a2 = Ld(mom) * at(rv0, c), b2 = (1 - Ld(mom)) * var;
            f_rm[c] = a + b;
            f_rv[c] = a2 + b2;
            b_rm[c] = 6 * kU * double(std::fabs(a) + std::fabs(b));
            b_rv[c] = 6 * kU * double(std::fabs(a2) + std::fabs(b2));
          } else {
            mu = at(rm0, c);
            var = at(rv0, c);
            f_rm[c] = at(rm0, c);
            f_rv[c] = at(rv0, c);
            b_rm[c] = b_rv[c] = 0;
          }
          f_mean[c] = mu;
          b_mean[c] = kU * std::fabs(double(mu));
          const Ld is = 1 / std::sqrt(var + Ld(eps));
          f_invstd[c] = is;
          b_invstd[c] = 5 * kU * double(is);  // a quotient, a sum, a root and a quotient
          f_scale[c] = Ld(at(gamma, c)) * is;
          b_scale[c] = 7 * kU * std::fabs(double(f_scale[c]));
          f_shift[c] = at(beta, c);
          // bn_param_grads: the second half scaled by invstd; the gradients rounded to pt
          f_gs[c] = at(grad_sums0, c);
          b_gs[c] = 0;
          f_gs[C + c] = Ld(at(grad_sums0, C + c)) * is;
          b_gs[C + c] = 7 * kU * std::fabs(double(f_gs[C + c]));
          f_db[c] = f_gs[c];
          b_db[c] = up * std::fabs(double(f_db[c]));
          f_dg[c] = f_gs[C + c];
          b_dg[c] = up * std::fabs(double(f_dg[c])) + b_gs[C + c];
          // bn_input_coefficients, from the scaled sums
          f_k[c] = Ld(at(gamma, c)) * is;
          b_k[c] = 7 * kU * std::fabs(double(f_k[c]));
          const Ld inv = count > 0 ? 1 / Ld(count) : 0;
          f_m[c] = training ? -f_k[c] * f_gs[c] * inv : 0;
          f_r[c] = training ? f_k[c] * is * f_gs[C + c] * inv : 0;
          b_m[c] = 10 * kU * std::fabs(double(f_m[c]));
          b_r[c] = 25 * kU * std::fabs(double(f_r[c]));  // invstd's error enters three times
        }
        EXPECT_TRUE(within(mean, f_mean, b_mean, "mean"));
        EXPECT_TRUE(within(invstd, f_invstd, b_invstd, "invstd"));
        EXPECT_TRUE(within(rm, f_rm, b_rm, "running_mean"));
        EXPECT_TRUE(within(rv, f_rv, b_rv, "running_var"));
        EXPECT_TRUE(within(scale, f_scale, b_scale, "scale"));
        EXPECT_TRUE(within(shift, f_shift, b_shift, "shift"));
        EXPECT_TRUE(within(grad_sums, f_gs, b_gs, "scaled gradient sums"));
        EXPECT_TRUE(within(dbeta, f_db, b_db, "dbeta"));
        EXPECT_TRUE(within(dgamma, f_dg, b_dg, "dgamma"));
        EXPECT_TRUE(within(k, f_k, b_k, "k"));
        EXPECT_TRUE(within(m, f_m, b_m, "m"));
        EXPECT_TRUE(within(r, f_r, b_r, "r"));
      }
}

// Every activation op of one backend on x (and dy, y) in a layout, results returned plain.
struct ActOuts {
  std::vector<Tensor> t;
};
ActOuts activation_ops(Backend& be, const Tensor& x, const Tensor& dy, const Tensor& other) {
  const int64_t C = x.dim(1);
  const Tensor mean = random_t({C}, 31, DType::f64, 0.5, 2.0);
  const Tensor scale = random_t({C}, 32, DType::f64), shift = random_t({C}, 33, DType::f64);
  const Tensor k = random_t({C}, 34, DType::f64), m = random_t({C}, 35, DType::f64);
  const Tensor r = random_t({C}, 36, DType::f64, 0.1);
  ActOuts o;
  Tensor sums = Tensor::empty({C}, DType::f64), sq = Tensor::empty({C}, DType::f64);
  be.bn_sums(x, nullptr, sums);
  be.bn_sums(x, &mean, sq);
  Tensor y = Tensor::empty(x.shape(), DType::f32), dx = Tensor::empty(x.shape(), DType::f32);
  be.bn_apply(x, mean, scale, shift, true, y);
  EXPECT_EQ(y.layout(), x.layout());
  Tensor gs = Tensor::empty({2 * C}, DType::f64);
  be.bn_grad_sums(x, &y, dy, mean, gs);
  be.bn_input_grad(x, &y, dy, mean, k, m, r, dx);
  EXPECT_EQ(dx.layout(), x.layout());
  Tensor pooled = Tensor::empty({x.dim(0), C}, DType::f32), dpool = Tensor::empty(x.shape(), DType::f32);
  be.plane_mean(x, pooled);
  be.plane_mean_backward(pooled, x.layout(), dpool);
  EXPECT_EQ(dpool.layout(), x.layout());
  Tensor sum = Tensor::empty(x.shape(), DType::f32);
  be.add({x, dy, other}, true, sum);
  EXPECT_EQ(sum.layout(), x.layout());
  be.accumulate(sum, x);
  o.t = {sums, sq, from_blocked(y), gs, from_blocked(dx), pooled, from_blocked(dpool), from_blocked(sum)};
  return o;
}

const char* const kActNames[] = {"sums", "centred squares", "bn_apply", "grad sums", "bn_input_grad",
                                 "plane_mean", "plane_mean_backward", "add + accumulate"};

// 32 channels: four blocks of 8, two of 16.
TEST(LayerOps, BlockedLayoutsAreBitIdenticalToPlain) {
  CpuBackend be;
  const Tensor x = random_f32({3, 32, 5, 4}, 41, 3.0, 2.0), dy = random_f32({3, 32, 5, 4}, 42);
  const Tensor other = random_f32({3, 32, 5, 4}, 43);
  const ActOuts plain = activation_ops(be, x, dy, other);
  for (int B : {8, 16}) {
    const ActOuts b = activation_ops(be, to_blocked(x, B), to_blocked(dy, B), to_blocked(other, B));
    for (size_t i = 0; i < plain.t.size(); ++i)
      EXPECT_TRUE(same_bits(b.t[i], plain.t[i], fmt::format("{} (block {})", kActNames[i], B)));
  }
#ifdef DEEPTRAIN_HAVE_DNNL
  // The fast backend's own blocked tensors, as its convolutions hand them on.
  DnnlBackend dnnl;
  auto native = [&](const Tensor& t) { return to_blocked(t, layout_block(dnnl.blocked_layout())); };
  const ActOuts d = activation_ops(dnnl, native(x), native(dy), native(other));
  for (size_t i = 0; i < plain.t.size(); ++i)
    EXPECT_TRUE(same_bits(d.t[i], plain.t[i], fmt::format("{} (DnnlBackend)", kActNames[i])));
#endif
}

// Large enough for the ops' OpenMP loops to run on several threads.
TEST(LayerOps, SumsDoNotDependOnTheThreadCount) {
  CpuBackend be;
  const Tensor x = random_f32({16, 32, 8, 8}, 51, 3.0, 2.0), dy = random_f32({16, 32, 8, 8}, 52);
  const Tensor other = random_f32({16, 32, 8, 8}, 53);
  const int before = cpu_threads();
  set_cpu_threads(1);
  const ActOuts one = activation_ops(be, to_blocked(x, 8), to_blocked(dy, 8), to_blocked(other, 8));
  set_cpu_threads(3);
  const ActOuts three = activation_ops(be, to_blocked(x, 8), to_blocked(dy, 8), to_blocked(other, 8));
  set_cpu_threads(before);
  for (size_t i = 0; i < one.t.size(); ++i)
    EXPECT_TRUE(same_bits(three.t[i], one.t[i], kActNames[i]));
}

TEST(LayerOps, PoolingAddAndCopiesMatchTheFormula) {
  CpuBackend be;
  for (DType dt : {DType::f32, DType::f64}) {
    SCOPED_TRACE(dtype_name(dt));
    const double uo = unit_roundoff(dt);
    const Tensor x = random_t({3, 4, 5, 6}, 61, dt, 2.0, 1.0);
    const int64_t planes = 12, hw = 30;
    Tensor y = Tensor::empty({3, 4}, dt), dx = Tensor::empty(x.shape(), dt);
    be.plane_mean(x, y);
    be.plane_mean_backward(y, Layout::plain, dx);
    std::vector<Ld> fy(planes), fdx(x.numel());
    std::vector<double> by(planes), bdx(x.numel());
    for (int64_t p = 0; p < planes; ++p) {
      Ld s = 0, as = 0;
      for (int64_t i = 0; i < hw; ++i) {
        s += at(x, p * hw + i);
        as += std::fabs(Ld(at(x, p * hw + i)));
      }
      fy[p] = s / hw;
      by[p] = uo * std::fabs(double(fy[p])) + (hw + 1) * kU * double(as) / hw;
      for (int64_t i = 0; i < hw; ++i) {
        fdx[p * hw + i] = Ld(at(y, p)) / hw;
        bdx[p * hw + i] = (uo + kU) * std::fabs(double(fdx[p * hw + i]));
      }
    }
    EXPECT_TRUE(within(y, fy, by, "plane_mean"));
    EXPECT_TRUE(within(dx, fdx, bdx, "plane_mean_backward"));

    // add: the inputs summed in order in the activations' precision, then the ReLU (exact: the
    // same roundings in the same order).
    const Tensor a = random_t({2, 3, 4, 5}, 62, dt), b = random_t({2, 3, 4, 5}, 63, dt);
    const Tensor c = random_t({2, 3, 4, 5}, 64, dt);
    for (bool relu : {false, true})
      for (size_t n_in : {2, 3}) {
        std::vector<Tensor> xs{a, b, c};
        xs.resize(n_in);
        Tensor sum = Tensor::empty(a.shape(), dt), want = Tensor::empty(a.shape(), dt);
        be.add(xs, relu, sum);
        for (int64_t i = 0; i < a.numel(); ++i) {
          if (dt == DType::f32) {
            float v = a.data<float>()[i] + b.data<float>()[i];
            if (n_in == 3) v += c.data<float>()[i];
            want.data<float>()[i] = relu && !(v > 0) ? 0.0f : v;
          } else {
            double v = a.data<double>()[i] + b.data<double>()[i];
            if (n_in == 3) v += c.data<double>()[i];
            want.data<double>()[i] = relu && !(v > 0) ? 0.0 : v;
          }
        }
        EXPECT_TRUE(same_bits(sum, want, fmt::format("add of {} relu {}", n_in, relu)));
        // accumulate: acc += x, elementwise
        Tensor acc = want.clone();
        be.accumulate(acc, c);
        for (int64_t i = 0; i < a.numel(); ++i) {
          if (dt == DType::f32) want.data<float>()[i] += c.data<float>()[i];
          else want.data<double>()[i] += c.data<double>()[i];
        }
        EXPECT_TRUE(same_bits(acc, want, "accumulate"));
      }

    // copy_rows: 3 rows of 4 from stride 7 at 2 to stride 5 at 1; the rest untouched.
    const Tensor src = random_t({21}, 65, dt);
    Tensor dst = random_t({16}, 66, dt);
    const Tensor before = dst.clone();
    be.copy_rows(src, 2, 7, dst, 1, 5, 4, 3);
    for (int64_t i = 0; i < 16; ++i) {
      const int64_t row = (i - 1) / 5, col = (i - 1) % 5;
      const bool copied = i >= 1 && row < 3 && col < 4;
      EXPECT_EQ(at(dst, i), copied ? at(src, 2 + row * 7 + col) : at(before, i)) << i;
    }
    EXPECT_THROW(be.copy_rows(src, 2, 7, dst, 1, 5, 4, 4), Error);  // out of range
  }
}

// A micro-shard's sums (exact mode) are those of its samples alone: the op on a row range of
// the batch gives what it gives on those samples as a batch of their own.
TEST(BatchNormOps, RowRangesSumAsBatchesOfTheirOwn) {
  CpuBackend be;
  const Tensor x = random_f32({6, 16, 3, 3}, 71, 3.0, 2.0);
  Tensor part = Tensor::empty({16}, DType::f64), alone = Tensor::empty({16}, DType::f64);
  be.bn_sums(batch_rows(to_blocked(x, 8), 2, 5), nullptr, part);
  Tensor rows = Tensor::empty({3, 16, 3, 3}, DType::f32);
  std::memcpy(rows.raw(), x.data<float>() + 2 * 16 * 9, rows.nbytes());
  be.bn_sums(rows, nullptr, alone);
  EXPECT_TRUE(same_bits(part, alone, "sums of rows 2..4"));
}

}  // namespace
