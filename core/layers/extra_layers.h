#pragma once
// The layers of chapter 8's deeper networks beyond the book's DeepConvNet: batch
// normalisation, global average pooling, and the two graph joins (residual add, channel
// concat). They orchestrate; their backend ops compute (Backend::bn_*, plane_mean, add,
// copy_rows), and the CPU backends' read and write the fast backend's blocked activations
// (nChw8c, nChw16c) as they are, so a ResNet's convolutions never wait for layout conversions;
// the concat converts with Backend::to_plain and writes plain. make_layer (basic_layers.cpp)
// dispatches here.
#include <memory>

#include "core/layers/layer.h"

namespace deeptrain {

std::unique_ptr<Layer> make_batch_norm(const proto::LayerConfig& cfg, int index);
std::unique_ptr<Layer> make_global_avg_pool(const proto::LayerConfig& cfg, int index);
std::unique_ptr<Layer> make_add(const proto::LayerConfig& cfg, int index);
std::unique_ptr<Layer> make_concat(const proto::LayerConfig& cfg, int index);

}  // namespace deeptrain
