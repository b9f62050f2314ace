// DnnlBackend: oneDNN convolutions on blocked activations, plus the hand-written kernels of
// cpu_kernels_blocked.h. Built only with -DDEEPTRAIN_DNNL=ON (the file name ends in _dnnl.cpp).
#include "core/backend/cpu_dnnl.h"

#include <algorithm>
#include <array>
#include <map>
#include <cstdlib>
#include <unordered_map>
#include <vector>

#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>

#include "core/backend/cpu_kernels_blocked.h"

namespace deeptrain {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;

memory::desc f32_md(const memory::dims& dims, Tag tag) {
  return memory::desc(dims, memory::data_type::f32, tag);
}

// Whether the ISA oneDNN settled on (ONEDNN_MAX_CPU_ISA can lower it) includes `need`: the
// cpu_isa values are bit masks, each level a superset of those below it (the AMX levels include
// AVX512-BF16, which includes AVX-512).
bool isa_includes(dnnl::cpu_isa isa, dnnl::cpu_isa need) {
  return (unsigned(isa) & unsigned(need)) == unsigned(need);
}
// For the refusals that name the ISA found: whether the user's environment lowered it.
const char* isa_limit_note() {
  return std::getenv("ONEDNN_MAX_CPU_ISA") ? " (limited by ONEDNN_MAX_CPU_ISA)" : "";
}

const char* isa_name(dnnl::cpu_isa isa) {
  switch (isa) {
    case dnnl::cpu_isa::sse41: return "SSE4.1";
    case dnnl::cpu_isa::avx: return "AVX";
    case dnnl::cpu_isa::avx2: return "AVX2";
    case dnnl::cpu_isa::avx2_vnni: return "AVX2-VNNI";
    case dnnl::cpu_isa::avx512_core: return "AVX-512";
    case dnnl::cpu_isa::avx512_core_vnni: return "AVX-512 VNNI";
    case dnnl::cpu_isa::avx512_core_bf16: return "AVX512-BF16";
    case dnnl::cpu_isa::avx512_core_amx: return "AMX";
    default: return "an ISA older than SSE4.1";
  }
}

// An activation of 16 channels in nChw16c is, byte for byte, the same as in nhwc (one block
// holds all the channels). When a primitive asks for nhwc (AMX's bf16 convolutions do), the
// user's buffer is described as nhwc: an f32 output then needs no reorder at all, and a bf16
// input only its conversion, not a transposition.
memory::desc same_bytes_as_nhwc(const memory::desc& user, const memory::desc& prim) {
  const memory::dims dims = user.dims();
  if (dims.size() != 4 || dims[1] != 16 || user.data_type() != memory::data_type::f32 ||
      !(user == memory::desc(dims, memory::data_type::f32, Tag::nChw16c)))
    return user;
  const memory::desc nhwc(dims, memory::data_type::f32, Tag::nhwc);
  return prim == memory::desc(dims, prim.data_type(), Tag::nhwc) ? nhwc : user;
}

// One argument of a primitive: the format of the caller's buffer and the format the primitive
// chose. When they differ, the argument passes through a reorder and a buffer cached with the
// primitive (weights always do: they are plain (k, c, r, s) and change every step).
struct Arg {
  memory::desc user, prim;
  bool staged = false;
  memory buf;
  dnnl::reorder convert;  // user -> prim for inputs, prim -> user for outputs

  void init(const dnnl::engine& eng, const memory::desc& user_md, const memory::desc& prim_md,
            bool input) {
    user = same_bytes_as_nhwc(user_md, prim_md);
    prim = prim_md;
    staged = !(user == prim);
    if (!staged) return;
    buf = memory(prim, eng);
    convert = input ? dnnl::reorder(dnnl::reorder::primitive_desc(eng, user, eng, prim))
                    : dnnl::reorder(dnnl::reorder::primitive_desc(eng, prim, eng, user));
  }
};

// The primitives of one conv geometry (+ bias, + fused ReLU); backward ones made on first use.
struct ConvPrims {
  dnnl::convolution_forward::primitive_desc fwd_pd;
  dnnl::convolution_forward fwd;
  Arg fwd_src, fwd_wei, fwd_dst;
  bool have_bwd_data = false, have_bwd_weights = false;
  dnnl::convolution_backward_data bwd_data;
  Arg bd_ddst, bd_wei, bd_dsrc;
  dnnl::convolution_backward_weights bwd_weights;
  Arg bw_src, bw_ddst, bw_dwei;
  Tensor bw_xpad;    // x with its padding made physical, when bwd-weights needs that
  memory bias_sink;  // diff bias when the caller asks for none
};

// Keys include the thread count: oneDNN sizes a primitive's work split and scratchpad for the
// threads there are when it is created.
using ConvKey = std::array<int64_t, 16>;

// Affine as oneDNN matmuls: y = x.w (+b, ReLU), dw = x^T.dy, dx = dy.w^T. (OpenBLAS would work
// too, but its pthread pool spins for ~0.1 s after each call and, on 2 cores, steals them from
// the OpenMP threads of the convs that follow: a 3-4 ms step-time tax.)
struct AffinePrims {
  dnnl::matmul fwd, bwd_weights, bwd_data;
};
using AffineKey = std::array<int64_t, 6>;

}  // namespace

