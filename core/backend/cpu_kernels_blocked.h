#pragma once
// Small hand-written kernels on blocked activations: max pooling (oneDNN 2.6's ran 5-10x below
// what its memory traffic allows in the probe), layout conversions and ReLU masks.
// They vectorise over the B channel lanes of a block with GCC vector extensions: one zmm per
// pixel for B = 16 (AVX-512), one ymm for B = 8 (AVX2).
//
// Blocked layout nChwBc: element (n, c, h, w) lives at ((n*C/B + c/B)*H*W + h*W + w)*B + c%B;
// every kernel here needs C % B == 0, but the plain pooling ones. Threads: OpenMP (set_cpu_threads).
#include <cstdint>

#include "core/backend/backend.h"

namespace deeptrain::kernels {

// The block the pooling kernels take (the layout conversions take both): 16 when compiled
// with AVX-512F, else 8.
int preferred_block();

// Layout conversions of 4-byte elements (f32 and the i32 argmax alike).
void plain_to_blocked(const void* src, void* dst, int64_t n, int64_t c, int64_t hw, int block);
void blocked_to_plain(const void* src, void* dst, int64_t n, int64_t c, int64_t hw, int block);

// Copies the nChwBc planes of x (planes = n * c / B, each h x w) into the interior of planes of
// hp x wp at (top, left); the border is not touched (callers zero it once and reuse the buffer).
void copy_into_padded_blocked(const float* x, float* dst, int64_t planes, int64_t h, int64_t w,
                              int64_t hp, int64_t wp, int64_t top, int64_t left, int block);

// dst[i] = src[i] rounded to bfloat16, to nearest (ties to even), as the upper 16 bits of an
// IEEE float; NaN stays NaN. The bf16 math's conversion (oneDNN's reorders round the same way).
void f32_to_bf16(const float* src, uint16_t* dst, int64_t count);

// dy *= (y > 0): the backward of a ReLU fused into the layer that wrote y.
void relu_mask(float* dy, const float* y, int64_t count);

// Max pooling on nChwBc. argmax has y's blocked layout and the reference's values: the flat
// index (ih*W + iw) within the (n, c) plane of the window's first maximum in row-major order.
// A null argmax (forward only): y alone.
void maxpool_forward_blocked(const PoolGeom& g, int block, const float* x, float* y,
                             int32_t* argmax);
void maxpool_backward_blocked(const PoolGeom& g, int block, const float* dy,
                              const int32_t* argmax, float* dx);
// The forward on plain tensors, for any c (channels that fill no block), with the reference's
// plain argmax, through blocked scratch planes (needs a padding smaller than the window).
// (Backward on plain tensors: the reference's scatter is faster than transposing.)
void maxpool_forward_plain(const PoolGeom& g, const float* x, float* y, int32_t* argmax);

}  // namespace deeptrain::kernels
