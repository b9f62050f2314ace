#include "app/run_recorder.h"

#include <cmath>
#include <cstdio>
#include <iostream>

#include "app/session.h"
#include "core/io/atomic_file.h"
#include "report/detections.h"
#include "report/learning_curves.h"
#include "report/misclassified.h"
#include "report/segmentation_figures.h"

namespace deeptrain::app {

using report::Progress;

RunRecorder::RunRecorder(std::string dir, bool json, bool tty)
    : dir_(std::move(dir)), json_(json), tty_(tty), log_(dir_ + "/log.txt"), out_(json),
      steps_(dir_ + "/metrics_steps",
             {"step", "epoch", "epoch_step", "loss", "accuracy", "learning_rate",
              "images_per_sec", "loss_scale", "seconds", "wall_time"}),
      epochs_(dir_ + "/metrics_epochs",
              {"epoch", "step", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
               "test_correct", "test_total", "learning_rate", "images_per_sec",
               "train_seconds", "wall_time"}),
      events_(dir_) {
  if (!log_) fail("{}/log.txt: cannot create", dir_);
  out_.set_log(&log_);
}

void RunRecorder::started(const std::vector<std::string>& lines) {
  for (const std::string& l : lines) out_.text(l);
}

void RunRecorder::resumed(int64_t global_step, const std::string& checkpoint) {
  // In text, the note about resuming (stderr) says it.
  out_.event({{"event", "resumed"}, {"step", global_step}, {"checkpoint", checkpoint}}, "");
}

void RunRecorder::checkpoint(int64_t global_step, const TrainCheckpoints::Saved& c,
                             bool on_screen, const char* then) {
  if (!c.failed.empty()) {
    note(fmt::format("warning: checkpoint at step {} not saved: {}; {}", global_step, c.failed,
                     then));
    out_.event({{"event", "checkpoint_failed"}, {"step", global_step}, {"error", c.failed}}, "");
    return;
  }
  if (c.path.empty()) return;
  for (const std::string& w : c.warnings) note("warning: " + w);
  out_.event({{"event", "checkpoint"},
              {"step", global_step},
              {"path", c.path},
              {"bytes", c.bytes},
              {"seconds", rounded(c.seconds, 3)}},
             fmt::format("checkpoint {} ({:.1f} MiB in {:.3f} s)", c.path,
                         double(c.bytes) / 1048576.0, c.seconds),
             on_screen);
}

void RunRecorder::stopped(int64_t global_step, const std::string& why, const std::string& text) {
  out_.event({{"event", "stopped"}, {"step", global_step}, {"signal", why}}, text);
}

void RunRecorder::diverged(const TrainingDiverged& e) {
  out_.event({{"event", "diverged"},
              {"step", e.global_step},
              {"epoch", e.epoch},
              {"loss", e.loss},
              {"error", e.what()}},
             "");
  log(fmt::format("error: {}", e.what()));  // main prints it to stderr
}

namespace {
// A dense model's test metrics: into the event, and as text.
std::string add_segmentation(Json& event, const std::optional<SegmentationMetrics>& m) {
  if (!m) return "";
  event["test_pixel_accuracy"] = rounded(m->pixel_accuracy, 6);
  event["test_mean_iou"] = rounded(m->mean_iou, 6);
  event["test_mean_iou_fg"] = rounded(m->mean_iou_fg, 6);
  return fmt::format("  pixel acc {:.4f}  mIoU {:.4f} (without background {:.4f})",
                     m->pixel_accuracy, m->mean_iou, m->mean_iou_fg);
}

// A detection model's: mAP overall and per class (NaN: a class without truth boxes, null).
std::string add_detection(Json& event, const std::optional<DetectionMetrics>& m) {
  if (!m) return "";
  event["test_map50"] = rounded(m->map50, 6);
  event["test_map"] = rounded(m->map, 6);
  auto per_class = [](const std::vector<double>& v) {
    Json a = Json::array();
    for (double x : v) a.push_back(std::isnan(x) ? Json(nullptr) : Json(rounded(x, 6)));
    return a;
  };
  event["test_ap50_per_class"] = per_class(m->ap50);
  event["test_ap_per_class"] = per_class(m->ap);
  return fmt::format("  mAP@0.5 {:.4f}  mAP@[.5:.95] {:.4f}", m->map50, m->map);
}

std::string per_class_table(const DetectionMetrics& m) {
  std::string t = "class  AP@0.5  AP@[.5:.95]\n";
  for (size_t c = 0; c < m.ap50.size(); ++c)
    t += fmt::format("{:>5}  {:>6.4f}  {:>11.4f}\n", c, m.ap50[c], m.ap[c]);
  return t;
}
}  // namespace

void RunRecorder::summary(const Summary& s) {
  if (s.detection) {
    Json e{{"event", "summary"},
           {"epochs", s.epochs},
           {"test_correct", s.test_correct},
           {"test_total", s.test_total},
           {"train_seconds", rounded(s.train_seconds, 3)},
           {"peak_rss_mb", rounded(peak_rss_mb(), 1)},
           {"weights", s.weights}};
    const std::string det = add_detection(e, s.detection);
    out_.event(e, fmt::format("average precision of the test set per class:\n{}final test{} ({} of "
                              "{} truth boxes found at IoU 0.5), weights saved to {}\ncurves and "
                              "TensorBoard events in {}", per_class_table(*s.detection), det,
                              s.test_correct, s.test_total, s.weights, dir_));
    return;
  }
  if (s.segmentation) {
    Json e{{"event", "summary"},
           {"epochs", s.epochs},
           {"train_seconds", rounded(s.train_seconds, 3)},
           {"peak_rss_mb", rounded(peak_rss_mb(), 1)},
           {"weights", s.weights}};
    const std::string seg = add_segmentation(e, s.segmentation);
    out_.event(e, fmt::format("final test{}, weights saved to {}\ncurves and TensorBoard events "
                              "in {}", seg, s.weights, dir_));
    return;
  }
  out_.event({{"event", "summary"},
              {"epochs", s.epochs},
              {"test_correct", s.test_correct},
              {"test_total", s.test_total},
              {"test_accuracy", rounded(s.test_accuracy, 6)},
              {"train_seconds", rounded(s.train_seconds, 3)},
              {"peak_rss_mb", rounded(peak_rss_mb(), 1)},
              {"weights", s.weights}},
             fmt::format("confusion matrix of the test set (rows: true class, columns: "
                         "predicted):\n{}\nfinal test accuracy {:.4f} ({} / {}), weights saved "
                         "to {}\ncurves, misclassified images and TensorBoard events in {}",
                         s.confusion.substr(0, s.confusion.size() - 1), s.test_accuracy,
                         s.test_correct, s.test_total, s.weights, dir_));
}

template <class F>
void RunRecorder::guarded(const std::string& file, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    // Once per file: a full disk would otherwise repeat it at every step.
    if (warned_.insert(file).second)
      note(fmt::format("warning: {} not written: {}; training goes on (later failures of this "
                       "file are not reported)", file, e.what()));
  }
}

