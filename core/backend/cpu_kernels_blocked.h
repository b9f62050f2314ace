#pragma once
// Small hand-written kernels on blocked activations, where oneDNN 2.6 is slow (max pooling runs
// 5-10x below its memory bandwidth; the weight gradient of a conv with 1-3 input channels pads
// them to a whole block and runs at 7-10 GFLOP/s). They vectorise over the B channel lanes of
// a block with GCC vector extensions: one zmm per pixel for B = 16 (AVX-512), one ymm for
// B = 8 (AVX2). Any target compiles them; without those ISAs they are correct but slow.
//
// Blocked layout nChwBc: element (n, c, h, w) lives at ((n*C/B + c/B)*H*W + h*W + w)*B + c%B;
// every kernel here needs C % B == 0. Threads: OpenMP (set_cpu_threads).
#include <cstdint>

#include "core/backend/backend.h"

namespace deeptrain::kernels {

// The block the kernels are fastest with on the compile target: 16 with AVX-512F, else 8.
int preferred_block();

// Layout conversions of 4-byte elements (f32 and the i32 argmax alike).
void plain_to_blocked(const void* src, void* dst, int64_t n, int64_t c, int64_t hw, int block);
void blocked_to_plain(const void* src, void* dst, int64_t n, int64_t c, int64_t hw, int block);

void relu(const float* x, float* y, int64_t count);                // y = max(x, 0)
void relu_mask(float* dy, const float* y, int64_t count);          // dy *= (y > 0)
void relu_backward(const float* y, const float* dy, float* dx, int64_t count);

// Max pooling on nChwBc. argmax has y's blocked layout and the reference's values: the flat
// index (ih*W + iw) within the (n, c) plane of the window's first maximum in row-major order.
void maxpool_forward_blocked(const PoolGeom& g, int block, const float* x, float* y,
                             int32_t* argmax);
void maxpool_backward_blocked(const PoolGeom& g, int block, const float* dy,
                              const int32_t* argmax, float* dx);

// Weight (and bias) gradient of a conv whose input x is plain with few channels and whose dy
// is nChwBc (k % B == 0): dw (k, c, r, s) plain, db (k) or null. Overwrites both.
bool conv_backward_weights_small_c_supported(const ConvGeom& g, int block);
void conv_backward_weights_small_c(const ConvGeom& g, int block, const float* x,
                                   const float* dy, float* dw, float* db);

}  // namespace deeptrain::kernels
