#pragma once
// Checkpoints in `deeptrain train`: the --checkpoint-dir, --checkpoint-every,
// --keep-checkpoints and --resume options, resuming a run where a checkpoint left it, deciding
// when to save, and stopping cleanly on SIGTERM or SIGUSR1 (preemption). The files themselves
// are core/io/checkpoint.h's.
//
// Every rank reads the checkpoint it resumes from; only rank 0 writes (the state is replicated).
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "app/commands.h"
#include "core/io/checkpoint.h"
#include "distributed/trainer.h"

namespace deeptrain::app {

void add_checkpoint_options(CLI::App* sub, CheckpointOptionsCli& o);
// The options against each other (InputError naming the option), e.g. --checkpoint-every
// without --checkpoint-dir.
void check_checkpoint_options(const CheckpointOptionsCli& o);

// SIGTERM and SIGUSR1 set a flag (and nothing else: the handler is async-signal-safe); the
// training loop polls it once per step through TrainerOptions::stop_requested, the ranks agree
// on it in the step's metrics allreduce, and rank 0 writes a checkpoint before all exit 0. A
// second signal of the same kind kills the process as usual (SA_RESETHAND).
void install_stop_signal_handlers();
bool stop_signal_received();
// "SIGTERM", "SIGUSR1", or "" when this process received none (another rank did).
std::string stop_signal_name();

// Where a training run starts: at step 0, or where a checkpoint left it.
struct StartPoint {
  int64_t epoch = 0;                         // 0-based
  EpochProgress progress;                    // of that epoch
  std::vector<proto::EpochMetrics> history;  // of the epochs already finished
  std::string checkpoint;                    // resumed from ("" for a fresh start)
};

class TrainCheckpoints {
 public:
  // check_checkpoint_options(o) first. writer: this rank writes checkpoints (rank 0).
  TrainCheckpoints(const CheckpointOptionsCli& o, const proto::ExperimentConfig& cfg,
                   int64_t steps_per_epoch, int world_size, bool writer);
  // A --checkpoint-dir was given: checkpoints are written and SIGTERM/SIGUSR1 stop cleanly.
  bool enabled() const { return !o_.dir.empty(); }

  // --resume: finds the checkpoint (auto: the newest valid one in --checkpoint-dir; each newer
  // one passed over is reported to `note`, naming its file and what is wrong), checks that it
  // continues this run, and restores net, optimizer and the trainer's step. Every rank calls it
  // (each reads the file) and then checks that all hold the same parameters. Without --resume,
  // or with auto and an empty directory: a fresh start.
  StartPoint resume(Net& net, Optimizer& optimizer, Trainer& trainer,
                    const std::function<void(const std::string&)>& note);

  // Whether a checkpoint is due after global step `global_step` (only ever true on the writer).
  bool due(int64_t global_step) const;
  // At the end of an epoch: due(), or no --checkpoint-every was given (then: every epoch).
  bool due_at_epoch_end(int64_t global_step) const;
  bool saved_at(int64_t global_step) const { return last_saved_step_ == global_step; }
  // The newest checkpoint this run wrote or resumed from ("" when none; writer only), and its
  // global step.
  const std::string& last_path() const { return last_path_; }
  int64_t last_step() const { return last_saved_step_; }

  // Writes the checkpoint of where training stands: after progress.steps_done steps of the
  // 0-based `epoch`. No-op (returns "") on ranks other than the writer. Throws Error, writing
  // nothing, if a parameter is not finite (check_finite_params). warnings: pruning
  // problems (the checkpoint itself was written).
  // A save that fails (a full disk, a file system gone read-only) does not end the run: losing
  // the training done so far to a checkpoint problem is worse than going on without it. `failed`
  // says why (path stays ""), the step is not marked saved, and the next due save tries again
  // (not the next step: a full disk would be retried, and reported, at every step).
  struct Saved {
    std::string path;
    int64_t bytes = 0;
    double seconds = 0;
    std::vector<std::string> warnings;
    std::string failed;
  };
  // learning_rate: the rate the last step ran at (Trainer::last_lr(); the schedule's, not
  // optimizer.lr).
  Saved save(Net& net, Optimizer& optimizer, int64_t global_step, int64_t epoch,
             const EpochProgress& progress, const std::vector<proto::EpochMetrics>& history,
             double learning_rate);

 private:
  // resume() but the check across ranks.
  StartPoint load_and_restore(Net& net, Optimizer& optimizer, Trainer& trainer,
                              const std::function<void(const std::string&)>& note);
  CheckpointOptionsCli o_;
  io::CheckpointEvery every_;
  proto::ExperimentConfig cfg_;
  int64_t steps_per_epoch_;
  int world_size_;
  bool writer_;
  int64_t last_saved_step_ = -1;
  std::string last_path_;
  double last_save_time_;  // steady seconds: start of training or the last save
};

// One metrics_epochs row for a checkpoint's history.
proto::EpochMetrics epoch_metrics(const EpochReport& r, double test_loss, double lr,
                                  int64_t global_step);

}  // namespace deeptrain::app
