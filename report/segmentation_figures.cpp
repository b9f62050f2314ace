#include "report/segmentation_figures.h"

#include <algorithm>

#include "core/error.h"

namespace deeptrain::report {
namespace {
constexpr int kZoom = 3, kPad = 8, kCaptionScale = 2;

Rgb pixel_at(const uint8_t* planar, int channels, int64_t plane, int64_t i) {
  return channels == 3 ? Rgb{planar[i], planar[plane + i], planar[2 * plane + i]}
                       : Rgb{planar[i], planar[i], planar[i]};
}

void put(Raster& r, int x0, int y0, int x, int y, int scale, Rgb c) {
  r.fill_rect(x0 + x * scale, y0 + y * scale, x0 + (x + 1) * scale, y0 + (y + 1) * scale, c);
}
}  // namespace

Rgb class_colour(int k) {
  int r = 0, g = 0, b = 0;
  for (int j = 0; j < 8; ++j, k >>= 3) {
    r |= ((k >> 0) & 1) << (7 - j);
    g |= ((k >> 1) & 1) << (7 - j);
    b |= ((k >> 2) & 1) << (7 - j);
  }
  return {uint8_t(r), uint8_t(g), uint8_t(b)};
}

Raster image_raster(const uint8_t* planar, int channels, int height, int width, int scale) {
  DT_CHECK(channels == 1 || channels == 3, "image_raster: {} channels", channels);
  Raster r(width * scale, height * scale);
  const int64_t plane = int64_t(height) * width;
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) put(r, 0, 0, x, y, scale, pixel_at(planar, channels, plane, int64_t(y) * width + x));
  return r;
}

Raster mask_raster(const uint8_t* classes, int height, int width, int scale, int ignore_label) {
  Raster r(width * scale, height * scale);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      const int k = classes[int64_t(y) * width + x];
      put(r, 0, 0, x, y, scale, k == ignore_label ? kIgnoreColour : class_colour(k));
    }
  return r;
}

Raster overlay_raster(const uint8_t* planar, int channels, int height, int width,
                      const uint8_t* classes, int scale) {
  Raster r = image_raster(planar, channels, height, width, scale);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      const int k = classes[int64_t(y) * width + x];
      if (k == 0) continue;
      const Rgb p = r.at(x * scale, y * scale), c = class_colour(k);
      auto mix = [](uint8_t a, uint8_t b) { return uint8_t((a + b + 1) / 2); };
      put(r, 0, 0, x, y, scale, {mix(p.r, c.r), mix(p.g, c.g), mix(p.b, c.b)});
    }
  return r;
}

Raster prediction_grid(const data::Dataset& test, const std::vector<uint8_t>& predicted,
                       int ignore_label) {
  const Shape shape = test.sample_shape();
  const int c = int(shape[0]), h = int(shape[1]), w = int(shape[2]);
  const int64_t plane = int64_t(h) * w;
  DT_CHECK(test.label_maps.raw() && plane > 0 && int64_t(predicted.size()) % plane == 0 &&
               int64_t(predicted.size()) / plane <= test.size(),
           "prediction_grid: {} predicted pixels for samples of {}", predicted.size(), shape.str());
  const int n = int(int64_t(predicted.size()) / plane);
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) ids[size_t(i)] = i;
  const data::BatchPixels pixels(test, ids.data(), n);  // a streamed set too
  const int cell_w = w * kZoom + kPad, cell_h = h * kZoom + kPad;
  const int header_h = Raster::text_height(kCaptionScale) + 2 * kPad;
  const char* titles[] = {"image", "truth", "prediction"};
  int col_w = cell_w;
  for (const char* t : titles) col_w = std::max(col_w, Raster::text_width(t, kCaptionScale) + kPad);
  const int width = kPad + 3 * col_w;
  Raster r(width, header_h + std::max(n, 1) * cell_h, kWhite);
  for (int k = 0; k < 3; ++k) r.text(kPad + k * col_w, kPad, titles[k], kBlack, kCaptionScale);
  for (int i = 0; i < n; ++i) {
    const int y0 = header_h + i * cell_h;
    const Raster cells[] = {
        image_raster(pixels.at(i), c, h, w, kZoom),
        mask_raster(test.label_maps.data<uint8_t>() + i * plane, h, w, kZoom, ignore_label),
        mask_raster(predicted.data() + i * plane, h, w, kZoom, ignore_label)};
    for (int k = 0; k < 3; ++k)
      for (int y = 0; y < cells[k].height(); ++y)
        for (int x = 0; x < cells[k].width(); ++x) r.set(kPad + k * col_w + x, y0 + y, cells[k].at(x, y));
  }
  return r;
}

}  // namespace deeptrain::report
