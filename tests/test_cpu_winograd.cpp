// Winograd convolutions on the CPU backend (run.conv_algorithm: CONV_WINOGRAD;
// core/backend/cpu_dnnl.h), checked against float64 with error bounds derived from the
// algorithm, not from one machine's results.
//
// oneDNN's F(4x4, 3x3) (jit_wino_4x3:avx512_core) computes each 4x4 output tile as
//     Y = A^T [ sum_c (G W_c G^T) * (B^T X_c B) ] A          (* elementwise)
// from the 6x6 input tile X_c at (4 ty - pad, 4 tx - pad); the weight gradient's tiles use
// transforms G' (6x4) and A' (6x3) on 4x4 tiles of dy. The matrices below are oneDNN's
// (interpolation points 0, +-0.625, +-1.5 and infinity, scaled; src/cpu/x64/
// jit_avx512_core_f32_wino_conv_4x3*.cpp); WinogradMatrices checks that they compute the
// convolution exactly in f64. Every stage is a short linear map computed in f32 (the constants
// themselves rounded to f32), so to first order each result lies within
//     gamma_K * ( |A^T| [ sum_c (|G||W_c||G^T|) * (|B^T||X_c||B|) ] |A| )
// of the exact value, K = (terms summed over channels, images or tiles) + kStages, kStages
// counting the roundings of the transforms (at most 4 per stage, 6 stages) and of the
// constants. The bound is taken per tile, in f64. The tests also assert that the results
// differ from the direct kernels' (Winograd really ran) and that passes outside the rule
// (16 channels' forward and backward-data, stride 2, 1x1) are the direct kernels' bit for bit.
//
// On a processor without AVX-512 (or oneDNN limited to AVX2) Winograd is refused, which the last
// tests check; the others are then skipped.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>

#include "cli_util.h"
#include "error_util.h"
#include "op_cases.h"
#include "core/backend/backend.h"
#include "core/error.h"

