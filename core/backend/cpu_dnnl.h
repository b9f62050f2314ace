#pragma once
// DnnlBackend ("cpu"): the fast CPU path. f32 convolutions run on oneDNN's jit kernels with
// activations kept in a blocked layout between layers and bias + ReLU fused into the forward
// conv; max pooling runs on the hand-written kernels of cpu_kernels_blocked.h (oneDNN's is
// slow; the backward over channels that fill no block is the reference's scatter); transposed
// convolutions run on the conv primitives with the roles swapped; affine runs on oneDNN
// matmul, so a training step never touches OpenBLAS. f64 and the remaining ops (dropout,
// softmax) fall back to CpuBackend, the reference.
//
// Math (run.math). fp32: IEEE float throughout. bf16 (processors with AVX512-BF16 or AMX):
// convolutions and matrix products read bf16 copies of their inputs, rounded to nearest even,
// accumulate in f32 and write f32; activations between layers, BatchNorm and its statistics,
// the loss, gradients, master weights and the optimizer stay f32, as on the GPU backends
// (backend.h: MathMode). The copies are made per call, in the layout the bf16 kernel asks for
// (AMX's convolutions read nhwc). A processor without bf16 is an InputError, never emulation.
//
// Convolution algorithm (run.conv_algorithm). direct: oneDNN's direct kernels. winograd:
// oneDNN's F(4x4, 3x3) (jit_wino_4x3, AVX-512 and fp32 only) for the 3x3 stride-1 convolutions
// whose input and output channels are multiples of 16, with padding of at most 1: in all three
// passes from 32 channels, and in the weight gradient alone at 16 (there the forward and
// backward-data transforms cost more than they save; docs/cpu_performance.md). Any other
// convolution, or one oneDNN declines, stays direct, so the choice is a function of the
// geometry alone: the same on every step, rank and run.
//
// Layouts. The native layout of a 4-d f32 activation with c channels is nChwBc (B = 16 when
// compiled for AVX-512, else 8) when c % B == 0, and plain otherwise. Ops accept any layout,
// convert their inputs to native and write native outputs (tagged with Tensor::set_layout).
// to_plain() reorders to NCHW. Parameters and their gradients are always plain.
//
// argmax of maxpool2d_forward: when c % B == 0 it is stored in y's blocked layout (whatever
// tag the caller's view carries; backward decides from the geometry, not the tag) and holds
// the reference's values: the flat index within the (n, c) plane of the window's first
// maximum. to_plain(argmax) with the tag forward set equals the reference's argmax.
#include <memory>

#include "core/backend/cpu.h"

namespace deeptrain {

class DnnlBackend : public CpuBackend {
 public:
  // bf16 on a processor without it, tf32/fp16 (GPU only), or Winograd with bf16 or without
  // AVX-512: InputError naming what is missing.
  explicit DnnlBackend(MathMode math = MathMode::fp32, ConvAlgo conv = ConvAlgo::direct);
  ~DnnlBackend() override;
  std::string name() const override { return "cpu"; }
  bool exact_capable() const override { return false; }

  void conv2d_forward(const ConvGeom& g, const Tensor& x, const Tensor& w, const Tensor& b,
                      Tensor& y, bool fuse_relu) override;
  void conv2d_backward(const ConvGeom& g, const Tensor& x, const Tensor& w, const Tensor& y,
                       Tensor& dy, bool fuse_relu, Tensor* dx, Tensor& dw, Tensor* db) override;
  void affine_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y,
                      bool fuse_relu) override;
  void affine_backward(const Tensor& x, const Tensor& w, const Tensor& y, Tensor& dy,
                       bool fuse_relu, Tensor* dx, Tensor& dw, Tensor* db) override;
  void maxpool2d_forward(const PoolGeom& g, const Tensor& x, Tensor& y, Tensor& argmax) override;
  void maxpool2d_backward(const PoolGeom& g, const Tensor& dy, const Tensor& argmax,
                          Tensor& dx) override;
  void maxpool2d_infer(const PoolGeom& g, const Tensor& x, Tensor& y, Tensor& scratch) override;
  void relu_backward(const Tensor& y, const Tensor& dy, Tensor& dx) override;
  void deconv2d_forward(const ConvGeom& g, const Tensor& x, const Tensor& w, const Tensor& b,
                        Tensor& y) override;
  void deconv2d_backward(const ConvGeom& g, const Tensor& x, const Tensor& w, const Tensor& dy,
                         Tensor* dx, Tensor& dw, Tensor* db) override;
  Tensor to_plain(const Tensor& x) override;

  // The blocked layout this backend writes (nChw16c or nChw8c).
  Layout blocked_layout() const;

 private:
  // Whether pool_forward takes this pooling: f32, and blocked channels or windows that always
  // overlap the image (the plain path's kernel assumes it); else the reference does.
  bool vector_pool(const PoolGeom& g, const Tensor& x) const;
  void pool_forward(const PoolGeom& g, const Tensor& x, Tensor& y, int32_t* argmax);
  struct Impl;  // oneDNN objects and cached primitives; keeps dnnl.hpp out of this header
  std::unique_ptr<Impl> impl_;
};

}  // namespace deeptrain
