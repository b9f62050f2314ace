// The command lines of `deeptrain train` (its run: app/train_run.cpp) and `deeptrain eval`.
#include "app/commands.h"
#include "app/output.h"
#include "app/run_recorder.h"
#include "app/session.h"
#include "app/train_checkpoints.h"
#include "core/io/weights.h"
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
  namespace d = config_defaults;
  sub->add_option("--epochs", o.epochs, fmt::format("override schedule.epochs (default {})", d::kEpochs));
  sub->add_option("--batch-size", o.batch_size,
                  fmt::format("override schedule.batch_size, the global batch (default {})",
                              d::kBatchSize));
  sub->add_option("--lr", o.lr,
                  fmt::format("override optimizer.lr (default {} for SGD, {} otherwise)", d::kLrSgd,
                              d::kLr));
  sub->add_option("--seed", o.seed, "override run.seed");
  sub->add_option("--threads", o.threads, "override run.threads (0 = all cores)");
  sub->add_option("--backend", o.backend,
                  fmt::format("override run.backend: {} (default {}; {} in exact mode)",
                              backend_words(), backend_word(d::kBackend),
                              backend_word(d::kExactBackend)));
  sub->add_option("--math", o.math,
                  fmt::format("override run.math: {} (default {}); the CPU takes fp32, and bf16 "
                              "on processors with AVX512-BF16 or AMX",
                              math_words(), math_word(d::kMath)));
  sub->add_option("--conv-algorithm", o.conv_algorithm,
                  fmt::format("override run.conv_algorithm: {} (default direct); winograd on "
                              "the CPU backend in fp32 (docs/cpu_performance.md)",
                              conv_algorithm_words()));
  sub->add_option("--device-transport", o.device_transport,
                  fmt::format("override distributed.device_transport: {} (default nccl); how a "
                              "GPU's gradients cross between ranks (host-mpi: through host "
                              "memory and MPI, where NCCL cannot run)",
                              device_transport_words()));
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
      "curves.{png,svg}, misclassified.png, confusion.csv (a per-pixel model or a detector: predictions.png,\n"
      "redrawn every epoch) and weights.bin.\n"
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

int run_eval(const CommonOptions& common, const EvalOptionsCli& o) {
  if (!o.errors && !common.run_dir.empty())
    fail_input("eval: --run-dir is where --errors writes its figures; add --errors");
  const proto::ExperimentConfig cfg = load_config(common.config, common.overrides);
  const bool dense = cfg.model().loss().type() != proto::LossConfig::SOFTMAX_CE;
  if (dense && (o.errors || o.weights.size() > 1))
    fail_input("eval: {} is for classification models; model.loss of {} is per pixel or detection",
               o.errors ? "--errors" : "an ensemble (several --weights)", common.config);
  Session s = open_session(cfg, true);
  if (o.weights.size() > 1) return run_ensemble_eval(common, o, cfg, s);
  if (!o.weights.empty()) io::load_weights(o.weights[0], *s.net);
  else if (!o.init_from.empty())
    io::import_npz(o.init_from, *s.net,
                   o.npz_dropout == "book" ? io::NpzDropout::book : io::NpzDropout::inverted);
  else
    fail_input("eval: give --weights FILE or --init-from FILE.npz");
  Trainer evaluator(trainer_options(cfg), *s.net, *s.backend, *s.comm);  // no optimizer
  std::vector<int32_t> predictions;
  const EvalReport r = evaluator.evaluate(s.data.test, o.errors ? &predictions : nullptr);
  if (!s.speaks()) return 0;
  Output out(common.json);
  if (o.errors) {
    const std::string dir =
        report::create_run_dir(common.run_dir, run_name(cfg, common.config) + "-eval");
    const ErrorFigures figures = write_error_figures(dir, s.data.test, predictions);
    out.event({{"event", "errors"}, {"dir", dir}},
              "confusion matrix of the test set (rows: true class, columns: predicted):\n" +
                  figures.table + "misclassified.png and confusion.csv written to " + dir);
  }
  if (r.detection) {
    const DetectionMetrics& m = *r.detection;
    out.event({{"event", "summary"},
               {"test_correct", r.correct},
               {"test_total", r.total},
               {"test_map50", rounded(m.map50, 6)},
               {"test_map", rounded(m.map, 6)},
               {"test_loss", rounded(r.loss, 6)},
               {"images_per_sec", rounded(r.images_per_sec, 1)}},
              fmt::format("test mAP@0.5 {:.4f}, mAP@[.5:.95] {:.4f} ({} of {} truth boxes found at "
                          "IoU 0.5), loss {:.4f}, {:.0f} img/s", m.map50, m.map, r.correct, r.total,
                          r.loss, r.images_per_sec));
    return 0;
  }
  if (r.segmentation) {
    const SegmentationMetrics& m = *r.segmentation;
    out.event({{"event", "summary"},
               {"test_total", r.total},
               {"test_pixel_accuracy", rounded(m.pixel_accuracy, 6)},
               {"test_mean_iou", rounded(m.mean_iou, 6)},
               {"test_mean_iou_fg", rounded(m.mean_iou_fg, 6)},
               {"test_loss", rounded(r.loss, 6)},
               {"images_per_sec", rounded(r.images_per_sec, 1)}},
              fmt::format("test pixel accuracy {:.4f}, mean IoU {:.4f} (without background {:.4f}) "
                          "over {} counted pixels, loss {:.4f}, {:.0f} img/s", m.pixel_accuracy, m.mean_iou,
                          m.mean_iou_fg, r.total, r.loss, r.images_per_sec));
    return 0;
  }
  out.event({{"event", "summary"},
             {"test_correct", r.correct},
             {"test_total", r.total},
             {"test_accuracy", rounded(r.accuracy, 6)},
             {"test_loss", rounded(r.loss, 6)},
             {"images_per_sec", rounded(r.images_per_sec, 1)}},
            fmt::format("test accuracy {:.4f} ({} / {}), loss {:.4f}, {:.0f} img/s", r.accuracy,
                        r.correct, r.total, r.loss, r.images_per_sec));
  return 0;
}

}  // namespace deeptrain::app
