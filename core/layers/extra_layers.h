#pragma once
// The layers of chapter 8's deeper networks beyond the book's DeepConvNet: batch
// normalisation, global average pooling, and the two graph joins (residual add, channel
// concat). They compute with plain CPU loops (f32, f64). BatchNorm, the residual add and
// global average pooling also read and write a fast backend's blocked activations (nChw8c,
// nChw16c) as they are, so a ResNet's convolutions never wait for layout conversions; the
// concat converts with Backend::to_plain and writes plain. make_layer (basic_layers.cpp)
// dispatches here.
#include <bit>
#include <cstdint>
#include <memory>
#include <type_traits>

#include "core/layers/layer.h"

namespace deeptrain {

// The channel block B of a 4-d activation's layout: element (n, c, s) of an (N, C, S = H*W)
// activation lives at ((n * C/B + c/B) * S + s) * B + c % B. Plain is B = 1.
int layout_block(Layout l);

// d where y > 0, else 0 (NaN and infinite d included), without a branch: GCC leaves loops
// with a select on a float compare unvectorised ("control flow in loop").
template <class T>
inline T relu_masked(T d, T y) {
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  const U keep = U(0) - U(y > T(0));
  return std::bit_cast<T>(std::bit_cast<U>(d) & keep);
}

std::unique_ptr<Layer> make_batch_norm(const proto::LayerConfig& cfg, int index);
std::unique_ptr<Layer> make_global_avg_pool(const proto::LayerConfig& cfg, int index);
std::unique_ptr<Layer> make_add(const proto::LayerConfig& cfg, int index);
std::unique_ptr<Layer> make_concat(const proto::LayerConfig& cfg, int index);

}  // namespace deeptrain
