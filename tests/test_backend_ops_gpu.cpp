// The GPU backend op by op against CpuBackend ("cpu-ref"), in the spirit of ggml's
// test-backend-ops: fresh random inputs per case, several geometries (DeepConvNet's at batch 100,
// batch 1, odd sizes, strides, paddings), forward and backward, for both convolution algorithms
// ("cuda": cuDNN, "cuda-im2col": im2col + cuBLAS) and every math mode.
//
// Tolerance: max|got - ref| <= tol * max|ref|, against a reference computed in f64 for the sums
// of products (conv, affine): fp32 1e-5, tf32 2e-3, bf16 2e-2, fp16 5e-3. Exact (bitwise) for
// what only selects, moves or scales values: pooling (and its argmax), ReLU, dropout (the masks
// come from the same Philox stream), scale, accumulate, scale_and_check_finite. The optimizer
// step: 1e-6 relative (the kernel rounds each operation as the host does, so it is expected to be
// bit-identical; the summary counts the elements that are not).
//
// Every output is poisoned (NaN, or a junk integer) before the GPU call, so an element the GPU
// leaves unwritten fails. At the end a table gives, per op, backend and mode, the worst error
// seen against its bound. Without a GPU (or without CUDA in the build) every GPU case is skipped
// with the reason; the no-device test checks the error a user then gets.
#include <gtest/gtest.h>

#include "op_cases.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/backend/backend.h"
#include "core/backend/cpu.h"
#include "core/optim/optimizer.h"
#include "error_util.h"
#ifdef DEEPTRAIN_HAVE_CUDA
#include "core/backend/cuda/cuda_backend.h"
#endif