struct DnnlBackend::Impl {
  Impl(bool bf16, bool winograd) : bf16(bf16), winograd(winograd) {}
  // bf16 math: convolutions and matrix products read bf16 copies of their inputs (activations,
  // weights, gradients; converted with round-to-nearest-even by the reorders of Arg) and
  // accumulate and write f32. Everything else stays f32 (see cpu_dnnl.h).
  const bool bf16;
  const bool winograd;  // run.conv_algorithm: CONV_WINOGRAD (fp32 only; see cpu_dnnl.h)
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  int block = kernels::preferred_block();
  Layout blocked = block == 16 ? Layout::nChw16c : Layout::nChw8c;
  std::map<ConvKey, ConvPrims> convs;
  std::map<AffineKey, AffinePrims> affines;
  enum Slot { kX, kY, kDy, kSlots };
  std::array<Tensor, kSlots> buffers;  // layout conversions, grown on demand, reused
  std::array<std::vector<uint16_t>, 3> half;  // bf16 copies of an affine's operands

  Layout native_layout(int64_t c) const { return c % block == 0 ? blocked : Layout::plain; }
  Tag native_tag(int64_t c) const {
    if (c % block) return Tag::nchw;
    return block == 16 ? Tag::nChw16c : Tag::nChw8c;
  }
  // The format a primitive is created with: fixed where the channels fill blocks (so the jit
  // kernels and our layout agree and nothing is reordered), else the primitive's choice.
  Tag prim_tag(int64_t c) const { return c % block ? Tag::any : native_tag(c); }

  memory input(Arg& a, const void* p) {
    memory user(a.user, eng, const_cast<void*>(p));
    if (!a.staged) return user;
    a.convert.execute(strm, {{DNNL_ARG_FROM, user}, {DNNL_ARG_TO, a.buf}});
    return a.buf;
  }
  memory output(Arg& a, void* p) { return a.staged ? a.buf : memory(a.user, eng, p); }
  void finish(Arg& a, void* p) {
    if (a.staged)
      a.convert.execute(strm, {{DNNL_ARG_FROM, a.buf}, {DNNL_ARG_TO, memory(a.user, eng, p)}});
  }

  // t (f32, 4-d) in its native layout: t itself, or a converted copy in buffer `slot`.
  Tensor native(const Tensor& t, Slot slot) {
    const Layout want = native_layout(t.dim(1));
    if (t.layout() == want) return t;
    const Tensor plain = t.layout() == Layout::plain ? t : to_plain(t);
    if (want == Layout::plain) return plain;
    Tensor& buf = buffers[slot];
    if (!buf.defined() || buf.numel() < t.numel()) buf = Tensor::empty({t.numel()}, DType::f32);
    Tensor out = buf.slice_flat(0, t.shape());
    kernels::plain_to_blocked(plain.raw(), out.raw(), t.dim(0), t.dim(1), t.dim(2) * t.dim(3),
                              block);
    out.set_layout(want);
    return out;
  }

  static Tensor to_plain(const Tensor& t) {
    if (t.layout() == Layout::plain) return t;
    DT_CHECK(t.shape().rank() == 4 && dtype_size(t.dtype()) == 4, "to_plain of a {} {} {} tensor",
             layout_name(t.layout()), dtype_name(t.dtype()), t.shape().str());
    Tensor out = Tensor::empty(t.shape(), t.dtype());
    kernels::blocked_to_plain(t.raw(), out.raw(), t.dim(0), t.dim(1), t.dim(2) * t.dim(3),
                              t.layout() == Layout::nChw16c ? 16 : 8);
    return out;
  }

