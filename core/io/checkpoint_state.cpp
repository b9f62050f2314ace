// The model side of checkpoints: a Net and an Optimizer <-> the named tensors of a
// TrainingState, resume compatibility, .npz export, and the --checkpoint-every parser.
// The files themselves are in checkpoint.cpp.
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <map>

#include "core/io/checkpoint.h"
#include "core/config.h"
#include "core/io/npz.h"

namespace deeptrain::io {
namespace {

// Every tensor a checkpoint of (net, optimizer) holds, as views of the live buffers, in the
// order they are saved: parameters (layer order), layer state, optimizer state. The net's are
// its current host copies, to read or (for_writing) to overwrite; optimizer state on a GPU is
// named by its device tensor here (device_of() tells which), and moved through host copies by
// capture() and restore_into().
std::vector<NamedTensor> tensors_of(Net& net, Optimizer& optimizer, bool for_writing) {
  std::vector<NamedTensor> out;
  for (const ParamEntry& e : net.param_entries())
    out.push_back({"param/" + e.name, for_writing ? net.mutable_param_view(e) : net.param_view(e)});
  if (for_writing)
    for (auto& [name, t] : net.mutable_state()) out.push_back({"state/" + name, *t});
  else
    for (auto& [name, t] : net.state()) out.push_back({"state/" + name, *t});
  for (auto& [slot, t] : optimizer.state()) out.push_back({"optim/" + slot, *t});
  return out;
}

Backend& device_of(const Net& net, const NamedTensor& t) {
  DT_CHECK(net.device_backend() != nullptr, "checkpoint: tensor '{}' is in device memory, but the "
           "net is not on a device", t.name);
  return *net.device_backend();
}

// Fails naming the first parameter whose place in the flat buffers differs: optimizer state is
// flat in that layout, so restoring it into another layout would scramble it silently.
void check_layout(const TrainingState& s, const Net& net) {
  const auto& entries = net.param_entries();
  for (size_t i = 0; i < std::max(entries.size(), s.param_layout.size()); ++i) {
    if (i >= s.param_layout.size())
      fail_input("checkpoint: has no parameter '{}' (the model has {} parameters, the checkpoint {})",
                 entries[i].name, entries.size(), s.param_layout.size());
    const proto::ParamSlot& p = s.param_layout[i];
    if (i >= entries.size())
      fail_input("checkpoint: parameter '{}' is not in this model (the model has {} parameters, the "
                 "checkpoint {})", p.name(), entries.size(), s.param_layout.size());
    const Shape shape(std::vector<int64_t>(p.shape().begin(), p.shape().end()));
    if (p.name() != entries[i].name || shape != entries[i].shape || p.offset() != entries[i].offset)
      fail_input("checkpoint: parameter {} is '{}' {} at offset {}, the model's is '{}' {} at offset {} "
                 "(a checkpoint of another model)", i, p.name(), shape.str(), p.offset(),
                 entries[i].name, entries[i].shape.str(), entries[i].offset);
  }
}

}  // namespace

TrainingState capture(Net& net, Optimizer& optimizer) {
  TrainingState s;
  s.tensors = tensors_of(net, optimizer, /*for_writing=*/false);
  for (NamedTensor& t : s.tensors)
    if (t.tensor.device() != Device::cpu) t.tensor = device_of(net, t).to_host(t.tensor);
  for (const ParamEntry& e : net.param_entries()) {
    proto::ParamSlot& p = s.param_layout.emplace_back();
    p.set_name(e.name);
    for (int64_t d : e.shape.dims()) p.add_shape(d);
    p.set_offset(e.offset);
  }
  s.optimizer = optimizer.name();
  s.optimizer_steps = optimizer.steps_taken();
  s.model = net.config();
  return s;
}

void restore_into(const TrainingState& state, Net& net, Optimizer& optimizer) {
  std::map<std::string, const Tensor*> saved;
  for (const NamedTensor& t : state.tensors)
    if (!saved.emplace(t.name, &t.tensor).second)
      fail_input("checkpoint: tensor '{}' appears twice (corrupt)", t.name);
  check_layout(state, net);
  const std::vector<NamedTensor> targets = tensors_of(net, optimizer, /*for_writing=*/false);
  const std::string which = fmt::format("checkpoint of optimizer '{}', this one is '{}'",
                                        state.optimizer, optimizer.name());
  // Check everything first, so a refused checkpoint leaves net and optimizer untouched.
  for (const NamedTensor& t : targets) {
    auto it = saved.find(t.name);
    if (it == saved.end())
      fail_input("checkpoint: has no tensor '{}'{}", t.name,
                 t.name.starts_with("optim/") ? " (" + which + ")" : " (a checkpoint of another model)");
    const Tensor& src = *it->second;
    if (src.shape() != t.tensor.shape())
      fail_input("checkpoint: tensor '{}' has shape {}, this run's is {}", t.name, src.shape().str(),
                 t.tensor.shape().str());
    if (src.dtype() != t.tensor.dtype())
      fail_input("checkpoint: tensor '{}' is {}, this run's is {}", t.name, dtype_name(src.dtype()),
                 dtype_name(t.tensor.dtype()));
  }
  if (saved.size() != targets.size())
    for (const NamedTensor& t : state.tensors)
      if (std::none_of(targets.begin(), targets.end(), [&](auto& x) { return x.name == t.name; }))
        fail_input("checkpoint: tensor '{}' has no place in this run ({})", t.name,
                   t.name.starts_with("optim/") ? which : "a checkpoint of another model");
  for (NamedTensor& t : tensors_of(net, optimizer, /*for_writing=*/true)) {
    if (t.tensor.device() == Device::cpu) t.tensor.copy_from(*saved.at(t.name));
    else device_of(net, t).copy(*saved.at(t.name), t.tensor);
  }
  // The optimizer's device copies read `state`'s host tensors: done before they may go.
  if (net.device_backend()) net.device_backend()->synchronize();
  optimizer.set_steps_taken(state.optimizer_steps);
}

void load_checkpoint_weights(const std::string& path, Net& net) {
  const std::string chosen = resolve_checkpoint(path);
  const TrainingState state = load_checkpoint(chosen);
  std::map<std::string, const Tensor*> saved;
  for (const NamedTensor& t : state.tensors) saved.emplace(t.name, &t.tensor);
  std::vector<std::pair<const Tensor*, Tensor>> copies;  // checked first, then written
  auto fit = [&](const std::string& name, Tensor dst) {
    auto it = saved.find(name);
    if (it == saved.end())
      fail_input("{}: has no tensor '{}' (a checkpoint of another model)", chosen, name);
    if (it->second->shape() != dst.shape() || it->second->dtype() != dst.dtype())
      fail_input("{}: tensor '{}' is {} {}, the model's is {} {} (a checkpoint of another model)",
                 chosen, name, dtype_name(it->second->dtype()), it->second->shape().str(),
                 dtype_name(dst.dtype()), dst.shape().str());
    copies.emplace_back(it->second, dst);
  };
  for (const ParamEntry& e : net.param_entries()) fit("param/" + e.name, net.mutable_param_view(e));
  for (auto& [name, t] : net.mutable_state()) fit("state/" + name, *t);
  // The net's host copies: a device net takes them before its next forward (core/net.h).
  for (auto& [src, dst] : copies) dst.copy_from(*src);
}

void check_resume_compatible(const TrainingState& s, const proto::ExperimentConfig& cfg,
                             int64_t steps_per_epoch) {
  auto refuse = [](const char* what, auto saved, auto now) {
    fail_input("resume: the checkpoint was saved with {} {}, this run has {}: it would not continue "
               "the same training (start a new run, or change it back)", what, saved, now);
  };
  if (s.seed != cfg.run().seed()) refuse("run.seed", s.seed, cfg.run().seed());
  if (s.config.schedule().batch_size() != cfg.schedule().batch_size())
    refuse("schedule.batch_size (the global batch)", s.config.schedule().batch_size(),
           cfg.schedule().batch_size());
  if (s.config.optimizer().type() != cfg.optimizer().type())
    refuse("optimizer.type", proto::OptimizerType_Name(s.config.optimizer().type()),
           proto::OptimizerType_Name(cfg.optimizer().type()));
  if (s.steps_per_epoch != steps_per_epoch)
    refuse("steps per epoch (data set size / batch size)", s.steps_per_epoch, steps_per_epoch);
  // The experiment's identity: the model, the data set and its augmentation, the optimizer and
  // its hyper-parameters, the learning-rate schedule. What may change on a resume: the number of
  // epochs, the rate itself, where the data lives, how the run computes (run.*, distributed.*).
  proto::ExperimentConfig saved = s.config, now = cfg;
  for (proto::ExperimentConfig* c : {&saved, &now}) {
    c->clear_name();
    c->clear_run();
    c->clear_distributed();
    c->clear_transfer();
  }
  const std::vector<std::string> diffs = message_differences(
      saved, now, {"data.dir", "data.verify_checksums", "data.test_limit", "schedule.epochs",
                   "optimizer.lr"});
  if (!diffs.empty()) {
    std::string list;
    for (const std::string& d : diffs) list += (list.empty() ? "" : "; ") + d;
    fail_input("resume: the checkpoint was saved by another experiment (saved -> this run: {}). "
               "Resume with the config it was saved with (`deeptrain inspect CHECKPOINT` prints "
               "it), or start a new run from its weights: `deeptrain export CHECKPOINT --npz W.npz`, "
               "then transfer {{ init_from: \"W.npz\" }}", list);
  }
}

void export_npz(const TrainingState& state, const std::string& out) {
  std::vector<std::pair<std::string, Tensor>> arrays;
  for (const NamedTensor& t : state.tensors) {
    if (t.name.starts_with("param/")) arrays.push_back({t.name.substr(6), t.tensor});
    else if (t.name.starts_with("state/")) arrays.push_back({t.name.substr(6), t.tensor});
  }
  write_npz(out, arrays);
}

CheckpointEvery parse_every(const std::string& text, const std::string& option) {
  auto bad = [&](const char* why) -> CheckpointEvery {
    fail_input("{} '{}': {} (give a number of steps such as 500, or a time such as 30s, 10m, 2h)",
               option, text, why);
  };
  if (text.empty()) return bad("empty");
  const char unit = text.back();
  if (std::isdigit(static_cast<unsigned char>(unit))) {
    char* end = nullptr;
    errno = 0;
    const long long steps = std::strtoll(text.c_str(), &end, 10);
    if (*end != '\0' || errno == ERANGE || text[0] == '+' || text[0] == '-' || std::isspace(text[0]))
      return bad("not a whole number of steps");
    if (steps < 1) return bad("must be at least 1 step");
    return {steps, 0};
  }
  const double scale = unit == 's' ? 1 : unit == 'm' ? 60 : unit == 'h' ? 3600 : 0;
  if (scale == 0) return bad("unknown unit (s, m or h)");
  const std::string number = text.substr(0, text.size() - 1);
  char* end = nullptr;
  const double value = std::strtod(number.c_str(), &end);
  if (number.empty() || *end != '\0' || !std::isdigit(static_cast<unsigned char>(number[0])) ||
      !std::isfinite(value))
    return bad("not a number before the unit");
  if (value <= 0) return bad("must be more than 0");
  return {0, value * scale};
}

}  // namespace deeptrain::io
