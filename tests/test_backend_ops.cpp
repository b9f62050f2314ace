// Every op of every backend against CpuBackend ("cpu-ref", im2col + OpenBLAS), in the spirit of
// ggml's test-backend-ops: random f32 inputs, several geometries, inputs in plain layout and in
// the backend's own native layout (what it receives inside a Net).
//
// Tolerance: max|got - ref| <= kTol * max|ref| with kTol = 1e-4 for sums of products (conv,
// affine; their summation orders differ), 1e-3 for the chained DeepConvNet step (errors of six
// convs compound, and a ReLU mask may flip where a pre-activation is ~0); exact for pooling,
// ReLU, dropout and layout conversions, which only move or select values.
#include <gtest/gtest.h>

#include "op_cases.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/backend/backend.h"
#include "core/backend/cpu.h"
#include "core/data/dataset.h"
#ifdef DEEPTRAIN_HAVE_DNNL
#include "core/backend/cpu_dnnl.h"
#endif

namespace deeptrain {
namespace {

constexpr double kTol = 1e-4;
constexpr double kChainTol = 1e-3;

// Backends checked against the reference; add a device backend here when it exists.
std::vector<std::string> backends_under_test() { return {"cpu"}; }

Tensor random_tensor(Shape shape, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  Tensor t = Tensor::empty(std::move(shape), DType::f32);
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(gen);
  return t;
}

// Small integers: pooling windows full of ties.
Tensor tie_tensor(Shape shape, uint32_t seed, int levels) {
  Tensor t = Tensor::empty(std::move(shape), DType::f32);
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> dist(0, levels - 1);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = float(dist(gen) - levels / 2);
  return t;
}

::testing::AssertionResult close(const Tensor& got, const Tensor& ref, double tol) {
  if (got.shape() != ref.shape())
    return ::testing::AssertionFailure() << "shape " << got.shape().str() << " vs " << ref.shape().str();
  if (got.layout() != Layout::plain)
    return ::testing::AssertionFailure() << "got a " << layout_name(got.layout()) << " tensor";
  const float* a = got.data<float>();
  const float* b = ref.data<float>();
  double max_ref = 0, max_err = 0;
  int64_t worst = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    max_ref = std::max(max_ref, double(std::fabs(b[i])));
    const double err = std::fabs(double(a[i]) - double(b[i]));
    if (!(err <= max_err)) { max_err = err; worst = i; }  // NaN counts as worst
  }
  if (max_err <= tol * max_ref) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "max|got - ref| = " << max_err << " at flat index "
                                       << worst << " (" << a[worst] << " vs " << b[worst]
                                       << "), bound " << tol << " * max|ref| = " << tol * max_ref;
}

::testing::AssertionResult equal(const Tensor& got, const Tensor& ref) {
  if (got.shape() != ref.shape() || got.dtype() != ref.dtype() || got.layout() != Layout::plain)
    return ::testing::AssertionFailure() << "shape/dtype/layout differ";
  for (int64_t i = 0; i < ref.numel(); ++i) {
    const size_t sz = dtype_size(ref.dtype());
    if (std::memcmp(static_cast<char*>(got.raw()) + i * sz, static_cast<char*>(ref.raw()) + i * sz, sz))
      return ::testing::AssertionFailure() << "first difference at flat index " << i;
  }
  return ::testing::AssertionSuccess();
}

// x in the backend's native layout, via an identity 1x1 conv (exact: one product by 1 per
// output, plus zeros). This is how a backend's blocked tensors reach the next op in a Net.
Tensor native_copy(Backend& be, const Tensor& x) {
  const int64_t c = x.dim(1);
  Tensor w = Tensor::zeros({c, c, 1, 1}, DType::f32);
  for (int64_t i = 0; i < c; ++i) w.data<float>()[i * c + i] = 1.f;
  Tensor y = Tensor::empty(x.shape(), DType::f32);
  be.conv2d_forward(ConvGeom::make(x.dim(0), c, x.dim(2), x.dim(3), c, 1, 1, 1, 1, 0, 0), x, w,
                    Tensor(), y, false);
  return y;
}

using testing_util::ConvCase;
using testing_util::kConvCases;

class ConvOps : public ::testing::TestWithParam<ConvCase> {};

TEST_P(ConvOps, ForwardMatchesReference) {
  const ConvCase cc = GetParam();
  const ConvGeom g = cc.geom();
  const Tensor x = random_tensor({g.n, g.c, g.h, g.w}, 1);
  const Tensor w = random_tensor({g.k, g.c, g.r, g.s}, 2, -0.3f, 0.3f);
  const Tensor b = random_tensor({g.k}, 3);
  CpuBackend ref;
  for (const std::string& name : backends_under_test()) {
    auto be = make_backend(name);
    const Tensor x_native = native_copy(*be, x);
    for (bool bias : {false, true})
      for (bool relu : {false, true}) {
        SCOPED_TRACE(::testing::Message() << name << " bias " << bias << " relu " << relu);
        Tensor want = Tensor::empty({g.n, g.k, g.p, g.q}, DType::f32);
        ref.conv2d_forward(g, x, w, bias ? b : Tensor(), want, relu);
        for (const Tensor* in : {&x, &x_native}) {
          SCOPED_TRACE(::testing::Message() << "x " << layout_name(in->layout()));
          Tensor got = Tensor::empty({g.n, g.k, g.p, g.q}, DType::f32);
          be->conv2d_forward(g, *in, w, bias ? b : Tensor(), got, relu);
          EXPECT_TRUE(close(be->to_plain(got), want, kTol));
        }
      }
  }
}

TEST_P(ConvOps, BackwardMatchesReference) {
  const ConvCase cc = GetParam();
  const ConvGeom g = cc.geom();
  const Tensor x = random_tensor({g.n, g.c, g.h, g.w}, 4);
  const Tensor w = random_tensor({g.k, g.c, g.r, g.s}, 5, -0.3f, 0.3f);
  const Tensor b = random_tensor({g.k}, 6, -0.2f, 0.2f);
  const Tensor dy = random_tensor({g.n, g.k, g.p, g.q}, 7);
  CpuBackend ref;
  Tensor y = Tensor::empty({g.n, g.k, g.p, g.q}, DType::f32);
  ref.conv2d_forward(g, x, w, b, y, true);
  for (const std::string& name : backends_under_test()) {
    auto be = make_backend(name);
    // The backend gets the reference's y (in its own layout) so both use the same ReLU mask.
    const Tensor x_native = native_copy(*be, x), y_native = native_copy(*be, y);
    for (bool relu : {false, true}) {
      Tensor dy_ref = dy.clone();  // ops may mask dy in place
      Tensor dx_ref = Tensor::empty(x.shape(), DType::f32), dw_ref = Tensor::empty(w.shape(), DType::f32),
             db_ref = Tensor::empty(b.shape(), DType::f32);
      ref.conv2d_backward(g, x, w, y, dy_ref, relu, &dx_ref, dw_ref, &db_ref);
      for (bool with_db : {false, true})
        for (bool with_dx : {false, true})
          for (bool native_dy : {false, true}) {
            SCOPED_TRACE(::testing::Message() << name << " relu " << relu << " db " << with_db
                                              << " dx " << with_dx << " dy native " << native_dy);
            Tensor dy_got = native_dy ? native_copy(*be, dy) : dy.clone();
            Tensor dx = Tensor::empty(x.shape(), DType::f32), dw = Tensor::empty(w.shape(), DType::f32),
                   db = Tensor::empty(b.shape(), DType::f32);
            // Alternate plain and native x and y as well.
            be->conv2d_backward(g, native_dy ? x_native : x, w, native_dy ? y : y_native, dy_got,
                                relu, with_dx ? &dx : nullptr, dw, with_db ? &db : nullptr);
            EXPECT_TRUE(close(dw, dw_ref, kTol)) << "dw";
            if (with_db) { EXPECT_TRUE(close(db, db_ref, kTol)) << "db"; }
            if (with_dx) { EXPECT_TRUE(close(be->to_plain(dx), dx_ref, kTol)) << "dx"; }
          }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Geometries, ConvOps, ::testing::ValuesIn(kConvCases), testing_util::case_name<ConvCase>);

using testing_util::PoolCase;
using testing_util::kPoolCases;


class PoolOps : public ::testing::TestWithParam<PoolCase> {};

// Exact: pooling only selects and routes values, and ties (small-integer inputs) must pick
// the first maximum in row-major window order, as the reference does.
TEST_P(PoolOps, ForwardBackwardMatchReferenceWithTies) {
  const PoolGeom g = GetParam().geom();
  CpuBackend ref;
  const Tensor dy = random_tensor({g.n, g.c, g.p, g.q}, 11);
  for (const std::string& name : backends_under_test()) {
    auto be = make_backend(name);
    for (int levels : {0, 2, 5}) {  // 0: random reals, else that many distinct integers
      SCOPED_TRACE(::testing::Message() << name << " levels " << levels);
      const Tensor x = levels ? tie_tensor({g.n, g.c, g.h, g.w}, 12, levels)
                              : random_tensor({g.n, g.c, g.h, g.w}, 12);
      Tensor y_ref = Tensor::empty({g.n, g.c, g.p, g.q}, DType::f32);
      Tensor am_ref = Tensor::empty({g.n, g.c, g.p, g.q}, DType::i32);
      Tensor dx_ref = Tensor::empty(x.shape(), DType::f32);
      ref.maxpool2d_forward(g, x, y_ref, am_ref);
      ref.maxpool2d_backward(g, dy, am_ref, dx_ref);
      for (bool native_in : {false, true}) {
        SCOPED_TRACE(::testing::Message() << "native inputs " << native_in);
        Tensor y = Tensor::empty(y_ref.shape(), DType::f32);
        Tensor am = Tensor::empty(am_ref.shape(), DType::i32);
        Tensor dx = Tensor::empty(x.shape(), DType::f32);
        be->maxpool2d_forward(g, native_in ? native_copy(*be, x) : x, y, am);
        EXPECT_TRUE(equal(be->to_plain(y), y_ref)) << "y";
        {  // forward only (evaluation): the same y, with or without an argmax kept
          Tensor y_only = Tensor::empty(y_ref.shape(), DType::f32);
          Tensor scratch = Tensor::empty(am_ref.shape(), DType::i32);
          be->maxpool2d_infer(g, native_in ? native_copy(*be, x) : x, y_only, scratch);
          EXPECT_TRUE(equal(be->to_plain(y_only), y_ref)) << "forward-only y";
        }
        // The argmax view as the Net passes it: a fresh view of the same storage, tag plain.
        Tensor am_view = am.slice_flat(0, am.shape());
        be->maxpool2d_backward(g, native_in ? native_copy(*be, dy) : dy, am_view, dx);
        EXPECT_TRUE(equal(be->to_plain(dx), dx_ref)) << "dx";
#ifdef DEEPTRAIN_HAVE_DNNL
        // DnnlBackend documents its argmax: the reference's values in y's layout.
        if (dynamic_cast<DnnlBackend*>(be.get())) {
          EXPECT_TRUE(equal(be->to_plain(am), am_ref)) << "argmax";
        }
#endif
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Geometries, PoolOps, ::testing::ValuesIn(kPoolCases),
                         testing_util::case_name<PoolCase>);

TEST(ReluOps, ForwardBackwardMatchReferenceInAnyLayout) {
  CpuBackend ref;
  const Tensor x = random_tensor({3, 32, 5, 7}, 21), dy = random_tensor({3, 32, 5, 7}, 22);
  Tensor y_ref = Tensor::empty(x.shape(), DType::f32), dx_ref = Tensor::empty(x.shape(), DType::f32);
  ref.relu_forward(x, y_ref);
  ref.relu_backward(y_ref, dy, dx_ref);
  for (const std::string& name : backends_under_test()) {
    auto be = make_backend(name);
    for (bool native_x : {false, true})
      for (bool native_dy : {false, true}) {
        SCOPED_TRACE(::testing::Message() << name << " native x " << native_x << " dy " << native_dy);
        Tensor y = Tensor::empty(x.shape(), DType::f32), dx = Tensor::empty(x.shape(), DType::f32);
        be->relu_forward(native_x ? native_copy(*be, x) : x, y);
        be->relu_backward(y, native_dy ? native_copy(*be, dy) : dy, dx);
        EXPECT_TRUE(equal(be->to_plain(y), y_ref));
        EXPECT_TRUE(equal(be->to_plain(dx), dx_ref));
      }
  }
}

TEST(AffineOps, ForwardBackwardMatchReference) {
  CpuBackend ref;
  struct Case { int64_t n, d, m; bool relu; };
  for (const Case c : {Case{100, 1024, 50, true}, Case{100, 50, 10, false}, Case{1, 7, 3, true}}) {
    const Tensor x = random_tensor({c.n, c.d}, 31), w = random_tensor({c.d, c.m}, 32, -0.1f, 0.1f),
                 b = random_tensor({c.m}, 33), dy = random_tensor({c.n, c.m}, 34);
    Tensor y_ref = Tensor::empty({c.n, c.m}, DType::f32), dy_ref = dy.clone();
    Tensor dx_ref = Tensor::empty(x.shape(), DType::f32), dw_ref = Tensor::empty(w.shape(), DType::f32),
           db_ref = Tensor::empty(b.shape(), DType::f32);
    ref.affine_forward(x, w, b, y_ref, c.relu);
    ref.affine_backward(x, w, y_ref, dy_ref, c.relu, &dx_ref, dw_ref, &db_ref);
    for (const std::string& name : backends_under_test()) {
      SCOPED_TRACE(::testing::Message() << name << " " << c.n << "x" << c.d << "->" << c.m);
      auto be = make_backend(name);
      Tensor y = Tensor::empty(y_ref.shape(), DType::f32), dyg = dy.clone();
      Tensor dx = Tensor::empty(x.shape(), DType::f32), dw = Tensor::empty(w.shape(), DType::f32),
             db = Tensor::empty(b.shape(), DType::f32);
      be->affine_forward(x, w, b, y, c.relu);
      be->affine_backward(x, w, y_ref, dyg, c.relu, &dx, dw, &db);
      EXPECT_TRUE(close(y, y_ref, kTol));
      EXPECT_TRUE(close(dx, dx_ref, kTol));
      EXPECT_TRUE(close(dw, dw_ref, kTol));
      EXPECT_TRUE(close(db, db_ref, kTol));
    }
  }
}

TEST(DropoutSoftmaxOps, MatchReference) {
  CpuBackend ref;
  const Tensor x = random_tensor({6, 50}, 41), dy = random_tensor({6, 50}, 42);
  const std::vector<int64_t> ids{5, 9, 100, 3, 77, 8};
  const DropoutKey key{1234, 17, 3, ids.data()};
  Tensor y_ref = Tensor::empty(x.shape(), DType::f32), m_ref = Tensor::empty(x.shape(), DType::u8),
         dx_ref = Tensor::empty(x.shape(), DType::f32);
  const float keep_scale = 1.f / 0.7f;
  ref.dropout_forward(key, 0.3f, keep_scale, x, y_ref, m_ref);
  ref.dropout_backward(keep_scale, m_ref, dy, dx_ref);
  Tensor s_ref = Tensor::empty(x.shape(), DType::f32);
  ref.scale(x, 0.7, s_ref);
  Tensor labels = Tensor::empty({6}, DType::i32);
  for (int i = 0; i < 6; ++i) labels.data<int32_t>()[i] = (i * 7) % 50;
  Tensor p_ref = Tensor::empty(x.shape(), DType::f32), dz_ref = Tensor::empty(x.shape(), DType::f32);
  int64_t hits_ref = 0;
  const double loss_ref = ref.softmax_ce_forward(x, labels, 1e-7, p_ref, &hits_ref);
  ref.softmax_ce_backward(p_ref, labels, 0.01, dz_ref);
  for (const std::string& name : backends_under_test()) {
    SCOPED_TRACE(name);
    auto be = make_backend(name);
    Tensor y = Tensor::empty(x.shape(), DType::f32), m = Tensor::empty(x.shape(), DType::u8),
           dx = Tensor::empty(x.shape(), DType::f32);
    be->dropout_forward(key, 0.3f, keep_scale, x, y, m);
    be->dropout_backward(keep_scale, m, dy, dx);
    EXPECT_TRUE(equal(m, m_ref));
    EXPECT_TRUE(equal(y, y_ref));
    EXPECT_TRUE(equal(dx, dx_ref));
    Tensor sc = Tensor::empty(x.shape(), DType::f32);
    be->scale(x, 0.7, sc);
    EXPECT_TRUE(equal(sc, s_ref));
    Tensor p = Tensor::empty(x.shape(), DType::f32), dz = Tensor::empty(x.shape(), DType::f32);
    int64_t hits = 0;
    EXPECT_NEAR(be->softmax_ce_forward(x, labels, 1e-7, p, &hits), loss_ref, 1e-5 * std::fabs(loss_ref));
    EXPECT_EQ(hits, hits_ref);
    be->softmax_ce_backward(p, labels, 0.01, dz);
    EXPECT_TRUE(close(p, p_ref, kTol));
    EXPECT_TRUE(close(dz, dz_ref, kTol));
  }
}

// f64 (gradient checks, the book's reference runs) takes the reference code path: bitwise equal.
TEST(F64Ops, FallBackToReferenceExactly) {
  const ConvGeom g = ConvGeom::make(2, 16, 6, 6, 16, 3, 3, 1, 1, 1, 1);
  const PoolGeom pg = PoolGeom::make(2, 16, 6, 6, 2, 2, 2, 2, 0, 0);
  const Tensor x = random_tensor({2, 16, 6, 6}, 91).to(DType::f64);
  const Tensor w = random_tensor({16, 16, 3, 3}, 92).to(DType::f64);
  const Tensor b = random_tensor({16}, 93).to(DType::f64);
  const Tensor dy = random_tensor({2, 16, 6, 6}, 94).to(DType::f64);
  CpuBackend ref;
  for (const std::string& name : backends_under_test()) {
    SCOPED_TRACE(name);
    auto be = make_backend(name);
    std::vector<Tensor> outs[2];
    for (int i = 0; i < 2; ++i) {
      Backend& impl = i ? *be : static_cast<Backend&>(ref);
      Tensor y = Tensor::empty(x.shape(), DType::f64), dyc = dy.clone();
      Tensor dx = Tensor::empty(x.shape(), DType::f64), dw = Tensor::empty(w.shape(), DType::f64),
             db = Tensor::empty(b.shape(), DType::f64);
      impl.conv2d_forward(g, x, w, b, y, true);
      impl.conv2d_backward(g, x, w, y, dyc, true, &dx, dw, &db);
      Tensor p = Tensor::empty({2, 16, 3, 3}, DType::f64), am = Tensor::empty(p.shape(), DType::i32);
      Tensor dp = Tensor::empty(x.shape(), DType::f64);
      impl.maxpool2d_forward(pg, y, p, am);
      impl.maxpool2d_backward(pg, p, am, dp);
      outs[i] = {y, dx, dw, db, p, am, dp};
    }
    for (size_t k = 0; k < outs[0].size(); ++k) EXPECT_TRUE(equal(outs[1][k], outs[0][k])) << k;
  }
}

// to_plain against the layout's definition: (n, c, h, w) of nChwBc lives at
// ((n*C/B + c/B)*H*W + h*W + w)*B + c%B.
TEST(ToPlain, ReordersBlockedLayoutsByDefinition) {
  const int64_t n = 2, c = 32, h = 3, w = 5;
  for (const std::string& name : backends_under_test()) {
    auto be = make_backend(name);
    Tensor plain = be->to_plain(random_tensor({n, c, h, w}, 51));
    EXPECT_EQ(plain.layout(), Layout::plain);
    if (name == "cpu-ref") continue;
#ifdef DEEPTRAIN_HAVE_DNNL
    for (auto [layout, B] : {std::pair{Layout::nChw8c, 8}, std::pair{Layout::nChw16c, 16}}) {
      for (DType dt : {DType::f32, DType::i32}) {
        Tensor blocked = Tensor::empty({n, c, h, w}, dt);
        uint32_t* bp = static_cast<uint32_t*>(blocked.raw());
        for (int64_t i = 0; i < blocked.numel(); ++i) bp[i] = uint32_t(i * 2654435761u);
        blocked.set_layout(layout);
        Tensor got = be->to_plain(blocked);
        ASSERT_EQ(got.layout(), Layout::plain);
        const uint32_t* gp = static_cast<const uint32_t*>(got.raw());
        for (int64_t in = 0; in < n; ++in)
          for (int64_t ic = 0; ic < c; ++ic)
            for (int64_t ih = 0; ih < h; ++ih)
              for (int64_t iw = 0; iw < w; ++iw)
                ASSERT_EQ(gp[((in * c + ic) * h + ih) * w + iw],
                          bp[((in * (c / B) + ic / B) * h * w + ih * w + iw) * B + ic % B])
                    << layout_name(layout) << " " << dtype_name(dt);
      }
    }
#endif
  }
}

// One DeepConvNet step's conv part, chained the way a Net runs it: each op gets the previous
// op's output in whatever layout the backend wrote (blocked end to end on DnnlBackend), the
// affine head gets to_plain of the last pool. Batch 100 and a partial batch of 37.
TEST(DeepConvNetChain, StepMatchesReference) {
  struct Conv { int64_t c, k, pad; };
  const Conv convs[] = {{1, 16, 1}, {16, 16, 1}, {16, 32, 1}, {32, 32, 2}, {32, 64, 1}, {64, 64, 1}};
  for (int64_t n : {100, 37}) {
    std::vector<Tensor> ws, bs;
    for (int i = 0; i < 6; ++i) {
      const float scale = std::sqrt(2.f / (convs[i].c * 9));
      ws.push_back(random_tensor({convs[i].k, convs[i].c, 3, 3}, 60 + i, -scale, scale));
      bs.push_back(random_tensor({convs[i].k}, 70 + i, -0.1f, 0.1f));
    }
    const Tensor input = random_tensor({n, 1, 28, 28}, 80, 0.f, 1.f);
    struct Trace {
      std::vector<Tensor> acts;  // input, then each conv and pool output
      std::vector<Tensor> dws, dbs;
      Tensor head_in;
    };
    auto run = [&](Backend& be, Trace& t) {
      std::vector<ConvGeom> cg;
      std::vector<PoolGeom> pg;
      std::vector<Tensor> argmax;
      t.acts = {input};
      int64_t hw = 28;
      for (int i = 0; i < 6; ++i) {
        const Conv& c = convs[i];
        const Tensor& x = t.acts.back();
        cg.push_back(ConvGeom::make(n, c.c, hw, hw, c.k, 3, 3, 1, 1, c.pad, c.pad));
        Tensor y = Tensor::empty({n, c.k, cg.back().p, cg.back().q}, DType::f32);
        be.conv2d_forward(cg.back(), x, ws[i], bs[i], y, true);
        t.acts.push_back(y);
        hw = cg.back().p;
        if (i % 2 == 1) {
          pg.push_back(PoolGeom::make(n, c.k, hw, hw, 2, 2, 2, 2, 0, 0));
          Tensor p = Tensor::empty({n, c.k, pg.back().p, pg.back().q}, DType::f32);
          argmax.push_back(Tensor::empty(p.shape(), DType::i32));
          be.maxpool2d_forward(pg.back(), t.acts.back(), p, argmax.back());
          t.acts.push_back(p);
          hw = pg.back().p;
        }
      }
      t.head_in = be.to_plain(t.acts.back());
      // Backward from a fixed gradient at the head's input, as affine_backward would hand it
      // over: plain, shaped like the pooled output.
      Tensor d = random_tensor(t.acts.back().shape(), 81);
      t.dws.assign(6, Tensor());
      t.dbs.assign(6, Tensor());
      int act = int(t.acts.size()) - 1;
      for (int i = 5; i >= 0; --i) {
        if (i % 2 == 1) {
          const PoolGeom& g = pg[i / 2];
          Tensor dx = Tensor::empty({n, g.c, g.h, g.w}, DType::f32);
          be.maxpool2d_backward(g, d, argmax[i / 2].slice_flat(0, argmax[i / 2].shape()), dx);
          d = dx;
          --act;
        }
        const ConvGeom& g = cg[i];
        t.dws[i] = Tensor::empty(ws[i].shape(), DType::f32);
        t.dbs[i] = Tensor::empty(bs[i].shape(), DType::f32);
        Tensor dx = Tensor::empty({n, g.c, g.h, g.w}, DType::f32);
        be.conv2d_backward(g, t.acts[act - 1], ws[i], t.acts[act], d, true, i ? &dx : nullptr,
                           t.dws[i], &t.dbs[i]);
        d = dx;
        --act;
      }
    };
    CpuBackend ref;
    Trace want;
    run(ref, want);
    for (const std::string& name : backends_under_test()) {
      SCOPED_TRACE(::testing::Message() << name << " batch " << n);
      auto be = make_backend(name);
      Trace got;
      run(*be, got);
      for (size_t i = 1; i < want.acts.size(); ++i)
        EXPECT_TRUE(close(be->to_plain(got.acts[i]), want.acts[i], kTol)) << "activation " << i;
      EXPECT_TRUE(close(got.head_in, want.head_in, kTol));
      for (int i = 0; i < 6; ++i) {
        EXPECT_TRUE(close(got.dws[i], want.dws[i], kChainTol)) << "dw of conv " << i + 1;
        EXPECT_TRUE(close(got.dbs[i], want.dbs[i], kChainTol)) << "db of conv " << i + 1;
      }
#ifdef DEEPTRAIN_HAVE_DNNL
      // On DnnlBackend every activation after the input stays blocked: no reorders between layers.
      if (auto* dnnl = dynamic_cast<DnnlBackend*>(be.get())) {
        for (size_t i = 1; i < got.acts.size(); ++i)
          EXPECT_EQ(got.acts[i].layout(), dnnl->blocked_layout()) << "activation " << i;
      }
#endif
    }
  }
}

// Batches from a data set in the backend's memory (what a GPU trainer does): the host
// backends' default is data::gather_batch itself, and a bad sample id names itself.
TEST(GatherSamples, HostBackendsGatherAsTheTrainerDoes) {
  data::Dataset d;
  d.images = Tensor::empty({20, 1, 3, 5}, DType::u8);
  d.labels = Tensor::empty({20}, DType::i32);
  for (int64_t k = 0; k < d.images.numel(); ++k) d.images.data<uint8_t>()[k] = uint8_t(k * 29 + 3);
  for (int64_t i = 0; i < 20; ++i) d.labels.data<int32_t>()[i] = int32_t(i % 7);
  const int64_t ids[5] = {19, 0, 7, 7, 12};
  Tensor want_x = Tensor::empty({5, 1, 3, 5}, DType::f32), want_t = Tensor::empty({5}, DType::i32);
  data::gather_batch(d, ids, 5, want_x, want_t);
  EXPECT_EQ(want_x.data<float>()[0], float(d.images.data<uint8_t>()[19 * 15]) / 255.0f);
  for (const std::string name : {"cpu-ref", "cpu"}) {
    SCOPED_TRACE(name);
    auto be = make_backend(name);
    Tensor x = be->empty({5, 1, 3, 5}, DType::f32), t = be->empty({5}, DType::i32);
    be->gather_samples(d.images, d.labels, ids, 5, x, t);
    EXPECT_EQ(0, std::memcmp(x.raw(), want_x.raw(), want_x.nbytes()));
    EXPECT_EQ(0, std::memcmp(t.raw(), want_t.raw(), want_t.nbytes()));
    const int64_t bad[1] = {20};
    Tensor x1 = be->empty({1, 1, 3, 5}, DType::f32), t1 = be->empty({1}, DType::i32);
    EXPECT_THROW(
        {
          try {
            be->gather_samples(d.images, d.labels, bad, 1, x1, t1);
          } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find("sample id 20 out of range [0, 20)"),
                      std::string::npos) << e.what();
            throw;
          }
        },
        Error);
  }
}

}  // namespace
}  // namespace deeptrain
