#pragma once
// The step loop, for 1 to N ranks: global sampler -> this rank's shard -> forward -> loss ->
// backward (gradients reduced across ranks) -> optimizer step -> metrics reduced across ranks.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "core/data/dataset.h"
#include "core/data/sampler.h"
#include "proto/deeptrain.pb.h"
#include "core/detect/average_precision.h"
#include "core/loss.h"
#include "core/net.h"
#include "core/optim/optimizer.h"
#include "distributed/communicator.h"
#include "distributed/reducer.h"

namespace deeptrain {

using data::Dataset;
using data::DatasetSplit;

struct StepMetrics {
  double loss_sum = 0;  // over the global batch
  int64_t correct = 0;
  int64_t counted = 0;  // what `correct` is out of: the samples, or a dense loss's pixels
  int64_t samples = 0;
  // Some rank's TrainerOptions::stop_requested was true when this step's metrics were reduced.
  // The same on every rank (it travels in the metrics allreduce), so all ranks stop after the
  // same step.
  bool stop = false;
};

// Where an epoch stands. train_epoch starts at steps_done and adds to the sums, so an epoch
// resumed from a checkpoint's values reports the same figures as one that ran in one go.
struct EpochProgress {
  int64_t steps_done = 0;
  double loss_sum = 0;       // over the global batches of the steps done
  int64_t correct = 0;
  int64_t counted = 0;       // StepMetrics::counted summed (0 from a checkpoint without it)
  int64_t samples = 0;
  double train_seconds = 0;  // of the step loop
};

struct EpochReport {
  int epoch;                // 1-based
  int64_t steps;
  double train_loss;        // mean over the epoch's samples, in training mode (dropout on)
  double train_accuracy;    // running accuracy of the training forward passes
  int64_t test_correct, test_total;
  double test_accuracy;     // a dense loss's: pixel accuracy
  std::optional<SegmentationMetrics> test_segmentation;  // a dense loss's test metrics
  std::optional<DetectionMetrics> test_detection;        // a detection loss's
  double train_seconds;     // the step loop only
  double images_per_sec;    // global images per second of the step loop
  // The ranks agreed to stop (StepMetrics::stop) after the last step done; the epoch is
  // complete only if all its steps are done (EpochProgress::steps_done == steps).
  bool stop = false;
};

struct EvalReport {
  // correct out of total: samples, or a dense loss's counted (not ignored) pixels, or a
  // detection loss's true positives at IoU 0.5 out of the truth boxes (accuracy: mAP@0.5).
  int64_t correct = 0, total = 0;
  std::optional<SegmentationMetrics> segmentation;  // a dense loss's
  std::optional<DetectionMetrics> detection;        // a detection loss's
  double loss = 0, accuracy = 0, seconds = 0, images_per_sec = 0;
};

// The global loss of a step is not finite (nan or inf): training has diverged. train_step throws
// it on every rank alike (the loss is summed over the ranks first) after the step's metrics,
// before any caller can save the step's parameters; the run should stop and save nothing.
// Message: "training diverged: the loss of global step N (epoch E) is nan".
class TrainingDiverged : public Error {
 public:
  TrainingDiverged(const std::string& what, int64_t global_step, int epoch, double loss)
      : Error(what), global_step(global_step), epoch(epoch), loss(loss) {}
  int64_t global_step;  // 1-based: the step whose loss it is
  int epoch;            // 1-based
  double loss;          // the global batch's loss sum
};

// Throws Error ("training diverged: K of N parameters are not finite after global step S; W
// not written") unless every parameter is finite (the current values, wherever the step left
// them). For the writer of a checkpoint or weights file (W), so that nothing non-finite is ever saved.
// The evaluation batch when run.eval_batch_size is unset: kEvalBatchSize samples, fewer where
// their layer outputs would pass kEvalActivationBytes, at least 1. A function of the model
// only, so every rank count evaluates the same batches.
int64_t default_eval_batch(const Net& net);

void check_finite_params(const Net& net, int64_t global_step, const std::string& what);

// Dynamic loss scaling for fp16 math: the loss (so every gradient) is multiplied by `scale`;
// a step whose gradients overflow is skipped and the scale backs off; after growth_interval
// good steps in a row it grows again.
struct LossScaleOptions {
  bool enabled = false;
  double initial = 65536, growth = 2, backoff = 0.5, min_scale = 1, max_scale = 16777216;
  int64_t growth_interval = 2000;
};

// The app builds these from the config (app/session.h: trainer_options); the defaults are the
// config's (core/config.h), for tests and tools that build a Trainer directly.
struct TrainerOptions {
  int64_t batch_size = config_defaults::kBatchSize;  // global
  int64_t eval_batch_size = 0;  // 0: eval_batch_for(net), a function of the model only
  uint64_t seed = 0;
  float lr = config_defaults::kLr;  // the base rate the schedule scales
  // The rate of global step s: lr_at(lr_schedule, lr, s, steps per epoch, epochs * steps per
  // epoch), with steps per epoch = ceil(training samples / batch_size). A pure function of the
  // step, so neither the rank count nor resuming changes it. Default: constant.
  proto::LrSchedule lr_schedule;
  int epochs = 1;               // the run's length, over which COSINE and ONE_CYCLE anneal
  // Random transforms of the training images, drawn from (seed, epoch, global sample id), so
  // every rank count trains on the same images. Disabled by default.
  proto::AugmentConfig augment;
  // Per-element learning-rate multipliers (f32, one per parameter; 0 freezes), from the
  // transfer config's freeze and lr_mult. Unset (Tensor()): 1 everywhere.
  Tensor lr_scale;
  double log_eps = 1e-7;        // the book's epsilon inside the log of the loss
  // Gradient buckets, overlap and wire compression; default: the communicator's
  // gradient_sync() (set from ExperimentConfig.distributed by the session).
  std::optional<GradientSyncOptions> sync;
  LossScaleOptions loss_scale;
  // Polled on every rank once per step (e.g. a preemption signal's flag); empty: never stop.
  std::function<bool()> stop_requested;
  // `deeptrain bench --profile`: the step's phases are marked in it (each mark waits for the
  // backend). The caller begins and ends each step. Null: no marks, no waits.
  StepProfile* profile = nullptr;
  // On a device backend, each data set the trainer reads (training, test) is copied to device
  // memory once and batches are gathered there (Backend::gather_samples), except augmented
  // ones: augmentation runs on the host. false: every batch is gathered on the host and copied.
  bool device_data = true;
  // Exact mode (core/micro_shards.h, docs/exact_mode.md) when > 0: the global batch is cut into
  // micro-shards of this many samples, and the model after every step is the same to the last
  // bit on any number of ranks and threads. Host backends only.
  int64_t micro_batch = 0;
};

class Trainer {
 public:
  Trainer(TrainerOptions opt, Net& net, Backend& backend, Optimizer& optimizer,
          Communicator& comm);
  // Evaluation only (eval, ensembles): no optimizer; evaluate() works, train_step() and
  // train_epoch() are programming errors.
  Trainer(TrainerOptions opt, Net& net, Backend& backend, Communicator& comm);

