#pragma once
// Pictures of per-pixel predictions: the class colours (a fixed palette), a label map in those
// colours, a mask blended on its image (`deeptrain predict`), and the grid of test scenes with
// their truth and prediction that a segmentation run redraws after every epoch.
#include <cstdint>
#include <vector>

#include "core/data/dataset.h"
#include "report/raster.h"

namespace deeptrain::report {

// PASCAL VOC's colour map: class 0 black, class k's bits spread over the high bits of R, G
// and B (1 (128,0,0), 2 (0,128,0), 3 (128,128,0), 4 (0,0,128), ...): distinct for 0..255.
// docs/predict.md has the legend.
Rgb class_colour(int k);
// The colour an ignored pixel (the loss's ignore label) is drawn in: white.
constexpr Rgb kIgnoreColour = kWhite;

// A planar u8 image (C = 1 or 3, H x W) as RGB, each pixel a scale x scale block.
Raster image_raster(const uint8_t* planar, int channels, int height, int width, int scale = 1);
// A label map (H x W class ids; `ignore_label` drawn as kIgnoreColour) in class colours.
Raster mask_raster(const uint8_t* classes, int height, int width, int scale = 1,
                   int ignore_label = 255);
// The image with every pixel of a class other than 0 (the background) blended half and half
// with its class's colour, (p + colour + 1) / 2 per channel; background pixels as they are.
Raster overlay_raster(const uint8_t* planar, int channels, int height, int width,
                      const uint8_t* classes, int scale = 1);

// Rows of image | truth | prediction for the first predicted.size() / (H * W) samples of
// `test` (a data set with label maps); predicted: their class ids, (n, H, W).
Raster prediction_grid(const data::Dataset& test, const std::vector<uint8_t>& predicted,
                       int ignore_label = 255);

}  // namespace deeptrain::report
