#pragma once
// The model's loss on its last layer's output (ModelConfig.loss): softmax cross-entropy per
// sample (classification, the default), per pixel against a label map (segmentation), or
// CenterNet-style detection heads against boxes. The trainer calls it; the arithmetic is the
// backend's (softmax_ce_*, pixel_softmax_ce_*, detection_loss).
#include <memory>
#include <vector>

#include "core/backend/backend.h"
#include "proto/deeptrain.pb.h"

namespace deeptrain {

// Pixel accuracy and mean intersection-over-union from a confusion matrix (rows: true class,
// columns: predicted; K x K). The mean runs over the classes that occur (true or predicted);
// "fg" leaves class 0 (the background) out.
struct SegmentationMetrics {
  double pixel_accuracy = 0, mean_iou = 0, mean_iou_fg = 0;
  std::vector<double> iou;  // per class; NaN for a class that never occurs
};
SegmentationMetrics segmentation_metrics(const std::vector<int64_t>& confusion, int classes);

// A detection model's heads: which channels of the last layer each takes (core/backend/
// detection_targets.h), from model.loss (finalized) and the classes. Fails (InputError naming
// model.loss) when the input cannot be divided into output cells.
DetectionLossSpec detection_spec(const proto::LossConfig& cfg, int classes);

// A detection model whose last layer is a concat: each of its inputs must be a head's layer, in
// the heads' order, with the head's channels ("a head without a loss" is an InputError naming
// the layer). inputs: the concat's input layer names and their per-sample output shapes.
void check_detection_heads(const proto::LossConfig& cfg, int classes, const std::string& last,
                           const std::vector<std::pair<std::string, Shape>>& inputs);

// The class of every pixel of a dense model's host outputs `out` (n, K, H, W), plain, as
// (n, H, W) class ids: the first maximum, as the loss and the metrics count. K <= 256.
std::vector<uint8_t> pixel_classes(const Tensor& out);

class LossFn {
 public:
  enum class Kind { classify, pixel, detect };
  // input: the model's per-sample input (C, H, W). Fails (InputError naming model.loss) when
  // the configuration does not fit the classes.
  LossFn(const proto::LossConfig& cfg, Shape input, int classes);
  Kind kind() const { return kind_; }
  bool dense() const { return kind_ == Kind::pixel; }        // a label map per sample
  bool detection() const { return kind_ == Kind::detect; }   // boxes per sample
  // Per sample: the output the loss takes ((K), (K, H, W) or the heads' (C, H/R, W/R)) and its
  // target ((), (H, W), or (max_boxes, 5) boxes (label, x0, y0, x1, y1), label -1 padding).
  Shape output_shape() const { return output_; }
  Shape target_shape() const;
  int ignore_label() const { return ignore_label_; }
  const DetectionLossSpec& detection_spec() const { return spec_; }

  // The loss's sums over the batch `out` (n samples; any layout the backend writes) against
  // targets t; writes probs (plain, out's shape). The loss is per sample: a pixel loss is
  // divided by the pixels of a sample, so loss / samples is the objective; correct / counted
  // is the accuracy (counted: the samples, or the pixels not ignored).
  LossSums forward(Backend& b, const Tensor& out, const Tensor& t, double log_eps, Tensor& probs) const;
  std::unique_ptr<PendingLoss> forward_async(Backend& b, const Tensor& out, const Tensor& t,
                                             double log_eps, Tensor& probs) const;
  // Detection: probs is the output copied plain, loss the per-sample losses' sum, correct 0,
  // counted the samples.
  // dout = the gradient of scale * (the batch's loss sum, as forward returns it).
  void backward(Backend& b, const Tensor& probs, const Tensor& t, double scale, Tensor& dout) const;
  // Dense: adds each counted pixel's (true, predicted) pair of host tensors out (plain, as
  // Backend::to_host gives it) and t to confusion (K x K).
  void add_confusion(const Tensor& out, const Tensor& t, std::vector<int64_t>& confusion) const;

 private:
  Kind kind_;
  DetectionLossSpec spec_;
  int classes_, ignore_label_ = -1;
  std::vector<double> weights_;
  Shape output_;
  int64_t pixels_ = 1;
};

}  // namespace deeptrain
