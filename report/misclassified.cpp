#include "report/misclassified.h"

#include <algorithm>

#include "core/error.h"

namespace deeptrain::report {
namespace {
constexpr int kZoom = 3, kColumns = 5, kPad = 8, kCaptionScale = 2;
}

Raster misclassified_grid(const data::Dataset& data, const std::vector<int32_t>& predictions,
                          int max_images) {
  const Shape shape = data.sample_shape();
  const int64_t n = data.size(), channels = shape[0], h = shape[1], w = shape[2];
  DT_CHECK(int64_t(predictions.size()) == n, "{} predictions for {} samples", predictions.size(), n);
  const int32_t* labels = data.labels.data<int32_t>();
  std::vector<int64_t> wrong;
  for (int64_t i = 0; i < n && int(wrong.size()) < max_images; ++i)
    if (predictions[i] != labels[i]) wrong.push_back(i);

  const int caption_h = Raster::text_height(kCaptionScale) + 4;
  const int cell_w = int(w) * kZoom + kPad, cell_h = caption_h + int(h) * kZoom + kPad;
  const int columns = std::clamp<int>(int(wrong.size()), 1, kColumns);
  const int rows = std::max<int>(1, (int(wrong.size()) + kColumns - 1) / kColumns);
  const std::string title = wrong.empty() ? "no misclassified test images" : "true/predicted";
  const int title_h = Raster::text_height(kCaptionScale) + 2 * kPad;
  const int width = std::max(columns * cell_w + kPad, Raster::text_width(title, kCaptionScale) + 2 * kPad);
  Raster r(width, title_h + (wrong.empty() ? 0 : rows * cell_h), kWhite);
  r.text(kPad, kPad, title, kBlack, kCaptionScale);
  const data::BatchPixels pixels(data, wrong.data(), int64_t(wrong.size()));  // a streamed set too
  for (size_t k = 0; k < wrong.size(); ++k) {
    const int64_t i = wrong[k];
    const int x0 = kPad + int(k % kColumns) * cell_w, y0 = title_h + int(k / kColumns) * cell_h;
    r.text(x0, y0, fmt::format("{}/{}", labels[i], predictions[i]), Rgb{200, 30, 30}, kCaptionScale);
    const uint8_t* img = pixels.at(int64_t(k));
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        // Dark ink on white, as the book shows digits (matplotlib's gray_r).
        auto ink = [&](int64_t c) { return uint8_t(255 - img[(c * h + y) * w + x]); };
        const Rgb c = channels == 3 ? Rgb{ink(0), ink(1), ink(2)} : Rgb{ink(0), ink(0), ink(0)};
        r.fill_rect(x0 + int(x) * kZoom, y0 + caption_h + int(y) * kZoom,
                    x0 + int(x + 1) * kZoom, y0 + caption_h + int(y + 1) * kZoom, c);
      }
  }
  return r;
}

ConfusionMatrix confusion_matrix(const data::Dataset& data, const std::vector<int32_t>& predictions) {
  ConfusionMatrix m;
  m.classes = data.num_classes;
  m.counts.assign(size_t(m.classes) * m.classes, 0);
  const int32_t* labels = data.labels.data<int32_t>();
  DT_CHECK(int64_t(predictions.size()) == data.labels.numel(), "{} predictions for {} samples",
           predictions.size(), data.labels.numel());
  for (size_t i = 0; i < predictions.size(); ++i) {
    DT_CHECK(predictions[i] >= 0 && predictions[i] < m.classes, "prediction {}", predictions[i]);
    ++m.counts[size_t(labels[i]) * m.classes + predictions[i]];
  }
  return m;
}

std::string confusion_csv(const ConfusionMatrix& m) {
  std::string s = "true\\predicted";
  for (int p = 0; p < m.classes; ++p) s += fmt::format(",{}", p);
  s += "\n";
  for (int t = 0; t < m.classes; ++t) {
    s += fmt::format("{}", t);
    for (int p = 0; p < m.classes; ++p) s += fmt::format(",{}", m.at(t, p));
    s += "\n";
  }
  return s;
}

std::string confusion_table(const ConfusionMatrix& m) {
  int64_t most = 1;
  for (int64_t c : m.counts) most = std::max(most, c);
  const int w = int(fmt::format("{}", most).size()) + 1;
  std::string s = fmt::format("{:>{}}", "true\\pred", 10);
  for (int p = 0; p < m.classes; ++p) s += fmt::format("{:>{}}", p, w);
  s += "\n";
  for (int t = 0; t < m.classes; ++t) {
    s += fmt::format("{:>{}}", t, 10);
    for (int p = 0; p < m.classes; ++p) s += fmt::format("{:>{}}", m.at(t, p), w);
    s += "\n";
  }
  return s;
}

}  // namespace deeptrain::report
