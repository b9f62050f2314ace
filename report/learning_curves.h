#pragma once
// The book's learning-curve figures for a run: accuracy (train, test) against epoch, and loss
// (train, test, with the learning rate on a right-hand axis) against epoch, side by side, drawn
// from the run directory's metrics_epochs.csv as PNG and SVG.
#include <string>
#include <vector>

#include "report/canvas.h"
#include "report/metrics_file.h"

namespace deeptrain::report {

constexpr int kCurvesWidth = 1200, kCurvesHeight = 480;

struct LearningCurves {
  std::vector<double> epoch, train_accuracy, test_accuracy, train_loss, test_loss, learning_rate;
};

// From the per-epoch table (columns epoch, train_accuracy, test_accuracy, train_loss,
// test_loss, learning_rate); InputError when one is missing or there are no rows.
LearningCurves learning_curves_from(const MetricsTable& epochs);
void draw_learning_curves(Canvas& canvas, const LearningCurves& c, int width, int height);
std::string learning_curves_png(const LearningCurves& c, int width, int height);
std::string learning_curves_svg(const LearningCurves& c, int width, int height);

// Reads <run_dir>/metrics_epochs.csv, writes <run_dir>/curves.png and curves.svg (atomically)
// and returns their paths. InputError when run_dir is not a run directory or has no epochs.
std::vector<std::string> plot_run_dir(const std::string& run_dir, int width = kCurvesWidth,
                                      int height = kCurvesHeight);

}  // namespace deeptrain::report
