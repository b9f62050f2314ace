#pragma once
// From a detection model's heads to boxes (CenterNet's decoding, then per-class NMS): what the
// evaluation scores and what `predict` draws. Host code, one image at a time.
#include <array>
#include <cstdint>
#include <vector>

#include "core/backend/detection_targets.h"
#include "proto/deeptrain.pb.h"

namespace deeptrain {

// A box found in an image, in input pixels [x0, x1) x [y0, y1).
struct Detection {
  int32_t label = 0;
  float score = 0;  // the heatmap's sigmoid at the peak
  float x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};

struct DecodeOptions {
  int top_k = 100;
  double score_threshold = 0.01;
  double nms_iou = 0.5;  // >= 1: no suppression
};
DecodeOptions decode_options(const proto::LossConfig& finalized);
// The score from which boxes are shown to a person (predict's --min-score default, a run's
// predictions.png): the evaluation ranks every box down to score_threshold for its mAP, and a
// picture of those would be mostly noise.
inline constexpr double kShownDetectionScore = 0.3;

// Intersection over union of boxes (x0, y0, x1, y1); 0 when both are empty.
double box_iou(const std::array<float, 4>& a, const std::array<float, 4>& b);

// Greedy non-maximum suppression as torchvision.ops.nms: the indices of the boxes kept, by
// decreasing score (ties: the lower index first); a box goes when its IoU with a kept one is
// above `iou`.
std::vector<int64_t> nms(const std::vector<std::array<float, 4>>& boxes,
                         const std::vector<float>& scores, double iou);

// One image's heads, out (C, h, w) f32 plain as the model outputs them, into detections by
// decreasing score: cells whose heatmap logit is the maximum of their 3x3 neighbourhood (a
// peak, as CenterNet's 3x3 max pooling), the top_k best over all classes with a score >=
// score_threshold, each a box centred at (x + offset_x, y + offset_y) * stride (the cell's
// centre without an offset head) of size (w, h) * stride (one cell without a size head),
// clipped to the image (height x width), then per-class NMS.
std::vector<Detection> decode_detections(const float* out, int64_t h, int64_t w,
                                         const DetectionLossSpec& spec, const DecodeOptions& o,
                                         int64_t height, int64_t width);

}  // namespace deeptrain
