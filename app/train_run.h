#pragma once
// `deeptrain train`'s loop and the bookkeeping around it (in the way of Caffe's Solver::Step):
// TrainRun::run() is the loop over epochs and steps; the named parts it calls decide when to
// evaluate, when to save a checkpoint, when to stop, and what to report (RunRecorder, rank 0).
#include <memory>
#include <string>
#include <vector>

#include "app/commands.h"
#include "app/run_recorder.h"
#include "app/session.h"
#include "app/train_checkpoints.h"
#include "core/optim/optimizer.h"
#include "distributed/trainer.h"

namespace deeptrain::app {

class TrainRun {
 public:
  // rec: rank 0's recorder (nullptr on the other ranks, which neither print nor write).
  // weights: where the final weights go ("" for <run dir>/weights.bin).
  TrainRun(const TrainOptionsCli& o, Session& s, std::unique_ptr<RunRecorder> rec,
           std::string weights);
  // Trains from where --resume says (or step 0) to the last epoch or a stop; returns the exit
  // code. A diverged loss throws TrainingDiverged, saying which checkpoint is kept.
  int run();

 private:
  TrainerOptions trainer_options_with_stop();
  // A per-pixel or detection loss: its metrics instead of per-image predictions.
  bool dense() const;
  // One epoch's steps (from where `progress` stands), with the checkpoints due between them.
  EpochReport train_epoch(int epoch, EpochProgress& progress);
  // After an epoch's last step: the test set, the epoch's record and event, and the
  // end-of-epoch checkpoint.
  void end_epoch(int epoch, EpochReport& r, const EpochProgress& progress);
  // A checkpoint of where training stands; `then` says what follows a failed save.
  void save(int64_t epoch, const EpochProgress& progress, bool on_screen, const char* then);
  // The ranks agreed to stop after this step (a signal, --max-steps): a checkpoint, the event.
  int stop(int epoch, const EpochProgress& progress, const EpochReport& r);
  // The final weights and figures, and the summary event.
  int finish(const EpochReport& r);
  // A diverged loss, with what the run kept (its last checkpoint).
  TrainingDiverged diverged(const TrainingDiverged& e) const;
  // The rate the last step used, as the float's shortest decimal (0.001, not
  // 0.0010000000474974513) for the metrics files.
  double lr() const;

  const TrainOptionsCli& o_;
  Session& s_;
  const proto::ExperimentConfig& cfg_;
  const int epochs_;
  std::unique_ptr<RunRecorder> rec_;
  std::string weights_;
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<Trainer> trainer_;
  TrainCheckpoints checkpoints_;
  std::vector<proto::EpochMetrics> history_;  // the finished epochs (checkpoints carry them)
  std::vector<int32_t> predictions_;          // of the last evaluation: the error figures
  double train_seconds_ = 0;                  // of the epochs this run finished
};

}  // namespace deeptrain::app