namespace deeptrain {
namespace {

// ---- the device, and the backends under test ----
int gpu_count(std::string* why) {
#ifdef DEEPTRAIN_HAVE_CUDA
  static std::string reason;
  static const int count = cuda_device_count(&reason);
  if (why) *why = reason;
  return count;
#else
  if (why) *why = "this deeptrain was built without CUDA";
  return 0;
#endif
}

#define REQUIRE_GPU()                                                              \
  do {                                                                             \
    std::string why_;                                                              \
    if (gpu_count(&why_) == 0) GTEST_SKIP() << "no CUDA device is usable: " << why_; \
  } while (0)

struct Mode {
  const char* backend;  // "cuda" or "cuda-im2col"
  MathMode math;
  double tol;  // relative to max|ref|, for sums of products
};

const Mode kModes[] = {
    {"cuda", MathMode::fp32, 1e-5},        {"cuda-im2col", MathMode::fp32, 1e-5},
    {"cuda", MathMode::tf32, 2e-3},        {"cuda-im2col", MathMode::tf32, 2e-3},
    {"cuda", MathMode::bf16, 2e-2},        {"cuda-im2col", MathMode::bf16, 2e-2},
    {"cuda", MathMode::fp16, 5e-3},        {"cuda-im2col", MathMode::fp16, 5e-3},
};

std::string mode_name(const Mode& m) { return std::string(m.backend) + " " + math_mode_name(m.math); }

// One backend per (name, mode) for the whole run (creating one costs a cuDNN handle); destroyed
// before main returns, while the CUDA runtime is still up.
std::map<std::string, std::unique_ptr<Backend>>& backends() {
  static std::map<std::string, std::unique_ptr<Backend>> all;
  return all;
}

Backend& gpu(const Mode& m) {
  auto& slot = backends()[mode_name(m)];
  if (!slot) {
    BackendOptions opt;
    opt.math = m.math;
    slot = make_backend(m.backend, opt);
    std::printf("[gpu-ops] made backend %s\n", slot->name().c_str());
  }
  return *slot;
}
Backend& gpu_fp32() { return gpu(kModes[1]); }  // for the ops that do not depend on the mode

// ---- the summary: per op, backend and mode, the worst error against its bound ----
struct Stat {
  double worst = 0;  // max over cases of max|err| / max|ref| (relative); exact checks: mismatches
  double tol = 0;
  int cases = 0, failures = 0;
  bool exact = false;
};
std::map<std::string, Stat>& stats() {
  static std::map<std::string, Stat> all;
  return all;
}

class GpuEnvironment : public ::testing::Environment {
 public:
  void TearDown() override {
    if (!stats().empty()) {
      std::printf("\n[gpu-ops] summary: op, backend and mode: cases, worst error, bound\n");
      for (const auto& [key, s] : stats()) {
        if (s.exact)
          std::printf("[gpu-ops] %-44s cases %4d  mismatched elements %-8.0f (exact)      %s\n",
                      key.c_str(), s.cases, s.worst, s.failures ? "FAIL" : "ok");
        else
          std::printf("[gpu-ops] %-44s cases %4d  worst rel err %-9.2e bound %-7.0e %s\n",
                      key.c_str(), s.cases, s.worst, s.tol, s.failures ? "FAIL" : "ok");
      }
      std::fflush(stdout);
    }
    backends().clear();
  }
};
[[maybe_unused]] ::testing::Environment* const kEnv =
    ::testing::AddGlobalTestEnvironment(new GpuEnvironment);

// ---- host tensors ----
Tensor random_tensor(Shape shape, std::mt19937& gen, float lo = -1.f, float hi = 1.f) {
  Tensor t = Tensor::empty(std::move(shape), DType::f32);
  std::uniform_real_distribution<float> dist(lo, hi);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(gen);
  return t;
}

// Small integers: pooling windows and softmax rows full of ties.
Tensor tie_tensor(Shape shape, std::mt19937& gen, int levels) {
  Tensor t = Tensor::empty(std::move(shape), DType::f32);
  std::uniform_int_distribution<int> dist(0, levels - 1);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = float(dist(gen) - levels / 2);
  return t;
}

Tensor f64(const Tensor& t) { return t.to(DType::f64); }

// ---- device tensors ----
Tensor upload(Backend& be, const Tensor& host) {
  Tensor d = be.empty(host.shape(), host.dtype());
  be.copy(host, d);
  return d;
}

// A device tensor whose every element is junk (NaN for floats): an unwritten output shows.
Tensor poisoned(Backend& be, const Shape& shape, DType t = DType::f32) {
  Tensor h = Tensor::empty(shape, t);
  if (t == DType::f32) std::fill_n(h.data<float>(), h.numel(), std::numeric_limits<float>::quiet_NaN());
  else if (t == DType::i32) std::fill_n(h.data<int32_t>(), h.numel(), int32_t(-123456789));
  else std::memset(h.raw(), 0xCD, h.nbytes());
  return upload(be, h);
}

// The same, one float into a larger buffer: 4-byte aligned only, as views into the flat parameter
// and gradient buffers may be.
Tensor upload_misaligned(Backend& be, const Tensor& host) {
  Tensor big = be.empty({host.numel() + 1}, host.dtype());
  Tensor view = big.slice_flat(1, host.shape());
  be.copy(host, view);
  return view;
}
Tensor poisoned_misaligned(Backend& be, const Shape& shape) {
  return poisoned(be, {shape.numel() + 1}).slice_flat(1, shape);
}

Tensor host(Backend& be, const Tensor& d) { return be.to_host(d); }

// ---- checks (each one recorded in the summary) ----
double value(const Tensor& t, int64_t i) {
  return t.dtype() == DType::f64 ? static_cast<const double*>(t.raw())[i]
                                 : double(static_cast<const float*>(t.raw())[i]);
}

::testing::AssertionResult close(const std::string& key, const Tensor& got, const Tensor& ref,
                                 double tol) {
  Stat& s = stats()[key];
  s.tol = tol;
  ++s.cases;
  if (got.numel() != ref.numel()) {
    ++s.failures;
    return ::testing::AssertionFailure() << key << ": " << got.numel() << " elements vs " << ref.numel();
  }
  double max_ref = 0, max_err = 0;
  int64_t worst = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    max_ref = std::max(max_ref, std::fabs(value(ref, i)));
    const double err = std::fabs(value(got, i) - value(ref, i));
    if (!(err <= max_err)) { max_err = err; worst = i; }  // NaN counts as worst
  }
  if (std::isnan(max_err)) max_err = std::numeric_limits<double>::infinity();
  const double rel = max_ref > 0 ? max_err / max_ref : max_err;
  s.worst = std::max(s.worst, rel);
  if (max_err <= tol * max_ref) return ::testing::AssertionSuccess();
  ++s.failures;
  return ::testing::AssertionFailure() << key << ": max|got - ref| = " << max_err << " at flat index "
                                       << worst << " (" << value(got, worst) << " vs "
                                       << value(ref, worst) << "), bound " << tol
                                       << " * max|ref| = " << tol * max_ref;
}

::testing::AssertionResult equal(const std::string& key, const Tensor& got, const Tensor& ref) {
  Stat& s = stats()[key];
  s.exact = true;
  ++s.cases;
  if (got.numel() != ref.numel() || got.dtype() != ref.dtype()) {
    ++s.failures;
    return ::testing::AssertionFailure() << key << ": shape or dtype differ";
  }
  const size_t sz = dtype_size(ref.dtype());
  int64_t diffs = 0, first = -1;
  for (int64_t i = 0; i < ref.numel(); ++i)
    if (std::memcmp(static_cast<const char*>(got.raw()) + i * sz,
                    static_cast<const char*>(ref.raw()) + i * sz, sz)) {
      if (first < 0) first = i;
      ++diffs;
    }
  s.worst = std::max(s.worst, double(diffs));
  if (!diffs) return ::testing::AssertionSuccess();
  ++s.failures;
  auto f = ::testing::AssertionFailure();
  f << key << ": " << diffs << " of " << ref.numel() << " elements differ, the first at " << first;
  if (ref.dtype() == DType::f32) f << " (" << value(got, first) << " vs " << value(ref, first) << ")";
  if (ref.dtype() == DType::i32)
    f << " (" << static_cast<const int32_t*>(got.raw())[first] << " vs "
      << static_cast<const int32_t*>(ref.raw())[first] << ")";
  return f;
}

// ---- the test without a GPU: what a user gets ----
TEST(CudaBackendNoDevice, MakeBackendSaysNoCudaDeviceIsUsable) {
  std::string why;
  if (gpu_count(&why) > 0) GTEST_SKIP() << "a CUDA device is present";
  for (const char* name : {"cuda", "cuda-im2col"}) {
    const std::string msg = error_of<InputError>([&] { make_backend(name); });
#ifdef DEEPTRAIN_HAVE_CUDA
    EXPECT_CONTAINS(msg, "no CUDA device is usable");
    EXPECT_CONTAINS(msg, why);  // the runtime's own words (e.g. cudaErrorInsufficientDriver)
    EXPECT_FALSE(why.empty());
#else
    EXPECT_CONTAINS(msg, "without CUDA");
#endif
    std::printf("[gpu-ops] make_backend(\"%s\") without a device: %s\n", name, msg.c_str());
  }
}

// ---- memory ----
TEST(CudaMemory, EmptyCopyFillAndHostBuffers) {
  REQUIRE_GPU();
  Backend& be = gpu_fp32();
  std::printf("[gpu-ops] backend: %s\n", be.name().c_str());
  EXPECT_EQ(be.device(), Device::cuda);
  std::mt19937 gen(1);
  const Tensor h = random_tensor({3, 5, 7}, gen);
  Tensor d = upload(be, h);
  EXPECT_EQ(d.device(), Device::cuda);
  EXPECT_TRUE(equal("copy host->device->host", host(be, d), h));
  Tensor d2 = be.empty(h.shape(), DType::f32);
  be.copy(d, d2);  // device -> device
  EXPECT_TRUE(equal("copy device->device", host(be, d2), h));
  Tensor pinned = be.empty_host(h.shape(), DType::f32);
  EXPECT_EQ(pinned.device(), Device::cpu);
  be.copy(d2, pinned);  // device -> page-locked host
  be.synchronize();
  EXPECT_TRUE(equal("copy device->pinned host", pinned, h));
  be.fill_zero(d2);
  EXPECT_TRUE(equal("fill_zero", host(be, d2), Tensor::zeros(h.shape(), DType::f32)));
  const Tensor mis = upload_misaligned(be, h);  // a view 4 bytes into a buffer
  EXPECT_TRUE(equal("copy into a view", host(be, mis), h));
  Tensor z = be.zeros({0}, DType::f32);  // empty tensors are fine
  EXPECT_EQ(host(be, z).numel(), 0);
  // Host tensors given to a device op: a clear error, not a crash.
  Tensor y = be.empty(h.shape(), DType::f32);
  EXPECT_CONTAINS(error_of<Error>([&] { be.relu_forward(h, y); }), "host tensor");
}

// ---- convolution ----
using testing_util::ConvCase;
using testing_util::kConvCases;

class GpuConv : public ::testing::TestWithParam<ConvCase> {};

TEST_P(GpuConv, ForwardMatchesReference) {
  REQUIRE_GPU();
  const ConvGeom g = GetParam().geom();
  std::mt19937 gen(std::hash<std::string>{}(GetParam().name));
  const Tensor x = random_tensor({g.n, g.c, g.h, g.w}, gen);
  const Tensor w = random_tensor({g.k, g.c, g.r, g.s}, gen, -0.3f, 0.3f);
  const Tensor b = random_tensor({g.k}, gen);
  CpuBackend ref;
  const Tensor x64 = f64(x), w64 = f64(w), b64 = f64(b);
  for (bool bias : {false, true})
    for (bool relu : {false, true}) {
      Tensor want = Tensor::empty({g.n, g.k, g.p, g.q}, DType::f64);
      ref.conv2d_forward(g, x64, w64, bias ? b64 : Tensor(), want, relu);
      for (const Mode& m : kModes) {
        SCOPED_TRACE(::testing::Message() << mode_name(m) << " bias " << bias << " relu " << relu);
        Backend& be = gpu(m);
        // With bias and ReLU, the weights and bias are misaligned views (as in the flat buffer).
        const bool mis = bias && relu;
        const Tensor xd = upload(be, x), wd = mis ? upload_misaligned(be, w) : upload(be, w),
                     bd = mis ? upload_misaligned(be, b) : upload(be, b);
        Tensor y = poisoned(be, {g.n, g.k, g.p, g.q});
        be.conv2d_forward(g, xd, wd, bias ? bd : Tensor(), y, relu);
        EXPECT_TRUE(close("conv2d_forward " + mode_name(m), host(be, y), want, m.tol));
      }
    }
}

TEST_P(GpuConv, BackwardMatchesReference) {
  REQUIRE_GPU();
  const ConvGeom g = GetParam().geom();
  std::mt19937 gen(std::hash<std::string>{}(GetParam().name) + 1);
  const Tensor x = random_tensor({g.n, g.c, g.h, g.w}, gen);
  const Tensor w = random_tensor({g.k, g.c, g.r, g.s}, gen, -0.3f, 0.3f);
  const Tensor b = random_tensor({g.k}, gen, -0.2f, 0.2f);
  const Tensor dy = random_tensor({g.n, g.k, g.p, g.q}, gen);
  CpuBackend ref;
  // y from the f32 reference: both sides then use the same ReLU mask.
  Tensor y = Tensor::empty({g.n, g.k, g.p, g.q}, DType::f32);
  ref.conv2d_forward(g, x, w, b, y, true);
  const Tensor x64 = f64(x), w64 = f64(w), y64 = f64(y);
  for (bool relu : {false, true}) {
    Tensor dy64 = f64(dy);  // masked in place by a fused ReLU
    Tensor dx_ref = Tensor::empty(x.shape(), DType::f64), dw_ref = Tensor::empty(w.shape(), DType::f64),
           db_ref = Tensor::empty(b.shape(), DType::f64);
    ref.conv2d_backward(g, x64, w64, y64, dy64, relu, &dx_ref, dw_ref, &db_ref);
    for (const Mode& m : kModes)
      for (bool with_dx_db : {true, false}) {
        SCOPED_TRACE(::testing::Message() << mode_name(m) << " relu " << relu << " dx/db " << with_dx_db);
        Backend& be = gpu(m);
        // Without dx and db, w and dw are misaligned views (as in the flat buffers).
        const bool mis = !with_dx_db;
        const Tensor xd = upload(be, x), wd = mis ? upload_misaligned(be, w) : upload(be, w),
                     yd = upload(be, y);
        Tensor dyd = upload(be, dy);
        Tensor dx = poisoned(be, x.shape()), db = poisoned(be, b.shape());
        Tensor dw = mis ? poisoned_misaligned(be, w.shape()) : poisoned(be, w.shape());
        be.conv2d_backward(g, xd, wd, yd, dyd, relu, with_dx_db ? &dx : nullptr, dw,
                           with_dx_db ? &db : nullptr);
        const std::string k = mode_name(m);
        EXPECT_TRUE(close("conv2d_backward dw " + k, host(be, dw), dw_ref, m.tol));
        if (with_dx_db) {
          EXPECT_TRUE(close("conv2d_backward dx " + k, host(be, dx), dx_ref, m.tol));
          // db sums dy only (no products): f32 accuracy in every mode.
          EXPECT_TRUE(close("conv2d_backward db " + k, host(be, db), db_ref, 1e-5));
        }
      }
  }
}

INSTANTIATE_TEST_SUITE_P(Geometries, GpuConv, ::testing::ValuesIn(kConvCases), testing_util::case_name<ConvCase>);

// ---- pooling ----
using testing_util::PoolCase;
using testing_util::kPoolCases;


class GpuPool : public ::testing::TestWithParam<PoolCase> {};

// Exact: values, argmax (the first maximum in row-major window order) and the routed gradient,
// whose sums run in the reference's order.
TEST_P(GpuPool, ForwardBackwardAreExact) {
  REQUIRE_GPU();
  const PoolGeom g = GetParam().geom();
  std::mt19937 gen(std::hash<std::string>{}(GetParam().name));
  CpuBackend ref;
  Backend& be = gpu_fp32();
  const Tensor dy = random_tensor({g.n, g.c, g.p, g.q}, gen);
  for (int levels : {0, 2, 5}) {  // 0: random reals, else that many distinct integers (ties)
    SCOPED_TRACE(::testing::Message() << "levels " << levels);
    const Tensor x = levels ? tie_tensor({g.n, g.c, g.h, g.w}, gen, levels)
                            : random_tensor({g.n, g.c, g.h, g.w}, gen);
    Tensor y_ref = Tensor::empty({g.n, g.c, g.p, g.q}, DType::f32);
    Tensor am_ref = Tensor::empty({g.n, g.c, g.p, g.q}, DType::i32);
    Tensor dx_ref = Tensor::empty(x.shape(), DType::f32);
    ref.maxpool2d_forward(g, x, y_ref, am_ref);
    ref.maxpool2d_backward(g, dy, am_ref, dx_ref);
    Tensor y = poisoned(be, y_ref.shape()), am = poisoned(be, am_ref.shape(), DType::i32),
           dx = poisoned(be, x.shape());
    be.maxpool2d_forward(g, upload(be, x), y, am);
    be.maxpool2d_backward(g, upload(be, dy), am, dx);
    EXPECT_TRUE(equal("maxpool2d_forward y", host(be, y), y_ref));
    EXPECT_TRUE(equal("maxpool2d_forward argmax", host(be, am), am_ref));
    EXPECT_TRUE(equal("maxpool2d_backward dx", host(be, dx), dx_ref));
  }
}

INSTANTIATE_TEST_SUITE_P(Geometries, GpuPool, ::testing::ValuesIn(kPoolCases),
                         testing_util::case_name<PoolCase>);

// ---- elementwise ----
TEST(GpuElementwise, ReluScaleAccumulateAreExact) {
  REQUIRE_GPU();
  CpuBackend ref;
  Backend& be = gpu_fp32();
  std::mt19937 gen(7);
  for (const Shape& s : {Shape{100, 16, 28, 28}, Shape{3, 5, 7}, Shape{1}}) {
    SCOPED_TRACE(s.str());
    Tensor x = random_tensor(s, gen), dy = random_tensor(s, gen);
    x.data<float>()[0] = 0.0f;  // the boundary: relu'(0) = 0
    Tensor y_ref = Tensor::empty(s, DType::f32), dx_ref = Tensor::empty(s, DType::f32),
           s_ref = Tensor::empty(s, DType::f32);
    ref.relu_forward(x, y_ref);
    ref.relu_backward(y_ref, dy, dx_ref);
    ref.scale(x, 0.7, s_ref);
    Tensor y = poisoned(be, s), dx = poisoned(be, s), sc = poisoned(be, s);
    be.relu_forward(upload(be, x), y);
    be.relu_backward(y, upload(be, dy), dx);
    be.scale(upload(be, x), 0.7, sc);
    EXPECT_TRUE(equal("relu_forward", host(be, y), y_ref));
    EXPECT_TRUE(equal("relu_backward", host(be, dx), dx_ref));
    EXPECT_TRUE(equal("scale", host(be, sc), s_ref));
    // accumulate: CpuBackend's, the reference.
    Tensor acc_ref = x.clone();
    ref.accumulate(acc_ref, dy);
    Tensor acc = upload(be, x);
    be.accumulate(acc, upload(be, dy));
    EXPECT_TRUE(equal("accumulate", host(be, acc), acc_ref));
  }
}

TEST(GpuElementwise, ScaleAndCheckFinite) {
  REQUIRE_GPU();
  CpuBackend ref;
  Backend& be = gpu_fp32();
  std::mt19937 gen(8);
  struct Case { const char* what; int64_t at; float planted; double alpha; bool finite; };
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (const Case c : {Case{"finite", -1, 0, 1.0 / 1024, true}, Case{"inf planted", 777, inf, 0.5, false},
                       Case{"-inf planted last", 99999, -inf, 2.0, false},
                       Case{"nan planted first", 0, nan, 1.0, false},
                       Case{"overflow by alpha", 5, 3e38f, 10.0, false}}) {
    SCOPED_TRACE(c.what);
    Tensor x = random_tensor({100000}, gen);
    if (c.at >= 0) x.data<float>()[c.at] = c.planted;
    Tensor want = x.clone();
    const bool ref_finite = ref.scale_and_check_finite(want, c.alpha);
    ASSERT_EQ(ref_finite, c.finite);
    Tensor d = upload(be, x);
    EXPECT_EQ(be.scale_and_check_finite(d, c.alpha), c.finite);
    EXPECT_TRUE(equal("scale_and_check_finite", host(be, d), want));
  }
}

// ---- affine ----
TEST(GpuAffine, ForwardBackwardMatchReference) {
  REQUIRE_GPU();
  CpuBackend ref;
  struct Case { Shape x; int64_t m; bool relu; };
  std::mt19937 gen(31);
  for (const Case& c : {Case{{100, 64, 4, 4}, 50, true}, Case{{100, 50}, 10, false},
                        Case{{1, 7}, 3, true}, Case{{5, 33}, 17, false}}) {
    const int64_t n = c.x[0], d = c.x.numel() / n;
    const Tensor x = random_tensor(c.x, gen), w = random_tensor({d, c.m}, gen, -0.1f, 0.1f),
                 b = random_tensor({c.m}, gen), dy = random_tensor({n, c.m}, gen);
    Tensor y32 = Tensor::empty({n, c.m}, DType::f32);
    ref.affine_forward(x, w, b, y32, c.relu);  // the ReLU mask both sides use in backward
    const Tensor x64 = f64(x), w64 = f64(w), b64 = f64(b);
    Tensor y_ref = Tensor::empty({n, c.m}, DType::f64), dy_ref = f64(dy);
    Tensor dx_ref = Tensor::empty(x.shape(), DType::f64), dw_ref = Tensor::empty(w.shape(), DType::f64),
           db_ref = Tensor::empty(b.shape(), DType::f64);
    ref.affine_forward(x64, w64, b64, y_ref, c.relu);
    ref.affine_backward(x64, w64, f64(y32), dy_ref, c.relu, &dx_ref, dw_ref, &db_ref);
    for (const Mode& m : kModes) {
      if (std::string(m.backend) != "cuda") continue;  // affine does not depend on the conv path
      SCOPED_TRACE(::testing::Message() << mode_name(m) << " x " << c.x.str() << " -> " << c.m);
      Backend& be = gpu(m);
      const Tensor xd = upload(be, x), wd = upload(be, w), bd = upload(be, b);
      Tensor y = poisoned(be, {n, c.m}), dyd = upload(be, dy);
      Tensor dx = poisoned(be, x.shape()), dw = poisoned(be, w.shape()), db = poisoned(be, b.shape());
      be.affine_forward(xd, wd, bd, y, c.relu);
      be.affine_backward(xd, wd, upload(be, y32), dyd, c.relu, &dx, dw, &db);
      const std::string k = std::string("cuda ") + math_mode_name(m.math);
      EXPECT_TRUE(close("affine_forward " + k, host(be, y), y_ref, m.tol));
      EXPECT_TRUE(close("affine_backward dx " + k, host(be, dx), dx_ref, m.tol));
      EXPECT_TRUE(close("affine_backward dw " + k, host(be, dw), dw_ref, m.tol));
      EXPECT_TRUE(close("affine_backward db " + k, host(be, db), db_ref, 1e-5));
    }
  }
}

// A rank without samples (an empty shard: synchronised BatchNorm runs every rank's forward and
// backward) gives the dense and dropout layers batches of 0 rows: no error, and the gradients of
// no samples are zero, as on the host.
TEST(GpuAffine, EmptyBatchGivesZeroGradients) {
  REQUIRE_GPU();
  Backend& be = gpu_fp32();
  std::mt19937 gen(37);
  const Tensor x = Tensor::empty({0, 12}, DType::f32), w = random_tensor({12, 5}, gen),
               b = random_tensor({5}, gen);
  Tensor dw_ref = Tensor::empty(w.shape(), DType::f32), db_ref = Tensor::empty(b.shape(), DType::f32);
  dw_ref.fill_zero();
  db_ref.fill_zero();
  const Tensor xd = upload(be, x), wd = upload(be, w), bd = upload(be, b);
  Tensor y = be.empty({0, 5}, DType::f32), dy = be.empty({0, 5}, DType::f32),
         dx = be.empty({0, 12}, DType::f32), dw = poisoned(be, w.shape()), db = poisoned(be, b.shape());
  ASSERT_NO_THROW(be.affine_forward(xd, wd, bd, y, true));
  ASSERT_NO_THROW(be.affine_backward(xd, wd, y, dy, true, &dx, dw, &db));
  EXPECT_TRUE(equal("affine_backward dw, no rows", host(be, dw), dw_ref));
  EXPECT_TRUE(equal("affine_backward db, no rows", host(be, db), db_ref));
  Tensor m = be.empty({0, 12}, DType::u8), yd = be.empty({0, 12}, DType::f32);
  const DropoutKey key{1, 0, 0, nullptr};
  ASSERT_NO_THROW(be.dropout_forward(key, 0.5f, 2.0f, xd, yd, m));
  ASSERT_NO_THROW(be.dropout_backward(2.0f, m, yd, dx));
}

// ---- dropout ----
TEST(GpuDropout, MasksAndValuesAreBitIdentical) {
  REQUIRE_GPU();
  CpuBackend ref;
  Backend& be = gpu_fp32();
  std::mt19937 gen(41);
  struct Case { Shape x; float ratio; bool inverted; int64_t step; int32_t layer; };
  for (const Case& c : {Case{{6, 50}, 0.3f, true, 17, 3}, Case{{100, 100}, 0.5f, false, 123456, 7},
                        Case{{100, 64, 4, 4}, 0.25f, true, 1, 0}, Case{{3, 7}, 0.5f, true, 0, 2},
                        Case{{1, 1}, 0.9f, false, 5, 1}}) {
    SCOPED_TRACE(c.x.str());
    const int64_t n = c.x[0];
    const Tensor x = random_tensor(c.x, gen), dy = random_tensor(c.x, gen);
    std::vector<int64_t> ids(n);
    std::uniform_int_distribution<int64_t> id(0, int64_t(1) << 40);  // ids above 2^32 too
    for (auto& v : ids) v = id(gen);
    const DropoutKey key{0x123456789abcdefULL, c.step, c.layer, ids.data()};
    const float scale = c.inverted ? 1.f / (1.f - c.ratio) : 1.f;
    Tensor y_ref = Tensor::empty(c.x, DType::f32), m_ref = Tensor::empty(c.x, DType::u8),
           dx_ref = Tensor::empty(c.x, DType::f32);
    ref.dropout_forward(key, c.ratio, scale, x, y_ref, m_ref);
    ref.dropout_backward(scale, m_ref, dy, dx_ref);
    Tensor y = poisoned(be, c.x), m = poisoned(be, c.x, DType::u8), dx = poisoned(be, c.x);
    be.dropout_forward(key, c.ratio, scale, upload(be, x), y, m);
    ids.assign(n, -1);  // the backend must have taken its copy of the ids
    be.dropout_backward(scale, m, upload(be, dy), dx);
    EXPECT_TRUE(equal("dropout_forward mask", host(be, m), m_ref));
    EXPECT_TRUE(equal("dropout_forward y", host(be, y), y_ref));
    EXPECT_TRUE(equal("dropout_backward dx", host(be, dx), dx_ref));
  }
}

// ---- softmax cross-entropy ----
TEST(GpuSoftmaxCe, LossCountProbsAndGradient) {
  REQUIRE_GPU();
  CpuBackend ref;
  Backend& be = gpu_fp32();
  std::mt19937 gen(51);
  struct Case { int64_t n, m; int ties; float spread; };
  for (const Case& c : {Case{100, 10, 0, 5.f}, Case{6, 50, 0, 1.f}, Case{1, 10, 0, 3.f},
                        Case{100, 10, 3, 1.f}, Case{7, 1000, 0, 20.f}, Case{300, 3, 2, 1.f}}) {
    SCOPED_TRACE(::testing::Message() << c.n << "x" << c.m << " ties " << c.ties);
    const Tensor z = c.ties ? tie_tensor({c.n, c.m}, gen, c.ties) : random_tensor({c.n, c.m}, gen, -c.spread, c.spread);
    Tensor labels = Tensor::empty({c.n}, DType::i32);
    std::uniform_int_distribution<int32_t> lab(0, int32_t(c.m - 1));
    for (int64_t i = 0; i < c.n; ++i) labels.data<int32_t>()[i] = lab(gen);
    Tensor p_ref = Tensor::empty({c.n, c.m}, DType::f32), dz_ref = Tensor::empty({c.n, c.m}, DType::f32);
    int64_t hits_ref = 3;  // both add to what is there
    const double loss_ref = ref.softmax_ce_forward(z, labels, 1e-7, p_ref, &hits_ref);
    ref.softmax_ce_backward(p_ref, labels, 1.0 / double(c.n), dz_ref);
    const Tensor labels_d = upload(be, labels);
    Tensor p = poisoned(be, {c.n, c.m}), dz = poisoned(be, {c.n, c.m});
    int64_t hits = 3;
    const double loss = be.softmax_ce_forward(upload(be, z), labels_d, 1e-7, p, &hits);
    be.softmax_ce_backward(p, labels_d, 1.0 / double(c.n), dz);
    Stat& s = stats()["softmax_ce_forward loss"];
    s.tol = 1e-6;
    ++s.cases;
    s.worst = std::max(s.worst, std::fabs(loss - loss_ref) / std::fabs(loss_ref));
    EXPECT_NEAR(loss, loss_ref, 1e-6 * std::fabs(loss_ref));
    EXPECT_EQ(hits, hits_ref);
    if (std::fabs(loss - loss_ref) > 1e-6 * std::fabs(loss_ref) || hits != hits_ref) ++s.failures;
    EXPECT_TRUE(close("softmax_ce_forward probs", host(be, p), p_ref, 1e-5));
    EXPECT_TRUE(close("softmax_ce_backward", host(be, dz), dz_ref, 1e-5));
  }
  // A label outside [0, m): an error naming the sample, as the reference's check.
  Tensor z = random_tensor({4, 10}, gen), labels = Tensor::zeros({4}, DType::i32);
  labels.data<int32_t>()[2] = 10;
  Tensor p = be.empty({4, 10}, DType::f32);
  EXPECT_CONTAINS(error_of<Error>([&] { be.softmax_ce_forward(upload(be, z), upload(be, labels), 1e-7, p, nullptr); }),
                  "sample 2");
}

// The trainer's form: enqueued, read later (the step goes on meanwhile). The sums equal the
// waiting form's; a bad label is reported by get(); a loss dropped unread (an error between)
// does not block the next; two unread at once are refused.
TEST(GpuSoftmaxCe, PendingLossIsReadLater) {
  REQUIRE_GPU();
  Backend& be = gpu_fp32();
  std::mt19937 gen(52);
  const Tensor z = upload(be, random_tensor({50, 10}, gen, -3.f, 3.f));
  Tensor labels = Tensor::empty({50}, DType::i32);
  for (int64_t i = 0; i < 50; ++i) labels.data<int32_t>()[i] = int32_t(i % 10);
  const Tensor labels_d = upload(be, labels);
  Tensor p = be.empty({50, 10}, DType::f32);
  int64_t hits = 0;
  const double loss = be.softmax_ce_forward(z, labels_d, 1e-7, p, &hits);
  auto pending = be.softmax_ce_forward_async(z, labels_d, 1e-7, p);
  Tensor other = be.empty({50, 10}, DType::f32);
  be.scale(z, 2.0, other);  // more work on the stream before the read
  const LossSums s = pending->get();
  EXPECT_EQ(s.loss, loss);
  EXPECT_EQ(s.correct, hits);
  { auto dropped = be.softmax_ce_forward_async(z, labels_d, 1e-7, p); }
  auto first = be.softmax_ce_forward_async(z, labels_d, 1e-7, p);
  EXPECT_CONTAINS(error_of<Error>([&] { be.softmax_ce_forward_async(z, labels_d, 1e-7, p); }),
                  "not read yet");
  EXPECT_EQ(first->get().loss, loss);
  labels.data<int32_t>()[7] = -1;
  auto bad = be.softmax_ce_forward_async(z, upload(be, labels), 1e-7, p);
  EXPECT_CONTAINS(error_of<Error>([&] { bad->get(); }), "sample 7");
}

// ---- the fused optimizer update ----
struct RuleCase {
  proto::OptimizerType type;
  OptimizerStep::Rule rule;
  const char* name;
};
const RuleCase kRules[] = {
    {proto::SGD, OptimizerStep::Rule::sgd, "sgd"},
    {proto::MOMENTUM, OptimizerStep::Rule::momentum, "momentum"},
    {proto::NESTEROV, OptimizerStep::Rule::nesterov, "nesterov"},
    {proto::ADAGRAD, OptimizerStep::Rule::adagrad, "adagrad"},
    {proto::RMSPROP, OptimizerStep::Rule::rmsprop, "rmsprop"},
    {proto::ADAM, OptimizerStep::Rule::adam, "adam"},
    {proto::ADAMW, OptimizerStep::Rule::adamw, "adamw"},
};

// Differing elements, for the summary: the update is expected to be bit-identical.
int64_t bit_diffs(const Tensor& a, const Tensor& b) {
  int64_t d = 0;
  for (int64_t i = 0; i < a.numel(); ++i)
    d += std::memcmp(static_cast<const float*>(a.raw()) + i, static_cast<const float*>(b.raw()) + i, 4) != 0;
  return d;
}

TEST(GpuOptimizer, EveryRuleMatchesTheHostOptimizer) {
  REQUIRE_GPU();
  Backend& be = gpu_fp32();
  const int64_t n = 100003;
  for (const RuleCase& rc : kRules)
    for (float wd : {0.0f, 0.01f}) {
      SCOPED_TRACE(::testing::Message() << rc.name << " weight_decay " << wd);
      std::mt19937 gen(61);
      proto::OptimizerConfig cfg;  // every field set: no defaults to mirror
      cfg.set_type(rc.type);
      cfg.set_lr(0.01f);
      cfg.set_momentum(0.85f);
      cfg.set_beta1(0.8f);
      cfg.set_beta2(0.99f);
      cfg.set_eps(1e-6f);
      cfg.set_decay_rate(0.95f);
      cfg.set_weight_decay(wd);
      auto host_opt = make_optimizer(cfg, n);
      Tensor p_host = random_tensor({n}, gen);
      // lr scales: 0 (frozen) on a third, 0.5 and 1 elsewhere.
      Tensor scale = Tensor::empty({n}, DType::f32);
      for (int64_t i = 0; i < n; ++i) scale.data<float>()[i] = i % 3 == 0 ? 0.0f : (i % 3 == 1 ? 0.5f : 1.0f);
      const Tensor p0 = p_host.clone();
      Tensor p_dev = upload(be, p_host), scale_dev = upload(be, scale);
      const auto host_state = host_opt->state();
      std::vector<Tensor> state_dev;
      for (const auto& st : host_state) state_dev.push_back(upload(be, *st.second));  // zeros
      for (int64_t t = 1; t <= 3; ++t) {
        const float lr = 0.01f * float(t);  // a schedule: a different lr each step
        const Tensor g = random_tensor({n}, gen);
        host_opt->step(p_host, g, lr, &scale);
        const OptimizerStep s{rc.rule, lr, cfg.momentum(), cfg.beta1(), cfg.beta2(),
                              cfg.decay_rate(), cfg.eps(), cfg.weight_decay(), t};
        ASSERT_TRUE(be.optimizer_step(s, p_dev, upload(be, g), state_dev.size() > 0 ? &state_dev[0] : nullptr,
                                      state_dev.size() > 1 ? &state_dev[1] : nullptr, &scale_dev));
      }
      const std::string key = std::string("optimizer_step ") + rc.name;
      const Tensor p_got = host(be, p_dev);
      EXPECT_TRUE(close(key + " params", p_got, p_host, 1e-6));
      Stat& bits = stats()[key + " (bit-differing params)"];
      bits.exact = true;
      ++bits.cases;
      bits.worst = std::max(bits.worst, double(bit_diffs(p_got, p_host)));
      for (size_t i = 0; i < host_state.size(); ++i) {
        const Tensor s_got = host(be, state_dev[i]);
        EXPECT_TRUE(close(key + " state " + host_state[i].first, s_got, *host_state[i].second, 1e-6));
        for (int64_t j = 0; j < n; j += 3)
          ASSERT_EQ(s_got.data<float>()[j], 0.0f) << "frozen state element " << j << " was touched";
      }
      for (int64_t j = 0; j < n; j += 3)
        ASSERT_EQ(std::memcmp(p_got.data<float>() + j, p0.data<float>() + j, 4), 0)
            << "frozen parameter " << j << " changed";
    }
}

// The same, as the trainer runs it: make_optimizer with the device backend allocates the state
// on the device and calls its fused update (core/optim/optimizer.cpp).
TEST(GpuOptimizer, DeviceOptimizerFromMakeOptimizerMatchesTheHost) {
  REQUIRE_GPU();
  Backend& be = gpu_fp32();
  const int64_t n = 4099;
  for (const RuleCase& rc : kRules) {
    SCOPED_TRACE(rc.name);
    std::mt19937 gen(71);
    proto::OptimizerConfig cfg;  // defaults (0 = default) for the fields not set
    cfg.set_type(rc.type);
    cfg.set_lr(0.05f);
    cfg.set_weight_decay(0.001f);
    auto host_opt = make_optimizer(cfg, n);
    auto dev_opt = make_optimizer(cfg, n, &be);
    Tensor p_host = random_tensor({n}, gen);
    Tensor p_dev = upload(be, p_host);
    for (int t = 1; t <= 3; ++t) {
      const Tensor g = random_tensor({n}, gen);
      host_opt->step(p_host, g, 0.05f);
      dev_opt->step(p_dev, upload(be, g), 0.05f);
    }
    EXPECT_TRUE(close(std::string("make_optimizer(device) ") + rc.name, host(be, p_dev), p_host, 1e-6));
  }
}

}  // namespace
}  // namespace deeptrain
