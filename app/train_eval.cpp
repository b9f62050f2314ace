// `deeptrain train` and `deeptrain eval`.
#include <cstdio>

#include "app/commands.h"
#include "app/session.h"
#include "core/io/weights.h"
#include "core/optim/optimizer.h"
#include "distributed/trainer.h"

namespace deeptrain::app {
namespace {

void add_common(CLI::App* sub, CommonOptions& c) {
  sub->add_option("config", c.config, "experiment config (protobuf text format)")
      ->required()
      ->check(CLI::ExistingFile);
  auto& o = c.overrides;
  sub->add_option("--epochs", o.epochs, "override schedule.epochs");
  sub->add_option("--batch-size", o.batch_size, "override schedule.batch_size (global batch)");
  sub->add_option("--lr", o.lr, "override optimizer.lr");
  sub->add_option("--seed", o.seed, "override run.seed");
  sub->add_option("--threads", o.threads, "override run.threads (0 = all cores)");
  sub->add_option("--backend", o.backend, "override run.backend: cpu (fast path) or cpu-ref");
  sub->add_option("--data-dir", o.data_dir, "override data.dir");
  sub->add_option("--train-limit", o.train_limit, "use only the first N training samples");
  sub->add_option("--test-limit", o.test_limit, "use only the first N test samples");
  sub->add_flag("--json", c.json, "one JSON object per line; the last line is the summary");
}

TrainerOptions trainer_options(const proto::ExperimentConfig& cfg) {
  TrainerOptions t;
  t.batch_size = cfg.schedule().batch_size();
  t.eval_batch_size = cfg.run().eval_batch_size();
  t.seed = cfg.run().seed();
  t.lr = cfg.optimizer().lr();
  return t;
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

}  // namespace

void add_train_command(CLI::App& cli, CommonOptions& common, TrainOptionsCli& o) {
  CLI::App* sub = cli.add_subcommand("train", "train a model from a config");
  add_common(sub, common);
  sub->add_option("--save-weights", o.save_weights, "write the final weights to this file");
  sub->footer("Example: deeptrain train examples/deep_convnet_mnist.prototxt --epochs 1");
}

void add_eval_command(CLI::App& cli, CommonOptions& common, EvalOptionsCli& o) {
  CLI::App* sub = cli.add_subcommand("eval", "test accuracy of saved or imported weights");
  add_common(sub, common);
  auto* w = sub->add_option("--weights", o.weights, "a deeptrain weights file")
                ->check(CLI::ExistingFile);
  auto* i = sub->add_option("--init-from", o.init_from, "a NumPy .npz (e.g. the book's weights)")
                ->check(CLI::ExistingFile);
  w->excludes(i);
  sub->add_option("--npz-dropout", o.npz_dropout,
                  "book: the .npz comes from non-inverted dropout (folded on import); inverted")
      ->check(CLI::IsMember({"book", "inverted"}));
  sub->footer("Example: deeptrain eval examples/deep_convnet_mnist.prototxt "
              "--init-from ../shared/reference/book_deep_convnet_params.npz");
}

int run_train(const CommonOptions& common, const TrainOptionsCli& o) {
  const proto::ExperimentConfig cfg = load_config(common.config, common.overrides);
  Session s = open_session(cfg, true);
  auto optimizer = make_optimizer(cfg.optimizer(), s.net->num_params());
  Trainer trainer(trainer_options(cfg), *s.net, *s.backend, *optimizer, *s.comm);
  const bool speak = s.speaks();
  if (speak && !common.json) std::printf("%s\n", describe(s).c_str());
  EpochReport last{};
  double total_seconds = 0;
  for (int e = 0; e < cfg.schedule().epochs(); ++e) {
    last = trainer.train_epoch(s.data.train, e, &s.data.test);
    total_seconds += last.train_seconds;
    if (!speak) continue;
    if (common.json)
      std::printf(
          "{\"event\":\"epoch\",\"epoch\":%d,\"steps\":%ld,\"train_loss\":%.6f,"
          "\"train_accuracy\":%.6f,\"test_accuracy\":%.6f,\"test_correct\":%ld,"
          "\"test_total\":%ld,\"train_seconds\":%.3f,\"images_per_sec\":%.1f}\n",
          last.epoch, long(last.steps), last.train_loss, last.train_accuracy, last.test_accuracy,
          long(last.test_correct), long(last.test_total), last.train_seconds,
          last.images_per_sec);
    else
      std::printf("epoch %3d/%d  train loss %.4f  train acc %.4f  test acc %.4f  %7.1f img/s  %.1f s\n",
                  last.epoch, cfg.schedule().epochs(), last.train_loss, last.train_accuracy,
                  last.test_accuracy, last.images_per_sec, last.train_seconds);
    std::fflush(stdout);
  }
  const std::string weights = !o.save_weights.empty() ? o.save_weights : cfg.run().save_weights();
  if (!weights.empty() && speak) io::save_weights(weights, *s.net);
  if (!speak) return 0;
  if (common.json)
    std::printf("{\"event\":\"summary\",\"epochs\":%d,\"test_correct\":%ld,\"test_total\":%ld,"
                "\"test_accuracy\":%.6f,\"train_seconds\":%.3f,\"peak_rss_mb\":%.1f}\n",
                last.epoch, long(last.test_correct), long(last.test_total), last.test_accuracy,
                total_seconds, peak_rss_mb());
  else
    std::printf("final test accuracy %.4f (%ld / %ld)%s\n", last.test_accuracy,
                long(last.test_correct), long(last.test_total),
                weights.empty() ? "" : fmt::format(", weights saved to {}", weights).c_str());
  return 0;
}

int run_eval(const CommonOptions& common, const EvalOptionsCli& o) {
  const proto::ExperimentConfig cfg = load_config(common.config, common.overrides);
  Session s = open_session(cfg, true);
  if (!o.weights.empty()) io::load_weights(o.weights, *s.net);
  else if (!o.init_from.empty())
    io::import_npz(o.init_from, *s.net,
                   o.npz_dropout == "book" ? io::NpzDropout::book : io::NpzDropout::inverted);
  else
    fail_input("eval: give --weights FILE or --init-from FILE.npz");
  auto optimizer = make_optimizer(cfg.optimizer(), s.net->num_params());
  Trainer trainer(trainer_options(cfg), *s.net, *s.backend, *optimizer, *s.comm);
  const EvalReport r = trainer.evaluate(s.data.test);
  if (!s.speaks()) return 0;
  if (common.json)
    std::printf("{\"event\":\"summary\",\"test_correct\":%ld,\"test_total\":%ld,"
                "\"test_accuracy\":%.6f,\"test_loss\":%.6f,\"images_per_sec\":%.1f}\n",
                long(r.correct), long(r.total), r.accuracy, r.loss, r.images_per_sec);
  else
    std::printf("test accuracy %.4f (%ld / %ld), loss %.4f, %.0f img/s\n", r.accuracy,
                long(r.correct), long(r.total), r.loss, r.images_per_sec);
  return 0;
}

}  // namespace deeptrain::app
