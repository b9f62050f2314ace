#include "core/eval/ensemble.h"

#include <cmath>

#include "core/error.h"

namespace deeptrain {

Tensor mean_probabilities(const std::vector<Tensor>& members) {
  DT_CHECK(!members.empty(), "an ensemble needs at least one member");
  const Shape shape = members[0].shape();
  for (const Tensor& m : members)
    DT_CHECK(m.shape() == shape && m.dtype() == DType::f32 && shape.rank() == 2,
             "ensemble member probabilities {} {}, expected f32 {}", m.shape().str(),
             dtype_name(m.dtype()), shape.str());
  // Summed in f64 in member order, then divided once: the mean does not depend on how the
  // samples were split into batches or ranks.
  Tensor mean = Tensor::empty(shape, DType::f32);
  const double k = double(members.size());
  for (int64_t i = 0; i < mean.numel(); ++i) {
    double sum = 0;
    for (const Tensor& m : members) sum += m.data<float>()[i];
    mean.data<float>()[i] = float(sum / k);
  }
  return mean;
}

ProbabilityScore score_probabilities(const Tensor& probabilities, const Tensor& labels,
                                     double log_eps, std::vector<int32_t>* predictions) {
  DT_CHECK(probabilities.shape().rank() == 2 && probabilities.dtype() == DType::f32 &&
               labels.numel() == probabilities.dim(0) && labels.dtype() == DType::i32,
           "probabilities {} vs labels {}", probabilities.shape().str(), labels.shape().str());
  const int64_t n = probabilities.dim(0), classes = probabilities.dim(1);
  ProbabilityScore s;
  s.total = n;
  if (predictions) predictions->assign(size_t(n), 0);
  for (int64_t i = 0; i < n; ++i) {
    const float* p = probabilities.data<float>() + i * classes;
    int64_t best = 0;
    for (int64_t j = 1; j < classes; ++j)
      if (p[j] > p[best]) best = j;
    const int32_t label = labels.data<int32_t>()[i];
    DT_CHECK(label >= 0 && label < classes, "label {} of sample {} outside [0, {})", label, i,
             classes);
    s.correct += best == label;
    s.loss -= std::log(double(p[label]) + log_eps);
    if (predictions) (*predictions)[size_t(i)] = int32_t(best);
  }
  s.accuracy = n ? double(s.correct) / double(n) : 0;
  s.loss = n ? s.loss / double(n) : 0;
  return s;
}

}  // namespace deeptrain
