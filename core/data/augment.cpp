#include "core/data/augment.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "core/error.h"
#include "core/random.h"

namespace deeptrain::data {
namespace {

constexpr uint64_t kAugmentStream = 0x6175676d;  // "augm": the purpose tag of these draws
constexpr uint64_t kFlipStream = 0x666c6970;     // "flip": its own stream, so adding the flip
                                                 // leaves the other draws as they were
constexpr double kPi = 3.14159265358979323846;

// A uniform double in [0, 1) from one 32-bit word.
double unit(uint32_t r) { return double(r) * (1.0 / 4294967296.0); }

// Rounds a sampling coordinate that is an integer up to rounding error (sin and cos of right
// angles are not exact in floating point), so exact rotations by multiples of 90 degrees and
// integer shifts copy pixels instead of blending in neighbours with weights of 1e-16.
double snap(double v) {
  const double r = std::nearbyint(v);
  return std::abs(v - r) < 1e-9 ? r : v;
}

// float(p) / 255.0f for every byte value, the division gather_batch does.
const float* normalised_byte_table() {
  static const auto table = [] {
    std::array<float, 256> s{};
    for (int p = 0; p < 256; ++p) s[p] = float(p) / 255.0f;
    return s;
  }();
  return table.data();
}

// The input column (or row) whose pixel is nearest to where output column x samples under a
// shift and an optional mirror (augment_sample's inverse map without rotation or scaling); may
// be off the canvas.
int64_t nearest_source(int x, int size, double shift, bool flip) {
  double s = snap(x - shift);
  if (flip) s = (size - 1) - s;
  return int64_t(std::floor(s + 0.5));
}

// The output range [lo, hi) of columns whose nearest source lies in [a, b); empty: lo == hi.
std::pair<int32_t, int32_t> moved_range(int32_t a, int32_t b, int size, double shift, bool flip) {
  int32_t lo = -1, hi = -1;
  for (int x = 0; x < size; ++x) {
    const int64_t src = nearest_source(x, size, shift, flip);
    if (src < a || src >= b) continue;
    if (lo < 0) lo = x;
    hi = x + 1;
  }
  return lo < 0 ? std::pair{0, 0} : std::pair{lo, hi};
}

}  // namespace

void augment_label_map(const uint8_t* in, int h, int w, const AugmentParams& p, int32_t ignore,
                       int32_t* out) {
  DT_CHECK(p.angle_deg == 0 && p.scale == 1, "augment_label_map: rotation {} / scale {}",
           p.angle_deg, p.scale);
  for (int y = 0; y < h; ++y) {
    const int64_t sy = nearest_source(y, h, p.shift_y, false);
    for (int x = 0; x < w; ++x) {
      const int64_t sx = nearest_source(x, w, p.shift_x, p.flip);
      out[int64_t(y) * w + x] = sy >= 0 && sy < h && sx >= 0 && sx < w ? in[sy * w + sx] : ignore;
    }
  }
}

std::vector<Box> augment_boxes(const std::vector<Box>& in, int h, int w, const AugmentParams& p) {
  DT_CHECK(p.angle_deg == 0 && p.scale == 1, "augment_boxes: rotation {} / scale {}", p.angle_deg,
           p.scale);
  std::vector<Box> out;
  for (const Box& b : in) {
    const auto [x0, x1] = moved_range(b.x0, b.x1, w, p.shift_x, p.flip);
    const auto [y0, y1] = moved_range(b.y0, b.y1, h, p.shift_y, false);
    if (x1 > x0 && y1 > y0) out.push_back({b.label, x0, y0, x1, y1});
  }
  return out;
}

void check_augment_targets(const proto::AugmentConfig& cfg, const char* what, const std::string& set) {
  if (!cfg.enabled()) return;
  const char* field = cfg.rotation_deg() != 0 ? "rotation_deg"
                      : cfg.scale_min() != 0 || cfg.scale_max() != 0 ? "scale_min/scale_max"
                                                                      : nullptr;
  if (field)
    fail_input("data.augment.{}: not available for {} (data set '{}'): only flip_horizontal and "
               "shift_px move them with the image", field, what, set);
}

void validate_augment(const proto::AugmentConfig& cfg) {
  if (!(cfg.rotation_deg() >= 0 && cfg.rotation_deg() <= 180))
    fail_input("data.augment.rotation_deg: must be in [0, 180], got {}", cfg.rotation_deg());
  if (!(cfg.shift_px() >= 0 && std::isfinite(cfg.shift_px())))
    fail_input("data.augment.shift_px: must be >= 0, got {}", cfg.shift_px());
  const bool scaling = cfg.scale_min() != 0 || cfg.scale_max() != 0;
  if (scaling && !(cfg.scale_min() > 0 && cfg.scale_min() <= cfg.scale_max() &&
                   std::isfinite(cfg.scale_max())))
    fail_input("data.augment.scale_min/scale_max: need 0 < scale_min <= scale_max (or both 0 "
               "for no scaling), got {} and {}", cfg.scale_min(), cfg.scale_max());
}

AugmentParams draw_augment(const proto::AugmentConfig& cfg, uint64_t seed, int64_t epoch,
                           int64_t sample_index) {
  AugmentParams p;
  if (!cfg.enabled()) return p;
  // One Philox block per (epoch, sample): counter (sample index, epoch, tag), key the seed.
  const Philox4x32 r = RandomStream{seed, kAugmentStream}.block(uint64_t(sample_index),
                                                                 uint32_t(epoch));
  p.angle_deg = cfg.rotation_deg() * (2.0 * unit(r[0]) - 1.0);
  p.shift_x = cfg.shift_px() * (2.0 * unit(r[1]) - 1.0);
  p.shift_y = cfg.shift_px() * (2.0 * unit(r[2]) - 1.0);
  if (cfg.scale_min() != 0 || cfg.scale_max() != 0)
    p.scale = cfg.scale_min() + (double(cfg.scale_max()) - cfg.scale_min()) * unit(r[3]);
  if (cfg.flip_horizontal())
    p.flip = RandomStream{seed, kFlipStream}.block(uint64_t(sample_index), uint32_t(epoch))[0] >> 31;
  return p;
}

void augment_sample(const uint8_t* in, int c, int h, int w, const AugmentParams& p, float* out) {
  const float* normalised = normalised_byte_table();
  const int64_t plane = int64_t(h) * w;
  if (p.identity()) {
    for (int64_t k = 0; k < c * plane; ++k) out[k] = normalised[in[k]];
    return;
  }
  // The inverse map: output (x, y) reads input (sx, sy) =
  //   centre + R(-angle) * ((x, y) - centre - shift) / scale.
  const double a = p.angle_deg * kPi / 180.0;
  const double cs = std::cos(a) / p.scale, sn = std::sin(a) / p.scale;
  const double cx = (w - 1) / 2.0, cy = (h - 1) / 2.0;
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const double u = x - cx - p.shift_x, v = y - cy - p.shift_y;
      double sx = snap(cx + cs * u - sn * v);
      const double sy = snap(cy + sn * u + cs * v);
      if (p.flip) sx = (w - 1) - sx;  // the mirrored image at sx is the input at w - 1 - sx
      const double fx0 = std::floor(sx), fy0 = std::floor(sy);
      const double fx = sx - fx0, fy = sy - fy0;
      const int64_t x0 = int64_t(fx0), y0 = int64_t(fy0);
      for (int ch = 0; ch < c; ++ch) {
        const uint8_t* src = in + ch * plane;
        auto at = [&](int64_t yy, int64_t xx) -> double {
          return yy >= 0 && yy < h && xx >= 0 && xx < w ? double(src[yy * w + xx]) : 0.0;
        };
        // Terms with weight 0 are skipped, so a sample on the grid is the pixel itself.
        double value = (1 - fx) * (1 - fy) * at(y0, x0);
        if (fx != 0) value += fx * (1 - fy) * at(y0, x0 + 1);
        if (fy != 0) value += (1 - fx) * fy * at(y0 + 1, x0);
        if (fx != 0 && fy != 0) value += fx * fy * at(y0 + 1, x0 + 1);
        out[ch * plane + int64_t(y) * w + x] = float(value) / 255.0f;
      }
    }
  }
}