namespace deeptrain {
namespace {

constexpr int64_t kStages = 32;

double gamma_f32(int64_t n) {
  const double e = double(n) * std::ldexp(1.0, -24);
  return e / (1 - e);
}

using Mat = std::vector<std::vector<double>>;  // rows

// B^T (6x6): the input transform.
const Mat kBT = {{0.87890625, 0, -2.640625, 0, 1, 0},       {0, -1.40625, -2.25, 0.625, 1, 0},
                 {0, 1.40625, -2.25, -0.625, 1, 0},         {0, -0.5859375, -0.390625, 1.5, 1, 0},
                 {0, 0.5859375, -0.390625, -1.5, 1, 0},     {0, 0.87890625, 0, -2.640625, 0, 1}};
// G (6x3): the weight transform of forward and backward-data.
const double ga = 1.13777777777778, gb = 0.688403361344538, gc = 0.26890756302521,
             gd = 0.430252100840336, ge = 0.119514472455649, gf = 0.179271708683473;
const Mat kG = {{ga, 0, 0}, {-gb, -gd, -gc}, {-gb, gd, -gc},
                {ge, gf, gc}, {ge, -gf, gc}, {0, 0, 1}};
// A^T (4x6): the output transform.
const Mat kAT = {{1, 1, 1, 1, 1, 0},
                 {0, 0.625, -0.625, 1.5, -1.5, 0},
                 {0, 0.390625, 0.390625, 2.25, 2.25, 0},
                 {0, 0.244140625, -0.244140625, 3.375, -3.375, 1}};
// The weight gradient's: G' (6x4) on a 4x4 tile of dy, A'^T (3x6) to the 3x3 gradient.
const double gg = 0.168067226890756, gh = 0.403361344537815;
const Mat kGw = {{ga, 0, 0, 0},     {-gb, -gd, -gc, -gg}, {-gb, gd, -gc, gg},
                 {ge, gf, gc, gh},  {ge, -gf, gc, -gh},   {0, 0, 0, 1}};
const Mat kATw = {{1, 1, 1, 1, 1, 0},
                  {0, 0.625, -0.625, 1.5, -1.5, 0},
                  {0, 0.390625, 0.390625, 2.25, 2.25, 1}};

Mat transpose(const Mat& a) {
  Mat t(a[0].size(), std::vector<double>(a.size()));
  for (size_t i = 0; i < a.size(); ++i)
    for (size_t j = 0; j < a[0].size(); ++j) t[j][i] = a[i][j];
  return t;
}
Mat mul(const Mat& a, const Mat& b) {
  Mat c(a.size(), std::vector<double>(b[0].size(), 0.0));
  for (size_t i = 0; i < a.size(); ++i)
    for (size_t k = 0; k < b.size(); ++k)
      for (size_t j = 0; j < b[0].size(); ++j) c[i][j] += a[i][k] * b[k][j];
  return c;
}
Mat absolute(Mat a) {
  for (auto& row : a)
    for (double& v : row) v = std::fabs(v);
  return a;
}
// L a R^T.
Mat sandwich(const Mat& l, const Mat& a, const Mat& r) { return mul(mul(l, a), transpose(r)); }

// The 1-d identities behind the 2-d algorithm, in f64: the convolution of a 6-tap input with a
// 3-tap filter (4 outputs), and the correlation of a 6-tap input with 4 gradients (3 taps).
TEST(WinogradMatrices, ComputeTheConvolutionExactly) {
  std::mt19937 gen(7);
  std::uniform_real_distribution<double> dist(-1, 1);
  for (int trial = 0; trial < 20; ++trial) {
    Mat x(6, std::vector<double>(1)), w(3, std::vector<double>(1)), d(4, std::vector<double>(1));
    for (auto& v : x) v[0] = dist(gen);
    for (auto& v : w) v[0] = dist(gen);
    for (auto& v : d) v[0] = dist(gen);
    const Mat u = mul(kG, w), v = mul(kBT, x), uw = mul(kGw, d);
    Mat m(6, std::vector<double>(1)), mw(6, std::vector<double>(1));
    for (int i = 0; i < 6; ++i) {
      m[i][0] = u[i][0] * v[i][0];
      mw[i][0] = uw[i][0] * v[i][0];
    }
    const Mat y = mul(kAT, m), dw = mul(kATw, mw);
    for (int i = 0; i < 4; ++i) {
      double want = 0;
      for (int r = 0; r < 3; ++r) want += w[r][0] * x[i + r][0];
      EXPECT_NEAR(y[i][0], want, 1e-12) << "output " << i;
    }
    for (int r = 0; r < 3; ++r) {
      double want = 0;
      for (int i = 0; i < 4; ++i) want += d[i][0] * x[i + r][0];
      EXPECT_NEAR(dw[r][0], want, 1e-12) << "tap " << r;
    }
  }
}

using testing_util::uniform_f32;

std::unique_ptr<Backend> winograd_backend(std::string* why) {
  BackendOptions opt;
  opt.conv = ConvAlgo::winograd;
  return testing_util::cpu_backend_or_reason(opt, why);
}
Tensor f64(const Tensor& t) {
  Tensor out = Tensor::empty(t.shape(), DType::f64);
  for (int64_t i = 0; i < t.numel(); ++i) out.data<double>()[i] = t.data<float>()[i];
  return out;
}

// A plain (n, c, h, w) f32 tensor read with zeros outside the image.
struct Image {
  const Tensor& t;
  double at(int64_t n, int64_t c, int64_t y, int64_t x) const {
    if (y < 0 || y >= t.dim(2) || x < 0 || x >= t.dim(3)) return 0;
    return t.data<float>()[((n * t.dim(1) + c) * t.dim(2) + y) * t.dim(3) + x];
  }
};

// |B^T||X||B| for the 6x6 input tile of (sample b, channel c) at (y0, x0).
Mat input_tile_magnitude(const Image& img, int64_t b, int64_t c, int64_t y0, int64_t x0) {
  Mat t(6, std::vector<double>(6));
  for (int a = 0; a < 6; ++a)
    for (int e = 0; e < 6; ++e) t[a][e] = std::fabs(img.at(b, c, y0 + a, x0 + e));
  const Mat aBT = absolute(kBT);
  return sandwich(aBT, t, aBT);
}

// The forward bound's magnitude term for every output of a 3x3 stride-1 convolution of x
// (n, c, h, w) with w (k, c, 3, 3) and padding pad, outputs (n, k, p, q): per 4x4 tile,
// |A^T| [sum_c (|G||W_c||G^T|) * (|B^T||X_c||B|)] |A|.
Tensor forward_magnitude(const Tensor& x, const Tensor& w, int64_t pad, int64_t p, int64_t q) {
  const int64_t n = x.dim(0), c = x.dim(1), k = w.dim(0);
  const Mat aG = absolute(kG), aAT = absolute(kAT);
  std::vector<Mat> wt(static_cast<size_t>(k * c));  // |G||W||G^T| per (k, c)
  for (int64_t o = 0; o < k; ++o)
    for (int64_t i = 0; i < c; ++i) {
      Mat f(3, std::vector<double>(3));
      for (int r = 0; r < 3; ++r)
        for (int s = 0; s < 3; ++s)
          f[r][s] = std::fabs(w.data<float>()[((o * c + i) * 3 + r) * 3 + s]);
      wt[size_t(o * c + i)] = sandwich(aG, f, aG);
    }
  Tensor out = Tensor::zeros({n, k, p, q}, DType::f64);
  const Image img{x};
  for (int64_t b = 0; b < n; ++b)
    for (int64_t ty = 0; ty * 4 < p; ++ty)
      for (int64_t tx = 0; tx * 4 < q; ++tx) {
        std::vector<Mat> xt(static_cast<size_t>(c));  // |B^T||X_c||B|
        for (int64_t i = 0; i < c; ++i)
          xt[size_t(i)] = input_tile_magnitude(img, b, i, ty * 4 - pad, tx * 4 - pad);
        for (int64_t o = 0; o < k; ++o) {
          Mat m(6, std::vector<double>(6, 0.0));
          for (int64_t i = 0; i < c; ++i)
            for (int a = 0; a < 6; ++a)
              for (int e = 0; e < 6; ++e)
                m[a][e] += wt[size_t(o * c + i)][a][e] * xt[size_t(i)][a][e];
          const Mat y = sandwich(aAT, m, aAT);
          for (int a = 0; a < 4 && ty * 4 + a < p; ++a)
            for (int e = 0; e < 4 && tx * 4 + e < q; ++e)
              out.data<double>()[((b * k + o) * p + ty * 4 + a) * q + tx * 4 + e] = y[a][e];
        }
      }
  return out;
}

// The weight gradient's magnitude term: sum over images and 4x4 tiles of dy of
// |A'^T| [(|G'||D||G'^T|) * (|B^T||X_c||B|)] |A'|, per (k, c, r, s).
Tensor weight_grad_magnitude(const Tensor& x, const Tensor& dy, int64_t pad) {
  const int64_t n = x.dim(0), c = x.dim(1), k = dy.dim(1), p = dy.dim(2), q = dy.dim(3);
  const Mat aGw = absolute(kGw), aATw = absolute(kATw);
  Tensor out = Tensor::zeros({k, c, 3, 3}, DType::f64);
  const Image img{x}, grad{dy};
  for (int64_t b = 0; b < n; ++b)
    for (int64_t ty = 0; ty * 4 < p; ++ty)
      for (int64_t tx = 0; tx * 4 < q; ++tx) {
        std::vector<Mat> xt(static_cast<size_t>(c)), dt(static_cast<size_t>(k));
        for (int64_t i = 0; i < c; ++i)
          xt[size_t(i)] = input_tile_magnitude(img, b, i, ty * 4 - pad, tx * 4 - pad);
        for (int64_t o = 0; o < k; ++o) {
          Mat t(4, std::vector<double>(4));
          for (int a = 0; a < 4; ++a)
            for (int e = 0; e < 4; ++e) t[a][e] = std::fabs(grad.at(b, o, ty * 4 + a, tx * 4 + e));
          dt[size_t(o)] = sandwich(aGw, t, aGw);
        }
        for (int64_t o = 0; o < k; ++o)
          for (int64_t i = 0; i < c; ++i) {
            Mat m(6, std::vector<double>(6));
            for (int a = 0; a < 6; ++a)
              for (int e = 0; e < 6; ++e) m[a][e] = dt[size_t(o)][a][e] * xt[size_t(i)][a][e];
            const Mat g = sandwich(aATw, m, aATw);
            for (int r = 0; r < 3; ++r)
              for (int s = 0; s < 3; ++s)
                out.data<double>()[((o * c + i) * 3 + r) * 3 + s] += g[r][s];
          }
      }
  return out;
}

// got within gamma_terms * (magnitude + extra) of want, element by element.
void expect_within(const Tensor& got, const Tensor& want, const Tensor& magnitude, double extra,
                   int64_t terms, const std::string& what) {
  ASSERT_EQ(got.numel(), want.numel()) << what;
  const double g = gamma_f32(terms);
  int64_t over = -1;
  double worst = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double d = std::fabs(double(got.data<float>()[i]) - want.data<double>()[i]);
    const double bound = g * (magnitude.data<double>()[i] + extra);
    worst = std::max(worst, d / bound);
    if (!(d <= bound) && over < 0) over = i;
  }
  EXPECT_EQ(over, -1) << what << ": element " << over << " is off by more than its bound";
  // The tightness, for the log: how close the worst element came to its bound.
  ::testing::Test::RecordProperty(what + "_worst_error_over_bound", std::to_string(worst));
  std::printf("%s: largest error / bound %.3g\n", what.c_str(), worst);
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.numel() == b.numel() &&
         std::memcmp(a.raw(), b.raw(), size_t(a.numel()) * dtype_size(a.dtype())) == 0;
}

struct Case {
  const char* name;
  int64_t n, c, h, w, k, pad;
};
// Channels at the rule's edge (32) and above; sizes that leave partial tiles; both paddings.
const Case kCases[] = {{"c32_k48_10x9_pad1", 2, 32, 10, 9, 48, 1},
                       {"c64_k32_7x7_pad1", 3, 64, 7, 7, 32, 1},
                       {"c32_k32_9x11_pad0", 2, 32, 9, 11, 32, 0},
                       {"resnet_s3", 2, 64, 7, 7, 64, 1}};

class CpuWinogradConv : public ::testing::TestWithParam<Case> {};

TEST_P(CpuWinogradConv, ForwardAndBackwardWithinWinogradBounds) {
  std::string why;
  std::unique_ptr<Backend> wino = winograd_backend(&why);
  if (!wino) GTEST_SKIP() << why;
  std::unique_ptr<Backend> direct = make_backend("cpu"), ref = make_backend("cpu-ref");
  const Case& cs = GetParam();
  const ConvGeom g = ConvGeom::make(cs.n, cs.c, cs.h, cs.w, cs.k, 3, 3, 1, 1, cs.pad, cs.pad);
  const Tensor x = uniform_f32({g.n, g.c, g.h, g.w}, 1), w = uniform_f32({g.k, g.c, 3, 3}, 2);
  const Tensor b = uniform_f32({g.k}, 3), dy = uniform_f32({g.n, g.k, g.p, g.q}, 4);

  // Forward with a bias (one more term) and with a fused ReLU (1-Lipschitz).
  const Tensor mag = forward_magnitude(x, w, g.pad_h, g.p, g.q);
  for (bool relu : {false, true}) {
    Tensor y = Tensor::empty({g.n, g.k, g.p, g.q}, DType::f32);
    Tensor yd = Tensor::empty(y.shape(), DType::f32);
    wino->conv2d_forward(g, x, w, b, y, relu);
    direct->conv2d_forward(g, x, w, b, yd, relu);
    Tensor want = Tensor::empty(y.shape(), DType::f64);
    ref->conv2d_forward(g, f64(x), f64(w), f64(b), want, relu);
    const std::string what = std::string("forward") + (relu ? "_relu" : "");
    expect_within(wino->to_plain(y), want, mag, 1.0, g.c + kStages, what);
    EXPECT_FALSE(bit_equal(wino->to_plain(y), direct->to_plain(yd)))
        << what << ": the Winograd backend gave the direct kernels' result";
  }

  // Backward. dx is the forward algorithm on dy with the filters turned by 180 degrees, their
  // channel roles swapped and padding 2 - pad; dw and db sum over images and tiles.
  Tensor y = Tensor::empty({g.n, g.k, g.p, g.q}, DType::f32);
  wino->conv2d_forward(g, x, w, b, y, false);
  Tensor dyc = dy.clone(), dx = Tensor::empty(x.shape(), DType::f32);
  Tensor dw = Tensor::empty(w.shape(), DType::f32), db = Tensor::empty(b.shape(), DType::f32);
  wino->conv2d_backward(g, x, w, y, dyc, false, &dx, dw, &db);
  Tensor dyd = dy.clone(), dxd = Tensor::empty(x.shape(), DType::f32);
  Tensor dwd = Tensor::empty(w.shape(), DType::f32), dbd = Tensor::empty(b.shape(), DType::f32);
  direct->conv2d_backward(g, x, w, y, dyd, false, &dxd, dwd, &dbd);

  Tensor wx = Tensor::empty(x.shape(), DType::f64), ww = Tensor::empty(w.shape(), DType::f64);
  Tensor wb = Tensor::empty(b.shape(), DType::f64);
  Tensor y64 = Tensor::zeros(y.shape(), DType::f64), d64 = f64(dy);
  ref->conv2d_backward(g, f64(x), f64(w), y64, d64, false, &wx, ww, &wb);

  Tensor turned = Tensor::empty({g.c, g.k, 3, 3}, DType::f32);
  for (int64_t o = 0; o < g.k; ++o)
    for (int64_t i = 0; i < g.c; ++i)
      for (int r = 0; r < 3; ++r)
        for (int s = 0; s < 3; ++s)
          turned.data<float>()[((i * g.k + o) * 3 + r) * 3 + s] =
              w.data<float>()[((o * g.c + i) * 3 + 2 - r) * 3 + 2 - s];
  const Tensor dx_mag = forward_magnitude(dy, turned, 2 - g.pad_h, g.h, g.w);
  expect_within(wino->to_plain(dx), wx, dx_mag, 0.0, g.k + kStages, "dx");
  EXPECT_FALSE(bit_equal(wino->to_plain(dx), direct->to_plain(dxd))) << "dx: direct's result";

  const int64_t tiles = g.n * ((g.p + 3) / 4) * ((g.q + 3) / 4);
  expect_within(dw, ww, weight_grad_magnitude(x, dy, g.pad_h), 0.0, tiles + kStages, "dw");
  EXPECT_FALSE(bit_equal(dw, dwd)) << "dw: direct's result";

  Tensor db_mag = Tensor::zeros(b.shape(), DType::f64);
  for (int64_t i = 0; i < dy.numel(); ++i)
    db_mag.data<double>()[(i / (g.p * g.q)) % g.k] += std::fabs(dy.data<float>()[i]);
  expect_within(db, wb, db_mag, 0.0, g.n * g.p * g.q + 1, "db");
}

INSTANTIATE_TEST_SUITE_P(Cases, CpuWinogradConv, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

// The rule: 16 channels take Winograd in the weight gradient only (there the forward and
// backward-data transforms cost more than they save); stride 2 and 1x1 convolutions stay
// direct. A direct output must be the direct backend's bit for bit; a Winograd one must differ
// from it and lie within its bound.
TEST(CpuWinogradRule, EachPassOnTheAlgorithmTheRuleGives) {
  std::string why;
  std::unique_ptr<Backend> wino = winograd_backend(&why);
  if (!wino) GTEST_SKIP() << why;
  std::unique_ptr<Backend> direct = make_backend("cpu"), ref = make_backend("cpu-ref");
  struct Rule {
    ConvGeom g;
    bool winograd[3];  // y, dx, dw
  };
  const Rule rules[] = {{ConvGeom::make(2, 16, 12, 12, 16, 3, 3, 1, 1, 1, 1), {false, false, true}},
                        {ConvGeom::make(2, 32, 12, 12, 32, 3, 3, 2, 2, 1, 1), {false, false, false}},
                        {ConvGeom::make(2, 32, 12, 12, 64, 1, 1, 1, 1, 0, 0), {false, false, false}}};
  for (const Rule& rule : rules) {
    const ConvGeom& g = rule.g;
    const std::string what = "c " + std::to_string(g.c) + " k " + std::to_string(g.k) + " " +
                             std::to_string(g.r) + "x" + std::to_string(g.s) + " stride " +
                             std::to_string(g.stride_h);
    const Tensor x = uniform_f32({g.n, g.c, g.h, g.w}, 5), w = uniform_f32({g.k, g.c, g.r, g.s}, 6);
    const Tensor dy = uniform_f32({g.n, g.k, g.p, g.q}, 7);
    Tensor outs[2][3];
    Backend* backends[2] = {wino.get(), direct.get()};
    for (int i = 0; i < 2; ++i) {
      Tensor y = Tensor::empty({g.n, g.k, g.p, g.q}, DType::f32);
      backends[i]->conv2d_forward(g, x, w, Tensor(), y, false);
      Tensor d = dy.clone(), dx = Tensor::empty(x.shape(), DType::f32);
      Tensor dw = Tensor::empty(w.shape(), DType::f32);
      backends[i]->conv2d_backward(g, x, w, y, d, false, &dx, dw, nullptr);
      outs[i][0] = backends[i]->to_plain(y);
      outs[i][1] = backends[i]->to_plain(dx);
      outs[i][2] = dw;
    }
    const char* names[3] = {"y", "dx", "dw"};
    for (int j = 0; j < 3; ++j)
      EXPECT_EQ(bit_equal(outs[0][j], outs[1][j]), !rule.winograd[j])
          << what << ": " << names[j] << (rule.winograd[j] ? " is the direct kernels'"
                                                            : " differs from the direct kernels'");
    if (rule.winograd[2]) {
      Tensor wx = Tensor::empty(x.shape(), DType::f64), ww = Tensor::empty(w.shape(), DType::f64);
      Tensor y64 = Tensor::zeros({g.n, g.k, g.p, g.q}, DType::f64), d64 = f64(dy);
      ref->conv2d_backward(g, f64(x), f64(w), y64, d64, false, &wx, ww, nullptr);
      const int64_t tiles = g.n * ((g.p + 3) / 4) * ((g.q + 3) / 4);
      expect_within(outs[0][2], ww, weight_grad_magnitude(x, dy, g.pad_h), 0.0, tiles + kStages,
                    what + " dw");
    }
  }
}

// Winograd is oneDNN's AVX-512 fp32 code: elsewhere, and with bf16 math or another backend, it is
// an InputError naming what is missing, with exit code 2 and no run directory.
TEST(CpuWinogradRefusals, NamedErrors) {
  BackendOptions opt;
  opt.conv = ConvAlgo::winograd;
  EXPECT_CONTAINS(error_of([&] { make_backend("cpu-ref", opt); }), "cpu-ref");
  opt.math = MathMode::bf16;
  // Either refusal names what is missing: bf16 Winograd kernels, or bf16 itself.
  const std::string m = error_of([&] { make_backend("cpu", opt); });
  EXPECT_TRUE(m.find("fp32") != std::string::npos || m.find("BF16") != std::string::npos) << m;
}

TEST(CpuWinogradRefusals, ProcessorWithoutAvx512IsAClearError) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not fetched (scripts/fetch_data.sh)";
  TempDir dir;
  const std::string run = (dir.path / "run").string();
  CommandResult r = run_command(
      "ONEDNN_MAX_CPU_ISA=AVX2 " +
      deeptrain_cmd("train " + std::string(DEEPTRAIN_SOURCE_DIR) +
                    "/examples/deep_convnet_mnist.prototxt --conv-algorithm winograd --epochs 1 "
                    "--train-limit 100 --data-dir " + std::string(DEEPTRAIN_DATA_DIR) +
                    "/mnist --run-dir " + run));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("AVX-512"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("AVX2"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(run)) << "a run directory was made before the refusal";
}

}  // namespace
}  // namespace deeptrain
