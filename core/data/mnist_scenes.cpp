#include "core/data/mnist_scenes.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/random.h"

namespace deeptrain::data {
namespace {

constexpr int kDigit = 28;  // MNIST's digit patch
constexpr uint64_t kStreamTag = 0x7363656e00000000ull;  // "scen", then the split
constexpr int kPlacementTries = 32;   // positions drawn for a digit under max_overlap

// A uniform integer in [lo, hi] from a random word (hi - lo is small: the bias is negligible
// and, more to the point, the same everywhere).
int64_t uniform_int(uint32_t r, int64_t lo, int64_t hi) { return lo + int64_t(r % uint32_t(hi - lo + 1)); }

// The 28x28 digit resized to size x size by bilinear interpolation in fixed point (1/256 of a
// pixel, 16-bit weights): pixel centres map to (x + 0.5) * 28 / size - 0.5 of the source.
void resize_digit(const uint8_t* src, int size, uint8_t* dst) {
  for (int y = 0; y < size; ++y) {
    const int64_t sy = ((2 * y + 1) * kDigit * 256) / (2 * size) - 128;  // 1/256 px
    const int64_t y0 = sy >= 0 ? sy / 256 : -1, fy = sy - y0 * 256;
    for (int x = 0; x < size; ++x) {
      const int64_t sx = ((2 * x + 1) * kDigit * 256) / (2 * size) - 128;
      const int64_t x0 = sx >= 0 ? sx / 256 : -1, fx = sx - x0 * 256;
      auto at = [&](int64_t yy, int64_t xx) -> int64_t {
        return (yy < 0 || yy >= kDigit || xx < 0 || xx >= kDigit) ? 0 : src[yy * kDigit + xx];
      };
      const int64_t v = (at(y0, x0) * (256 - fx) + at(y0, x0 + 1) * fx) * (256 - fy) +
                        (at(y0 + 1, x0) * (256 - fx) + at(y0 + 1, x0 + 1) * fx) * fy;
      dst[y * size + x] = uint8_t((v + 32768) >> 16);
    }
  }
}

// The box of the patch's nonzero pixels that land on the canvas when its corner is at
// (x0, y0): [x0, x1) x [y0, y1), empty (x1 <= x0) when none does.
Box ink_box(const uint8_t* patch, int64_t size, int64_t x0, int64_t y0, int64_t c) {
  Box b{0, int32_t(c), int32_t(c), -1, -1};
  for (int64_t y = std::max<int64_t>(0, -y0); y < std::min(size, c - y0); ++y)
    for (int64_t x = std::max<int64_t>(0, -x0); x < std::min(size, c - x0); ++x)
      if (patch[y * size + x]) {
        b.x0 = std::min<int32_t>(b.x0, int32_t(x0 + x)), b.x1 = std::max<int32_t>(b.x1, int32_t(x0 + x + 1));
        b.y0 = std::min<int32_t>(b.y0, int32_t(y0 + y)), b.y1 = std::max<int32_t>(b.y1, int32_t(y0 + y + 1));
      }
  return b;
}

int64_t area(const Box& b) { return std::max(0, b.x1 - b.x0) * int64_t(std::max(0, b.y1 - b.y0)); }

// Whether box a shares at most max_overlap of the smaller box's area with every box already
// placed (1: always).
bool fits(const Box& a, const std::vector<Box>& placed, float max_overlap) {
  if (max_overlap >= 1.0f) return true;
  for (const Box& b : placed) {
    const Box i{0, std::max(a.x0, b.x0), std::max(a.y0, b.y0), std::min(a.x1, b.x1), std::min(a.y1, b.y1)};
    if (double(area(i)) > double(max_overlap) * double(std::min(area(a), area(b)))) return false;
  }
  return true;
}

Dataset make_split(const Dataset& src, const proto::MnistScenesConfig& s, uint32_t split,
                   int64_t limit, const char* name) {
  const int64_t n = limit > 0 ? std::min<int64_t>(limit, split ? s.test_scenes() : s.train_scenes())
                              : (split ? s.test_scenes() : s.train_scenes());
  const int64_t c = s.canvas(), plane = c * c;
  Dataset d;
  d.name = name;
  d.num_classes = kSceneClasses;
  d.images = Tensor::empty({n, 1, c, c}, DType::u8);
  d.label_maps = Tensor::empty({n, c, c}, DType::u8);
  d.labels = Tensor::zeros({n}, DType::i32);
  d.boxes.resize(size_t(n));
  uint8_t* img = d.images.data<uint8_t>();
  uint8_t* map = d.label_maps.data<uint8_t>();
  // Each scene is written by one iteration alone: the thread count changes nothing.
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t i = 0; i < n; ++i)
    render_scene(src.images, src.labels, s, split, i, img + i * plane, map + i * plane,
                 &d.boxes[size_t(i)]);
  return d;
}

}  // namespace

