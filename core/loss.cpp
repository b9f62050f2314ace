#include "core/loss.h"

#include <cmath>
#include <limits>

#include "core/error.h"

namespace deeptrain {

SegmentationMetrics segmentation_metrics(const std::vector<int64_t>& confusion, int classes) {
  DT_CHECK(int64_t(confusion.size()) == int64_t(classes) * classes, "confusion has {} cells for {} classes",
           confusion.size(), classes);
  SegmentationMetrics m;
  int64_t total = 0, diagonal = 0;
  std::vector<int64_t> row(size_t(classes), 0), col(size_t(classes), 0);
  for (int t = 0; t < classes; ++t)
    for (int p = 0; p < classes; ++p) {
      const int64_t v = confusion[size_t(t * classes + p)];
      total += v;
      row[size_t(t)] += v;
      col[size_t(p)] += v;
      if (t == p) diagonal += v;
    }
  m.pixel_accuracy = total ? double(diagonal) / double(total) : 0.0;
  double all = 0, fg = 0;
  int n_all = 0, n_fg = 0;
  for (int c = 0; c < classes; ++c) {
    const int64_t tp = confusion[size_t(c * classes + c)], uni = row[size_t(c)] + col[size_t(c)] - tp;
    if (uni == 0) {
      m.iou.push_back(std::numeric_limits<double>::quiet_NaN());
      continue;
    }
    const double iou = double(tp) / double(uni);
    m.iou.push_back(iou);
    all += iou, ++n_all;
    if (c > 0) fg += iou, ++n_fg;
  }
  m.mean_iou = n_all ? all / n_all : 0.0;
  m.mean_iou_fg = n_fg ? fg / n_fg : 0.0;
  return m;
}

LossFn::LossFn(const proto::LossConfig& cfg, Shape input, int classes)
    : dense_(cfg.type() == proto::LossConfig::PIXEL_SOFTMAX_CE), classes_(classes) {
  if (!dense_) {
    output_ = Shape{classes};
    return;
  }
  if (input.rank() != 3)
    fail_input("model.loss: PIXEL_SOFTMAX_CE needs (C, H, W) inputs, the model takes {}", input.str());
  ignore_label_ = cfg.has_ignore_label() ? cfg.ignore_label() : 255;
  if (ignore_label_ >= 0 && ignore_label_ < classes)
    fail_input("model.loss.ignore_label: {} is one of the {} classes", ignore_label_, classes);
  if (cfg.class_weights_size() && cfg.class_weights_size() != classes)
    fail_input("model.loss.class_weights: {} given, the model has {} classes",
               cfg.class_weights_size(), classes);
  for (float w : cfg.class_weights()) weights_.push_back(double(w));
  output_ = Shape{classes, input[1], input[2]};
  pixels_ = input[1] * input[2];
}

LossSums LossFn::forward(Backend& b, const Tensor& out, const Tensor& t, double log_eps,
                         Tensor& probs) const {
  if (!dense_) {
    LossSums s;
    s.loss = b.softmax_ce_forward(out, t, log_eps, probs, &s.correct);
    s.counted = out.dim(0);
    return s;
  }
  LossSums s = b.pixel_softmax_ce_forward(b.to_plain(out), t, ignore_label_, weights_, log_eps, probs);
  s.loss /= double(pixels_);
  return s;
}

std::unique_ptr<PendingLoss> LossFn::forward_async(Backend& b, const Tensor& out, const Tensor& t,
                                                   double log_eps, Tensor& probs) const {
  if (!dense_) {
    // The per-sample count is known now; the sums arrive later.
    struct Counted : PendingLoss {
      std::unique_ptr<PendingLoss> inner;
      int64_t n;
      LossSums get() override {
        LossSums s = inner->get();
        s.counted = n;
        return s;
      }
    };
    auto c = std::make_unique<Counted>();
    c->inner = b.softmax_ce_forward_async(out, t, log_eps, probs);
    c->n = out.dim(0);
    return c;
  }
  struct Ready : PendingLoss {
    LossSums s;
    LossSums get() override { return s; }
  };
  auto r = std::make_unique<Ready>();
  r->s = forward(b, out, t, log_eps, probs);
  return r;
}

void LossFn::backward(Backend& b, const Tensor& probs, const Tensor& t, double scale,
                      Tensor& dout) const {
  if (!dense_) return b.softmax_ce_backward(probs, t, scale, dout);
  b.pixel_softmax_ce_backward(probs, t, ignore_label_, weights_, scale / double(pixels_), dout);
}

std::vector<uint8_t> pixel_classes(const Tensor& out) {
  DT_CHECK(out.dtype() == DType::f32 && out.shape().rank() == 4 && out.dim(1) <= 256,
           "pixel_classes: out {}", out.shape().str());
  const int64_t n = out.dim(0), K = out.dim(1), S = out.dim(2) * out.dim(3);
  std::vector<uint8_t> classes(static_cast<size_t>(n * S));
  const float* z = out.data<float>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t s = 0; s < S; ++s) {
      int64_t best = 0;
      for (int64_t k = 1; k < K; ++k)
        if (z[(i * K + k) * S + s] > z[(i * K + best) * S + s]) best = k;
      classes[size_t(i * S + s)] = uint8_t(best);
    }
  return classes;
}

void LossFn::add_confusion(const Tensor& out, const Tensor& t, std::vector<int64_t>& confusion) const {
  DT_CHECK(dense_ && out.dtype() == DType::f32 && out.numel() == t.numel() * classes_ &&
               int64_t(confusion.size()) == int64_t(classes_) * classes_,
           "add_confusion: out {} for labels {}", out.shape().str(), t.shape().str());
  const int64_t n = out.dim(0), K = classes_, S = pixels_;
  const float* z = out.data<float>();
  const int32_t* lt = t.data<int32_t>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t s = 0; s < S; ++s) {
      const int32_t ts = lt[i * S + s];
      if (ts == ignore_label_ || ts < 0 || ts >= K) continue;
      int64_t best = 0;  // the first maximum, as the loss counts
      for (int64_t k = 1; k < K; ++k)
        if (z[(i * K + k) * S + s] > z[(i * K + best) * S + s]) best = k;
      ++confusion[size_t(ts * K + best)];
    }
}

}  // namespace deeptrain
