#pragma once
// Detections drawn on an image: each box outlined in its class's colour, captioned with its
// class and score. `deeptrain predict` draws a detection model's decoded boxes (after NMS,
// core/detect/decode.h) with it, in the image's pixel coordinates; a box reaching outside the
// image is drawn clipped.
#include <string>
#include <vector>

#include "core/data/dataset.h"
#include "core/detect/decode.h"
#include "report/raster.h"

namespace deeptrain::report {

// Draws every detection on `image` (already scaled by `scale` from the boxes' coordinates): a
// `thickness`-pixel outline in class_colour(label + 1) (report/segmentation_figures.h; + 1
// skips the background's black), and above the box (inside it at the image's top) a caption
// "<name> <score, 2 decimals>" in white on that colour; name: class_names[label], else the
// label's number. Later detections are drawn over earlier ones.
// with_scores false: the caption is the name alone (truth boxes).
void draw_detections(Raster& image, const std::vector<Detection>& detections,
                     const std::vector<std::string>& class_names = {}, int scale = 1,
                     int thickness = 1, bool with_scores = true);

// A detector's test samples 0..found.size()-1 of `test` (which has boxes), a row each: the
// image with its truth boxes | the image with `found` (its decoded detections), each enlarged
// `scale` times, on a white margin: a detector's predictions.png.
Raster detection_grid(const data::Dataset& test, const std::vector<std::vector<Detection>>& found,
                      int scale = 3);

// The caption draw_detections writes for d.
std::string detection_caption(const Detection& d, const std::vector<std::string>& class_names);

}  // namespace deeptrain::report
