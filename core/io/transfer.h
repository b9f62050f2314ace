#pragma once
// Transfer learning: start a model from another model's tensors (by name, where shapes
// match), and per-parameter learning-rate multipliers (0 freezes) as the per-element lr_scale
// the optimizers take. Replacing a head is just a target with another num_classes: its last
// layer's shapes differ, so it keeps its fresh initialisation.
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/net.h"

namespace deeptrain::io {

// fnmatch(3)-style glob: '*' (also across '.'), '?', '[...]'. "conv*" matches "conv1.W".
bool glob_match(const std::string& pattern, const std::string& name);

// The layers' state tensors (BatchNorm's running statistics) as "<layer>.<suffix>", in layer
// order: what a weights file or checkpoint must save besides the parameters.
std::vector<std::pair<std::string, Tensor*>> named_state(Net& net);

struct TransferReport {
  std::vector<std::string> copied;   // target names
  std::vector<std::string> skipped;  // "name: why" (a skip pattern, a shape, absent in source)
  std::vector<std::string> unused;   // source names the target has no place for
  std::string summary() const;       // one line: counts, then the skipped with their reasons
};

// Copies every source tensor whose name is a parameter or state tensor of `target` with the
// same shape (f32/f64 converted to the target's dtype), unless the name matches one of
// `skip_patterns`. Everything else keeps its value. Returns the number of tensors copied.
int init_from_weights(Net& target, const std::map<std::string, Tensor>& source,
                      const std::vector<std::string>& skip_patterns,
                      TransferReport* report = nullptr);

// Reads every tensor of a deeptrain weights file, or of an .npz (by extension), by name.
// Checks each weights-file tensor's CRC-32; throws InputError naming the file and tensor.
std::map<std::string, Tensor> read_weight_tensors(const std::string& path);

// The per-element learning-rate scale (f32, net.num_params()): 1, except for parameters whose
// name matches a pattern, which take that pattern's multiplier; the last matching pattern
// wins. A pattern that matches no parameter is an InputError (a typo would silently train
// what was meant to be frozen).
Tensor make_lr_scale(const Net& net, const std::vector<std::pair<std::string, float>>& multipliers);

// The multipliers a TransferConfig asks for: each `freeze` pattern at 0, then each lr_mult.
// Empty when there are none (then train without an lr_scale).
std::vector<std::pair<std::string, float>> lr_multipliers(const proto::TransferConfig& cfg);

// Throws InputError naming the field (transfer.lr_mult[1].scale, ...).
void validate_transfer(const proto::TransferConfig& cfg);

}  // namespace deeptrain::io
