#pragma once
// Ensembles (chapter 8's "ensemble learning"): several models' softmax probabilities averaged
// per sample; the ensemble predicts the class of the largest mean probability.
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace deeptrain {

// The element-wise mean of the members' probabilities (each f32 (samples, classes), one shape).
Tensor mean_probabilities(const std::vector<Tensor>& members);

struct ProbabilityScore {
  int64_t correct = 0, total = 0;
  double accuracy = 0;
  double loss = 0;  // mean of -log(p[label] + log_eps), the loss the trainer reports
};

// Scores probabilities (f32 (samples, classes)) against labels (i32 (samples)): the prediction
// is the first maximum of each row, as the trainer counts. predictions (optional) receives it.
ProbabilityScore score_probabilities(const Tensor& probabilities, const Tensor& labels,
                                     double log_eps, std::vector<int32_t>* predictions = nullptr);

}  // namespace deeptrain
