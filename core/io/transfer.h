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
// The patterns of transfer.skip, freeze and lr_mult select a tensor "<layer>.<suffix>" when
// they match its full name or its layer's name: "conv1" and "conv1.*" both select conv1.W.
bool selects(const std::string& pattern, const std::string& tensor_name);

struct TransferReport {
  std::vector<std::string> copied;   // target names
  std::vector<std::string> skipped;  // "name: why" (a skip pattern, a shape, absent in source)
  std::vector<std::string> unused;   // source names the target has no place for
  // The skipped that no skip pattern asked for: "name: why" (absent, another shape or dtype).
  std::vector<std::string> unmatched;
  std::string summary() const;       // one line: counts, then the skipped with their reasons
};

// Copies every source tensor whose name is a parameter or state tensor of `target` with the
// same shape (f32/f64 converted to the target's dtype), unless the name matches one of
// `skip_patterns`. Everything else keeps its value. Returns the number of tensors copied.
int init_from_weights(Net& target, const std::map<std::string, Tensor>& source,
                      const std::vector<std::string>& skip_patterns,
                      TransferReport* report = nullptr);

// transfer.init_from: reads the file (read_weight_tensors, core/io/weights.h) and copies it
// into `net` with the skip patterns of `cfg` (what they select keeps its fresh initialisation:
// a replaced head).
// Strict: a tensor of the model that the file lacks, or holds with another shape, is an
// InputError naming the file, each such tensor and the skip pattern that would keep it fresh.
// Source tensors the model has no place for are only reported (TransferReport::unused).
TransferReport apply_init_from(Net& net, const proto::TransferConfig& cfg);

// The per-element learning-rate scale (f32, net.num_params()): 1, except for parameters a
// pattern selects (see selects()), which take that pattern's multiplier; the last matching
// pattern wins. A pattern that matches no parameter is an InputError (a typo would silently train
// what was meant to be frozen).
Tensor make_lr_scale(const Net& net, const std::vector<std::pair<std::string, float>>& multipliers);

// The multipliers a TransferConfig asks for: each lr_mult, then each `freeze` pattern at 0
// (last match wins, so a frozen parameter stays frozen whatever lr_mult says).
// Empty when there are none (then train without an lr_scale).
std::vector<std::pair<std::string, float>> lr_multipliers(const proto::TransferConfig& cfg);

// Throws InputError naming the field (transfer.lr_mult[1].scale, ...).
void validate_transfer(const proto::TransferConfig& cfg);

}  // namespace deeptrain::io