  ConvPrims& conv(const ConvGeom& g, bool bias, bool relu);
  AffinePrims& affine(int64_t n, int64_t d, int64_t m, bool bias, bool relu);
  // The descriptor of an operand a conv or matmul multiplies: f32, or bf16 in bf16 math, whose
  // kernels (AMX's brgemm convolutions) choose their own layout (nhwc), so `tag` is a request
  // only in f32.
  memory::desc mul_md(const memory::dims& dims, Tag tag) const {
    return bf16 ? memory::desc(dims, memory::data_type::bf16, Tag::any) : f32_md(dims, tag);
  }
  // A product's f32 output: our layout in f32 math, the kernel's choice in bf16 math.
  memory::desc out_md(const memory::dims& dims, Tag tag) const {
    return f32_md(dims, bf16 ? Tag::any : tag);
  }
  memory mem(const memory::dims& dims, Tag tag, const void* p) {
    return memory(f32_md(dims, tag), eng, const_cast<void*>(p));
  }
  // A matmul operand in a fixed layout (the affine's row-major buffers, possibly viewed
  // transposed): f32, or bf16 in bf16 math.
  memory::desc in_md(const memory::dims& dims, Tag tag) const {
    return memory::desc(dims, bf16 ? memory::data_type::bf16 : memory::data_type::f32, tag);
  }
  // The f32 buffer p (count elements) as a matmul operand: itself, or in bf16 math its bf16
  // copy in half[slot].
  memory operand(const memory::dims& dims, Tag tag, const float* p, int64_t count, int slot) {
    if (!bf16) return mem(dims, tag, p);
    std::vector<uint16_t>& h = half[slot];
    if (int64_t(h.size()) < count) h.resize(count);
    kernels::f32_to_bf16(p, h.data(), count);
    return memory(in_md(dims, tag), eng, h.data());
  }
  // The algorithm asked of oneDNN for g's pass (cpu_dnnl.h: "Convolution algorithm").
  enum class Pass { forward, backward_data, backward_weights };
  dnnl::algorithm algorithm(const ConvGeom& g, Pass pass) const {
    const int64_t min_channels = pass == Pass::backward_weights ? 16 : 32;
    const bool fits = g.r == 3 && g.s == 3 && g.stride_h == 1 && g.stride_w == 1 &&
                      g.pad_h <= 1 && g.pad_w <= 1 && g.c % 16 == 0 && g.k % 16 == 0 &&
                      g.c >= min_channels && g.k >= min_channels;
    return winograd && fits ? dnnl::algorithm::convolution_winograd
                            : dnnl::algorithm::convolution_direct;
  }
  // make(algorithm(g, pass)), or make(direct) when oneDNN has no Winograd kernel for it.
  template <class Make>
  auto with_algorithm(const ConvGeom& g, Pass pass, Make&& make) const {
    const dnnl::algorithm a = algorithm(g, pass);
    if (a != dnnl::algorithm::convolution_direct) {
      try {
        return make(a);
      } catch (const dnnl::error&) {
      }
    }
    return make(dnnl::algorithm::convolution_direct);
  }
  void make_bwd_data(ConvPrims& e, const ConvGeom& g);
  void make_bwd_weights(ConvPrims& e, const ConvGeom& g);
};

namespace {
struct ConvDims {
  memory::dims src, wei, dst, strides, pad_l, pad_r;
  explicit ConvDims(const ConvGeom& g)
      : src{g.n, g.c, g.h, g.w}, wei{g.k, g.c, g.r, g.s}, dst{g.n, g.k, g.p, g.q},
        strides{g.stride_h, g.stride_w}, pad_l{g.pad_h, g.pad_w},
        pad_r{(g.p - 1) * g.stride_h + g.r - g.h - g.pad_h,
              (g.q - 1) * g.stride_w + g.s - g.w - g.pad_w} {}
};

std::string describe(const ConvGeom& g) {
  return fmt::format("conv x ({}, {}, {}, {}) w ({}, {}, {}, {}) stride {}x{} pad {}x{}", g.n, g.c,
                     g.h, g.w, g.k, g.c, g.r, g.s, g.stride_h, g.stride_w, g.pad_h, g.pad_w);
}
}  // namespace

