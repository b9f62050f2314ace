// `deeptrain eval CONFIG --weights A --weights B ...`: an ensemble. Each member is evaluated on
// the test set (its softmax probabilities kept), then the ensemble predicts the class of the
// largest mean probability (chapter 8: ensembles of several trained networks).
#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "app/commands.h"
#include "app/run_recorder.h"
#include "app/session.h"
#include "core/eval/ensemble.h"
#include "core/io/weights.h"
#include "core/optim/optimizer.h"
#include "distributed/trainer.h"
#include "report/run_dir.h"

namespace deeptrain::app {

int run_ensemble_eval(const CommonOptions& common, const EvalOptionsCli& o,
                      const proto::ExperimentConfig& cfg, Session& s) {
  const TrainerOptions topt = trainer_options(cfg);
  auto optimizer = make_optimizer(cfg.optimizer(), s.net->num_params());
  Trainer trainer(topt, *s.net, *s.backend, *optimizer, *s.comm);
  std::vector<Tensor> member_probabilities;
  std::vector<EvalReport> members;
  for (const std::string& path : o.weights) {
    io::load_weights(path, *s.net);  // every rank loads the same file; the Net syncs a device
    Tensor p;
    members.push_back(trainer.evaluate(s.data.test, nullptr, &p));
    member_probabilities.push_back(p);
  }
  std::vector<int32_t> predictions;
  const ProbabilityScore e = score_probabilities(mean_probabilities(member_probabilities),
                                                 s.data.test.labels, topt.log_eps, &predictions);
  if (!s.speaks()) return 0;
  std::string dir;
  ErrorFigures figures;
  if (o.errors) {
    const std::string name =
        cfg.name().empty() ? std::filesystem::path(common.config).stem().string() : cfg.name();
    dir = report::create_run_dir(common.run_dir, name + "-ensemble");
    figures = write_error_figures(dir, s.data.test, predictions);
  }
  double best = 0;
  for (size_t k = 0; k < members.size(); ++k) {
    const EvalReport& r = members[k];
    best = std::max(best, r.accuracy);
    if (common.json)
      std::printf("{\"event\":\"member\",\"index\":%zu,\"weights\":\"%s\",\"test_correct\":%ld,"
                  "\"test_total\":%ld,\"test_accuracy\":%s,\"test_loss\":%s}\n",
                  k + 1, json_escape(o.weights[k]).c_str(), long(r.correct), long(r.total),
                  json_num(r.accuracy, 6).c_str(), json_num(r.loss, 6).c_str());
    else
      std::printf("member %zu (%s): test accuracy %.4f (%ld / %ld), loss %.4f\n", k + 1,
                  o.weights[k].c_str(), r.accuracy, long(r.correct), long(r.total), r.loss);
  }
  if (common.json) {
    if (o.errors) std::printf("{\"event\":\"errors\",\"dir\":\"%s\"}\n", json_escape(dir).c_str());
    std::printf("{\"event\":\"summary\",\"members\":%zu,\"test_correct\":%ld,\"test_total\":%ld,"
                "\"test_accuracy\":%s,\"test_loss\":%s,\"best_member_accuracy\":%s}\n",
                members.size(), long(e.correct), long(e.total), json_num(e.accuracy, 6).c_str(),
                json_num(e.loss, 6).c_str(), json_num(best, 6).c_str());
    return 0;
  }
  if (o.errors)
    std::printf("confusion matrix of the ensemble on the test set (rows: true class, columns: "
                "predicted):\n%smisclassified.png and confusion.csv written to %s\n",
                figures.table.c_str(), dir.c_str());
  std::printf("ensemble of %zu (mean of softmax probabilities): test accuracy %.4f (%ld / %ld), "
              "loss %.4f; best member %.4f\n",
              members.size(), e.accuracy, long(e.correct), long(e.total), e.loss, best);
  return 0;
}

}  // namespace deeptrain::app
