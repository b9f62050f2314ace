#pragma once
// The model's loss on its last layer's output (ModelConfig.loss): softmax cross-entropy per
// sample (classification, the default) or per pixel against a label map (segmentation). The
// trainer calls it; the arithmetic is the backend's (softmax_ce_*, pixel_softmax_ce_*).
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

// The class of every pixel of a dense model's host outputs `out` (n, K, H, W), plain, as
// (n, H, W) class ids: the first maximum, as the loss and the metrics count. K <= 256.
std::vector<uint8_t> pixel_classes(const Tensor& out);

class LossFn {
 public:
  // input: the model's per-sample input (C, H, W). Fails (InputError naming model.loss) when
  // the configuration does not fit the classes.
  LossFn(const proto::LossConfig& cfg, Shape input, int classes);
  bool dense() const { return dense_; }
  // Per sample: the output the loss takes ((K) or (K, H, W)) and its target ((), or (H, W)).
  Shape output_shape() const { return output_; }
  Shape target_shape() const { return dense_ ? Shape{output_[1], output_[2]} : Shape{}; }
  int ignore_label() const { return ignore_label_; }

  // The loss's sums over the batch `out` (n samples; any layout the backend writes) against
  // targets t; writes probs (plain, out's shape). The loss is per sample: a pixel loss is
  // divided by the pixels of a sample, so loss / samples is the objective; correct / counted
  // is the accuracy (counted: the samples, or the pixels not ignored).
  LossSums forward(Backend& b, const Tensor& out, const Tensor& t, double log_eps, Tensor& probs) const;
  std::unique_ptr<PendingLoss> forward_async(Backend& b, const Tensor& out, const Tensor& t,
                                             double log_eps, Tensor& probs) const;
  // dout = the gradient of scale * (the batch's loss sum, as forward returns it).
  void backward(Backend& b, const Tensor& probs, const Tensor& t, double scale, Tensor& dout) const;
  // Dense: adds each counted pixel's (true, predicted) pair of host tensors out (plain, as
  // Backend::to_host gives it) and t to confusion (K x K).
  void add_confusion(const Tensor& out, const Tensor& t, std::vector<int64_t>& confusion) const;

 private:
  bool dense_;
  int classes_, ignore_label_ = -1;
  std::vector<double> weights_;
  Shape output_;
  int64_t pixels_ = 1;
};

}  // namespace deeptrain
