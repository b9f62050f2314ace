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

DetectionLossSpec detection_spec(const proto::LossConfig& cfg, int classes) {
  using H = proto::HeadConfig;
  DetectionLossSpec s;
  s.classes = classes;
  s.stride = cfg.detection().output_stride();
  s.max_boxes = cfg.detection().max_boxes();
  s.alpha = cfg.detection().alpha();
  s.beta = cfg.detection().beta();
  s.heat_channel = s.size_channel = s.offset_channel = -1;
  s.heat_weight = s.size_weight = s.offset_weight = 0;
  int channel = 0;
  for (const H& h : cfg.head()) {
    const bool smooth = h.loss() == H::SMOOTH_L1;
    if (h.target() == H::CENTER_HEATMAP) {
      s.heat_channel = channel, s.heat_weight = h.weight(), s.heat_bce = h.loss() == H::SIGMOID_BCE;
      channel += classes;
    } else if (h.target() == H::BOX_SIZE) {
      s.size_channel = channel, s.size_weight = h.weight(), s.size_smooth = smooth;
      channel += 2;
    } else {
      s.offset_channel = channel, s.offset_weight = h.weight(), s.offset_smooth = smooth;
      channel += 2;
    }
  }
  DT_CHECK(s.heat_channel >= 0 && s.stride > 0 && s.max_boxes > 0,
           "model.loss: detection options not finalized");
  return s;
}

void check_detection_heads(const proto::LossConfig& cfg, int classes, const std::string& last,
                           const std::vector<std::pair<std::string, Shape>>& inputs) {
  using H = proto::HeadConfig;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const std::string& in = inputs[i].first;
    if (int(i) >= cfg.head_size() || cfg.head(int(i)).name() != in) {
      bool declared = false;
      for (const H& h : cfg.head()) declared |= h.name() == in;
      if (!declared)
        fail_input("model.loss.head: layer '{}' feeds the heads' concat '{}' but no head names it "
                   "(a head without a loss: add a model.loss.head {{ name: \"{}\" ... }})", in,
                   last, in);
      fail_input("model.loss.head[{}]: the heads' concat '{}' takes '{}' as its input {}: declare "
                 "the heads in the concat's order", i, last, in, i);
    }
    const H& h = cfg.head(int(i));
    const int64_t want = h.target() == H::CENTER_HEATMAP ? classes : 2;
    if (inputs[i].second.rank() != 3 || inputs[i].second[0] != want)
      fail_input("model.loss.head[{}] '{}': its layer outputs {} per sample; a {} head has {} "
                 "channels", i, in, inputs[i].second.str(), H::Target_Name(h.target()), want);
  }
  if (int(inputs.size()) < cfg.head_size())
    fail_input("model.loss.head[{}] '{}': not an input of the heads' concat '{}'", inputs.size(),
               cfg.head(int(inputs.size())).name(), last);
}

LossFn::LossFn(const proto::LossConfig& cfg, Shape input, int classes)
    : kind_(cfg.type() == proto::LossConfig::PIXEL_SOFTMAX_CE ? Kind::pixel
            : cfg.type() == proto::LossConfig::DETECTION      ? Kind::detect
                                                               : Kind::classify),
      classes_(classes) {
  if (kind_ == Kind::classify) {
    output_ = Shape{classes};
    return;
  }
  const char* type = dense() ? "PIXEL_SOFTMAX_CE" : "DETECTION";
  if (input.rank() != 3)
    fail_input("model.loss: {} needs (C, H, W) inputs, the model takes {}", type, input.str());
  if (kind_ == Kind::detect) {
    spec_ = deeptrain::detection_spec(cfg, classes);
    const int64_t R = spec_.stride;
    if (input[1] % R || input[2] % R)
      fail_input("model.loss.detection.output_stride: {} does not divide the input's {} x {}", R,
                 input[1], input[2]);
    const int64_t channels = classes + (spec_.size_channel >= 0 ? 2 : 0) + (spec_.offset_channel >= 0 ? 2 : 0);
    output_ = Shape{channels, input[1] / R, input[2] / R};
    return;
  }
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

Shape LossFn::target_shape() const {
  switch (kind_) {
    case Kind::classify: return Shape{};
    case Kind::pixel: return Shape{output_[1], output_[2]};
    case Kind::detect: return Shape{spec_.max_boxes, kBoxFields};
  }
  return Shape{};
}

LossSums LossFn::forward(Backend& b, const Tensor& out, const Tensor& t, double log_eps,
                         Tensor& probs) const {
  if (kind_ == Kind::detect) {
    b.copy(b.to_plain(out), probs);
    probs.set_layout(Layout::plain);
    return LossSums{b.detection_loss(probs, t, spec_, 0.0, nullptr), 0, out.dim(0)};
  }
  if (kind_ == Kind::classify) {
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
  if (kind_ == Kind::classify) {
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
  if (kind_ == Kind::classify) return b.softmax_ce_backward(probs, t, scale, dout);
  if (kind_ == Kind::detect) {
    b.detection_loss(probs, t, spec_, scale, &dout);
    return;
  }
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
  DT_CHECK(dense() && out.dtype() == DType::f32 && out.numel() == t.numel() * classes_ &&
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
