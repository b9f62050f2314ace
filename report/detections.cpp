#include "report/detections.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "report/segmentation_figures.h"

namespace deeptrain::report {

std::string detection_caption(const Detection& d, const std::vector<std::string>& class_names) {
  const std::string name = d.label >= 0 && size_t(d.label) < class_names.size()
                               ? class_names[size_t(d.label)]
                               : fmt::format("{}", d.label);
  return fmt::format("{} {:.2f}", name, d.score);
}

void draw_detections(Raster& image, const std::vector<Detection>& detections,
                     const std::vector<std::string>& class_names, int scale, int thickness) {
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
    const std::string caption = detection_caption(d, class_names);
    const int cw = Raster::text_width(caption) + 2, ch = Raster::text_height() + 2;
    const int cx = std::clamp(x0, 0, std::max(0, image.width() - cw));
    const int cy = y0 - ch >= 0 ? y0 - ch : std::max(0, y0);
    image.fill_rect(cx, cy, cx + cw, cy + ch, c);
    image.text(cx + 1, cy + 1, caption, kWhite);
  }
}

}  // namespace deeptrain::report
