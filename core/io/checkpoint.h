#pragma once
// Training checkpoints: the global training state (weights, layer state, optimizer state,
// position in the run, seed, config, metrics history) <-> a directory of protobuf files,
// written atomically, checked on every read. Schema and on-disk layout: proto/checkpoint.proto.
//
//   DIR/ckpt-0000000400/tensors.pb    length-delimited TensorChunk messages (<= 64 MiB of data each)
//   DIR/ckpt-0000000400/MANIFEST.pb   everything else, plus sizes and checksums; written last
//
// A save writes both files into DIR/.ckpt-0000000400.tmp-<host>-<pid>/, fsyncs them and that
// directory, renames it to ckpt-0000000400 and fsyncs DIR: a crash at any point leaves either the
// whole new checkpoint or none (plus a hidden temporary directory that a later save removes).
// Only global state is saved, so any number of ranks can resume; only one rank should save.
//
// Library code: every function throws (InputError for a damaged or mismatching checkpoint,
// naming the file and what is wrong), none exits or prints.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/net.h"
#include "core/optim/optimizer.h"
#include "proto/checkpoint.pb.h"

namespace deeptrain::io {

// A tensor and its checkpoint name. Captured tensors are views of the live buffers (nothing
// is copied until the bytes go to the file); loaded ones own their memory.
struct NamedTensor {
  std::string name;  // "param/conv1.W", "state/bn1.running_mean", "optim/m"
  Tensor tensor;
};

struct TrainingState {
  // Position. epoch is 0-based: the epoch the next step belongs to; step_in_epoch: how many of
  // its steps are done (an epoch's order is a pure function of (seed, epoch), so this is the
  // whole position in it). After the last step of epoch e: epoch e + 1, step_in_epoch 0.
  int64_t global_step = 0;
  int64_t epoch = 0;
  int64_t step_in_epoch = 0;
  int64_t steps_per_epoch = 0;
  uint64_t seed = 0;

  std::string optimizer;        // Optimizer::name()
  int64_t optimizer_steps = 0;  // Optimizer::steps_taken()
  double learning_rate = 0;     // of the last step (informational: lr is a function of the step)
  int64_t total_steps = 0;      // of the whole run, as the schedule sees it

  proto::PartialEpoch partial_epoch;  // running sums of the epoch in progress
  std::vector<NamedTensor> tensors;
  std::vector<proto::ParamSlot> param_layout;  // the flat layout optim/* tensors follow
  proto::ExperimentConfig config;
  proto::ModelConfig model;                    // presets expanded
  std::vector<proto::EpochMetrics> history;
  int world_size = 1;           // at save time; informational

  // Filled by load_checkpoint.
  std::string producer;
  int64_t created_unix = 0;
};

// The tensors of net and optimizer as views (no copy), the optimizer's name and step count, the
// parameter layout and the expanded model. The caller fills position, seed, config, history,
// world size. net and optimizer are not modified; their buffers must not change until the
// state is saved.
TrainingState capture(Net& net, Optimizer& optimizer);

// Copies a checkpoint's tensors into net and optimizer and sets the optimizer's step count.
// Everything is checked before anything is written: a checkpoint of another model or optimizer
// is refused naming the first tensor that does not fit, and net/optimizer stay untouched.
void restore_into(const TrainingState& state, Net& net, Optimizer& optimizer);

// The model's tensors (parameters and layer state) of the checkpoint at `path` (as
// resolve_checkpoint takes it) into net, for evaluation and `predict`; optimizer state is not
// read. A checkpoint of another model is refused (InputError naming it and the first tensor
// that does not fit) before anything is written.
void load_checkpoint_weights(const std::string& path, Net& net);

// Refuses (InputError) a resume that would not continue the same training: another seed,
// global batch size, optimizer type, or data set size (steps_per_epoch). Epochs, lr and the
// rank count may change.
void check_resume_compatible(const TrainingState& state, const proto::ExperimentConfig& cfg,
                             int64_t steps_per_epoch);

// Writes DIR/ckpt-<global_step, 10 digits> (creating DIR if needed) and returns its path. An
// existing checkpoint of the same step is replaced. Afterwards keeps only the newest
// keep_last complete checkpoints (keep_last <= 0: all), never removing the one just written nor
// any directory it cannot validate as a deeptrain checkpoint, and removes temporary directories
// left by saves on this host that were killed. Pruning is best effort: what it could not
// remove goes to *warnings (the checkpoint itself is saved; failing the run for it would be
// worse). Throws Error when the checkpoint could not be written (nothing is left behind then).
std::string save_checkpoint(const std::string& dir, const TrainingState& state, int keep_last,
                            std::vector<std::string>* warnings = nullptr);

// Reads and checks a checkpoint: `path` is a ckpt-* directory or its MANIFEST.pb. Checks the
// manifest's CRC-32, the file sizes, every chunk's CRC-32 and the SHA-256 of tensors.pb.
TrainingState load_checkpoint(const std::string& path);

// The manifest alone (its CRC-32 checked), e.g. to peek at the step; `path` as above.
proto::CheckpointManifest read_checkpoint_manifest(const std::string& path);

// The newest checkpoint in dir that is complete and valid (fully checked, as load_checkpoint
// does), or nullopt. Each newer one that was passed over adds "ckpt-...: why" to skipped.
std::optional<std::string> find_latest_checkpoint(const std::string& dir,
                                                  std::vector<std::string>* skipped = nullptr);

// For --resume PATH, inspect and export: `path` itself when it is a checkpoint (a ckpt-*
// directory, even a damaged one, so that loading it says what is wrong, or its MANIFEST.pb),
// else the newest valid checkpoint in the directory `path` (find_latest_checkpoint, with
// *skipped as there). Throws InputError when path does not exist or holds no valid checkpoint.
std::string resolve_checkpoint(const std::string& path, std::vector<std::string>* skipped = nullptr);

// What a checkpoint holds (position, optimizer, tensors with shapes and sizes, metrics
// history, config in text format) from its manifest alone: no model is built, tensors.pb is
// not read unless verify is set (then every checksum is checked, as load_checkpoint does).
std::string describe_checkpoint(const std::string& path, bool verify = false);

// The model's tensors (parameters and layer state, our names without the "param/" and
// "state/" prefixes: "conv1.W", "bn1.running_mean") as a NumPy .npz.
void export_npz(const TrainingState& state, const std::string& out);

// --checkpoint-every: "500" (every 500 steps) or a time with a unit, "30s", "10m", "2h"
// (fractions allowed: "1.5h").
struct CheckpointEvery {
  int64_t steps = 0;     // > 0 for a step interval
  double seconds = 0;    // > 0 for a time interval
};
// Throws InputError naming `option` and the value.
CheckpointEvery parse_every(const std::string& text,
                            const std::string& option = "--checkpoint-every");

// "ckpt-0000000400": the directory name of the checkpoint of a global step.
std::string checkpoint_name(int64_t global_step);
// Every tensor is stored in chunks of at most this many bytes (one TensorChunk message each).
constexpr int64_t kCheckpointChunkBytes = int64_t{64} << 20;

// Test hook: called at named points of save_checkpoint ("tmp-dir", "chunk", "tensors-synced",
// "manifest-written", "renamed", "pruned"), so a test can kill the process there.
void set_save_phase_hook(std::function<void(const char* phase)> hook);

}  // namespace deeptrain::io
