#pragma once
// What a training run shows while it runs and leaves in its run directory (rank 0 only):
// the progress bar or lines, log.txt (every printed line, plus plain progress lines),
// metrics_steps/metrics_epochs as JSON Lines and CSV, the TensorBoard event file, the learning
// curves (redrawn after every epoch), and after training the misclassified-image grid and the
// confusion matrix.
//
// Writing these is not what the run is for: after the start (whose failures are errors), a write
// that fails (a full disk while the curves are redrawn) becomes a warning on stderr and in
// log.txt, the first of each file only, and training goes on.
#include <fstream>
#include <set>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "distributed/trainer.h"
#include "proto/checkpoint.pb.h"
#include "report/event_file.h"
#include "report/metrics_file.h"
#include "report/progress.h"

namespace deeptrain::app {

class RunRecorder {
 public:
  // json: stdout carries only the JSON lines, so no progress there. tty: stdout is a terminal.
  RunRecorder(std::string dir, bool json, bool tty);
  const std::string& dir() const { return dir_; }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  // A line to stdout and log.txt.
  void print(const std::string& line);
  // A line to log.txt only (what stdout does not show, e.g. errors main prints to stderr).
  void log(const std::string& line);
  // "deeptrain: <line>" to stderr (so that --json's stdout stays JSON) and `line` to log.txt.
  void note(const std::string& line);

  void begin_epoch(int epoch, int epochs, int64_t steps);
  // After each training step; global_step counts from 1.
  void step(int64_t global_step, int64_t step_in_epoch, const StepMetrics& m, double lr);
  // After the epoch's evaluation: metrics files, TensorBoard, curves, the epoch's line.
  void end_epoch(const EpochReport& r, double test_loss, double lr, int64_t global_step);
  // A resumed run: the epochs finished before its checkpoint (metrics files, TensorBoard, curves),
  // so that this run directory's curves cover the whole training.
  void add_past_epochs(const std::vector<proto::EpochMetrics>& history);
  // misclassified.png, confusion.csv and the image summary; returns the printed matrix (also
  // when the files could not be written).
  std::string errors(const data::Dataset& test, const std::vector<int32_t>& predictions,
                     int64_t global_step);

 private:
  // Runs f, a write of `file`; a failure is a warning (see the top of this file).
  template <class F>
  void guarded(const std::string& file, F&& f);
  std::set<std::string> warned_;  // files whose failure was reported
  std::string dir_;
  bool json_, tty_;
  std::ofstream log_;
  report::MetricsFiles steps_, epochs_;
  report::EventFileWriter events_;
  std::optional<report::Progress> screen_, logged_;
  int epoch_ = 0;
  double last_step_end_ = 0, epoch_loss_ = 0;
  int64_t epoch_images_ = 0;
};

// Writes misclassified.png and confusion.csv into `dir`; returns the PNG (and its size) and the
// confusion matrix as text. Used by train and `eval --errors`.
struct ErrorFigures {
  std::string png, table;
  int width = 0, height = 0;
};
ErrorFigures write_error_figures(const std::string& dir, const data::Dataset& test,
                                 const std::vector<int32_t>& predictions);

}  // namespace deeptrain::app
