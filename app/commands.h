#pragma once
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "core/config.h"
#include "core/detect/decode.h"

namespace deeptrain::app {

// An option's check whose message says what is wanted ("--steps: must be an integer > 0, got
// -3"), instead of CLI11's numeric ranges ("not in range 0 to 1.797e308").
inline CLI::Validator integer_at_least(long long min) {
  return CLI::Validator(
      [min](std::string& v) -> std::string {
        char* end = nullptr;
        const long long x = std::strtoll(v.c_str(), &end, 10);
        if (end != v.c_str() && *end == '\0' && x >= min) return "";
        return (min == 1 ? "must be an integer > 0, got " : "must be an integer >= " + std::to_string(min) + ", got ") + v;
      },
      "N>=" + std::to_string(min));
}
inline CLI::Validator positive_integer() { return integer_at_least(1); }
inline CLI::Validator nonnegative_integer() { return integer_at_least(0); }

struct CommonOptions {
  std::string config;
  ConfigOverrides overrides;
  bool json = false;
  std::string run_dir;  // empty: runs/<config name>-<YYYYmmdd-HHMMSS>
};

// --checkpoint-dir, --checkpoint-every, --keep-checkpoints, --resume (app/train_checkpoints.h).
struct CheckpointOptionsCli {
  std::string dir;     // empty: no checkpoints (and SIGTERM/SIGUSR1 end the process as usual)
  std::string every;   // "500" steps or "10m"; empty: at the end of every epoch
  int keep = 3;        // the newest N (0: all)
  std::string resume;  // "auto" or a path; empty: start at step 0
};

struct TrainOptionsCli {
  std::string save_weights;
  int64_t max_steps = 0;  // stop (with a checkpoint, if any) after this global step; 0: no limit
  CheckpointOptionsCli checkpoints;
};

struct EvalOptionsCli {
  std::vector<std::string> weights;  // several: an ensemble (softmax probabilities averaged)
  std::string init_from;
  std::string npz_dropout = "book";
  bool errors = false;  // write misclassified.png and confusion.csv to the run directory
};

struct PredictOptionsCli {
  std::string config, weights, checkpoint, out, backend;
  std::vector<std::string> images;
  bool json = false;
  int top = 5;
  double min_score = kShownDetectionScore;  // detectors: the boxes listed and drawn
  std::optional<int> threads;
};

struct BenchOptionsCli {
  std::string config;
  std::string mode = "train";
  std::string backend;  // empty: the config's
  std::string math;  // run.math as a word (empty: the config's)
  std::string conv_algorithm;  // run.conv_algorithm as a word (empty: the config's)
  std::string device_transport;  // distributed.device_transport as a word (empty: the config's)
  std::string clock = "wall";  // "wall" or "cpu" (StepProfile's ProfileClock)
  int threads = 0, steps = 50, warmup = 5, batch = 0;
  bool threads_given = false;  // --threads overrides the config's run.threads only when given
  bool json = false;
  bool exact = false;    // distributed.exact
  bool no_augment = false;  // train without data.augment
  bool profile = false;  // per-phase medians (each phase waits for the device) instead
};

// add_train_command also registers the commands that serve training runs, `plot` and
// `doctor` (add_run_tool_commands): they run from their CLI11 callbacks, so main's dispatch
// needs no entry for them.
void add_train_command(CLI::App& cli, CommonOptions& common, TrainOptionsCli& o);
void add_eval_command(CLI::App& cli, CommonOptions& common, EvalOptionsCli& o);
void add_bench_command(CLI::App& cli, BenchOptionsCli& o);
int run_train(const CommonOptions& common, const TrainOptionsCli& o);
int run_eval(const CommonOptions& common, const EvalOptionsCli& o);
struct Session;
// run_eval with several --weights (app/ensemble_eval.cpp).
int run_ensemble_eval(const CommonOptions& common, const EvalOptionsCli& o,
                      const proto::ExperimentConfig& cfg, Session& s);
int run_bench(const BenchOptionsCli& o);
// `deeptrain predict` (app/predict.cpp).
void add_predict_command(CLI::App& cli, PredictOptionsCli& o);
int run_predict(const PredictOptionsCli& o);

// `deeptrain plot RUN_DIR` (app/plot.cpp) and `deeptrain doctor [CONFIG]` (app/doctor.cpp).
// Each runs from its subcommand's callback during parsing; errors propagate as exceptions.
void add_plot_command(CLI::App& cli);
void add_data_commands(CLI::App& cli);  // `pack`, `export-images` (app/pack.cpp)
void add_export_scenes_command(CLI::App& cli);  // `export-scenes` (app/export_scenes.cpp)
void add_doctor_command(CLI::App& cli);
void add_verify_invariance_command(CLI::App& cli);
inline void add_run_tool_commands(CLI::App& cli) {
  add_plot_command(cli);
  add_doctor_command(cli);
  add_verify_invariance_command(cli);
}

}  // namespace deeptrain::app