  // One training step on the global batch `ids` (all ranks pass the same ids) of epoch
  // `epoch` (0-based; it keys the augmentation), at the scheduled rate of global_step().
  StepMetrics train_step(const Dataset& data, const int64_t* ids, int64_t n, int64_t epoch = 0);
  // One epoch (0-based `epoch`) over data in the order drawn from (seed, epoch).
  // on_step(step_in_epoch, steps, metrics) runs on every rank after each step (and after
  // *progress is updated). progress (optional): where the epoch starts (a resumed one: after
  // progress->steps_done steps) and, on return, where it stands. The epoch ends early, after
  // the step whose StepMetrics::stop is set (EpochReport::stop); then `test` is not evaluated
  // and the report covers the steps done.
  EpochReport train_epoch(const Dataset& data, int epoch, const Dataset* test,
                          const std::function<void(int64_t, int64_t, const StepMetrics&)>&
                              on_step = {},
                          EpochProgress* progress = nullptr);
  // A dense loss's accuracy is the pixel accuracy, with its segmentation metrics in the report.
  // predictions (optional, not for a dense loss): the class predicted for every sample of `data`, on every rank
  // (for the confusion matrix and the misclassified-image grid). probabilities (optional):
  // set to the softmax of every sample, f32 (samples, classes), on every rank (ensembles).
  EvalReport evaluate(const Dataset& data, std::vector<int32_t>* predictions = nullptr,
                      Tensor* probabilities = nullptr);
  // The model's outputs for samples ids[0..n) of `data` in evaluation mode, batched as
  // evaluate() batches them, on this rank alone (no collective): host f32, plain, (n, classes)
  // or a dense loss's (n, classes, H, W). For `predict` and the per-epoch prediction grid.
  Tensor predict(const Dataset& data, const int64_t* ids, int64_t n);
  int64_t global_step() const { return step_; }
  // Resuming: the steps already taken (dropout and augmentation streams are keyed by the step).
  void set_global_step(int64_t step) { step_ = step; }
  // The scheduled rate of global step `step` when training on `num_train_samples` samples.
  double lr_at_step(int64_t step, int64_t num_train_samples) const;
  // The rate the last train_step used (the base rate before the first).
  double last_lr() const { return last_lr_; }
  // The gradient reducer (its buckets and its communication/overlap statistics).
  const Reducer& reducer() const { return *reducer_; }
  Reducer& reducer() { return *reducer_; }
  // Fails (naming the ranks) unless every rank holds bit-identical parameters. train_epoch
  // calls it after each epoch; a no-op for one rank. Collective.
  void check_replicas(const std::string& when);
  // Loss scaling (fp16): the current scale and the steps skipped for overflow so far.
  double loss_scale() const { return loss_scale_; }
  int64_t skipped_steps() const { return skipped_steps_; }

