#pragma once
// Detections drawn on an image: each box outlined in its class's colour, captioned with its
// class and score. `deeptrain predict` draws a detection model's decoded boxes (after NMS)
// with it; the decoder feeds it Detections in the image's pixel coordinates.
#include <string>
#include <vector>

#include "report/raster.h"

namespace deeptrain::report {

// A found object: the pixel box [x0, x1) x [y0, y1) (may reach outside the image: drawn
// clipped), its class (0-based, no background class) and its score in [0, 1].
struct Detection {
  float x0 = 0, y0 = 0, x1 = 0, y1 = 0;
  int label = 0;
  float score = 0;
};

// Draws every detection on `image` (already scaled by `scale` from the boxes' coordinates): a
// `thickness`-pixel outline in class_colour(label + 1) (report/segmentation_figures.h; + 1
// skips the background's black), and above the box (inside it at the image's top) a caption
// "<name> <score, 2 decimals>" in white on that colour; name: class_names[label], else the
// label's number. Later detections are drawn over earlier ones.
void draw_detections(Raster& image, const std::vector<Detection>& detections,
                     const std::vector<std::string>& class_names = {}, int scale = 1,
                     int thickness = 1);

// The caption draw_detections writes for d.
std::string detection_caption(const Detection& d, const std::vector<std::string>& class_names);

}  // namespace deeptrain::report
