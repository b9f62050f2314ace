#include "core/micro_shards.h"

#include <algorithm>

#include "core/data/sampler.h"

namespace deeptrain {

int64_t micro_shard_count(int64_t n, int64_t micro) {
  DT_CHECK(micro > 0 && n >= 0, "{} samples in micro-shards of {}", n, micro);
  return (n + micro - 1) / micro;
}

MicroShardRange micro_shards_of_batch(int64_t n, int64_t micro, int rank, int world) {
  const ShardRange s = shard_of_batch(micro_shard_count(n, micro), rank, world);
  MicroShardRange r;
  r.first = s.begin;
  r.count = s.end - s.begin;
  r.rows_begin = std::min(n, s.begin * micro);
  r.rows_end = std::min(n, s.end * micro);
  return r;
}

Tensor batch_rows(const Tensor& x, int64_t b, int64_t e) {
  DT_CHECK(x.shape().rank() >= 1 && 0 <= b && b <= e && e <= x.dim(0), "rows [{}, {}) of {}", b,
           e, x.shape().str());
  if (b == 0 && e == x.dim(0)) return x;
  const int64_t per = x.dim(0) ? x.numel() / x.dim(0) : 0;
  std::vector<int64_t> d = x.shape().dims();
  d[0] = e - b;
  Tensor v = x.slice_flat(b * per, Shape(d));
  v.set_layout(x.layout());
  return v;
}

void MicroShards::begin_step(int64_t n, int64_t micro, const MicroShardRange& mine,
                             const Tensor& flat_grads, OrderedSum ordered_sum, bool with_grads) {
  DT_CHECK(flat_grads.dtype() == DType::f32 && flat_grads.device() == Device::cpu,
           "exact mode: the gradients must be host f32");
  DT_CHECK(mine.rows_end <= n, "micro-shards beyond the batch");
  range_ = mine;
  rows_ = n;
  micro_ = micro;
  flat_ = &flat_grads;
  ordered_sum_ = std::move(ordered_sum);
  if (!with_grads) return;
  const Shape s{mine.count, flat_grads.numel()};
  if (grads_.shape() != s) grads_ = Tensor::empty(s, DType::f32);
  // Every parameter gets a gradient from backward; zeros keep a parameter that gets none (an
  // unused branch) at zero, as the flat buffer's fill does.
  grads_.fill_zero();
}

Tensor MicroShards::grad(int64_t j, const Tensor& g) const {
  DT_CHECK(j >= 0 && j < count(), "micro-shard {} of {}", j, count());
  const auto off = (static_cast<const char*>(g.raw()) - static_cast<const char*>(flat_->raw())) /
                   int64_t(sizeof(float));
  DT_CHECK(g.dtype() == DType::f32 && off >= 0 && off + g.numel() <= flat_->numel(),
           "exact mode: a gradient outside the flat buffer");
  return grads_.slice_flat(j * flat_->numel() + off, g.shape());
}

}  // namespace deeptrain