ConvPrims& DnnlBackend::Impl::conv(const ConvGeom& g, bool bias, bool relu) {
  const ConvKey key{g.n, g.c, g.h, g.w, g.k, g.r, g.s, g.stride_h, g.stride_w, g.pad_h, g.pad_w,
                    g.p, g.q, bias, relu, omp_get_max_threads()};
  auto it = convs.find(key);
  if (it != convs.end()) return it->second;
  const ConvDims d(g);
  ConvPrims e;
  try {
    dnnl::post_ops ops;
    if (relu) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    dnnl::primitive_attr attr;
    attr.set_post_ops(ops);
    e.fwd_pd = with_algorithm(g, Pass::forward, [&](dnnl::algorithm a) {
      dnnl::convolution_forward::desc desc(
          dnnl::prop_kind::forward_training, a, mul_md(d.src, prim_tag(g.c)),
          mul_md(d.wei, Tag::any), bias ? f32_md({g.k}, Tag::x) : memory::desc(),
          out_md(d.dst, prim_tag(g.k)), d.strides, d.pad_l, d.pad_r);
      return dnnl::convolution_forward::primitive_desc(desc, attr, eng);
    });
    e.fwd = dnnl::convolution_forward(e.fwd_pd);
    e.fwd_src.init(eng, f32_md(d.src, native_tag(g.c)), e.fwd_pd.src_desc(), true);
    e.fwd_wei.init(eng, f32_md(d.wei, Tag::oihw), e.fwd_pd.weights_desc(), true);
    e.fwd_dst.init(eng, f32_md(d.dst, native_tag(g.k)), e.fwd_pd.dst_desc(), false);
  } catch (const dnnl::error& err) {
    fail("oneDNN cannot make a forward {}: {}", describe(g), err.what());
  }
  return convs.emplace(key, std::move(e)).first->second;
}

void DnnlBackend::Impl::make_bwd_data(ConvPrims& e, const ConvGeom& g) {
  const ConvDims d(g);
  try {
    const auto pd = with_algorithm(g, Pass::backward_data, [&](dnnl::algorithm a) {
      dnnl::convolution_backward_data::desc desc(a, out_md(d.src, prim_tag(g.c)),
                                                 mul_md(d.wei, Tag::any),
                                                 mul_md(d.dst, prim_tag(g.k)), d.strides, d.pad_l,
                                                 d.pad_r);
      return dnnl::convolution_backward_data::primitive_desc(desc, eng, e.fwd_pd);
    });
    e.bwd_data = dnnl::convolution_backward_data(pd);
    e.bd_ddst.init(eng, f32_md(d.dst, native_tag(g.k)), pd.diff_dst_desc(), true);
    e.bd_wei.init(eng, f32_md(d.wei, Tag::oihw), pd.weights_desc(), true);
    e.bd_dsrc.init(eng, f32_md(d.src, native_tag(g.c)), pd.diff_src_desc(), false);
  } catch (const dnnl::error& err) {
    fail("oneDNN cannot make a backward-data {}: {}", describe(g), err.what());
  }
  e.have_bwd_data = true;
}

void DnnlBackend::Impl::make_bwd_weights(ConvPrims& e, const ConvGeom& g) {
  auto make = [&](const ConvGeom& geom, Tag src_tag, Tag ddst_tag) {
    const ConvDims d(geom);
    return with_algorithm(geom, Pass::backward_weights, [&](dnnl::algorithm a) {
      dnnl::convolution_backward_weights::desc desc(a, mul_md(d.src, src_tag),
                                                    f32_md(d.wei, Tag::any),
                                                    f32_md({geom.k}, Tag::x),
                                                    mul_md(d.dst, ddst_tag), d.strides, d.pad_l,
                                                    d.pad_r);
      return dnnl::convolution_backward_weights::primitive_desc(desc, eng, e.fwd_pd);
    });
  };
  try {
    auto is_ref = [](const auto& p) { return std::string(p.impl_info_str()).rfind("ref", 0) == 0; };
    dnnl::convolution_backward_weights::primitive_desc pd = make(g, prim_tag(g.c), prim_tag(g.k));
    // With input channels that fill no block (GoogLeNet's 8-channel branches) x stays plain,
    // and oneDNN 2.6 has no jit backward-weights for a plain x with a blocked dy: its reference
    // code took 300 ms of a 480 ms step. Then dy's layout is left to oneDNN (a reorder each
    // step), which picks its GEMM-based kernel.
    if (is_ref(pd) && g.c % block != 0 && !bf16) {
      dnnl::convolution_backward_weights::primitive_desc alt = make(g, prim_tag(g.c), Tag::any);
      if (!is_ref(alt)) pd = alt;
    }
    // oneDNN 2.6's blocked jit backward-weights refuses some paddings (DeepConvNet's 3x3
    // conv with pad 2) and falls back to its reference code: 17 s instead of 3 ms. Then pad
    // x physically (a zero border, written once, in a cached buffer) and use pad 0.
    if (is_ref(pd) && g.c % block == 0) {
      ConvGeom padded = g;
      padded.h = g.h + g.pad_h + std::max<int64_t>(ConvDims(g).pad_r[0], 0);
      padded.w = g.w + g.pad_w + std::max<int64_t>(ConvDims(g).pad_r[1], 0);
      padded.pad_h = padded.pad_w = 0;
      pd = make(padded, prim_tag(g.c), prim_tag(g.k));
      e.bw_xpad = Tensor::zeros({g.n, g.c, padded.h, padded.w}, DType::f32);
    }
    const ConvDims d(g);
    const memory::dims src_dims =
        e.bw_xpad.defined() ? memory::dims(e.bw_xpad.shape().dims()) : d.src;
    e.bwd_weights = dnnl::convolution_backward_weights(pd);
    e.bw_src.init(eng, f32_md(src_dims, native_tag(g.c)), pd.src_desc(), true);
    e.bw_ddst.init(eng, f32_md(d.dst, native_tag(g.k)), pd.diff_dst_desc(), true);
    e.bw_dwei.init(eng, f32_md(d.wei, Tag::oihw), pd.diff_weights_desc(), false);
    e.bias_sink = memory(f32_md({g.k}, Tag::x), eng);
  } catch (const dnnl::error& err) {
    fail("oneDNN cannot make a backward-weights {}: {}", describe(g), err.what());
  }
  e.have_bwd_weights = true;
}

