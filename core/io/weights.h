#pragma once
// Weights files (a WeightsFile protobuf: the model description and one tensor per parameter
// and per layer state tensor, e.g. "bn1.running_mean", each with a CRC-32) and import of the
// book's NumPy .npz weights.
#include <map>
#include <optional>
#include <string>

#include "core/net.h"

namespace deeptrain::io {

// The one reader of weights files. Checks the format version and, for each tensor, its CRC-32,
// its dtype (f32 or f64) and its size against its shape; throws InputError naming the file and
// the tensor.
struct WeightsFileContents {
  std::optional<proto::ModelConfig> model;  // the architecture the weights were trained as
  std::map<std::string, Tensor> tensors;    // parameters and layer state, by name
};
WeightsFileContents read_weights_file(const std::string& path);
// Every tensor of a weights file (read_weights_file) or of an .npz (by extension), by name.
std::map<std::string, Tensor> read_weight_tensors(const std::string& path);

void save_weights(const std::string& path, const Net& net);
// Loads parameters and layer state by name; names, shapes and checksums must match (errors name
// the tensor), so evaluation after loading equals evaluation before saving.
void load_weights(const std::string& path, Net& net);

// How the exporter of an .npz implemented dropout.
enum class NpzDropout {
  book,      // not inverted: evaluation multiplies by (1 - p). Folded into our weights on import.
  inverted,  // scaled at training time, identity at evaluation (ours, PyTorch's): taken as is.
};
// Imports "W1".."Wn"/"b1".."bn" (the book's names, in the order of the parameterised layers)
// or our own names ("conv1.W"). Returns the number of tensors imported.
int import_npz(const std::string& path, Net& net, NpzDropout dropout);

}  // namespace deeptrain::io