void RunRecorder::begin_epoch(int epoch, int epochs, int64_t steps) {
  epoch_ = epoch;
  last_step_end_ = Progress::steady_seconds();
  epoch_loss_ = 0;
  epoch_images_ = 0;
  const std::string label = fmt::format("epoch {}/{}", epoch, epochs);
  // Both progress views read one clock reading per step, so the log says what the screen said.
  auto clock = [this] { return last_step_end_; };
  if (!json_) screen_.emplace(std::cout, tty_, label, steps, 0, clock);
  logged_.emplace(log_, false, label, steps, 0, clock);
}

void RunRecorder::step(int64_t global_step, int64_t step_in_epoch, const StepMetrics& m,
                       double lr) {
  const double now = Progress::steady_seconds(), seconds = now - last_step_end_;
  last_step_end_ = now;
  epoch_loss_ += m.loss_sum;
  epoch_images_ += m.samples;
  // A dense loss's accuracy is over its counted pixels (a per-sample loss counts the samples).
  const double loss = m.loss_sum / double(m.samples),
               accuracy = double(m.correct) / double(m.counted > 0 ? m.counted : m.samples);
  const double ips = seconds > 0 ? double(m.samples) / seconds : 0;
  // f32 training scales no loss; the column and tag exist so that mixed precision fills them.
  const double loss_scale = 1;
  guarded("metrics_steps.{jsonl,csv}", [&] {
    steps_.append({double(global_step), double(epoch_), double(step_in_epoch + 1), loss, accuracy,
                   lr, ips, loss_scale, seconds, report::unix_time_now()});
  });
  guarded("the TensorBoard event file", [&] {
    events_.scalars(global_step, {{"train/loss", loss},
                                  {"train/accuracy", accuracy},
                                  {"train/learning_rate", lr},
                                  {"train/images_per_sec", ips},
                                  {"train/loss_scale", loss_scale}});
  });
  const double mean_loss = epoch_loss_ / double(epoch_images_);
  if (screen_) screen_->update(step_in_epoch + 1, epoch_images_, mean_loss);
  logged_->update(step_in_epoch + 1, epoch_images_, mean_loss);
}

