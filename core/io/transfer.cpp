#include "core/io/transfer.h"

#include <fnmatch.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/io/weights.h"

namespace deeptrain::io {
namespace {

bool matches_any(const std::vector<std::string>& patterns, const std::string& name,
                 std::string* which) {
  for (const std::string& p : patterns)
    if (selects(p, name)) {
      *which = p;
      return true;
    }
  return false;
}

// Copies src (f32 or f64) into dst (f32 or f64) of the same shape.
void copy_converted(const Tensor& src, Tensor& dst) {
  if (src.dtype() == dst.dtype()) dst.copy_from(src);
  else dst.copy_from(src.to(dst.dtype()));
}

}  // namespace

bool glob_match(const std::string& pattern, const std::string& name) {
  return fnmatch(pattern.c_str(), name.c_str(), 0) == 0;
}

bool selects(const std::string& pattern, const std::string& tensor_name) {
  if (glob_match(pattern, tensor_name)) return true;
  const size_t dot = tensor_name.rfind('.');
  return dot != std::string::npos && glob_match(pattern, tensor_name.substr(0, dot));
}

std::string TransferReport::summary() const {
  std::string s = fmt::format("copied {} tensors, skipped {}, {} unused in the source",
                              copied.size(), skipped.size(), unused.size());
  for (const std::string& k : skipped) s += "; " + k;
  return s;
}

int init_from_weights(Net& target, const std::map<std::string, Tensor>& source,
                      const std::vector<std::string>& skip_patterns, TransferReport* report) {
  TransferReport local;
  TransferReport& r = report ? *report : local;
  // Every tensor the target can take: its parameters (views into the host copy, to write) and
  // state.
  std::vector<std::pair<std::string, Tensor>> slots;
  for (const ParamEntry& e : target.param_entries())
    slots.push_back({e.name, target.mutable_param_view(e)});
  for (auto& [name, t] : target.mutable_state()) slots.push_back({name, *t});
  std::map<std::string, bool> used;
  int copied = 0;
  for (auto& [name, dst] : slots) {
    std::string pattern;
    auto it = source.find(name);
    if (it != source.end()) used[name] = true;
    if (matches_any(skip_patterns, name, &pattern)) {
      r.skipped.push_back(fmt::format("{}: matches skip pattern '{}'", name, pattern));
    } else if (it == source.end()) {
      r.unmatched.push_back(fmt::format("{}: not in the source", name));
      r.skipped.push_back(r.unmatched.back());
    } else if (it->second.shape() != dst.shape()) {
      r.unmatched.push_back(fmt::format("{}: source shape {}, model shape {}", name,
                                        it->second.shape().str(), dst.shape().str()));
      r.skipped.push_back(r.unmatched.back());
    } else if (it->second.dtype() != DType::f32 && it->second.dtype() != DType::f64) {
      r.unmatched.push_back(fmt::format("{}: source is {}, not a float array", name,
                                        dtype_name(it->second.dtype())));
      r.skipped.push_back(r.unmatched.back());
    } else {
      copy_converted(it->second, dst);
      r.copied.push_back(name);
      ++copied;
    }
  }
  for (const auto& [name, t] : source)
    if (!used.count(name)) r.unused.push_back(name);
  return copied;
}

TransferReport apply_init_from(Net& net, const proto::TransferConfig& cfg) {
  const std::string& path = cfg.init_from();
  const std::vector<std::string> skip(cfg.skip().begin(), cfg.skip().end());
  TransferReport report;
  init_from_weights(net, read_weight_tensors(path), skip, &report);
  if (report.unmatched.empty()) return report;
  // Suggest skipping the layers involved ("fc8" for fc8.W and fc8.b).
  std::vector<std::string> layers;
  for (const std::string& u : report.unmatched) {
    const std::string name = u.substr(0, u.find(": "));
    const std::string layer = name.substr(0, name.rfind('.'));
    if (std::find(layers.begin(), layers.end(), layer) == layers.end()) layers.push_back(layer);
  }
  std::string what, hint;
  for (const std::string& u : report.unmatched) what += (what.empty() ? "" : "; ") + u;
  for (const std::string& l : layers) hint += fmt::format("{}skip: \"{}\"", hint.empty() ? "" : " ", l);
  fail_input("transfer.init_from: {}: {} tensor(s) of the model cannot be copied: {}. To keep "
             "them freshly initialised (e.g. a new head for another class count), add to the "
             "transfer section: {}",
             path, report.unmatched.size(), what, hint);
}

Tensor make_lr_scale(const Net& net, const std::vector<std::pair<std::string, float>>& multipliers) {
  Tensor scale = Tensor::empty({net.num_params()}, DType::f32);
  float* s = scale.data<float>();
  std::vector<bool> matched(multipliers.size(), false);
  for (const ParamEntry& e : net.param_entries()) {
    float m = 1.0f;
    for (size_t k = 0; k < multipliers.size(); ++k)
      if (selects(multipliers[k].first, e.name)) {
        m = multipliers[k].second;
        matched[k] = true;
      }
    std::fill(s + e.offset, s + e.offset + e.shape.numel(), m);
  }
  for (size_t k = 0; k < multipliers.size(); ++k)
    if (!matched[k])
      fail_input("transfer.freeze/lr_mult: pattern '{}' matches no parameter of the model (nor "
                 "its layer's name)", multipliers[k].first);
  return scale;
}

std::vector<std::pair<std::string, float>> lr_multipliers(const proto::TransferConfig& cfg) {
  // Freezing comes last so that it wins: lr_mult { pattern: "conv*" } must not thaw a frozen
  // conv1.
  std::vector<std::pair<std::string, float>> out;
  for (const proto::LrMultiplier& m : cfg.lr_mult()) out.push_back({m.pattern(), m.scale()});
  for (const std::string& p : cfg.freeze()) out.push_back({p, 0.0f});
  return out;
}

void validate_transfer(const proto::TransferConfig& cfg) {
  for (int i = 0; i < cfg.freeze_size(); ++i)
    if (cfg.freeze(i).empty()) fail_input("transfer.freeze[{}]: empty pattern", i);
  for (int i = 0; i < cfg.skip_size(); ++i)
    if (cfg.skip(i).empty()) fail_input("transfer.skip[{}]: empty pattern", i);
  if (cfg.skip_size() > 0 && cfg.init_from().empty())
    fail_input("transfer.skip: only means something with transfer.init_from (which tensors of "
               "that file not to copy)");
  for (int i = 0; i < cfg.lr_mult_size(); ++i) {
    if (cfg.lr_mult(i).pattern().empty()) fail_input("transfer.lr_mult[{}].pattern: empty", i);
    if (!(cfg.lr_mult(i).scale() >= 0 && std::isfinite(cfg.lr_mult(i).scale())))
      fail_input("transfer.lr_mult[{}].scale: must be >= 0, got {}", i, cfg.lr_mult(i).scale());
  }
}

}  // namespace deeptrain::io
