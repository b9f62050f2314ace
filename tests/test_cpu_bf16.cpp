// bf16 math on the CPU backend (run.math: MATH_BF16; core/backend/cpu_dnnl.h): convolutions and
// affine products with bf16 inputs and f32 accumulation, checked against float64 references.
//
// Bounds, derived from the computation rather than from one machine's results. With bf16 math
// the kernels multiply bf16(x_i) * bf16(w_i) (bf16: 8 significant bits; rounding to nearest, so
// relative error at most u = 2^-8), and such a product is exact in f32 (16 significant bits).
// Only the f32 summation of n terms errs: at most gamma_n = n 2^-24 / (1 - n 2^-24) of the sum
// of their magnitudes, plus one rounding of the result. So, element by element,
//     |got - R| <= gamma_{n+1} * A,
// where R is the op computed in f64 on the inputs rounded to bf16 here (round-to-nearest-even,
// written independently of the backend's conversion) and A the same op on their absolute
// values. That bound is tighter than bf16's own error: it pins down that the kernels round
// their inputs to bf16 and nothing more. The test also asserts that the result is nearer R
// than the f64 result of the unrounded inputs, summed over all elements: a kernel that ignored
// bf16 math and computed in f32 fails there.
//
// On a processor without AVX512-BF16 these tests are skipped (the backend refuses bf16 there,
// which the last tests check with oneDNN limited to AVX2).
#include <gtest/gtest.h>

#include <cmath>
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

constexpr double kU = 1.0 / 256;  // bf16's unit roundoff, 2^-8

double gamma_f32(int64_t n) {
  const double e = double(n) * std::ldexp(1.0, -24);
  return e / (1 - e);
}

// The bf16 backend, or why there is none (the test is then skipped with that reason).
using testing_util::uniform_f32;

std::unique_ptr<Backend> bf16_backend(std::string* why) {
  BackendOptions opt;
  opt.math = MathMode::bf16;
  return testing_util::cpu_backend_or_reason(opt, why);
}

// x rounded to bf16 (to nearest, ties to even; NaN is not expected here), as a float.
float round_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}

// t as f64: its values, rounded to bf16 first when `bf16`, as absolute values when `absolute`.
Tensor f64(const Tensor& t, bool bf16 = false, bool absolute = false) {
  Tensor out = Tensor::empty(t.shape(), DType::f64);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float v = t.data<float>()[i];
    const double r = bf16 ? round_bf16(v) : v;
    out.data<double>()[i] = absolute ? std::fabs(r) : r;
  }
  return out;
}

// An op's three f64 results: on the bf16-rounded inputs (R), on their absolute values (A), and
// on the inputs as they are (unrounded).
struct Expected {
  Tensor rounded, magnitude, unrounded;
};

// got (f32, plain) within gamma_{terms+1} * A of R everywhere, and nearer R than the unrounded
// result over all elements (an f32 kernel would be nearer the unrounded one).
void expect_bf16_result(const Tensor& got, const Expected& e, int64_t terms,
                        const std::string& what) {
  ASSERT_EQ(got.numel(), e.rounded.numel()) << what;
  const double g = gamma_f32(terms + 1);
  int64_t over = -1;
  double to_rounded = 0, to_unrounded = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double v = got.data<float>()[i], a = e.magnitude.data<double>()[i];
    const double d = std::fabs(v - e.rounded.data<double>()[i]);
    if (!(d <= g * a)) { over = i; break; }
    to_rounded += d;
    to_unrounded += std::fabs(v - e.unrounded.data<double>()[i]);
  }
  EXPECT_EQ(over, -1) << what << ": element " << over << " got "
                      << (over >= 0 ? got.data<float>()[over] : 0.f) << ", f64 of the bf16 inputs "
                      << (over >= 0 ? e.rounded.data<double>()[over] : 0.0) << ", bound "
                      << (over >= 0 ? g * e.magnitude.data<double>()[over] : 0.0);
  EXPECT_LT(to_rounded, 0.5 * to_unrounded)
      << what << ": summed distance to the bf16 inputs' result " << to_rounded
      << ", to the unrounded inputs' " << to_unrounded << ": the kernels did not read bf16";
}

class CpuBf16Conv : public ::testing::TestWithParam<testing_util::ConvCase> {};

