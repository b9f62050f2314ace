#include "distributed/ordered_sum.h"

#include <algorithm>
#include <cstring>

#include "core/data/sampler.h"

namespace deeptrain {
namespace {

// out = 0, then out += each row, in the order the rows come (elementwise: the vector lanes
// never mix rows, so the order of additions of each element is the rows' order).
template <class T>
void sum_rows(const std::vector<const T*>& rows, int64_t L, T* out) {
  std::fill(out, out + L, T(0));
  for (const T* r : rows)
    for (int64_t i = 0; i < L; ++i) out[i] += r[i];
}

template <class T>
void ordered_sum_impl(Communicator& comm, int64_t total, const Tensor& parts, Tensor& out,
                      const char* what) {
  const int R = comm.size();
  const int64_t L = out.numel();
  const ShardRange mine = shard_of_batch(total, comm.rank(), R);
  const int64_t count = mine.end - mine.begin;
  DT_CHECK(parts.numel() == count * L, "{}: {} elements for {} micro-shards of {}", what,
           parts.numel(), count, L);
  std::vector<const T*> rows;
  if (R == 1) {
    for (int64_t j = 0; j < count; ++j) rows.push_back(parts.data<T>() + j * L);
    return sum_rows(rows, L, out.data<T>());
  }
  const int64_t kmax = shard_of_batch(total, 0, R).end;  // rank 0's run is a largest one
  Tensor block = Tensor::zeros({kmax * L}, parts.dtype());
  if (count) std::memcpy(block.raw(), parts.raw(), parts.nbytes());
  Tensor all = Tensor::empty({R * kmax * L}, parts.dtype());
  comm.allgather(block, all, what);
  for (int r = 0; r < R; ++r) {
    const ShardRange s = shard_of_batch(total, r, R);
    for (int64_t j = 0; j < s.end - s.begin; ++j)
      rows.push_back(all.data<T>() + (r * kmax + j) * L);
  }
  sum_rows(rows, L, out.data<T>());
}

}  // namespace

void ordered_sum(Communicator& comm, int64_t total, const Tensor& parts, Tensor& out,
                 const char* what) {
  DT_CHECK(parts.dtype() == out.dtype() && parts.device() == Device::cpu &&
               out.device() == Device::cpu,
           "{}: host tensors of one dtype", what);
  if (out.dtype() == DType::f32) return ordered_sum_impl<float>(comm, total, parts, out, what);
  DT_CHECK(out.dtype() == DType::f64, "{}: f32 or f64, got {}", what, dtype_name(out.dtype()));
  ordered_sum_impl<double>(comm, total, parts, out, what);
}

MicroShards::OrderedSum ordered_sum_over(Communicator& comm, int64_t total, const char* what) {
  return [&comm, total, what](const Tensor& parts, Tensor& out) {
    ordered_sum(comm, total, parts, out, what);
  };
}

}  // namespace deeptrain
