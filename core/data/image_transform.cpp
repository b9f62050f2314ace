#include "core/data/image_transform.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/random.h"

namespace deeptrain::data {
namespace {

constexpr uint64_t kCropStream = 0x72726330;   // "rrc0": attempt a draws from stream kCropStream + a
constexpr uint64_t kFlipStream = 0x72726366;   // "rrcf": not augment's "flip", so the two flips
                                               // of one sample are independent
constexpr int kCropAttempts = 10;              // torchvision's
constexpr int kPrecisionBits = 32 - 8 - 2;     // Pillow's PRECISION_BITS for 8-bit images

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for a full-range resize of in_size pixels
// to out_size: for output pixel x, taps start at first[x], count[x] of them, weights
// k[x * ksize + t] in 22-bit fixed point. The arithmetic is Pillow's, step for step (its doubles
// only ever meet a contracted multiply-add as x * 2^k + 0 or x * 2^22 + 0.5, both exact), so the
// weights are Pillow's to the bit.
struct Coeffs {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> k;
};

Coeffs precompute_coeffs(int in_size, int out_size) {
  const double scale = double(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = 1.0 * filterscale;  // the bilinear (triangle) filter's support is 1
  Coeffs c;
  c.ksize = int(std::ceil(support)) * 2 + 1;
  c.first.resize(size_t(out_size));
  c.count.resize(size_t(out_size));
  c.k.assign(size_t(out_size) * size_t(c.ksize), 0);
  std::vector<double> w(size_t(c.ksize));
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    const int xmin = std::max(int(center - support + 0.5), 0);
    const int xmax = std::min(int(center + support + 0.5), in_size) - xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double t = std::abs((x + xmin - center + 0.5) * ss);
      w[size_t(x)] = t < 1.0 ? 1.0 - t : 0.0;
      ww += w[size_t(x)];
    }
    for (int x = 0; x < xmax; ++x) {
      const double v = ww != 0.0 ? w[size_t(x)] / ww : w[size_t(x)];
      c.k[size_t(xx) * size_t(c.ksize) + size_t(x)] =
          v < 0 ? int32_t(-0.5 + v * (1 << kPrecisionBits)) : int32_t(0.5 + v * (1 << kPrecisionBits));
    }
    c.first[size_t(xx)] = xmin;
    c.count[size_t(xx)] = xmax;
  }
  return c;
}

uint8_t clip8(int32_t v) {
  if (v >= (1 << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return uint8_t(v >> kPrecisionBits);
}

// A uniform integer in [0, n) from one 32-bit word.
int below(uint32_t r, int n) { return int((uint64_t(r) * uint64_t(n)) >> 32); }

}  // namespace

CropBox random_resized_crop_box(int width, int height, float scale_min, float scale_max,
                                float ratio_min, float ratio_max, uint64_t seed, int64_t epoch,
                                int64_t sample, std::vector<CropAttempt>* trace) {
  const double area = double(height) * width;
  // torch.log(torch.tensor(ratio)): float32 logarithms of the float32 bounds.
  const float log_lo = std::log(ratio_min), log_hi = std::log(ratio_max);
  for (int a = 0; a < kCropAttempts; ++a) {
    const Philox4x32 r = RandomStream{seed, kCropStream + uint64_t(a)}.block(uint64_t(sample),
                                                                             uint32_t(epoch));
    CropAttempt at;
    at.scale = scale_min + (scale_max - scale_min) * u32_to_unit_float(r[0]);
    at.log_ratio = log_lo + (log_hi - log_lo) * u32_to_unit_float(r[1]);
    const double target_area = area * double(at.scale);
    const double aspect = double(std::exp(at.log_ratio));  // torch.exp of a float32 tensor
    // Python's round() of a float: half to even, as nearbyint in the default rounding mode.
    const int w = int(std::nearbyint(std::sqrt(target_area * aspect)));
    const int h = int(std::nearbyint(std::sqrt(target_area / aspect)));
    const bool fits = 0 < w && w <= width && 0 < h && h <= height;
    if (fits) {
      at.top = below(r[2], height - h + 1);
      at.left = below(r[3], width - w + 1);
    }
    if (trace) trace->push_back(at);
    if (fits) return {at.top, at.left, h, w};
  }
  // torchvision's fallback: a centre crop of the whole image, cut to the nearer ratio bound.
  const double in_ratio = double(width) / double(height);
  int w = width, h = height;
  if (in_ratio < ratio_min)
    h = int(std::nearbyint(w / double(ratio_min)));
  else if (in_ratio > ratio_max)
    w = int(std::nearbyint(h * double(ratio_max)));
  return {(height - h) / 2, (width - w) / 2, h, w};
}

std::pair<int, int> resize_shorter_size(int width, int height, int shorter) {
  const int short_side = std::min(width, height), long_side = std::max(width, height);
  const int new_long = int(double(int64_t(shorter) * long_side) / short_side);
  return width <= height ? std::pair{shorter, new_long} : std::pair{new_long, shorter};
}

CropBox center_crop_box(int height, int width, int crop_h, int crop_w) {
  return {int(std::nearbyint((height - crop_h) / 2.0)), int(std::nearbyint((width - crop_w) / 2.0)),
          crop_h, crop_w};
}

void crop_resize_bilinear(const uint8_t* in, int c, int h, int w, const CropBox& box, int out_h,
                          int out_w, uint8_t* out) {
  DT_CHECK(box.top >= 0 && box.left >= 0 && box.height > 0 && box.width > 0 &&
               box.top + box.height <= h && box.left + box.width <= w && out_h > 0 && out_w > 0,
           "crop_resize_bilinear: box ({}, {}, {}, {}) in a {}x{} image", box.top, box.left,
           box.height, box.width, h, w);
  const int ch = box.height, cw = box.width;
  // Pillow resizes in two passes, horizontal first, keeping u8 between them; a pass whose size
  // does not change is skipped (its weights would be the identity).
  const bool horizontal = out_w != cw, vertical = out_h != ch;
  std::vector<uint8_t> mid(size_t(c) * ch * out_w);
  for (int p = 0; p < c; ++p) {
    const uint8_t* src = in + int64_t(p) * h * w;
    uint8_t* dst = mid.data() + int64_t(p) * ch * out_w;
    if (!horizontal) {
      for (int y = 0; y < ch; ++y)
        std::memcpy(dst + int64_t(y) * out_w, src + int64_t(box.top + y) * w + box.left, size_t(cw));
      continue;
    }
    const Coeffs cx = precompute_coeffs(cw, out_w);
    for (int y = 0; y < ch; ++y) {
      const uint8_t* row = src + int64_t(box.top + y) * w + box.left;
      for (int x = 0; x < out_w; ++x) {
        const int32_t* k = cx.k.data() + size_t(x) * size_t(cx.ksize);
        const uint8_t* s = row + cx.first[size_t(x)];
        int32_t acc = 1 << (kPrecisionBits - 1);
        for (int t = 0; t < cx.count[size_t(x)]; ++t) acc += int32_t(s[t]) * k[t];
        dst[int64_t(y) * out_w + x] = clip8(acc);
      }
    }
  }
  if (!vertical) {
    std::memcpy(out, mid.data(), mid.size());
    return;
  }
  const Coeffs cy = precompute_coeffs(ch, out_h);
  for (int p = 0; p < c; ++p) {
    const uint8_t* src = mid.data() + int64_t(p) * ch * out_w;
    uint8_t* dst = out + int64_t(p) * out_h * out_w;
    for (int y = 0; y < out_h; ++y) {
      const int32_t* k = cy.k.data() + size_t(y) * size_t(cy.ksize);
      const uint8_t* s = src + int64_t(cy.first[size_t(y)]) * out_w;
      for (int x = 0; x < out_w; ++x) {
        int32_t acc = 1 << (kPrecisionBits - 1);
        for (int t = 0; t < cy.count[size_t(y)]; ++t) acc += int32_t(s[int64_t(t) * out_w + x]) * k[t];
        dst[int64_t(y) * out_w + x] = clip8(acc);
      }
    }
  }
}

void convert_image_channels(DecodedImage& img, int channels) {
  DT_CHECK(channels == 1 || channels == 3, "convert_image_channels: {} channels", channels);
  if (img.channels == channels) return;
  const size_t plane = size_t(img.height) * size_t(img.width);
  std::vector<uint8_t> out(plane * size_t(channels));
  if (channels == 3) {
    for (int p = 0; p < 3; ++p) std::memcpy(out.data() + p * plane, img.pixels.data(), plane);
  } else {
    const uint8_t *r = img.pixels.data(), *g = r + plane, *b = g + plane;
    for (size_t i = 0; i < plane; ++i)
      out[i] = uint8_t((r[i] * 19595 + g[i] * 38470 + b[i] * 7471 + 0x8000) >> 16);
  }
  img.pixels = std::move(out);
  img.channels = channels;
}

ImageTransform::ImageTransform(const proto::ImageTransformConfig& cfg, int channels, int height,
                               int width, uint64_t seed)
    : rrc_(cfg.random_resized_crop()), flip_(cfg.flip_horizontal()),
      convert_(cfg.convert_channels()),
      scale_min_(cfg.has_scale_min() ? cfg.scale_min() : 0.08f),
      scale_max_(cfg.has_scale_max() ? cfg.scale_max() : 1.0f),
      // torchvision's (3/4, 4/3) as float32: the draws use them so (torch.tensor(ratio)); the
      // fallback's h * 4/3 is never within float32's 4e-8 of a rounding tie.
      ratio_min_(cfg.has_ratio_min() ? cfg.ratio_min() : float(3.0 / 4.0)),
      ratio_max_(cfg.has_ratio_max() ? cfg.ratio_max() : float(4.0 / 3.0)),
      resize_(cfg.resize() ? cfg.resize() : std::max(height, width)), channels_(channels),
      height_(height), width_(width), seed_(seed) {
  if (channels != 1 && channels != 3)
    fail_input("data.transform: model.input.channels is {}; images have 1 (gray) or 3 (RGB)",
               channels);
  if (!(std::isfinite(scale_min_) && std::isfinite(scale_max_) && scale_min_ > 0 &&
        scale_min_ <= scale_max_))
    fail_input("data.transform.scale_min/scale_max: need 0 < scale_min <= scale_max, got {} and {}",
               scale_min_, scale_max_);
  if (!(std::isfinite(ratio_min_) && std::isfinite(ratio_max_) && ratio_min_ > 0 &&
        ratio_min_ <= ratio_max_))
    fail_input("data.transform.ratio_min/ratio_max: need 0 < ratio_min <= ratio_max, got {} and {}",
               ratio_min_, ratio_max_);
  if (resize_ < std::max(height, width) || resize_ > 65535)
    fail_input("data.transform.resize: {} is outside [{}, 65535]: the shorter side must be at least "
               "the model input's larger side ({}x{}) for the centre crop to fit", resize_,
               std::max(height, width), height, width);
  validate_normalisation(cfg, channels);
}

void ImageTransform::apply(DecodedImage img, int64_t sample, int64_t epoch,
                           const std::string& what, uint8_t* out) const {
  if (img.channels != channels_) {
    if (!convert_)
      fail_input("{}: a {}-channel image, the model takes {} (model.input.channels); set "
                 "data.transform.convert_channels: true to convert gray <-> RGB", what,
                 img.channels, channels_);
    convert_image_channels(img, channels_);
  }
  const int h = img.height, w = img.width;
  if (epoch >= 0 && rrc_) {
    const CropBox box = random_resized_crop_box(w, h, scale_min_, scale_max_, ratio_min_,
                                                ratio_max_, seed_, epoch, sample);
    crop_resize_bilinear(img.pixels.data(), channels_, h, w, box, height_, width_, out);
  } else {
    const auto [rw, rh] = resize_shorter_size(w, h, resize_);
    std::vector<uint8_t> resized;
    const uint8_t* src = img.pixels.data();
    if (rw != w || rh != h) {
      resized.resize(size_t(channels_) * rh * rw);
      crop_resize_bilinear(src, channels_, h, w, {0, 0, h, w}, rh, rw, resized.data());
      src = resized.data();
    }
    const CropBox box = center_crop_box(rh, rw, height_, width_);
    for (int p = 0; p < channels_; ++p)
      for (int y = 0; y < height_; ++y)
        std::memcpy(out + (int64_t(p) * height_ + y) * width_,
                    src + (int64_t(p) * rh + box.top + y) * rw + box.left, size_t(width_));
  }
  if (epoch >= 0 && flip_ && random_flip(seed_, epoch, sample))
    for (int r = 0; r < channels_ * height_; ++r) std::reverse(out + int64_t(r) * width_, out + int64_t(r + 1) * width_);
}

bool random_flip(uint64_t seed, int64_t epoch, int64_t sample) {
  return RandomStream{seed, kFlipStream}.block(uint64_t(sample), uint32_t(epoch))[0] >> 31;
}

void validate_normalisation(const proto::ImageTransformConfig& cfg, int channels) {
  const int n = cfg.mean_size();
  if (n != cfg.std_size())
    fail_input("data.transform.mean/std: {} means and {} standard deviations; give both, one per "
               "channel (or one for all)", n, cfg.std_size());
  if (n != 0 && n != 1 && n != channels)
    fail_input("data.transform.mean: {} values for a {}-channel input (give {} or 1)", n, channels,
               channels);
  for (int i = 0; i < n; ++i) {
    if (!std::isfinite(cfg.mean(i)))
      fail_input("data.transform.mean[{}]: must be finite, got {}", i, cfg.mean(i));
    if (!(cfg.std(i) > 0 && std::isfinite(cfg.std(i))))
      fail_input("data.transform.std[{}]: must be > 0, got {}", i, cfg.std(i));
  }
}

}  // namespace deeptrain::data
