#pragma once
// Per-sample transforms that bring a decoded image of any size and colour to the model's input,
// as torchvision 0.14 defines them with its default (PIL) backend, pixel for pixel:
//   training   RandomResizedCrop(size, scale, ratio) then RandomHorizontalFlip;
//   evaluation Resize(shorter side) then CenterCrop(size).
// Resizing is PIL's bilinear filter (Pillow's Resample.c): a triangle filter widened by the
// downscale factor (antialiasing: every input pixel under the output pixel's footprint
// counts), applied horizontally then vertically in 22-bit fixed point with a u8 image between
// the passes, as Image.resize does. Random draws are keyed by (seed, epoch, global sample
// index), so neither rank count, thread count nor resuming changes them.
#include <cstdint>
#include <string>
#include <vector>

#include "core/data/image_codec.h"
#include "proto/deeptrain.pb.h"

namespace deeptrain::data {

// A rectangle of an image: rows [top, top + height), columns [left, left + width).
struct CropBox {
  int top = 0, left = 0, height = 0, width = 0;
  bool operator==(const CropBox&) const = default;
};

// The draws of one RandomResizedCrop attempt, as torchvision's get_params uses them: the area
// fraction and log aspect ratio (float32, as torch.empty(1).uniform_ gives them) and, if the box
// fits, its top and left offsets (torch.randint's results).
struct CropAttempt {
  float scale = 0, log_ratio = 0;
  int top = 0, left = 0;
};

// RandomResizedCrop.get_params for an image of width x height: up to 10 attempts, each drawn
// from attempt `a`'s Philox block of (seed, epoch, sample); the first box inside the image wins,
// else torchvision's fallback (the whole image, cut to the nearer ratio bound, centred).
// `trace` (tests) receives the attempts drawn.
CropBox random_resized_crop_box(int width, int height, float scale_min, float scale_max,
                                float ratio_min, float ratio_max, uint64_t seed, int64_t epoch,
                                int64_t sample, std::vector<CropAttempt>* trace = nullptr);

// torchvision's Resize(shorter) output size for a width x height image: the shorter side
// becomes `shorter`, the longer int(shorter * long / short). Returns {width, height}.
std::pair<int, int> resize_shorter_size(int width, int height, int shorter);

// CenterCrop's box of crop_h x crop_w in an image of height x width (both no larger): offsets
// rounded half to even, as Python's round() does.
CropBox center_crop_box(int height, int width, int crop_h, int crop_w);

// Crops `box` out of the planar u8 image (c, h, w) and resizes it to (c, out_h, out_w) with
// PIL's bilinear filter, exactly as img.crop(box).resize((out_w, out_h), BILINEAR) does.
void crop_resize_bilinear(const uint8_t* in, int c, int h, int w, const CropBox& box, int out_h,
                          int out_w, uint8_t* out);

// Grayscale <-> RGB as PIL's convert does: "RGB" copies the gray plane thrice, "L" is
// (19595 R + 38470 G + 7471 B + 2^15) >> 16 (ITU-R 601-2 luma in 16-bit fixed point).
void convert_image_channels(DecodedImage& img, int channels);

// RandomHorizontalFlip's draw for sample `sample` in `epoch`: true with probability 1/2.
bool random_flip(uint64_t seed, int64_t epoch, int64_t sample);

// A validated data.transform for a model input of (channels, height, width).
class ImageTransform {
 public:
  // Throws InputError naming the field (data.transform.scale_min, ...) for an invalid config.
  ImageTransform(const proto::ImageTransformConfig& cfg, int channels, int height, int width,
                 uint64_t seed);

  // Whether training draws (a random crop or flip): then the epoch changes the result.
  bool random() const { return rrc_ || flip_; }

  // The model's input (channels, height, width) in u8 into out, from a decoded image: converted
  // to the model's channels (or refused naming `what`), then transformed. epoch >= 0: training's
  // random transform of sample `sample` in that epoch; epoch < 0: evaluation's.
  void apply(DecodedImage img, int64_t sample, int64_t epoch, const std::string& what,
             uint8_t* out) const;

 private:
  bool rrc_, flip_, convert_;
  float scale_min_, scale_max_, ratio_min_, ratio_max_;
  int resize_, channels_, height_, width_;
  uint64_t seed_;
};

// Per-channel normalisation x = (p / 255 - mean[c]) / std[c] in float32, as torchvision's
// ToTensor then Normalize compute it; empty vectors: x = p / 255. Throws InputError naming
// data.transform.mean / .std when the counts do not fit `channels` or a std is not > 0.
void validate_normalisation(const proto::ImageTransformConfig& cfg, int channels);

}  // namespace deeptrain::data
