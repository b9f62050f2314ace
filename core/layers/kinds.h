#pragma once
// One file per layer kind (core/layers/<kind>.cpp), each with its factory here; make_layer
// (layer.cpp) dispatches on LayerConfig's kind. Layers orchestrate, backend ops compute
// (docs/adding_a_layer.md).
#include <memory>
#include <string>
#include <vector>

#include "core/layers/layer.h"

namespace deeptrain {

std::unique_ptr<Layer> make_conv(const proto::LayerConfig& cfg, int index);
std::unique_ptr<Layer> make_max_pool(const proto::LayerConfig& cfg, int index);
std::unique_ptr<Layer> make_relu(const proto::LayerConfig& cfg, int index);
std::unique_ptr<Layer> make_affine(const proto::LayerConfig& cfg, int index);
std::unique_ptr<Layer> make_dropout(const proto::LayerConfig& cfg, int index);
std::unique_ptr<Layer> make_batch_norm(const proto::LayerConfig& cfg, int index);
std::unique_ptr<Layer> make_global_avg_pool(const proto::LayerConfig& cfg, int index);
std::unique_ptr<Layer> make_add(const proto::LayerConfig& cfg, int index);
std::unique_ptr<Layer> make_concat(const proto::LayerConfig& cfg, int index);
std::unique_ptr<Layer> make_deconv(const proto::LayerConfig& cfg, int index);
std::unique_ptr<Layer> make_crop(const proto::LayerConfig& cfg, int index);

// Fails naming layer `name` unless it has n inputs, the first of rank `rank` per sample
// (rank 0: any).
void expect_inputs(const std::string& name, const std::vector<Shape>& in, size_t n, int rank);

}  // namespace deeptrain
