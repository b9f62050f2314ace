#pragma once
// Where a classifier goes wrong, as in the book's misclassified-MNIST figure: a grid of the
// first misclassified test images captioned "true/predicted", and the confusion matrix.
#include <cstdint>
#include <string>
#include <vector>

#include "core/data/dataset.h"
#include "report/raster.h"

namespace deeptrain::report {

// Up to `max_images` of the first test samples whose prediction differs from the label, five
// per row, each scaled 3x and captioned "true/pred". predictions[i] is the class predicted for
// sample i of `data`.
Raster misclassified_grid(const data::Dataset& data, const std::vector<int32_t>& predictions,
                          int max_images = 20);

// counts[t * classes + p]: samples of true class t predicted as p.
struct ConfusionMatrix {
  int classes = 0;
  std::vector<int64_t> counts;
  int64_t at(int t, int p) const { return counts[size_t(t) * classes + p]; }
};
ConfusionMatrix confusion_matrix(const data::Dataset& data, const std::vector<int32_t>& predictions);
std::string confusion_csv(const ConfusionMatrix& m);   // header "true\predicted,0,1,..."
std::string confusion_table(const ConfusionMatrix& m); // aligned, for the terminal

}  // namespace deeptrain::report