TEST_P(CpuBf16Conv, ForwardAndBackwardWithinBf16Bounds) {
  std::string why;
  std::unique_ptr<Backend> bf = bf16_backend(&why);
  if (!bf) GTEST_SKIP() << why;
  std::unique_ptr<Backend> ref = make_backend("cpu-ref");
  const ConvGeom g = GetParam().geom();
  const Tensor x = uniform_f32({g.n, g.c, g.h, g.w}, 1), w = uniform_f32({g.k, g.c, g.r, g.s}, 2);
  const Tensor b = uniform_f32({g.k}, 3), dy = uniform_f32({g.n, g.k, g.p, g.q}, 4);

  // Forward, with bias and a fused ReLU (1-Lipschitz: the bound still holds). The bias is
  // added in f32, unrounded: one more term of the sum.
  for (bool relu : {false, true}) {
    Tensor y = Tensor::empty({g.n, g.k, g.p, g.q}, DType::f32);
    bf->conv2d_forward(g, x, w, b, y, relu);
    Expected e{Tensor::empty(y.shape(), DType::f64), Tensor::empty(y.shape(), DType::f64),
               Tensor::empty(y.shape(), DType::f64)};
    ref->conv2d_forward(g, f64(x, true), f64(w, true), f64(b), e.rounded, relu);
    ref->conv2d_forward(g, f64(x, true, true), f64(w, true, true), f64(b, false, true),
                        e.magnitude, false);
    ref->conv2d_forward(g, f64(x), f64(w), f64(b), e.unrounded, relu);
    expect_bf16_result(bf->to_plain(y), e, g.c * g.r * g.s + 1,
                       std::string("forward") + (relu ? " + relu" : ""));
  }

  // Backward: dx = conv^T(dy, w), dw = corr(x, dy), db = sum(dy).
  Tensor y = Tensor::empty({g.n, g.k, g.p, g.q}, DType::f32);
  bf->conv2d_forward(g, x, w, b, y, false);
  Tensor dyc = dy.clone(), dx = Tensor::empty(x.shape(), DType::f32);
  Tensor dw = Tensor::empty(w.shape(), DType::f32), db = Tensor::empty(b.shape(), DType::f32);
  bf->conv2d_backward(g, x, w, y, dyc, false, &dx, dw, &db);
  Expected ex, ew, eb;
  auto exact_backward = [&](bool bf16, bool absolute, Tensor& tx, Tensor& tw, Tensor& tb) {
    tx = Tensor::empty(x.shape(), DType::f64);
    tw = Tensor::empty(w.shape(), DType::f64);
    tb = Tensor::empty(b.shape(), DType::f64);
    Tensor y64 = Tensor::zeros(y.shape(), DType::f64), d = f64(dy, bf16, absolute);
    ref->conv2d_backward(g, f64(x, bf16, absolute), f64(w, bf16, absolute), y64, d, false, &tx,
                         tw, &tb);
  };
  exact_backward(true, false, ex.rounded, ew.rounded, eb.rounded);
  exact_backward(true, true, ex.magnitude, ew.magnitude, eb.magnitude);
  exact_backward(false, false, ex.unrounded, ew.unrounded, eb.unrounded);
  expect_bf16_result(bf->to_plain(dx), ex, g.k * g.r * g.s, "dx");
  expect_bf16_result(dw, ew, g.n * g.p * g.q, "dw");
  expect_bf16_result(db, eb, g.n * g.p * g.q, "db");
}

INSTANTIATE_TEST_SUITE_P(Cases, CpuBf16Conv, ::testing::ValuesIn(testing_util::kConvCases),
                         testing_util::case_name<testing_util::ConvCase>);

