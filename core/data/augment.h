#pragma once
// Random geometric augmentation of training images: a left-right mirror, then rotation, shift
// and scaling about the image centre, with bilinear sampling. Each sample's transform is drawn from
// (seed, epoch, global sample index) by a Philox stream, so the image a sample becomes does
// not depend on the rank count, the thread count or the order samples are gathered in.
#include <cstdint>
#include <string>
#include <vector>

#include "core/data/dataset.h"
#include "proto/deeptrain.pb.h"

namespace deeptrain::data {

// One sample's transform. Output pixel (x, y) (column, row) takes the input at the point
// that the forward map "scale by `scale` and rotate by `angle_deg` about the centre
// ((w-1)/2, (h-1)/2), then move by (shift_x, shift_y)" sends there. A positive angle turns the
// image counter-clockwise as displayed (rows grow downwards); a positive shift_x moves it right.
// With flip, the input is mirrored left-right first (column x reads column w - 1 - x).
struct AugmentParams {
  double angle_deg = 0, shift_x = 0, shift_y = 0, scale = 1;
  bool flip = false;
  bool identity() const {
    return angle_deg == 0 && shift_x == 0 && shift_y == 0 && scale == 1 && !flip;
  }
};

// Throws InputError naming the field (data.augment.rotation_deg, ...) for an invalid config.
void validate_augment(const proto::AugmentConfig& cfg);

// The transform of global sample `sample_index` in epoch `epoch`; the identity when the config
// is not enabled.
AugmentParams draw_augment(const proto::AugmentConfig& cfg, uint64_t seed, int64_t epoch,
                           int64_t sample_index);

// in: u8 (c, h, w); out: f32 (c, h, w), normalised as gather_batch does (value / 255.0f).
// Bilinear interpolation; points outside the image read 0. The identity writes exactly what
// gather_batch writes.
void augment_sample(const uint8_t* in, int c, int h, int w, const AugmentParams& p, float* out);

// Label maps and boxes move with the image under a flip and a shift (a rotation or a scaling of
// them is refused: check_augment_targets). Output pixel (x, y) of a label map takes the label of
// the input pixel nearest to the point the image samples there (augment_sample's inverse map;
// nearest: floor(v + 0.5)), `ignore` where that pixel is off the canvas. A box becomes the
// pixels whose nearest input pixel lies in it: exactly the pixels its label-map region moves to,
// clipped to the canvas; a box left without area is dropped.
void augment_label_map(const uint8_t* in, int h, int w, const AugmentParams& p, int32_t ignore,
                       int32_t* out);
std::vector<Box> augment_boxes(const std::vector<Box>& in, int h, int w, const AugmentParams& p);

// Throws InputError naming the field when cfg would rotate or scale a data set with label maps
// or boxes (`what`: "label maps" or "boxes"; set: its name): only flip_horizontal and shift_px
// move them.
void check_augment_targets(const proto::AugmentConfig& cfg, const char* what, const std::string& set);

// Training's batch of `epoch`: gather_batch with each sample transformed by
// draw_augment(cfg, seed, epoch, ids[i]), its label map (out-of-canvas pixels: ignore_label) or
// boxes (t as gather_batch lays them out) moved with it; samples are spread over the OpenMP
// threads. Identical to gather_batch(d, ids, n, x, t, epoch) when cfg is not enabled.
void gather_batch_augmented(const Dataset& d, const int64_t* ids, int64_t n, int64_t epoch,
                            uint64_t seed, const proto::AugmentConfig& cfg, Tensor& x, Tensor& t,
                            int32_t ignore_label = 255);

}  // namespace deeptrain::data