AffinePrims& DnnlBackend::Impl::affine(int64_t n, int64_t d, int64_t m, bool bias, bool relu) {
  const AffineKey key{n, d, m, bias, relu, omp_get_max_threads()};
  auto it = affines.find(key);
  if (it != affines.end()) return it->second;
  AffinePrims a;
  try {
    dnnl::post_ops ops;
    if (relu) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    dnnl::primitive_attr attr;
    attr.set_post_ops(ops);
    auto make = [&](const memory::desc& src, const memory::desc& wei, const memory::desc& b,
                    const memory::desc& dst, const dnnl::primitive_attr& at) {
      return dnnl::matmul(
          dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wei, b, dst), at, eng));
    };
    // Tag::ba on dims (a, b) reads a row-major (b, a) buffer: a transposed view, no copy.
    a.fwd = make(in_md({n, d}, Tag::ab), in_md({d, m}, Tag::ab),
                 bias ? f32_md({1, m}, Tag::ab) : memory::desc(), f32_md({n, m}, Tag::ab), attr);
    a.bwd_weights = make(in_md({d, n}, Tag::ba), in_md({n, m}, Tag::ab), memory::desc(),
                         f32_md({d, m}, Tag::ab), {});
    a.bwd_data = make(in_md({n, m}, Tag::ab), in_md({m, d}, Tag::ba), memory::desc(),
                      f32_md({n, d}, Tag::ab), {});
  } catch (const dnnl::error& err) {
    fail("oneDNN cannot make an affine ({}, {}) -> {}: {}", n, d, m, err.what());
  }
  return affines.emplace(key, std::move(a)).first->second;
}

DnnlBackend::DnnlBackend(MathMode math, ConvAlgo conv) {
  if (math != MathMode::fp32 && math != MathMode::bf16)
    fail_input("run.math: {} runs on GPU backends only; the CPU backend computes in fp32 or bf16",
               math_mode_name(math));
  if (math == MathMode::bf16) {
    const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
    if (!isa_includes(isa, dnnl::cpu_isa::avx512_core_bf16))
      fail_input("run.math: bf16 on the CPU needs a processor with AVX512-BF16 (or AMX-BF16), "
                 "which oneDNN does not find here: the best instruction set it may use is {}{}. "
                 "Train in fp32 (run.math: MATH_FP32) on this machine", isa_name(isa),
                 isa_limit_note());
  }
  if (conv == ConvAlgo::winograd) {
    if (math != MathMode::fp32)
      fail_input("run.conv_algorithm: winograd computes in fp32; oneDNN has no {} Winograd "
                 "kernels. Use run.math: MATH_FP32 or run.conv_algorithm: CONV_DIRECT",
                 math_mode_name(math));
    const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
    if (!isa_includes(isa, dnnl::cpu_isa::avx512_core))
      fail_input("run.conv_algorithm: winograd needs a processor with AVX-512 (oneDNN's "
                 "Winograd kernels are AVX-512 only), which oneDNN does not find here: the best "
                 "instruction set it may use is {}{}. Use run.conv_algorithm: CONV_DIRECT",
                 isa_name(isa), isa_limit_note());
  }
  impl_ = std::make_unique<Impl>(math == MathMode::bf16, conv == ConvAlgo::winograd);
}
DnnlBackend::~DnnlBackend() = default;

Layout DnnlBackend::blocked_layout() const { return impl_->blocked; }

Tensor DnnlBackend::to_plain(const Tensor& x) { return Impl::to_plain(x); }

