#pragma once
// What a training run shows while it runs and leaves in its run directory (rank 0 only):
// every line of stdout (text, or with --json one JSON event per line, through an Output), the
// progress bar or lines, log.txt (every printed line, plus plain progress lines),
// metrics_steps/metrics_epochs as JSON Lines and CSV, the TensorBoard event file, the learning
// curves (redrawn after every epoch), a per-pixel model's grid of test predictions (after every
// epoch), and after training a classifier's misclassified-image grid and confusion matrix.
//
// Writing these is not what the run is for: after the start (whose failures are errors), a write
// that fails (a full disk while the curves are redrawn) becomes a warning on stderr and in
// log.txt, the first of each file only, and training goes on.
#include <fstream>
#include <functional>
#include <set>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "app/output.h"
#include "app/train_checkpoints.h"
#include "distributed/trainer.h"
#include "proto/checkpoint.pb.h"
#include "report/event_file.h"
#include "report/metrics_file.h"
#include "report/progress.h"
#include "report/raster.h"

namespace deeptrain::app {

class RunRecorder {
 public:
  // json: stdout carries only the JSON lines, so no progress there. tty: stdout is a terminal.
  RunRecorder(std::string dir, bool json, bool tty);
  const std::string& dir() const { return dir_; }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  // The run's stdout (and log.txt): its events are the methods below; other lines through it.
  Output& out() { return out_; }
  // "deeptrain: <line>" to stderr (so that --json's stdout stays JSON) and `line` to log.txt.
  void note(const std::string& line) { out_.note(line); }
  // A line to log.txt only (what stdout does not show, e.g. errors main prints to stderr).
  void log(const std::string& line) { out_.log(line); }

  // The events of a run, each a text line or a JSON object (--json).
  // The run's description (text only; --json's lines are events).
  void started(const std::vector<std::string>& lines);
  void resumed(int64_t global_step, const std::string& checkpoint);
  // A checkpoint written, or not (c.failed): a warning then, and `then` says what happens
  // next. on_screen = false: the text line goes to log.txt only (it would break a progress bar).
  void checkpoint(int64_t global_step, const TrainCheckpoints::Saved& c, bool on_screen,
                  const char* then);
  void stopped(int64_t global_step, const std::string& why, const std::string& text);
  // The loss turned non-finite (JSON only: main prints the error on stderr).
  void diverged(const TrainingDiverged& e);
  struct Summary {
    int epochs = 0;  // finished
    int64_t test_correct = 0, test_total = 0;
    double test_accuracy = 0, train_seconds = 0;
    std::string weights, confusion;  // where the weights went; the confusion matrix as text
    std::optional<SegmentationMetrics> segmentation;  // a dense model's: replaces the above
    std::optional<DetectionMetrics> detection;        // a detection model's: likewise
  };
  void summary(const Summary& s);

  void begin_epoch(int epoch, int epochs, int64_t steps);
  // After each training step; global_step counts from 1.
  void step(int64_t global_step, int64_t step_in_epoch, const StepMetrics& m, double lr);
  // After the epoch's evaluation: metrics files, TensorBoard, curves, the epoch's event.
  void end_epoch(const EpochReport& r, int epochs, double test_loss, double lr,
                 int64_t global_step);
  // A resumed run: the epochs finished before its checkpoint (metrics files, TensorBoard, curves),
  // so that this run directory's curves cover the whole training.
  void add_past_epochs(const std::vector<proto::EpochMetrics>& history);
  // A per-pixel model, after each epoch: predictions.png (rows of image | truth | prediction for
  // the first test samples; `predicted`: their class ids, (n, H, W)), rewritten atomically, and
  // the same picture as the TensorBoard image "test/predictions".
  void predictions(const data::Dataset& test, const std::vector<uint8_t>& predicted,
                   int ignore_label, int64_t global_step);
  // A detector's: rows of image with truth boxes | image with `found`, the first test samples'.
  void detections(const data::Dataset& test, const std::vector<std::vector<Detection>>& found,
                  int64_t global_step);
  // misclassified.png, confusion.csv and the image summary; returns the printed matrix (also
  // when the files could not be written).
  std::string errors(const data::Dataset& test, const std::vector<int32_t>& predictions,
                     int64_t global_step);

 private:
  // Runs f, a write of `file`; a failure is a warning (see the top of this file).
  template <class F>
  void guarded(const std::string& file, F&& f);
  void write_predictions(const std::function<report::Raster()>& draw, int64_t global_step);
  std::set<std::string> warned_;  // files whose failure was reported
  std::string dir_;
  bool json_, tty_;
  std::ofstream log_;
  Output out_;
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
