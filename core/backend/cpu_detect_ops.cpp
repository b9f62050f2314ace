// CpuBackend's detection loss: CenterNet's heads against box targets (the geometry:
// detection_targets.h, shared with the CUDA kernels). f32 and f64, plain layouts; each
// sample's sum in a fixed order (heatmap cells, then boxes), then the samples in order.
#include <algorithm>
#include <vector>

#include "core/backend/cpu.h"
#include "core/backend/cpu_dispatch.h"

namespace deeptrain {

double CpuBackend::detection_loss(const Tensor& out, const Tensor& boxes,
                                  const DetectionLossSpec& spec, double scale, Tensor* dout) {
  const char* op = "detection_loss";
  const int64_t M = spec.max_boxes;
  DT_CHECK(out.shape().rank() == 4 && out.layout() == Layout::plain && boxes.dtype() == DType::i32 &&
               boxes.numel() == out.dim(0) * M * kBoxFields &&
               spec.heat_channel >= 0 && spec.heat_channel + spec.classes <= out.dim(1) &&
               spec.size_channel + 2 <= out.dim(1) && spec.offset_channel + 2 <= out.dim(1) &&
               (!dout || (dout->numel() == out.numel() && dout->dtype() == out.dtype())),
           "{}: out {} (plain, (n, C, h, w)), boxes {} for {} boxes a sample, {} classes, dout {} "
           "do not fit", op, out.shape().str(), boxes.shape().str(), M, spec.classes,
           dout ? dout->shape().str() : "none");
  const int64_t n = out.dim(0), C = out.dim(1), oh = out.dim(2), ow = out.dim(3), S = oh * ow;
  const int32_t* bx = boxes.data<int32_t>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < M; ++j) {
      const int32_t label = bx[(i * M + j) * kBoxFields];
      if (label >= spec.classes)
        fail_input("{}: sample {} of the batch has box label {}, not a class in [0, {})", op, i,
                   label, spec.classes);
    }
  std::vector<double> loss(size_t(n), 0.0);
  dispatch_host_float(out, op, [&]<class T>() {
    const T* z = out.data<T>();
    T* d = dout ? dout->data<T>() : nullptr;
    if (d) std::fill(d, d + out.numel(), T(0));
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const int32_t* b = bx + i * M * kBoxFields;
      int64_t count = 0;
      for (int64_t j = 0; j < M; ++j) count += b[j * kBoxFields] >= 0;
      const double norm = 1.0 / double(std::max<int64_t>(count, 1));
      // The targets, each box's Gaussian splatted over its square (heat_target's values: the
      // same terms and the same maximum, in fewer operations than cell by cell).
      std::vector<double> target(size_t(spec.classes * S), 0.0);
      for (int64_t j = 0; j < M; ++j) {
        const CenterObject o = center_object(b + j * kBoxFields, spec.stride, int32_t(oh), int32_t(ow));
        if (!o.valid) continue;
        for (int64_t y = std::max<int64_t>(0, o.py - o.radius); y <= std::min<int64_t>(oh - 1, o.py + o.radius); ++y)
          for (int64_t x = std::max<int64_t>(0, o.px - o.radius); x <= std::min<int64_t>(ow - 1, o.px + o.radius); ++x) {
            const int64_t dx = x - o.px, dy = y - o.py;
            const double g = std::exp(-double(dx * dx + dy * dy) / o.two_sigma2);
            double& t = target[size_t(o.label * S + y * ow + x)];
            t = std::max(t, g);
          }
      }
      double heat = 0, size = 0, offset = 0;
      for (int64_t k = 0; k < spec.classes; ++k)
        for (int64_t s = 0; s < S; ++s) {
          const int64_t e = ((i * C) + spec.heat_channel + k) * S + s;
          const double t = target[size_t(k * S + s)];
          double g;
          heat += heat_loss(double(z[e]), t, spec.heat_bce, spec.alpha, spec.beta, &g);
          if (d) d[e] = T(scale * spec.heat_weight * norm * g);
        }
      // Size then offset, each box's x then y, at its centre cell.
      for (int64_t j = 0; j < M; ++j) {
        const CenterObject o = center_object(b + j * kBoxFields, spec.stride, int32_t(oh), int32_t(ow));
        if (!o.valid) continue;
        const int64_t cell = int64_t(o.py) * ow + o.px;
        auto regress = [&](int32_t channel, double tx, double ty, bool smooth, double weight,
                           double& sum) {
          if (channel < 0) return;
          const double want[2] = {tx, ty};
          for (int c = 0; c < 2; ++c) {
            const int64_t e = (i * C + channel + c) * S + cell;
            double g;
            sum += box_loss(double(z[e]) - want[c], smooth, &g);
            if (d) d[e] += T(scale * weight * norm * g);
          }
        };
        regress(spec.size_channel, o.w, o.h, spec.size_smooth, spec.size_weight, size);
        regress(spec.offset_channel, o.cx - o.px, o.cy - o.py, spec.offset_smooth,
                spec.offset_weight, offset);
      }
      loss[size_t(i)] =
          (spec.heat_weight * heat + spec.size_weight * size + spec.offset_weight * offset) * norm;
    }
  });
  if (dout) dout->set_layout(Layout::plain);
  double sum = 0;
  for (double l : loss) sum += l;
  return sum;
}

}  // namespace deeptrain
