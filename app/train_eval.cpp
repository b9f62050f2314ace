// `deeptrain train` and `deeptrain eval`.
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>

#include "app/commands.h"
#include "app/run_recorder.h"
#include "app/session.h"
#include "app/train_checkpoints.h"
#include "core/eval/ensemble.h"
#include "core/io/atomic_file.h"
#include "core/io/output_paths.h"
#include "core/io/transfer.h"
#include "core/io/weights.h"
#include "core/optim/optimizer.h"
#include "distributed/mpi_communicator.h"
#include "distributed/trainer.h"
#include "report/run_dir.h"

namespace deeptrain::app {
namespace {

void add_common(CLI::App* sub, CommonOptions& c) {
  sub->add_option("config", c.config, "experiment config (protobuf text format)")
      ->required()
      ->check(CLI::ExistingFile);
  auto& o = c.overrides;
  // An explicit 0 is checked, never taken for "not given" (finalize_config refuses it).
  sub->add_option("--epochs", o.epochs, "override schedule.epochs");
  sub->add_option("--batch-size", o.batch_size, "override schedule.batch_size (global batch)");
  sub->add_option("--lr", o.lr, "override optimizer.lr");
  sub->add_option("--seed", o.seed, "override run.seed");
  sub->add_option("--threads", o.threads, "override run.threads (0 = all cores)");
  sub->add_option("--backend", o.backend,
                  "override run.backend: cpu (fast path), cpu-ref, cuda or cuda-im2col");
  sub->add_option("--math", o.math, "override run.math (GPU): fp32, tf32, bf16 or fp16");
  sub->add_option("--data-dir", o.data_dir, "override data.dir");
  sub->add_option("--train-limit", o.train_limit, "use only the first N training samples");
  sub->add_option("--test-limit", o.test_limit, "use only the first N test samples");
  sub->add_flag_callback("--exact", [&o] { o.exact = true; },
                         "exact mode (distributed.exact): the same model to the last bit on any "
                         "number of ranks and threads (docs/exact_mode.md)");
  sub->add_flag("--json", c.json, "one JSON object per line; the last line is the summary");
  sub->add_option("--run-dir", c.run_dir,
                  "where the run's files go (default: runs/<config name>-<YYYYmmdd-HHMMSS>)");
}

// The config's name, else its file name without extension: names the default run directory.
std::string run_name(const proto::ExperimentConfig& cfg, const std::string& config_path) {
  if (!cfg.name().empty()) return cfg.name();
  return std::filesystem::path(config_path).stem().string();
}

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

}  // namespace

void add_train_command(CLI::App& cli, CommonOptions& common, TrainOptionsCli& o) {
  CLI::App* sub = cli.add_subcommand("train", "train a model from a config");
  add_common(sub, common);
  sub->add_option("--save-weights", o.save_weights,
                  "write the final weights here instead of <run dir>/weights.bin");
  add_checkpoint_options(sub, o.checkpoints);
  sub->add_option("--max-steps", o.max_steps,
                  "stop after this global step, as a stop signal would (with a checkpoint when "
                  "--checkpoint-dir is given)")
      ->check(positive_integer());
  sub->footer(
      "Every run writes into its run directory: config.prototxt (the effective config), log.txt,\n"
      "metrics_steps.{jsonl,csv}, metrics_epochs.{jsonl,csv}, events.out.tfevents.* (TensorBoard),\n"
      "curves.{png,svg}, misclassified.png, confusion.csv and weights.bin.\n"
      "On a terminal a progress bar shows each epoch; otherwise a line every 10% of an epoch.\n\n"
      "Examples:\n"
      "  deeptrain train examples/deep_convnet_mnist.prototxt\n"
      "  deeptrain train examples/deep_convnet_mnist.prototxt --epochs 1 --run-dir runs/try1\n"
      "  deeptrain train examples/deep_convnet_mnist.prototxt --train-limit 1000 --json\n"
      "  deeptrain train examples/deep_convnet_mnist.prototxt --checkpoint-dir ckpt "
      "--checkpoint-every 10m --resume auto\n"
      "  tensorboard --logdir runs");
  add_run_tool_commands(cli);  // plot and doctor: see commands.h
}

void add_eval_command(CLI::App& cli, CommonOptions& common, EvalOptionsCli& o) {
  CLI::App* sub = cli.add_subcommand("eval", "test accuracy of saved or imported weights");
  add_common(sub, common);
  auto* w = sub->add_option("--weights", o.weights,
                            "a deeptrain weights file; repeat it for an ensemble (the members' "
                            "softmax probabilities averaged)")
                ->check(CLI::ExistingFile)
                ->allow_extra_args(false);
  auto* i = sub->add_option("--init-from", o.init_from, "a NumPy .npz (e.g. the book's weights)")
                ->check(CLI::ExistingFile);
  w->excludes(i);
  sub->add_option("--npz-dropout", o.npz_dropout,
                  "book: the .npz comes from non-inverted dropout (folded on import); inverted")
      ->check(CLI::IsMember({"book", "inverted"}));
  sub->add_flag("--errors", o.errors,
                "also write misclassified.png and confusion.csv to the run directory and print "
                "the confusion matrix");
  sub->footer(
      "Examples:\n"
      "  deeptrain eval examples/deep_convnet_mnist.prototxt --weights runs/dcn/weights.bin\n"
      "  deeptrain eval examples/deep_convnet_mnist.prototxt "
      "--init-from ../shared/reference/book_deep_convnet_params.npz --errors --run-dir runs/book\n"
      "  deeptrain eval examples/deep_convnet_mnist_aug.prototxt --weights a.bin --weights b.bin "
      "--weights c.bin");
}

int run_train(const CommonOptions& common, const TrainOptionsCli& o) {
  const proto::ExperimentConfig cfg = load_config(common.config, common.overrides);
  // Checkpoint options are checked before the (slow) session starts.
  const CheckpointOptionsCli& co = o.checkpoints;
  check_checkpoint_options(co);
  // Installed before anything slow, so that a preemption during start-up is not fatal either.
  if (!co.dir.empty()) install_stop_signal_handlers();
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
  TrainerOptions topt = trainer_options(cfg);
  if (const auto mult = io::lr_multipliers(cfg.transfer()); !mult.empty())
    topt.lr_scale = io::make_lr_scale(*s.net, mult);
  // Polled on every rank after each step: a stop signal (with checkpoints), or --max-steps
  // reached (the step being finished is global step + 1).
  const Trainer* stepping = nullptr;  // the trainer below
  const int64_t max_steps = o.max_steps;
  auto max_steps_reached = [&stepping, max_steps] {
    return max_steps > 0 && stepping && stepping->global_step() + 1 >= max_steps;
  };
  if (!co.dir.empty() || max_steps > 0)
    topt.stop_requested = [&co, max_steps_reached] {
      return (!co.dir.empty() && stop_signal_received()) || max_steps_reached();
    };
  auto optimizer = make_optimizer(cfg.optimizer(), s.net->num_params(), s.backend.get());
  Trainer trainer(topt, *s.net, *s.backend, *optimizer, *s.comm);
  stepping = &trainer;
  const GlobalSampler sampler{s.data.train.labels.numel(), cfg.schedule().batch_size(),
                              cfg.run().seed()};
  TrainCheckpoints checkpoints(co, cfg, sampler.steps_per_epoch(), s.comm->size(), s.speaks());
  std::unique_ptr<RunRecorder> rec;  // rank 0 only: the others neither print nor write
  if (s.speaks()) {
    rec = std::make_unique<RunRecorder>(outputs.run_dir, common.json, isatty(fileno(stdout)));
    io::write_file_atomic(rec->path("config.prototxt"), to_text(cfg));
  }
  if (rec && !common.json) {
    rec->print(describe(s));
    rec->print("run directory " + rec->dir());
    if (!transfer_summary.empty())
      rec->print("initialised from " + cfg.transfer().init_from() + ": " + transfer_summary);
  }
  // Notes about checkpoints (resuming, fallbacks): stderr and log.txt, so that --json's stdout
  // stays JSON.
  auto note = [&](const std::string& line) {
    if (rec) rec->note(line);
  };
  for (const std::string& line : outputs.notes) note(line);
  const int epochs = cfg.schedule().epochs();
  // The rate a step used, as the float's shortest decimal (0.001, not 0.0010000000474974513)
  // for the metrics files.
  auto lr = [&] { return std::stod(fmt::format("{}", float(trainer.last_lr()))); };
  EpochReport last{};
  double total_seconds = 0;
  std::vector<int32_t> predictions;
  // The checkpoint's line: a JSON event with --json, else a line (the log only for periodic
  // ones, which would break a progress bar). A failed save is a warning (TrainCheckpoints::save);
  // `then` says what happens next.
  auto report_save = [&](const TrainCheckpoints::Saved& c, bool on_screen,
                         const char* then = "retrying at the next save") {
    if (!rec) return;
    if (!c.failed.empty()) {
      note(fmt::format("warning: checkpoint at step {} not saved: {}; {}", trainer.global_step(),
                       c.failed, then));
      if (common.json)
        rec->print(fmt::format("{{\"event\":\"checkpoint_failed\",\"step\":{},\"error\":\"{}\"}}",
                               trainer.global_step(), json_escape(c.failed)));
      return;
    }
    if (c.path.empty()) return;
    for (const std::string& w : c.warnings) note("warning: " + w);
    if (common.json)
      rec->print(fmt::format("{{\"event\":\"checkpoint\",\"step\":{},\"path\":\"{}\",\"bytes\":{},"
                             "\"seconds\":{}}}", trainer.global_step(), json_escape(c.path),
                             c.bytes, json_num(c.seconds, 3)));
    else {
      const std::string line = fmt::format("checkpoint {} ({:.1f} MiB in {:.3f} s)", c.path,
                                           double(c.bytes) / 1048576.0, c.seconds);
      on_screen ? rec->print(line) : rec->log(line);
    }
  };
  try {
    StartPoint start = checkpoints.resume(*s.net, *optimizer, trainer, note);
    std::vector<proto::EpochMetrics> history = start.history;
    if (rec) rec->add_past_epochs(history);
    if (rec && common.json && !start.checkpoint.empty())
      rec->print(fmt::format("{{\"event\":\"resumed\",\"step\":{},\"checkpoint\":\"{}\"}}",
                             trainer.global_step(), json_escape(start.checkpoint)));
    for (int e = int(start.epoch); e < epochs; ++e) {
      EpochProgress progress = e == start.epoch ? start.progress : EpochProgress{};
      if (rec) rec->begin_epoch(e + 1, epochs, sampler.steps_per_epoch());
      last = trainer.train_epoch(
          s.data.train, e, nullptr,
          [&](int64_t step, int64_t steps, const StepMetrics& m) {
            if (rec) rec->step(trainer.global_step(), step, m, lr());
            // A save due at an epoch's last step waits for its evaluation (below), so that the
            // checkpoint's history holds that epoch; a stop saves below too.
            if (step + 1 < steps && !m.stop && checkpoints.due(trainer.global_step()))
              report_save(checkpoints.save(*s.net, *optimizer, trainer.global_step(), e, progress,
                                           history, lr()), false);
          },
          &progress);
      const bool complete = progress.steps_done == last.steps;
      if (complete) {
        total_seconds += last.train_seconds;
        // The last evaluation also keeps what each test image was predicted as.
        const EvalReport ev =
            trainer.evaluate(s.data.test, e + 1 == epochs ? &predictions : nullptr);
        last.test_correct = ev.correct;
        last.test_total = ev.total;
        last.test_accuracy = ev.accuracy;
        history.push_back(epoch_metrics(last, ev.loss, lr(), trainer.global_step()));
        if (rec) rec->end_epoch(last, ev.loss, lr(), trainer.global_step());
        if (rec && common.json)
          rec->print(fmt::format(
              "{{\"event\":\"epoch\",\"epoch\":{},\"steps\":{},\"train_loss\":{},"
              "\"train_accuracy\":{},\"test_accuracy\":{},\"test_correct\":{},"
              "\"test_total\":{},\"train_seconds\":{},\"images_per_sec\":{}}}",
              last.epoch, last.steps, json_num(last.train_loss, 6),
              json_num(last.train_accuracy, 6), json_num(last.test_accuracy, 6), last.test_correct,
              last.test_total, json_num(last.train_seconds, 3), json_num(last.images_per_sec, 1)));
        else if (rec)
          rec->print(fmt::format(
              "epoch {:3}/{}  train loss {:.4f}  train acc {:.4f}  test acc {:.4f}  {:7.1f} img/s  "
              "{:.1f} s",
              last.epoch, epochs, last.train_loss, last.train_accuracy, last.test_accuracy,
              last.images_per_sec, last.train_seconds));
        // (The end of training saves after the loop.)
        if (!last.stop && e + 1 < epochs && checkpoints.due_at_epoch_end(trainer.global_step()))
          report_save(checkpoints.save(*s.net, *optimizer, trainer.global_step(), e, progress,
                                       history, lr()), false);
      }
      // A stop after the last step of training just lets the run finish.
      if (last.stop && !(complete && e + 1 == epochs)) {
        // Every rank agreed to stop after this step (a SIGTERM or SIGUSR1 on some rank).
        if (!checkpoints.saved_at(trainer.global_step()))
          report_save(checkpoints.save(*s.net, *optimizer, trainer.global_step(), e, progress,
                                       history, lr()), true,
                      "stopping without it: --resume auto continues from the one before");
        if (!rec) return 0;
        const std::string signal = stop_signal_name();
        const bool at_max = max_steps > 0 && trainer.global_step() >= max_steps;
        const std::string why = at_max            ? fmt::format("--max-steps {}", max_steps)
                                : signal.empty() ? "a stop signal on another rank"
                                                 : signal;
        if (common.json)
          rec->print(fmt::format("{{\"event\":\"stopped\",\"step\":{},\"signal\":\"{}\"}}",
                                 trainer.global_step(), json_escape(why)));
        else
          rec->print(fmt::format("stopped by {} after global step {} (epoch {}, {} of {} steps){}",
                                 why, trainer.global_step(), e + 1, progress.steps_done,
                                 last.steps,
                                 co.dir.empty() ? std::string()
                                                : ": continue with --resume auto --checkpoint-dir " +
                                                      co.dir));
        return 0;
      }
    }
    if (last.epoch == 0) {
      // Nothing left to train (the checkpoint is at or past the last epoch): the summary reports
      // the checkpoint's model.
      note(fmt::format("the checkpoint is at the end of epoch {}: nothing left to train for {} "
                       "epochs", start.epoch, epochs));
      const EvalReport ev = trainer.evaluate(s.data.test, &predictions);
      last.epoch = int(start.epoch);
      last.test_correct = ev.correct;
      last.test_total = ev.total;
      last.test_accuracy = ev.accuracy;
    }
    if (!checkpoints.saved_at(trainer.global_step()))
      report_save(checkpoints.save(*s.net, *optimizer, trainer.global_step(), epochs - 1,
                                   EpochProgress{sampler.steps_per_epoch()}, history, lr()), true,
                  "it was the run's last (the final weights are saved below)");
  } catch (const TrainingDiverged& e) {
    // Nothing is saved on this path: the checkpoints written so far stay as they are.
    const std::string where =
        !checkpoints.last_path().empty()
            ? fmt::format("the last checkpoint, {} (global step {}), is kept; lower the learning "
                          "rate before resuming from it (--resume PATH)",
                          checkpoints.last_path(), checkpoints.last_step())
            : std::string(co.dir.empty() ? "no checkpoint was written (no --checkpoint-dir)"
                                         : "no checkpoint was written before it");
    const TrainingDiverged full(fmt::format("{}; {}; no weights were saved", e.what(), where),
                                e.global_step, e.epoch, e.loss);
    if (rec) rec->log(fmt::format("error: {}", full.what()));  // main prints it to stderr
    throw full;
  } catch (const std::exception& e) {
    if (rec) rec->log(fmt::format("error: {}", e.what()));  // main prints it to stderr
    throw;
  }
  if (!rec) return 0;
  const std::string wanted = outputs.weights.empty() ? rec->path("weights.bin") : outputs.weights;
  check_finite_params(*s.net, trainer.global_step(), wanted);
  const std::string weights = save_final_weights(*s.net, wanted, rec->dir(), note);
  const std::string confusion = rec->errors(s.data.test, predictions, trainer.global_step());
  if (common.json) {
    rec->print(fmt::format(
        "{{\"event\":\"summary\",\"epochs\":{},\"test_correct\":{},\"test_total\":{},"
        "\"test_accuracy\":{},\"train_seconds\":{},\"peak_rss_mb\":{},\"weights\":\"{}\"}}",
        last.epoch, last.test_correct, last.test_total, json_num(last.test_accuracy, 6),
        json_num(total_seconds, 3), json_num(peak_rss_mb(), 1), json_escape(weights)));
    return 0;
  }
  rec->print("confusion matrix of the test set (rows: true class, columns: predicted):\n" +
             confusion.substr(0, confusion.size() - 1));
  rec->print(fmt::format("final test accuracy {:.4f} ({} / {}), weights saved to {}",
                         last.test_accuracy, last.test_correct, last.test_total, weights));
  rec->print(fmt::format("curves, misclassified images and TensorBoard events in {}", rec->dir()));
  return 0;
}

int run_eval(const CommonOptions& common, const EvalOptionsCli& o) {
  if (!o.errors && !common.run_dir.empty())
    fail_input("eval: --run-dir is where --errors writes its figures; add --errors");
  const proto::ExperimentConfig cfg = load_config(common.config, common.overrides);
  Session s = open_session(cfg, true);
  if (o.weights.size() > 1) return run_ensemble_eval(common, o, cfg, s);
  if (!o.weights.empty()) io::load_weights(o.weights[0], *s.net);
  else if (!o.init_from.empty())
    io::import_npz(o.init_from, *s.net,
                   o.npz_dropout == "book" ? io::NpzDropout::book : io::NpzDropout::inverted);
  else
    fail_input("eval: give --weights FILE or --init-from FILE.npz");
  auto optimizer = make_optimizer(cfg.optimizer(), s.net->num_params(), s.backend.get());
  Trainer trainer(trainer_options(cfg), *s.net, *s.backend, *optimizer, *s.comm);
  std::vector<int32_t> predictions;
  const EvalReport r = trainer.evaluate(s.data.test, o.errors ? &predictions : nullptr);
  if (!s.speaks()) return 0;
  std::string dir;
  ErrorFigures figures;
  if (o.errors) {
    dir = report::create_run_dir(common.run_dir, run_name(cfg, common.config) + "-eval");
    figures = write_error_figures(dir, s.data.test, predictions);
  }
  if (common.json) {
    if (o.errors) std::printf("{\"event\":\"errors\",\"dir\":\"%s\"}\n", json_escape(dir).c_str());
    std::printf("{\"event\":\"summary\",\"test_correct\":%ld,\"test_total\":%ld,"
                "\"test_accuracy\":%s,\"test_loss\":%s,\"images_per_sec\":%s}\n",
                long(r.correct), long(r.total), json_num(r.accuracy, 6).c_str(),
                json_num(r.loss, 6).c_str(), json_num(r.images_per_sec, 1).c_str());
    return 0;
  }
  if (o.errors)
    std::printf("confusion matrix of the test set (rows: true class, columns: predicted):\n%s"
                "misclassified.png and confusion.csv written to %s\n",
                figures.table.c_str(), dir.c_str());
  std::printf("test accuracy %.4f (%ld / %ld), loss %.4f, %.0f img/s\n", r.accuracy,
              long(r.correct), long(r.total), r.loss, r.images_per_sec);
  return 0;
}

}  // namespace deeptrain::app