TEST(CpuBf16Affine, ForwardAndBackwardWithinBf16Bounds) {
  std::string why;
  std::unique_ptr<Backend> bf = bf16_backend(&why);
  if (!bf) GTEST_SKIP() << why;
  std::unique_ptr<Backend> ref = make_backend("cpu-ref");
  const int64_t n = 100, d = 1024, m = 50;  // DeepConvNet's first affine
  const Tensor x = uniform_f32({n, d}, 5), w = uniform_f32({d, m}, 6), b = uniform_f32({m}, 7);
  const Tensor dy = uniform_f32({n, m}, 8);
  Tensor y = Tensor::empty({n, m}, DType::f32);
  bf->affine_forward(x, w, b, y, false);
  Expected ey{Tensor::empty({n, m}, DType::f64), Tensor::empty({n, m}, DType::f64),
              Tensor::empty({n, m}, DType::f64)};
  ref->affine_forward(f64(x, true), f64(w, true), f64(b), ey.rounded, false);
  ref->affine_forward(f64(x, true, true), f64(w, true, true), f64(b, false, true), ey.magnitude,
                      false);
  ref->affine_forward(f64(x), f64(w), f64(b), ey.unrounded, false);
  expect_bf16_result(y, ey, d + 1, "forward");

  Tensor dyc = dy.clone(), dx = Tensor::empty({n, d}, DType::f32);
  Tensor dw = Tensor::empty({d, m}, DType::f32), db = Tensor::empty({m}, DType::f32);
  bf->affine_backward(x, w, y, dyc, false, &dx, dw, &db);
  Expected ex, ew;
  auto exact_backward = [&](bool bf16, bool absolute, Tensor& tx, Tensor& tw) {
    tx = Tensor::empty({n, d}, DType::f64);
    tw = Tensor::empty({d, m}, DType::f64);
    Tensor tb = Tensor::empty({m}, DType::f64), y64 = Tensor::zeros({n, m}, DType::f64);
    Tensor d64 = f64(dy, bf16, absolute);
    ref->affine_backward(f64(x, bf16, absolute), f64(w, bf16, absolute), y64, d64, false, &tx, tw,
                         &tb);
  };
  exact_backward(true, false, ex.rounded, ew.rounded);
  exact_backward(true, true, ex.magnitude, ew.magnitude);
  exact_backward(false, false, ex.unrounded, ew.unrounded);
  expect_bf16_result(dx, ex, m, "dx");
  expect_bf16_result(dw, ew, n, "dw");
}

// The reference backend computes in fp32 only: bf16 there is an InputError, not a silent fp32.
TEST(CpuBf16Refusals, ReferenceBackendRefusesBf16) {
  BackendOptions opt;
  opt.math = MathMode::bf16;
  EXPECT_CONTAINS(error_of([&] { make_backend("cpu-ref", opt); }), "fp32");
}

// A processor without bf16 (here: oneDNN limited to AVX2, as on an AVX2-only machine) is told
// so by name, with exit code 2, before any run directory exists.
TEST(CpuBf16Refusals, ProcessorWithoutBf16IsAClearError) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not fetched (scripts/fetch_data.sh)";
  TempDir dir;
  const std::string run = (dir.path / "run").string();
  CommandResult r = run_command("ONEDNN_MAX_CPU_ISA=AVX2 " +
                                deeptrain_cmd("train " + std::string(DEEPTRAIN_SOURCE_DIR) +
                                              "/examples/deep_convnet_mnist.prototxt --math bf16 "
                                              "--epochs 1 --train-limit 100 --data-dir " +
                                              std::string(DEEPTRAIN_DATA_DIR) + "/mnist --run-dir " +
                                              run));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("AVX512-BF16"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("AVX2"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(run)) << "a run directory was made before the refusal";
}

// bf16 trains the book's network: one epoch on 10,000 images (100 steps), fp32 and bf16 from
// the same seed. The bar (test accuracy >= 0.5 on 1000 test images; both reach about 0.75-0.8
// here after so few steps, dropout slowing the start) is far above chance (0.1), which is what
// an untrained, diverged or NaN network gives. That bf16 ends where fp32 does is the 20-epoch
// recipe's result (docs/cpu_performance.md), too long for a test.
TEST(CpuBf16Training, DeepConvNetLearnsInBf16) {
  std::string why;
  if (!bf16_backend(&why)) GTEST_SKIP() << why;
  if (!have_mnist()) GTEST_SKIP() << "MNIST not fetched (scripts/fetch_data.sh)";
  TempDir dir;
  double acc[2];
  const char* maths[2] = {"fp32", "bf16"};
  for (int i = 0; i < 2; ++i) {
    CommandResult r = run_command(deeptrain_cmd(
        "train " + std::string(DEEPTRAIN_SOURCE_DIR) + "/examples/deep_convnet_mnist.prototxt "
        "--data-dir " + std::string(DEEPTRAIN_DATA_DIR) + "/mnist --math " + maths[i] +
        " --epochs 1 --train-limit 10000 --test-limit 1000 --threads 2 --json --run-dir " +
        (dir.path / maths[i]).string()));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    acc[i] = json_number(r.last_line(), "test_accuracy");
  }
  EXPECT_GE(acc[0], 0.5) << "fp32";
  EXPECT_GE(acc[1], 0.5) << "bf16";
}

}  // namespace
}  // namespace deeptrain
