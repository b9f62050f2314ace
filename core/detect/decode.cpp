#include "core/detect/decode.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace deeptrain {

DecodeOptions decode_options(const proto::LossConfig& finalized) {
  const proto::DetectionConfig& d = finalized.detection();
  return DecodeOptions{d.top_k(), double(d.score_threshold()), double(d.nms_iou())};
}

double box_iou(const std::array<float, 4>& a, const std::array<float, 4>& b) {
  const double iw = std::max(0.0, double(std::min(a[2], b[2])) - double(std::max(a[0], b[0])));
  const double ih = std::max(0.0, double(std::min(a[3], b[3])) - double(std::max(a[1], b[1])));
  const double inter = iw * ih;
  const double area_a = std::max(0.0, double(a[2]) - a[0]) * std::max(0.0, double(a[3]) - a[1]);
  const double area_b = std::max(0.0, double(b[2]) - b[0]) * std::max(0.0, double(b[3]) - b[1]);
  const double uni = area_a + area_b - inter;
  return uni > 0 ? inter / uni : 0.0;
}

std::vector<int64_t> nms(const std::vector<std::array<float, 4>>& boxes,
                         const std::vector<float>& scores, double iou) {
  std::vector<int64_t> order(boxes.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return scores[size_t(a)] > scores[size_t(b)]; });
  std::vector<int64_t> kept;
  std::vector<bool> gone(boxes.size(), false);
  for (size_t i = 0; i < order.size(); ++i) {
    const int64_t a = order[i];
    if (gone[size_t(a)]) continue;
    kept.push_back(a);
    for (size_t j = i + 1; j < order.size(); ++j)
      if (!gone[size_t(order[j])] && box_iou(boxes[size_t(a)], boxes[size_t(order[j])]) > iou)
        gone[size_t(order[j])] = true;
  }
  return kept;
}

std::vector<Detection> decode_detections(const float* out, int64_t h, int64_t w,
                                         const DetectionLossSpec& spec, const DecodeOptions& o,
                                         int64_t height, int64_t width) {
  const int64_t S = h * w, K = spec.classes;
  const float* heat = out + int64_t(spec.heat_channel) * S;
  struct Peak {
    float score;
    int64_t cell;  // k * S + s
  };
  std::vector<Peak> peaks;
  for (int64_t k = 0; k < K; ++k)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        const float z = heat[k * S + y * w + x];
        bool peak = true;
        for (int64_t dy = -1; dy <= 1 && peak; ++dy)
          for (int64_t dx = -1; dx <= 1 && peak; ++dx) {
            const int64_t yy = y + dy, xx = x + dx;
            if (yy >= 0 && yy < h && xx >= 0 && xx < w && heat[k * S + yy * w + xx] > z) peak = false;
          }
        const float score = float(1.0 / (1.0 + std::exp(-double(z))));
        if (peak && score >= o.score_threshold) peaks.push_back({score, k * S + y * w + x});
      }
  std::stable_sort(peaks.begin(), peaks.end(),
                   [](const Peak& a, const Peak& b) { return a.score > b.score; });
  if (int64_t(peaks.size()) > o.top_k) peaks.resize(size_t(o.top_k));
  const double R = spec.stride;
  std::vector<Detection> found;
  for (const Peak& p : peaks) {
    const int64_t s = p.cell % S, y = s / w, x = s % w;
    auto head = [&](int32_t channel, int c, double none) {
      return channel < 0 ? none : double(out[(channel + c) * S + s]);
    };
    const double cx = (double(x) + head(spec.offset_channel, 0, 0.5)) * R;
    const double cy = (double(y) + head(spec.offset_channel, 1, 0.5)) * R;
    const double bw = head(spec.size_channel, 0, 1.0) * R, bh = head(spec.size_channel, 1, 1.0) * R;
    auto clip = [](double v, int64_t hi) { return float(std::clamp(v, 0.0, double(hi))); };
    found.push_back(Detection{int32_t(p.cell / S), p.score, clip(cx - bw / 2, width),
                              clip(cy - bh / 2, height), clip(cx + bw / 2, width),
                              clip(cy + bh / 2, height)});
  }
  if (o.nms_iou >= 1) return found;
  std::vector<Detection> kept;
  for (int64_t k = 0; k < K; ++k) {
    std::vector<std::array<float, 4>> boxes;
    std::vector<float> scores;
    std::vector<const Detection*> of_class;
    for (const Detection& d : found)
      if (d.label == k) {
        boxes.push_back({d.x0, d.y0, d.x1, d.y1});
        scores.push_back(d.score);
        of_class.push_back(&d);
      }
    for (int64_t i : nms(boxes, scores, o.nms_iou)) kept.push_back(*of_class[size_t(i)]);
  }
  std::stable_sort(kept.begin(), kept.end(),
                   [](const Detection& a, const Detection& b) { return a.score > b.score; });
  return kept;
}

}  // namespace deeptrain
