#include "report/detections.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "report/segmentation_figures.h"

namespace deeptrain::report {

namespace {
std::string caption_of(const Detection& d, const std::vector<std::string>& class_names,
                       bool with_score) {
  const std::string name = d.label >= 0 && size_t(d.label) < class_names.size()
                               ? class_names[size_t(d.label)]
                               : fmt::format("{}", d.label);
  return with_score ? fmt::format("{} {:.2f}", name, d.score) : name;
}
}  // namespace

std::string detection_caption(const Detection& d, const std::vector<std::string>& class_names) {
  return caption_of(d, class_names, true);
}

void draw_detections(Raster& image, const std::vector<Detection>& detections,
                     const std::vector<std::string>& class_names, int scale, int thickness,
                     bool with_scores) {
  for (const Detection& d : detections) {
    const Rgb c = class_colour(d.label + 1);
    // Pixel edges of the box in the scaled image: [x0, x1) x [y0, y1), clipped by fill_rect.
    const int x0 = int(std::floor(d.x0 * scale)), y0 = int(std::floor(d.y0 * scale));
    const int x1 = std::max(x0 + 1, int(std::ceil(d.x1 * scale)));
    const int y1 = std::max(y0 + 1, int(std::ceil(d.y1 * scale)));
    const int t = std::max(1, thickness);
    image.fill_rect(x0, y0, x1, y0 + t, c);
    image.fill_rect(x0, y1 - t, x1, y1, c);
    image.fill_rect(x0, y0, x0 + t, y1, c);
    image.fill_rect(x1 - t, y0, x1, y1, c);
    const std::string caption = caption_of(d, class_names, with_scores);
    const int cw = Raster::text_width(caption) + 2, ch = Raster::text_height() + 2;
    const int cx = std::clamp(x0, 0, std::max(0, image.width() - cw));
    const int cy = y0 - ch >= 0 ? y0 - ch : std::max(0, y0);
    image.fill_rect(cx, cy, cx + cw, cy + ch, c);
    image.text(cx + 1, cy + 1, caption, kWhite);
  }
}

Raster detection_grid(const data::Dataset& test, const std::vector<std::vector<Detection>>& found,
                      int scale) {
  const Shape s = test.sample_shape();
  const int c = int(s[0]), h = int(s[1]), w = int(s[2]), gap = 4;
  const int rows = int(found.size());
  Raster grid(2 * w * scale + 3 * gap, rows * (h * scale + gap) + gap);
  for (int i = 0; i < rows; ++i) {
    const uint8_t* pixels = test.images.data<uint8_t>() + int64_t(i) * c * h * w;
    std::vector<Detection> truth;
    for (const data::Box& b : test.boxes[size_t(i)])
      truth.push_back({.label = b.label, .score = 1, .x0 = float(b.x0), .y0 = float(b.y0),
                       .x1 = float(b.x1), .y1 = float(b.y1)});
    Raster left = image_raster(pixels, c, h, w, scale), right = left;
    draw_detections(left, truth, {}, scale, 1, /*with_scores=*/false);
    draw_detections(right, found[size_t(i)], {}, scale, 1);
    const int y = gap + i * (h * scale + gap);
    for (int v = 0; v < h * scale; ++v)
      for (int u = 0; u < w * scale; ++u) {
        grid.set(gap + u, y + v, left.at(u, v));
        grid.set(2 * gap + w * scale + u, y + v, right.at(u, v));
      }
  }
  return grid;
}

}  // namespace deeptrain::report
