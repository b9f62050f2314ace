#pragma once
// The layers of chapter 8's deeper networks beyond the book's DeepConvNet: batch
// normalisation, global average pooling, and the two graph joins (residual add, channel
// concat). They compute with plain CPU loops (f32, f64) on plain layouts: a fast backend's
// blocked activations are converted with Backend::to_plain on the way in, and outputs and
// input gradients are always written plain. make_layer (basic_layers.cpp) dispatches here.
#include <memory>

#include "core/layers/layer.h"

namespace deeptrain {

std::unique_ptr<Layer> make_batch_norm(const proto::LayerConfig& cfg, int index);
std::unique_ptr<Layer> make_global_avg_pool(const proto::LayerConfig& cfg, int index);
std::unique_ptr<Layer> make_add(const proto::LayerConfig& cfg, int index);
std::unique_ptr<Layer> make_concat(const proto::LayerConfig& cfg, int index);

}  // namespace deeptrain
