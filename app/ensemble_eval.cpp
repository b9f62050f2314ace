// `deeptrain eval CONFIG --weights A --weights B ...`: an ensemble. Each member is evaluated on
// the test set (its softmax probabilities kept), then the ensemble predicts the class of the
// largest mean probability (chapter 8: ensembles of several trained networks).
#include <algorithm>

#include "app/commands.h"
#include "app/output.h"
#include "app/run_recorder.h"
#include "app/session.h"
#include "core/eval/ensemble.h"
#include "core/io/weights.h"
#include "distributed/trainer.h"
#include "report/run_dir.h"

namespace deeptrain::app {

int run_ensemble_eval(const CommonOptions& common, const EvalOptionsCli& o,
                      const proto::ExperimentConfig& cfg, Session& s) {
  const TrainerOptions topt = trainer_options(cfg);
  Trainer trainer(topt, *s.net, *s.backend, *s.comm);  // evaluation only: no optimizer
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
  Output out(common.json);
  double best = 0;
  for (size_t k = 0; k < members.size(); ++k) {
    const EvalReport& r = members[k];
    best = std::max(best, r.accuracy);
    out.event({{"event", "member"},
               {"index", k + 1},
               {"weights", o.weights[k]},
               {"test_correct", r.correct},
               {"test_total", r.total},
               {"test_accuracy", rounded(r.accuracy, 6)},
               {"test_loss", rounded(r.loss, 6)}},
              fmt::format("member {} ({}): test accuracy {:.4f} ({} / {}), loss {:.4f}", k + 1,
                          o.weights[k], r.accuracy, r.correct, r.total, r.loss));
  }
  if (o.errors) {
    const std::string dir =
        report::create_run_dir(common.run_dir, run_name(cfg, common.config) + "-ensemble");
    const ErrorFigures figures = write_error_figures(dir, s.data.test, predictions);
    out.event({{"event", "errors"}, {"dir", dir}},
              "confusion matrix of the ensemble on the test set (rows: true class, columns: "
              "predicted):\n" + figures.table + "misclassified.png and confusion.csv written to " +
                  dir);
  }
  out.event({{"event", "summary"},
             {"members", members.size()},
             {"test_correct", e.correct},
             {"test_total", e.total},
             {"test_accuracy", rounded(e.accuracy, 6)},
             {"test_loss", rounded(e.loss, 6)},
             {"best_member_accuracy", rounded(best, 6)}},
            fmt::format("ensemble of {} (mean of softmax probabilities): test accuracy {:.4f} "
                        "({} / {}), loss {:.4f}; best member {:.4f}",
                        members.size(), e.accuracy, e.correct, e.total, e.loss, best));
  return 0;
}

}  // namespace deeptrain::app