void DnnlBackend::conv2d_forward(const ConvGeom& g, const Tensor& x, const Tensor& w,
                                 const Tensor& b, Tensor& y, bool fuse_relu) {
  if (x.dtype() != DType::f32) return CpuBackend::conv2d_forward(g, x, w, b, y, fuse_relu);
  Impl& m = *impl_;
  const bool bias = b.defined() && b.numel() > 0;  // a default Tensor has numel 1 (empty shape)
  ConvPrims& e = m.conv(g, bias, fuse_relu);
  const Tensor xn = m.native(x, Impl::kX);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, m.input(e.fwd_src, xn.raw())},
                                       {DNNL_ARG_WEIGHTS, m.input(e.fwd_wei, w.raw())},
                                       {DNNL_ARG_DST, m.output(e.fwd_dst, y.raw())}};
  if (bias) args.emplace(DNNL_ARG_BIAS, memory(f32_md({g.k}, Tag::x), m.eng, b.raw()));
  e.fwd.execute(m.strm, args);
  m.finish(e.fwd_dst, y.raw());
  m.strm.wait();
  y.set_layout(m.native_layout(g.k));
}

void DnnlBackend::conv2d_backward(const ConvGeom& g, const Tensor& x, const Tensor& w,
                                  const Tensor& y, Tensor& dy, bool fuse_relu, Tensor* dx,
                                  Tensor& dw, Tensor* db) {
  if (x.dtype() != DType::f32)
    return CpuBackend::conv2d_backward(g, x, w, y, dy, fuse_relu, dx, dw, db);
  Impl& m = *impl_;
  ConvPrims& e = m.conv(g, db != nullptr, fuse_relu);
  const Tensor xn = m.native(x, Impl::kX);
  Tensor dyn = m.native(dy, Impl::kDy);  // dy itself when already native: the contract allows
  if (fuse_relu) {                        // masking it in place
    const Tensor yn = m.native(y, Impl::kY);
    kernels::relu_mask(dyn.data<float>(), yn.data<float>(), dyn.numel());
  }

  // Weight gradient. A first conv (1 input channel) keeps x plain: oneDNN's jit kernel reads
  // nchw at ~100 GFLOP/s per core, while a blocked x sends it to its reference code.
  if (!e.have_bwd_weights) m.make_bwd_weights(e, g);
  const void* src = xn.raw();
  if (e.bw_xpad.defined()) {
    const Tensor& xp = e.bw_xpad;
    kernels::copy_into_padded_blocked(xn.data<float>(), xp.data<float>(), g.n * g.c / m.block,
                                      g.h, g.w, xp.dim(2), xp.dim(3), g.pad_h, g.pad_w, m.block);
    src = xp.raw();
  }
  const memory ddst = m.input(e.bw_ddst, dyn.raw());
  e.bwd_weights.execute(
      m.strm, {{DNNL_ARG_SRC, m.input(e.bw_src, src)},
               {DNNL_ARG_DIFF_DST, ddst},
               {DNNL_ARG_DIFF_WEIGHTS, m.output(e.bw_dwei, dw.raw())},
               {DNNL_ARG_DIFF_BIAS,
                db ? memory(f32_md({g.k}, Tag::x), m.eng, db->raw()) : e.bias_sink}});
  m.finish(e.bw_dwei, dw.raw());

  if (dx) {
    if (!e.have_bwd_data) m.make_bwd_data(e, g);
    // dy converted once when both kernels read it in the same format (bf16 math's copies).
    const bool shared = e.bw_ddst.staged && e.bd_ddst.staged && e.bw_ddst.prim == e.bd_ddst.prim;
    e.bwd_data.execute(m.strm, {{DNNL_ARG_DIFF_DST, shared ? ddst : m.input(e.bd_ddst, dyn.raw())},
                                {DNNL_ARG_WEIGHTS, m.input(e.bd_wei, w.raw())},
                                {DNNL_ARG_DIFF_SRC, m.output(e.bd_dsrc, dx->raw())}});
    m.finish(e.bd_dsrc, dx->raw());
    dx->set_layout(m.native_layout(g.c));
  }
  m.strm.wait();
}