void gather_batch_augmented(const Dataset& d, const int64_t* ids, int64_t n, int64_t epoch,
                            uint64_t seed, const proto::AugmentConfig& cfg, Tensor& x, Tensor& t,
                            int32_t ignore_label) {
  if (!cfg.enabled()) return gather_batch(d, ids, n, x, t, epoch);
  const Shape shape = d.sample_shape();
  const int c = int(shape[0]), h = int(shape[1]), w = int(shape[2]);
  const int64_t sample = int64_t(c) * h * w;
  // The targets as gather_batch lays them out: a label a sample, a label map, or boxes.
  const bool maps = d.label_maps.raw();
  const auto [boxes, target] = target_layout(d, t);
  DT_CHECK(x.numel() == n * sample && t.numel() == n * target && (!boxes || t.dim(2) == 5),
           "gather_batch_augmented: x {} / t {} do not fit {} samples of {}", x.shape().str(),
           t.shape().str(), n, shape.str());
  DT_CHECK(!(maps || boxes) || (cfg.rotation_deg() == 0 && cfg.scale_min() == 0 && cfg.scale_max() == 0),
           "gather_batch_augmented: rotation or scaling of label maps or boxes (check_augment_targets)");
  for (int64_t i = 0; boxes && i < n; ++i)
    DT_CHECK(ids[i] >= 0 && ids[i] < d.size() && int64_t(d.boxes[size_t(ids[i])].size()) <= target / 5,
             "gather_batch_augmented: sample {}'s boxes do not fit {} rows", ids[i], target / 5);
  // Checks the ids: nothing may throw in the parallel loop. A streamed set transforms its
  // images (data.transform) to the model's input before this augmentation.
  const BatchPixels pixels(d, ids, n, epoch);
  const int32_t* labels = d.labels.data<int32_t>();
  float* xd = x.data<float>();
  int32_t* td = t.data<int32_t>();
#pragma omp parallel for schedule(dynamic, 4)
  for (int64_t i = 0; i < n; ++i) {
    const AugmentParams p = draw_augment(cfg, seed, epoch, ids[i]);
    augment_sample(pixels.at(i), c, h, w, p, xd + i * sample);
    // An image the source mirrored (data.transform's flip): its targets are mirrored before
    // this transform, and a mirror then this one's mirror is none.
    AugmentParams pt = p;
    pt.flip = p.flip != (d.source && d.source->mirrored(ids[i], epoch));
    if (maps) {
      augment_label_map(d.label_maps.data<uint8_t>() + ids[i] * target, h, w, pt, ignore_label,
                        td + i * target);
    } else if (boxes) {
      // Boxes only leave (clipped off the canvas), so they still fit the rows checked above.
      write_box_rows(augment_boxes(d.boxes[size_t(ids[i])], h, w, pt), target / 5, td + i * target);
    } else {
      td[i] = labels[ids[i]];
    }
  }
  normalise_batch(d, n, xd);
}

}  // namespace deeptrain::data