 private:
  bool classify_loss() const { return loss_fn_.kind() == LossFn::Kind::classify; }
  // Detection: decodes and matches the images ids (their heads in out, host, plain) into
  // their rows of found (n, top_k, 3); then the metrics from every image's rows.
  void decode_batch(const Dataset& data, const Tensor& out, const std::vector<int64_t>& ids,
                    const DecodeOptions& decode, Tensor& found) const;
  DetectionMetrics detection_metrics_of(const Dataset& data, const Tensor& found) const;
  void mark(const char* phase) {
    if (opt_.profile) opt_.profile->mark(backend_, phase);
  }
  void ensure_batch(int64_t n, const Dataset& data);
  // The rows of a global batch of n samples that this rank computes (exact mode: its run of
  // whole micro-shards).
  ShardRange rows_of_batch(int64_t n) const;
  // The samples `ids` into x_ and t_ (on the backend's device).
  // With augment, training's batches: augmented as opt_.augment says (and a streamed set's
  // data.transform drawn), keyed by (seed, epoch, global sample id), never by the position in
  // this rank's shard; without, evaluation's.
  void load_batch(const Dataset& data, const int64_t* ids, int64_t n, bool augment = false,
                  int epoch = 0);
  // A data set in the backend's memory: the copy made on first use (a few are kept).
  struct DeviceData {
    Tensor host_images, host_labels;  // the host tensors copied: holding them keeps their
                                      // storage, so its address identifies the data set
    Tensor images, labels;
  };
  const DeviceData& device_copy(const Dataset& data);
  // Divides the loss scale out of the gradients; false when they overflowed (skip the step).
  // Reads the step's loss (when this rank had samples) into m and starts the metrics' allreduce.
  std::unique_ptr<CommRequest> start_metrics(PendingLoss* loss, StepMetrics& m);
  // Exact mode: the loss and correct predictions of every micro-shard of this rank's shard
  // (logits of `local` samples), summed in global micro-shard order over the ranks. Collective.
  LossSums exact_loss(const Tensor* logits, int64_t local);
  bool apply_loss_scale();
  TrainerOptions opt_;
  Net& net_;
  LossFn loss_fn_;
  Backend& backend_;
  Optimizer* optimizer_;  // null: evaluation only
  Communicator& comm_;
  std::unique_ptr<Reducer> reducer_;
  bool sync_batch_norm_ = false;    // the net has a batch norm with statistics over all ranks
  int64_t step_ = 0;
  double last_lr_ = 0;
  Tensor metrics_;                  // f64 (loss sum, correct, stop), reduced while backward runs
  Tensor x_, t_, probs_, dlogits_;  // batch buffers on the backend's device, reused
  Tensor x_host_, t_host_;          // the batch gathered on the host (x_, t_ themselves on a CPU)
  Tensor lr_scale_device_;          // opt_.lr_scale in the backend's memory, for a device optimizer
  std::vector<DeviceData> device_data_;
  MicroShards micro_;               // exact mode's micro-shards of the current step
  double loss_scale_ = 1;
  int64_t good_steps_ = 0, skipped_steps_ = 0;
};

}  // namespace deeptrain