void RunRecorder::end_epoch(const EpochReport& r, int epochs, double test_loss, double lr,
                            int64_t global_step) {
  if (screen_) screen_->finish();
  Json event{{"event", "epoch"},
              {"epoch", r.epoch},
              {"steps", r.steps},
              {"train_loss", rounded(r.train_loss, 6)},
              {"train_accuracy", rounded(r.train_accuracy, 6)},
              {"test_accuracy", rounded(r.test_accuracy, 6)},
              {"test_correct", r.test_correct},
              {"test_total", r.test_total},
              {"train_seconds", rounded(r.train_seconds, 3)},
              {"images_per_sec", rounded(r.images_per_sec, 1)}};
  const std::string seg =
      add_segmentation(event, r.test_segmentation) + add_detection(event, r.test_detection);
  // A detector's training steps decode nothing, so it has no training accuracy to report.
  if (r.test_detection) event.erase("train_accuracy");
  const std::string train_acc =
      r.test_detection ? "" : fmt::format("  train acc {:.4f}", r.train_accuracy);
  out_.event(event, fmt::format("epoch {:3}/{}  train loss {:.4f}{}  test acc {:.4f}{}  "
                                "{:7.1f} img/s  {:.1f} s",
                                r.epoch, epochs, r.train_loss, train_acc, r.test_accuracy,
                                seg, r.images_per_sec, r.train_seconds));
  guarded("metrics_epochs.{jsonl,csv}", [&] {
    epochs_.append({double(r.epoch), double(global_step), r.train_loss, r.train_accuracy,
                    test_loss, r.test_accuracy, double(r.test_correct), double(r.test_total), lr,
                    r.images_per_sec, r.train_seconds, report::unix_time_now()});
  });
  guarded("the TensorBoard event file", [&] {
    // Only the metrics the model has: a classifier's runs carry no mean IoU or mAP curves.
    std::vector<std::pair<std::string, double>> v{{"epoch/train_loss", r.train_loss},
                                                  {"epoch/test_loss", test_loss},
                                                  {"epoch/test_accuracy", r.test_accuracy},
                                                  {"epoch/images_per_sec", r.images_per_sec},
                                                  {"epoch/epoch", double(r.epoch)}};
    if (!r.test_detection) v.emplace_back("epoch/train_accuracy", r.train_accuracy);
    if (r.test_segmentation) v.emplace_back("epoch/test_mean_iou", r.test_segmentation->mean_iou);
    if (r.test_detection) {
      v.emplace_back("epoch/test_map50", r.test_detection->map50);
      v.emplace_back("epoch/test_map", r.test_detection->map);
    }
    events_.scalars(global_step, v);
    events_.flush();
  });
  guarded("curves.{png,svg}", [&] { report::plot_run_dir(dir_); });
}

void RunRecorder::add_past_epochs(const std::vector<proto::EpochMetrics>& history) {
  for (const proto::EpochMetrics& h : history) guarded("metrics_epochs.{jsonl,csv}", [&] {
    epochs_.append({double(h.epoch()), double(h.step()), h.train_loss(), h.train_accuracy(),
                    h.test_loss(), h.test_accuracy(), double(h.test_correct()), double(h.test_total()),
                    h.learning_rate(), h.images_per_sec(), h.train_seconds(), h.wall_time()});
    events_.scalars(h.step(), {{"epoch/train_loss", h.train_loss()},
                               {"epoch/train_accuracy", h.train_accuracy()},
                               {"epoch/test_loss", h.test_loss()},
                               {"epoch/test_accuracy", h.test_accuracy()},
                               {"epoch/images_per_sec", h.images_per_sec()},
                               {"epoch/epoch", double(h.epoch())}});
  });
  if (history.empty()) return;
  guarded("the TensorBoard event file", [&] { events_.flush(); });
  guarded("curves.{png,svg}", [&] { report::plot_run_dir(dir_); });
}

void RunRecorder::predictions(const data::Dataset& test, const std::vector<uint8_t>& predicted,
                              int ignore_label, int64_t global_step) {
  write_predictions([&] { return report::prediction_grid(test, predicted, ignore_label); }, global_step);
}

void RunRecorder::detections(const data::Dataset& test,
                             const std::vector<std::vector<Detection>>& found, int64_t global_step) {
  write_predictions([&] { return report::detection_grid(test, found); }, global_step);
}

void RunRecorder::write_predictions(const std::function<report::Raster()>& draw, int64_t global_step) {
  guarded("predictions.png", [&] {
    const report::Raster grid = draw();
    std::string png = report::encode_png(grid);
    io::write_file_atomic(path("predictions.png"), png);
    guarded("the TensorBoard event file", [&] {
      events_.image(global_step, "test/predictions", std::move(png), grid.height(), grid.width());
      events_.flush();
    });
  });
}

std::string RunRecorder::errors(const data::Dataset& test, const std::vector<int32_t>& predictions,
                                int64_t global_step) {
  std::string table;
  guarded("misclassified.png and confusion.csv", [&] {
    ErrorFigures f = write_error_figures(dir_, test, predictions);
    table = f.table;
    guarded("the TensorBoard event file", [&] {
      events_.image(global_step, "test/misclassified", std::move(f.png), f.height, f.width);
      events_.flush();
    });
  });
  if (table.empty()) table = report::confusion_table(report::confusion_matrix(test, predictions));
  return table;
}

ErrorFigures write_error_figures(const std::string& dir, const data::Dataset& test,
                                 const std::vector<int32_t>& predictions) {
  const report::Raster grid = report::misclassified_grid(test, predictions);
  const report::ConfusionMatrix m = report::confusion_matrix(test, predictions);
  ErrorFigures f{report::encode_png(grid), report::confusion_table(m), grid.width(), grid.height()};
  io::write_file_atomic(dir + "/misclassified.png", f.png);
  io::write_file_atomic(dir + "/confusion.csv", report::confusion_csv(m));
  return f;
}

}  // namespace deeptrain::app
