#include "core/backend/backend.h"

namespace deeptrain {

static int64_t out_extent(int64_t in, int64_t k, int64_t stride, int64_t pad, const char* what) {
  int64_t span = in + 2 * pad - k;
  if (k <= 0 || stride <= 0 || pad < 0 || span < 0)
    fail_input("{}: kernel {} stride {} pad {} does not fit an input of extent {}", what, k,
               stride, pad, in);
  return span / stride + 1;
}

ConvGeom ConvGeom::make(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t r,
                        int64_t s, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                        int64_t pad_w) {
  return {n, c, h, w, k, r, s, stride_h, stride_w, pad_h, pad_w,
          out_extent(h, r, stride_h, pad_h, "convolution"),
          out_extent(w, s, stride_w, pad_w, "convolution")};
}

PoolGeom PoolGeom::make(int64_t n, int64_t c, int64_t h, int64_t w, int64_t r, int64_t s,
                        int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w) {
  return {n, c, h, w, r, s, stride_h, stride_w, pad_h, pad_w,
          out_extent(h, r, stride_h, pad_h, "max pooling"),
          out_extent(w, s, stride_w, pad_w, "max pooling")};
}

}  // namespace deeptrain
