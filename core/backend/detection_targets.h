#pragma once
// The CenterNet targets of one box (Zhou et al. 2019, "Objects as Points"), one definition for
// the CPU op, the CUDA kernels and the decoder's tests: compiled for the host and, under nvcc,
// for the device. A box is 5 i32 (label, x0, y0, x1, y1), pixels [x0, x1) x [y0, y1) of the
// input; label < 0 pads a sample's box list.
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define DT_HOST_DEVICE __host__ __device__
#else
#define DT_HOST_DEVICE
#endif

namespace deeptrain {

// The loss's layout and options, plain values so a kernel takes it by value.
struct DetectionLossSpec {
  int32_t classes = 0;   // heatmap channels K
  int32_t stride = 4;    // R: input pixels per output cell
  int32_t max_boxes = 0; // M: boxes per sample in the targets
  // First channel of each head in the output, -1 when absent.
  int32_t heat_channel = 0, size_channel = -1, offset_channel = -1;
  bool heat_bce = false;                       // SIGMOID_BCE instead of the focal loss
  bool size_smooth = false, offset_smooth = false;  // SMOOTH_L1 instead of L1
  double heat_weight = 1, size_weight = 0.1, offset_weight = 1;
  double alpha = 2, beta = 4;
};

constexpr int kBoxFields = 5;

// One object as the heads see it at output resolution (h x w cells).
struct CenterObject {
  bool valid = false;
  int32_t label = 0, px = 0, py = 0, radius = 0;  // (px, py): the centre's cell
  double cx = 0, cy = 0, w = 0, h = 0;            // centre and size in cells
  double two_sigma2 = 1;                          // 2 sigma^2 of its Gaussian
};

// CenterNet's radius: the largest corner displacement that keeps a box of (h, w) at IoU >=
// min_overlap with the truth (the smallest of its three cases, as its code computes them).
DT_HOST_DEVICE inline double gaussian_radius(double h, double w, double min_overlap) {
  const double b1 = h + w, c1 = w * h * (1 - min_overlap) / (1 + min_overlap);
  const double r1 = (b1 + sqrt(b1 * b1 - 4 * c1)) / 2;
  const double b2 = 2 * (h + w), c2 = (1 - min_overlap) * w * h;
  const double r2 = (b2 + sqrt(b2 * b2 - 16 * c2)) / 2;
  const double a3 = 4 * min_overlap, b3 = -2 * min_overlap * (h + w), c3 = (min_overlap - 1) * w * h;
  const double r3 = (b3 + sqrt(b3 * b3 - 4 * a3 * c3)) / 2;
  return fmin(r1, fmin(r2, r3));
}

DT_HOST_DEVICE inline CenterObject center_object(const int32_t* box, int32_t stride, int32_t oh,
                                                 int32_t ow) {
  CenterObject o;
  if (box[0] < 0) return o;
  o.valid = true;
  o.label = box[0];
  o.cx = 0.5 * double(box[1] + box[3]) / stride;
  o.cy = 0.5 * double(box[2] + box[4]) / stride;
  o.w = double(box[3] - box[1]) / stride;
  o.h = double(box[4] - box[2]) / stride;
  o.px = int32_t(floor(o.cx));
  o.py = int32_t(floor(o.cy));
  o.px = o.px < 0 ? 0 : o.px >= ow ? ow - 1 : o.px;
  o.py = o.py < 0 ? 0 : o.py >= oh ? oh - 1 : o.py;
  const double r = gaussian_radius(ceil(o.h), ceil(o.w), 0.7);
  o.radius = r > 0 ? int32_t(r) : 0;
  const double sigma = (2.0 * o.radius + 1) / 6.0;
  o.two_sigma2 = 2 * sigma * sigma;
  return o;
}

// The heatmap target at class k, cell (y, x): the largest of the class's objects' Gaussians
// exp(-(dx^2 + dy^2) / 2 sigma^2), each cut to the (2 radius + 1)^2 square about its centre;
// exactly 1 at a centre.
DT_HOST_DEVICE inline double heat_target(const int32_t* boxes, int32_t max_boxes, int32_t k,
                                         int32_t y, int32_t x, int32_t stride, int32_t oh,
                                         int32_t ow) {
  double t = 0;
  for (int32_t j = 0; j < max_boxes; ++j) {
    const int32_t* b = boxes + j * kBoxFields;
    if (b[0] != k) continue;
    const CenterObject o = center_object(b, stride, oh, ow);
    const int32_t dx = x - o.px, dy = y - o.py;
    if (dx > o.radius || -dx > o.radius || dy > o.radius || -dy > o.radius) continue;
    const double g = exp(-double(dx * dx + dy * dy) / o.two_sigma2);
    t = g > t ? g : t;
  }
  return t;
}

// x^a, by multiplication for CenterNet's integer exponents (the common case, and exact).
DT_HOST_DEVICE inline double power(double x, double a) {
  if (a == 2) return x * x;
  if (a == 4) return (x * x) * (x * x);
  return pow(x, a);
}

// The heatmap loss at one cell of logit z and target t, and its derivative in z.
// Focal (CenterNet): t == 1: -(1-p)^a log p; else -(1-t)^b p^a log(1-p).
// BCE: -(t log p + (1-t) log(1-p)).
DT_HOST_DEVICE inline double heat_loss(double z, double t, bool bce, double a, double b,
                                       double* dz) {
  // One exp and one log1p: e = exp(-|z|), log p and log(1 - p) = log p - z.
  const double e = exp(-fabs(z)), l = log1p(e);
  const double lp = z >= 0 ? -l : z - l, lq = lp - z;
  const double p = z >= 0 ? 1 / (1 + e) : e / (1 + e), q = z >= 0 ? e / (1 + e) : 1 / (1 + e);
  if (bce) {
    *dz = p - t;
    return -(t * lp + (1 - t) * lq);
  }
  if (t >= 1) {
    const double qa = power(q, a);
    *dz = qa * (a * p * lp - q);
    return -qa * lp;
  }
  const double wt = power(1 - t, b), pa = power(p, a);
  *dz = wt * pa * (p - a * q * lq);
  return -wt * pa * lq;
}

// L1 or smooth L1 (Huber, beta 1) of a difference d, and its derivative.
DT_HOST_DEVICE inline double box_loss(double d, bool smooth, double* dd) {
  const double a = fabs(d);
  if (smooth && a < 1) {
    *dd = d;
    return 0.5 * d * d;
  }
  *dd = d > 0 ? 1.0 : d < 0 ? -1.0 : 0.0;
  return smooth ? a - 0.5 : a;
}

}  // namespace deeptrain
