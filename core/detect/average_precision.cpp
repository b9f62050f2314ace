#include "core/detect/average_precision.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace deeptrain {

double iou_threshold(int i) {
  // The decimal values as literals: 0.5 + 0.05 * i rounds differently with and without a
  // fused multiply-add (0.85 or 0.8500000000000001), and an IoU can sit exactly on it.
  static constexpr double kThresholds[kIouThresholds] = {0.5,  0.55, 0.6,  0.65, 0.7,
                                                         0.75, 0.8,  0.85, 0.9,  0.95};
  return kThresholds[i];
}

std::vector<uint32_t> match_detections(const std::vector<Detection>& found,
                                       const std::vector<data::Box>& truth) {
  std::vector<uint32_t> bits(found.size(), 0);
  std::vector<std::vector<double>> iou(found.size(), std::vector<double>(truth.size(), 0.0));
  for (size_t d = 0; d < found.size(); ++d)
    for (size_t g = 0; g < truth.size(); ++g)
      if (truth[g].label == found[d].label)
        iou[d][g] = box_iou({found[d].x0, found[d].y0, found[d].x1, found[d].y1},
                            {float(truth[g].x0), float(truth[g].y0), float(truth[g].x1), float(truth[g].y1)});
  for (int t = 0; t < kIouThresholds; ++t) {
    std::vector<bool> taken(truth.size(), false);
    for (size_t d = 0; d < found.size(); ++d) {
      int64_t best = -1;
      for (size_t g = 0; g < truth.size(); ++g)
        if (!taken[g] && truth[g].label == found[d].label && (best < 0 || iou[d][g] > iou[d][size_t(best)]))
          best = int64_t(g);
      if (best >= 0 && iou[d][size_t(best)] >= iou_threshold(t)) {
        taken[size_t(best)] = true;
        bits[d] |= 1u << t;
      }
    }
  }
  return bits;
}

double average_precision(const std::vector<ScoredDetection>& sorted, int t, int64_t positives) {
  if (positives == 0) return std::numeric_limits<double>::quiet_NaN();
  std::vector<double> recall{0.0}, precision{0.0};
  int64_t tp = 0, fp = 0;
  for (const ScoredDetection& d : sorted) {
    (d.matched >> t & 1u) ? ++tp : ++fp;
    recall.push_back(double(tp) / double(positives));
    precision.push_back(double(tp) / double(tp + fp));
  }
  recall.push_back(1.0);
  precision.push_back(0.0);
  for (size_t i = precision.size() - 1; i-- > 0;) precision[i] = std::max(precision[i], precision[i + 1]);
  double ap = 0;
  for (size_t i = 1; i < recall.size(); ++i) ap += (recall[i] - recall[i - 1]) * precision[i];
  return ap;
}

DetectionMetrics detection_metrics(const std::vector<ScoredDetection>& detections,
                                   const std::vector<int64_t>& truth_per_class) {
  const int classes = int(truth_per_class.size());
  std::vector<std::vector<ScoredDetection>> by_class(static_cast<size_t>(classes));
  DetectionMetrics m;
  for (const ScoredDetection& d : detections) {
    if (d.label < 0 || d.label >= classes) continue;
    by_class[size_t(d.label)].push_back(d);
    ++m.detections;
    m.true_positives50 += d.matched & 1u;
  }
  int with_truth = 0;
  for (int c = 0; c < classes; ++c) {
    auto& list = by_class[size_t(c)];
    std::stable_sort(list.begin(), list.end(),
                     [](const ScoredDetection& a, const ScoredDetection& b) { return a.score > b.score; });
    const int64_t positives = truth_per_class[size_t(c)];
    m.truth += positives;
    const double ap50 = average_precision(list, 0, positives);
    double mean = 0;
    for (int t = 0; t < kIouThresholds; ++t) mean += average_precision(list, t, positives);
    m.ap50.push_back(ap50);
    m.ap.push_back(mean / kIouThresholds);
    if (positives == 0) continue;
    ++with_truth;
    m.map50 += ap50;
    m.map += mean / kIouThresholds;
  }
  if (with_truth) m.map50 /= with_truth, m.map /= with_truth;
  return m;
}

}  // namespace deeptrain