// Transposed convolution on the conv primitives with the roles swapped: forward is the conv's
// backward-data, backward the conv's forward (dx) and its weight gradient with input dy and
// output gradient x. Output padding that puts the conv's right padding below 0 (oneDNN takes
// none) and f64 go to the reference.
namespace {
bool dnnl_can_deconv(const ConvGeom& g, const Tensor& x) {
  const ConvDims d(g);
  return x.dtype() == DType::f32 && d.pad_r[0] >= 0 && d.pad_r[1] >= 0 && g.n > 0;
}
// y[n, c, s] += b[c] for y in plain or blocked (nChwBc) layout.
void add_channel_bias(Tensor& y, const float* b, int block) {
  const int64_t n = y.dim(0), C = y.dim(1), S = y.dim(2) * y.dim(3);
  float* py = y.data<float>();
  const int64_t B = y.layout() == Layout::plain ? 1 : block;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t cb = 0; cb < C / B; ++cb)
      for (int64_t sp = 0; sp < S; ++sp)
        for (int64_t l = 0; l < B; ++l)
          py[((i * (C / B) + cb) * S + sp) * B + l] += b[cb * B + l];
}
}  // namespace

void DnnlBackend::deconv2d_forward(const ConvGeom& g, const Tensor& x, const Tensor& w,
                                   const Tensor& b, Tensor& y) {
  if (!dnnl_can_deconv(g, x)) return CpuBackend::deconv2d_forward(g, x, w, b, y);
  Impl& m = *impl_;
  ConvPrims& e = m.conv(g, false, false);
  if (!e.have_bwd_data) m.make_bwd_data(e, g);
  const Tensor xn = m.native(x, Impl::kDy);
  e.bwd_data.execute(m.strm, {{DNNL_ARG_DIFF_DST, m.input(e.bd_ddst, xn.raw())},
                              {DNNL_ARG_WEIGHTS, m.input(e.bd_wei, w.raw())},
                              {DNNL_ARG_DIFF_SRC, m.output(e.bd_dsrc, y.raw())}});
  m.finish(e.bd_dsrc, y.raw());
  m.strm.wait();
  y.set_layout(m.native_layout(g.c));
  if (b.raw()) add_channel_bias(y, b.data<float>(), m.block);
}

void DnnlBackend::deconv2d_backward(const ConvGeom& g, const Tensor& x, const Tensor& w,
                                    const Tensor& dy, Tensor* dx, Tensor& dw, Tensor* db) {
  if (!dnnl_can_deconv(g, x)) return CpuBackend::deconv2d_backward(g, x, w, dy, dx, dw, db);
  if (db) {  // the per-channel sums of dy, in f64 in a fixed order (any layout)
    Tensor sums = Tensor::empty({g.c}, DType::f64);
    bn_sums(dy, nullptr, sums);
    for (int64_t c = 0; c < g.c; ++c) db->data<float>()[c] = float(sums.data<double>()[c]);
  }
  if (dx) conv2d_forward(g, dy, w, Tensor(), *dx, false);
  Tensor xs = x;  // read only: no fused ReLU masks it
  conv2d_backward(g, dy, w, Tensor(), xs, false, nullptr, dw, nullptr);
}

void DnnlBackend::affine_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y,
                                 bool fuse_relu) {
  if (x.dtype() != DType::f32 || x.layout() != Layout::plain)
    return CpuBackend::affine_forward(x, w, b, y, fuse_relu);
  Impl& m = *impl_;
  const int64_t n = x.dim(0), d = w.dim(0), o = w.dim(1);
  DT_CHECK(x.numel() == n * d, "affine: input {} vs weights {}", x.shape().str(), w.shape().str());
  const bool bias = b.defined() && b.numel() > 0;
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, m.operand({n, d}, Tag::ab, x.data<float>(), n * d, 0)},
      {DNNL_ARG_WEIGHTS, m.operand({d, o}, Tag::ab, w.data<float>(), d * o, 1)},
      {DNNL_ARG_DST, m.mem({n, o}, Tag::ab, y.raw())}};
  if (bias) args.emplace(DNNL_ARG_BIAS, m.mem({1, o}, Tag::ab, b.raw()));
  m.affine(n, d, o, bias, fuse_relu).fwd.execute(m.strm, args);
  m.strm.wait();
  y.set_layout(Layout::plain);
}

