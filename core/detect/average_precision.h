#pragma once
// mAP of detections against the truth: VOC's all-point interpolated average precision per
// class at IoU 0.5, and the mean over IoU 0.5:0.05:0.95 (COCO's thresholds, each with the same
// all-point AP). Detections are matched per image, so each rank matches its own images and
// only (score, label, matched) rows need to meet (Trainer::evaluate).
#include <cstdint>
#include <vector>

#include "core/data/dataset.h"
#include "core/detect/decode.h"

namespace deeptrain {

inline constexpr int kIouThresholds = 10;  // 0.5, 0.55, ..., 0.95
double iou_threshold(int i);

// For each detection of one image (in decreasing score), bit i set when it is a true positive
// at iou_threshold(i): at each threshold separately, in that order, a detection takes the
// not yet taken truth box of its class with the highest IoU (the first on a tie), if that IoU
// is >= the threshold.
std::vector<uint32_t> match_detections(const std::vector<Detection>& found,
                                       const std::vector<data::Box>& truth);

struct ScoredDetection {
  int32_t label;
  float score;
  uint32_t matched;  // match_detections' bits
};

// All-point interpolated AP of one class's detections (sorted by decreasing score; ties keep
// their order) at threshold bit `t`, against `positives` truth boxes: the area under the
// precision-recall curve made monotone from the right (VOC 2010+). NaN when positives == 0.
double average_precision(const std::vector<ScoredDetection>& sorted, int t, int64_t positives);

struct DetectionMetrics {
  double map50 = 0, map = 0;   // means over the classes with truth boxes
  std::vector<double> ap50, ap;  // per class; NaN for a class without truth boxes
  int64_t truth = 0, detections = 0, true_positives50 = 0;
};

// detections: every image's, in a fixed order (image by image, each by decreasing score), so
// that ties sort alike whatever the rank count; truth_per_class: the truth boxes' counts.
DetectionMetrics detection_metrics(const std::vector<ScoredDetection>& detections,
                                   const std::vector<int64_t>& truth_per_class);

}  // namespace deeptrain
