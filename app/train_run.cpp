#include "app/train_run.h"

#include <unistd.h>

#include <ctime>
#include <filesystem>
#include <numeric>

#include "core/detect/decode.h"
#include "core/io/atomic_file.h"
#include "core/io/output_paths.h"
#include "core/io/transfer.h"
#include "core/io/weights.h"
#include "core/loss.h"
#include "distributed/mpi_communicator.h"
#include "report/run_dir.h"

namespace deeptrain::app {
namespace {

// How many test samples a per-pixel model's or a detector's predictions.png shows.
constexpr int64_t kPredictionRows = 8;
std::string describe(const Session& s) {
  const auto& c = s.cfg;
  return fmt::format(
      "deeptrain {}: model {} ({} parameters) on {} ({} train / {} test), batch {}, {} lr {}, "
      "{} epochs, backend {}, {} threads",
      DEEPTRAIN_VERSION, c.model().preset().empty() ? "custom" : c.model().preset(),
      s.net->num_params(), c.data().dataset(), s.data.train.labels.numel(),
      s.data.test.labels.numel(), c.schedule().batch_size(),
      proto::OptimizerType_Name(c.optimizer().type()), c.optimizer().lr(), c.schedule().epochs(),
      s.backend->name(), s.threads);
}

// Where rank 0 writes, checked (and its directories locked) when the run starts, before the data
// loads: a typo or a read-only mount found after training costs the training.
struct Outputs {
  std::string run_dir;
  std::string weights;  // --save-weights or run.save_weights; "" for <run dir>/weights.bin
  std::vector<io::DirLock> locks;
  std::vector<std::string> notes;  // stale locks taken over: printed once the run directory is up
  bool made_run_dir = false;       // claim_outputs created it
  // A run that fails before it starts (its data does not fit the model, say) leaves no run
  // directory behind: the locks go, then the directory if it is still empty.
  void discard_unused() {
    locks.clear();
    std::error_code ec;
    if (made_run_dir) std::filesystem::remove(run_dir, ec);
  }
};

bool same_directory(const std::string& a, const std::string& b) {
  std::error_code ec;
  return !a.empty() && !b.empty() && std::filesystem::equivalent(a, b, ec);
}

Outputs claim_outputs(const CommonOptions& common, const TrainOptionsCli& o,
                      const proto::ExperimentConfig& cfg) {
  Outputs out;
  const CheckpointOptionsCli& co = o.checkpoints;
  out.weights = !o.save_weights.empty() ? o.save_weights : cfg.run().save_weights();
  if (!out.weights.empty())
    io::check_writable_file(out.weights, !o.save_weights.empty() ? "--save-weights" : "run.save_weights");
  if (!co.dir.empty()) {
    io::check_writable_dir(co.dir, "--checkpoint-dir");
    // Two trainers in one checkpoint directory would each resume from the other's checkpoints.
    out.locks.emplace_back(co.dir, "checkpoint directory");
  }
  const bool new_dir = common.run_dir.empty() || !std::filesystem::exists(common.run_dir);
  out.run_dir = report::create_run_dir(common.run_dir, run_name(cfg, common.config));
  try {
    io::check_writable_dir(out.run_dir, "run directory");
    // One flock per directory: a second one of this process on the same file would fail.
    if (!same_directory(out.run_dir, co.dir)) out.locks.emplace_back(out.run_dir, "run directory");
  } catch (...) {
    std::error_code ec;
    if (new_dir) std::filesystem::remove(out.run_dir, ec);  // only if empty: ours, made above
    throw;
  }
  for (const io::DirLock& l : out.locks)
    if (!l.note().empty()) out.notes.push_back(l.note());
  out.made_run_dir = new_dir;
  return out;
}

// The final weights are what the run was for: when their path fails now (the disk filled up
// since the start), they go to the run directory, else to the temp directory, with a warning
// saying where. Returns where they went; throws (an Error listing every attempt) only when
// nothing could be written.
std::string save_final_weights(Net& net, const std::string& wanted, const std::string& run_dir,
                               const std::function<void(const std::string&)>& note) {
  std::vector<std::string> tries = {wanted};
  if (!same_directory(std::filesystem::path(wanted).parent_path().string(), run_dir) ||
      std::filesystem::path(wanted).filename() != "weights.bin")
    tries.push_back(run_dir + "/weights.bin");
  std::error_code ec;
  const std::filesystem::path tmp = std::filesystem::temp_directory_path(ec);
  tries.push_back((ec ? std::filesystem::path("/tmp") : tmp) /
                  fmt::format("deeptrain-weights-{}-{}.bin", ::getpid(), std::time(nullptr)));
  std::string failures;
  for (size_t i = 0; i < tries.size(); ++i) {
    try {
      io::save_weights(tries[i], net);
      if (i > 0) note(fmt::format("warning: the final weights were saved to {} instead of {}", tries[i], wanted));
      return tries[i];
    } catch (const std::exception& e) {
      failures += fmt::format("{}{}", failures.empty() ? "" : "; ", e.what());
      if (i + 1 < tries.size())
        note(fmt::format("warning: weights not saved to {}: {}; trying {}", tries[i], e.what(),
                         tries[i + 1]));
    }
  }
  fail("the final weights could not be written anywhere: {}", failures);
}

// Rank 0's recorder, with the effective config written and the run described.
std::unique_ptr<RunRecorder> start_recorder(const CommonOptions& common, const Session& s,
                                            const Outputs& outputs,
                                            const std::string& transfer_summary) {
  auto rec = std::make_unique<RunRecorder>(outputs.run_dir, common.json, isatty(fileno(stdout)));
  io::write_file_atomic(rec->path("config.prototxt"), to_text(s.cfg));
  std::vector<std::string> lines = {describe(s), "run directory " + rec->dir()};
  if (!transfer_summary.empty())
    lines.push_back("initialised from " + s.cfg.transfer().init_from() + ": " + transfer_summary);
  rec->started(lines);
  // Notes (stale locks taken over): stderr and log.txt, so that --json's stdout stays JSON.
  for (const std::string& line : outputs.notes) rec->note(line);
  return rec;
}

int64_t steps_per_epoch(const Session& s) {
  return GlobalSampler{s.data.train.labels.numel(), s.cfg.schedule().batch_size(),
                       s.cfg.run().seed()}
      .steps_per_epoch();
}

}  // namespace

TrainRun::TrainRun(const TrainOptionsCli& o, Session& s, std::unique_ptr<RunRecorder> rec,
                   std::string weights)
    : o_(o), s_(s), cfg_(s.cfg), epochs_(s.cfg.schedule().epochs()),
      rec_(std::move(rec)), weights_(std::move(weights)),
      optimizer_(make_optimizer(cfg_.optimizer(), s.net->num_params(), s.backend.get())),
      trainer_(std::make_unique<Trainer>(trainer_options_with_stop(), *s.net, *s.backend,
                                         *optimizer_, *s.comm)),
      checkpoints_(o.checkpoints, cfg_, steps_per_epoch(s), s.comm->size(), s.speaks()) {}

TrainerOptions TrainRun::trainer_options_with_stop() {
  TrainerOptions t = trainer_options(cfg_);
  if (const auto mult = io::lr_multipliers(cfg_.transfer()); !mult.empty())
    t.lr_scale = io::make_lr_scale(*s_.net, mult);
  // Polled on every rank after each step: a stop signal (with checkpoints), or --max-steps
  // reached (the step being finished is global step + 1).
  const bool signals = !o_.checkpoints.dir.empty();
  if (signals || o_.max_steps > 0)
    t.stop_requested = [this, signals] {
      const bool at_max = o_.max_steps > 0 && trainer_ && trainer_->global_step() + 1 >= o_.max_steps;
      return (signals && stop_signal_received()) || at_max;
    };
  return t;
}

double TrainRun::lr() const { return std::stod(fmt::format("{}", float(trainer_->last_lr()))); }

int run_train(const CommonOptions& common, const TrainOptionsCli& o) {
  const proto::ExperimentConfig cfg = load_config(common.config, common.overrides);
  // Checkpoint options are checked before the (slow) session starts.
  check_checkpoint_options(o.checkpoints);
  // Installed before anything slow, so that a preemption during start-up is not fatal either.
  if (!o.checkpoints.dir.empty()) install_stop_signal_handlers();
  // Only rank 0 writes (the other ranks' paths are never used), and it claims its outputs before
  // the (slow) session; an error here ends the whole job (main).
  Outputs outputs;
  if (world_rank() == 0) outputs = claim_outputs(common, o, cfg);
  Session s = [&] {
    try {
      return open_session(cfg, true);
    } catch (...) {
      outputs.discard_unused();
      throw;
    }
  }();
  // Transfer learning: start from another model's tensors (every rank reads the file). A
  // resumed run then overwrites them with the checkpoint's.
  std::string transfer_summary;
  if (!cfg.transfer().init_from().empty())
    transfer_summary = io::apply_init_from(*s.net, cfg.transfer()).summary();
  std::unique_ptr<RunRecorder> rec;  // rank 0 only: the others neither print nor write
  if (s.speaks()) rec = start_recorder(common, s, outputs, transfer_summary);
  return TrainRun(o, s, std::move(rec), outputs.weights).run();
}

int TrainRun::run() {
  EpochReport last{};
  try {
    auto note = [this](const std::string& line) {
      if (rec_) rec_->note(line);
    };
    const StartPoint start = checkpoints_.resume(*s_.net, *optimizer_, *trainer_, note);
    history_ = start.history;
    if (rec_) rec_->add_past_epochs(history_);
    if (rec_ && !start.checkpoint.empty()) rec_->resumed(trainer_->global_step(), start.checkpoint);
    for (int e = int(start.epoch); e < epochs_; ++e) {
      EpochProgress progress = e == start.epoch ? start.progress : EpochProgress{};
      last = train_epoch(e, progress);
      const bool complete = progress.steps_done == last.steps;
      if (complete) end_epoch(e, last, progress);
      // A stop after the last step of training just lets the run finish.
      if (last.stop && !(complete && e + 1 == epochs_)) return stop(e, progress, last);
    }
    if (last.epoch == 0) {
      // Nothing left to train (the checkpoint is at or past the last epoch): the summary
      // reports the checkpoint's model.
      note(fmt::format("the checkpoint is at the end of epoch {}: nothing left to train for {} "
                       "epochs", start.epoch, epochs_));
      const EvalReport ev = trainer_->evaluate(s_.data.test, dense() ? nullptr : &predictions_);
      last.epoch = int(start.epoch);
      last.test_segmentation = ev.segmentation;
      last.test_detection = ev.detection;
      last.test_correct = ev.correct;
      last.test_total = ev.total;
      last.test_accuracy = ev.accuracy;
    }
    if (!checkpoints_.saved_at(trainer_->global_step()))
      save(epochs_ - 1, EpochProgress{steps_per_epoch(s_)}, true,
           "it was the run's last (the final weights are saved below)");
  } catch (const TrainingDiverged& e) {
    throw diverged(e);
  } catch (const std::exception& e) {
    if (rec_) rec_->log(fmt::format("error: {}", e.what()));  // main prints it to stderr
    throw;
  }
  return finish(last);
}

bool TrainRun::dense() const {
  return s_.net->config().loss().type() != proto::LossConfig::SOFTMAX_CE;
}

EpochReport TrainRun::train_epoch(int epoch, EpochProgress& progress) {
  if (rec_) rec_->begin_epoch(epoch + 1, epochs_, steps_per_epoch(s_));
  return trainer_->train_epoch(
      s_.data.train, epoch, nullptr,
      [&](int64_t step, int64_t steps, const StepMetrics& m) {
        if (rec_) rec_->step(trainer_->global_step(), step, m, lr());
        // A save due at an epoch's last step waits for its evaluation (end_epoch), so that the
        // checkpoint's history holds that epoch; a stop saves in stop().
        if (step + 1 < steps && !m.stop && checkpoints_.due(trainer_->global_step()))
          save(epoch, progress, false, "retrying at the next save");
      },
      &progress);
}

void TrainRun::end_epoch(int epoch, EpochReport& r, const EpochProgress& progress) {
  train_seconds_ += r.train_seconds;
  // The last evaluation also keeps what each test image was predicted as.
  const EvalReport ev =
      trainer_->evaluate(s_.data.test, epoch + 1 == epochs_ && !dense() ? &predictions_ : nullptr);
  r.test_correct = ev.correct;
  r.test_total = ev.total;
  r.test_accuracy = ev.accuracy;
  r.test_segmentation = ev.segmentation;
  r.test_detection = ev.detection;
  history_.push_back(epoch_metrics(r, ev.loss, lr(), trainer_->global_step()));
  if (rec_) rec_->end_epoch(r, epochs_, ev.loss, lr(), trainer_->global_step());
  if (rec_ && dense()) {
    // The first test samples as this epoch's model sees them: rank 0's own forward passes.
    const int64_t n = std::min<int64_t>(kPredictionRows, s_.data.test.size());
    std::vector<int64_t> ids(static_cast<size_t>(n));
    std::iota(ids.begin(), ids.end(), 0);
    const auto& loss = s_.net->config().loss();
    const Tensor out = trainer_->predict(s_.data.test, ids.data(), n);
    if (loss.type() == proto::LossConfig::DETECTION) {
      // The boxes predict shows by default, decoded as the evaluation does.
      DecodeOptions decode = decode_options(loss);
      decode.score_threshold = std::max(decode.score_threshold, kShownDetectionScore);
      const Shape head = s_.net->output_shape(), in = s_.net->input_shape();
      std::vector<std::vector<Detection>> found;
      for (int64_t i = 0; i < n; ++i)
        found.push_back(decode_detections(out.data<float>() + i * head.numel(), head[1], head[2],
                                          detection_spec(loss, s_.net->num_classes()), decode,
                                          in[1], in[2]));
      rec_->detections(s_.data.test, found, trainer_->global_step());
    } else {
      rec_->predictions(s_.data.test, pixel_classes(out),
                        loss.has_ignore_label() ? loss.ignore_label() : 255, trainer_->global_step());
    }
  }
  // (The end of training saves after the loop.)
  if (!r.stop && epoch + 1 < epochs_ && checkpoints_.due_at_epoch_end(trainer_->global_step()))
    save(epoch, progress, false, "retrying at the next save");
}

void TrainRun::save(int64_t epoch, const EpochProgress& progress, bool on_screen,
                    const char* then) {
  // Nothing is saved on ranks other than the writer (TrainCheckpoints::save).
  const TrainCheckpoints::Saved c = checkpoints_.save(
      *s_.net, *optimizer_, trainer_->global_step(), epoch, progress, history_, lr());
  if (rec_) rec_->checkpoint(trainer_->global_step(), c, on_screen, then);
}

int TrainRun::stop(int epoch, const EpochProgress& progress, const EpochReport& r) {
  // Every rank agreed to stop after this step (a SIGTERM or SIGUSR1 on some rank).
  if (!checkpoints_.saved_at(trainer_->global_step()))
    save(epoch, progress, true, "stopping without it: --resume auto continues from the one before");
  if (!rec_) return 0;
  const std::string signal = stop_signal_name();
  const bool at_max = o_.max_steps > 0 && trainer_->global_step() >= o_.max_steps;
  const std::string why = at_max           ? fmt::format("--max-steps {}", o_.max_steps)
                          : signal.empty() ? "a stop signal on another rank"
                                           : signal;
  const std::string& dir = o_.checkpoints.dir;
  rec_->stopped(trainer_->global_step(), why,
                fmt::format("stopped by {} after global step {} (epoch {}, {} of {} steps){}", why,
                            trainer_->global_step(), epoch + 1, progress.steps_done, r.steps,
                            dir.empty() ? std::string()
                                        : ": continue with --resume auto --checkpoint-dir " + dir));
  return 0;
}

int TrainRun::finish(const EpochReport& r) {
  if (!rec_) return 0;
  const std::string wanted = weights_.empty() ? rec_->path("weights.bin") : weights_;
  check_finite_params(*s_.net, trainer_->global_step(), wanted);
  RunRecorder::Summary sum;
  sum.weights = save_final_weights(*s_.net, wanted, rec_->dir(),
                                   [this](const std::string& line) { rec_->note(line); });
  // A dense or detection model's test metrics replace the per-image confusion matrix and error
  // grid.
  if (dense()) sum.segmentation = r.test_segmentation, sum.detection = r.test_detection;
  else sum.confusion = rec_->errors(s_.data.test, predictions_, trainer_->global_step());
  sum.epochs = r.epoch;
  sum.test_correct = r.test_correct;
  sum.test_total = r.test_total;
  sum.test_accuracy = r.test_accuracy;
  sum.train_seconds = train_seconds_;
  rec_->summary(sum);
  return 0;
}

TrainingDiverged TrainRun::diverged(const TrainingDiverged& e) const {
  // Nothing is saved on this path: the checkpoints written so far stay as they are.
  const std::string where =
      !checkpoints_.last_path().empty()
          ? fmt::format("the last checkpoint, {} (global step {}), is kept; lower the learning "
                        "rate before resuming from it (--resume PATH)",
                        checkpoints_.last_path(), checkpoints_.last_step())
          : std::string(o_.checkpoints.dir.empty() ? "no checkpoint was written (no --checkpoint-dir)"
                                                   : "no checkpoint was written before it");
  TrainingDiverged full(fmt::format("{}; {}; no weights were saved", e.what(), where),
                        e.global_step, e.epoch, e.loss);
  if (rec_) rec_->diverged(full);
  return full;
}

}  // namespace deeptrain::app