void DnnlBackend::affine_backward(const Tensor& x, const Tensor& w, const Tensor& y, Tensor& dy,
                                  bool fuse_relu, Tensor* dx, Tensor& dw, Tensor* db) {
  if (x.dtype() != DType::f32 || x.layout() != Layout::plain)
    return CpuBackend::affine_backward(x, w, y, dy, fuse_relu, dx, dw, db);
  Impl& m = *impl_;
  const int64_t n = x.dim(0), d = w.dim(0), o = w.dim(1);
  float* pdy = dy.data<float>();
  if (fuse_relu) kernels::relu_mask(pdy, y.data<float>(), n * o);
  AffinePrims& a = m.affine(n, d, o, db != nullptr, fuse_relu);
  const memory dy_op = m.operand({n, o}, Tag::ab, pdy, n * o, 2);  // one copy for both
  a.bwd_weights.execute(m.strm, {{DNNL_ARG_SRC, m.operand({d, n}, Tag::ba, x.data<float>(), n * d, 0)},
                                 {DNNL_ARG_WEIGHTS, dy_op},
                                 {DNNL_ARG_DST, m.mem({d, o}, Tag::ab, dw.raw())}});
  if (dx) {
    a.bwd_data.execute(m.strm, {{DNNL_ARG_SRC, dy_op},
                                {DNNL_ARG_WEIGHTS, m.operand({o, d}, Tag::ba, w.data<float>(), d * o, 1)},
                                {DNNL_ARG_DST, m.mem({n, d}, Tag::ab, dx->raw())}});
    dx->set_layout(Layout::plain);
  }
  if (db) {  // column sums of dy, in the reference's order (rows ascending)
    float* pdb = db->data<float>();
    std::fill(pdb, pdb + o, 0.f);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < o; ++j) pdb[j] += pdy[i * o + j];
  }
  m.strm.wait();
}

void DnnlBackend::maxpool2d_forward(const PoolGeom& g, const Tensor& x, Tensor& y,
                                    Tensor& argmax) {
  if (!vector_pool(g, x)) return CpuBackend::maxpool2d_forward(g, to_plain(x), y, argmax);
  pool_forward(g, x, y, argmax.data<int32_t>());
  argmax.set_layout(y.layout());
}

void DnnlBackend::maxpool2d_infer(const PoolGeom& g, const Tensor& x, Tensor& y,
                                  Tensor& scratch) {
  if (!vector_pool(g, x)) return CpuBackend::maxpool2d_infer(g, x, y, scratch);
  pool_forward(g, x, y, nullptr);
}

bool DnnlBackend::vector_pool(const PoolGeom& g, const Tensor& x) const {
  return x.dtype() == DType::f32 && (g.c % impl_->block == 0 || (g.pad_h < g.r && g.pad_w < g.s));
}

// The vector kernels; argmax null: y only.
void DnnlBackend::pool_forward(const PoolGeom& g, const Tensor& x, Tensor& y, int32_t* argmax) {
  Impl& m = *impl_;
  if (g.c % m.block) {
    // Channels that fill no block (an Inception module's concat: 56, 88) keep x, y and argmax
    // plain, but the pooling runs on the vector kernel, B planes at a time (the reference's
    // scalar loop took 30-40% of GoogLeNet's inference step).
    kernels::maxpool_forward_plain(g, to_plain(x).data<float>(), y.data<float>(), argmax);
    y.set_layout(Layout::plain);
    return;
  }
  const Tensor xn = m.native(x, Impl::kX);
  kernels::maxpool_forward_blocked(g, m.block, xn.data<float>(), y.data<float>(), argmax);
  y.set_layout(m.blocked);
}

void DnnlBackend::maxpool2d_backward(const PoolGeom& g, const Tensor& dy, const Tensor& argmax,
                                     Tensor& dx) {
  Impl& m = *impl_;
  // argmax is blocked exactly when forward ran the blocked kernel: f32 with c % B == 0.
  // A plain argmax (channels that fill no block) goes to the reference's scatter, which beat
  // transposing dy, argmax and dx through blocked planes (3.3 ms against 1.3 for GoogLeNet's
  // inc3b_pool).
  if (dy.dtype() != DType::f32 || g.c % m.block)
    return CpuBackend::maxpool2d_backward(g, to_plain(dy), argmax, dx);
  const Tensor dyn = m.native(dy, Impl::kDy);
  kernels::maxpool_backward_blocked(g, m.block, dyn.data<float>(), argmax.data<int32_t>(),
                                    dx.data<float>());
  dx.set_layout(m.blocked);
}

void DnnlBackend::relu_backward(const Tensor& y, const Tensor& dy, Tensor& dx) {
  if (dy.layout() == y.layout()) return CpuBackend::relu_backward(y, dy, dx);
  // Bring dy to y's layout; dx takes y's layout.
  Tensor dyp = to_plain(dy);
  if (y.layout() == Layout::plain) return CpuBackend::relu_backward(y, dyp, dx);
  Tensor dyb = impl_->native(dyp, Impl::kDy);
  DT_CHECK(dyb.layout() == y.layout(), "relu_backward: y is {}, dy is {}",
           layout_name(y.layout()), layout_name(dy.layout()));
  CpuBackend::relu_backward(y, dyb, dx);
}

}  // namespace deeptrain