void render_scene(const Tensor& digits, const Tensor& labels, const proto::MnistScenesConfig& s,
                  uint32_t split, int64_t index, uint8_t* image, uint8_t* label_map,
                  std::vector<Box>* boxes) {
  const int64_t c = s.canvas(), count_src = labels.numel();
  const RandomStream rs{s.seed(), kStreamTag | split};
  const Philox4x32 head = rs.block(uint64_t(index), 0);
  const int64_t count = uniform_int(head[0], s.min_digits(), s.max_digits());
  std::memset(image, 0, size_t(c * c));
  std::memset(label_map, 0, size_t(c * c));
  // Scale in 1/1024 steps: the digit's side in pixels is round(28 * scale).
  const int64_t smin = int64_t(s.min_scale() * 1024.0f + 0.5f),
                smax = int64_t(s.max_scale() * 1024.0f + 0.5f);
  // Unset means no limit, as the schema's default [1] (options built in code, not finalized).
  const float max_overlap = s.has_max_overlap() ? s.max_overlap() : 1.0f;
  std::vector<uint8_t> patch;
  boxes->clear();
  for (int64_t k = 0; k < count; ++k) {
    const Philox4x32 r = rs.block(uint64_t(index), uint32_t(k + 1));
    const int64_t which = int64_t(r[0] % uint32_t(count_src));
    const int64_t size = std::max<int64_t>(
        1, (kDigit * uniform_int(r[1], smin, smax) + 512) / 1024);
    patch.resize(size_t(size * size));
    resize_digit(digits.data<uint8_t>() + which * kDigit * kDigit, int(size), patch.data());
    // The top-left corner: up to a quarter of the digit may fall off the canvas (digits touch
    // and cross the border). Further draws (counters past the digits') only while the digit
    // covers another, or is covered, beyond max_overlap.
    const int64_t lo = -size / 4, hi = c - size + size / 4;
    int64_t x0 = uniform_int(r[2], lo, hi), y0 = uniform_int(r[3], lo, hi);
    Box b = ink_box(patch.data(), size, x0, y0, c);
    bool placed = fits(b, *boxes, max_overlap);
    for (int t = 1; t < kPlacementTries && !placed; ++t) {
      const Philox4x32 q = rs.block(uint64_t(index), uint32_t(kMaxSceneDigits + k * kPlacementTries + t));
      x0 = uniform_int(q[0], lo, hi), y0 = uniform_int(q[1], lo, hi);
      b = ink_box(patch.data(), size, x0, y0, c);
      placed = fits(b, *boxes, max_overlap);
    }
    if (!placed) continue;
    b.label = labels.data<int32_t>()[which];
    for (int64_t y = 0; y < size; ++y)
      for (int64_t x = 0; x < size; ++x) {
        const int64_t cy = y0 + y, cx = x0 + x;
        const uint8_t v = patch[size_t(y * size + x)];
        if (cy < 0 || cy >= c || cx < 0 || cx >= c || v == 0) continue;
        // The brightest digit owns the pixel (a later one on a tie: it lies on top).
        uint8_t& p = image[cy * c + cx];
        if (v < p) continue;
        p = v;
        label_map[cy * c + cx] = v >= kStrokeThreshold ? uint8_t(b.label + 1) : uint8_t(kSceneIgnoreLabel);
      }
    if (b.x1 > b.x0) boxes->push_back(b);  // a digit whose ink missed the canvas has no box
  }
}

DatasetSplit make_mnist_scenes(const DatasetSplit& source, const proto::MnistScenesConfig& scenes,
                               int64_t train_limit, int64_t test_limit) {
  DT_CHECK(scenes.canvas() >= kDigit && scenes.max_digits() >= scenes.min_digits() &&
               scenes.min_digits() > 0 && scenes.min_scale() > 0,
           "mnist_scenes: options not finalized (canvas {}, digits {}..{})", scenes.canvas(),
           scenes.min_digits(), scenes.max_digits());
  const Shape digit{1, kDigit, kDigit};
  for (const Dataset* d : {&source.train, &source.test})
    if (d->sample_shape() != digit || d->size() == 0 || d->source)
      fail_input("mnist_scenes: the source digits must be MNIST's 1x28x28 images in memory, got {} "
                 "({} samples)", d->sample_shape().str(), d->size());
  DatasetSplit out;
  out.train = make_split(source.train, scenes, 0, train_limit, "mnist_scenes");
  out.test = make_split(source.test, scenes, 1, test_limit, "mnist_scenes");
  return out;
}

}  // namespace deeptrain::data
