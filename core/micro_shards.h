#pragma once
// Exact mode's unit of work (docs/exact_mode.md). The global batch of a step is cut into
// micro-shards of a fixed number of samples (the last may be smaller), and each rank takes a
// contiguous run of whole micro-shards. Layers compute every micro-shard with tensors of that
// micro-shard's own shape, and every sum over samples (a parameter gradient, the loss,
// BatchNorm's statistics) is taken within each micro-shard, then over the micro-shards in their
// global order. A micro-shard's numbers then depend on its samples alone: not on the rank that
// computes it, not on how many ranks share the batch, and (with kernels whose result does not
// depend on the thread count, which the exact-mode tests check) not on threads.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <functional>
#include <vector>

#include "core/tensor.h"

namespace deeptrain {

// The micro-shards [first, first + count) of a global batch of n samples cut into micro-shards
// of `micro` samples, that rank `rank` of `world` takes (shard_of_batch over micro-shards), and
// the rows of the global batch they cover. Every rank's run is contiguous and balanced.
struct MicroShardRange {
  int64_t first = 0, count = 0;
  int64_t rows_begin = 0, rows_end = 0;
};
int64_t micro_shard_count(int64_t n, int64_t micro);
MicroShardRange micro_shards_of_batch(int64_t n, int64_t micro, int rank, int world);

// Rows [b, e) of a batch tensor (samples outermost; any layout: a blocked one keeps whole
// samples contiguous), as a view with the same layout.
Tensor batch_rows(const Tensor& x, int64_t b, int64_t e);

// A step's micro-shards on this rank, and their parameter gradients.
class MicroShards {
 public:
  // Sums `parts` (f32 or f64, one row of L per local micro-shard) over every micro-shard of
  // the global batch, in global order, into out (L elements, the same dtype), the same on
  // every rank. Collective (given by the distributed layer: it needs the ranks).
  using OrderedSum = std::function<void(const Tensor& parts, Tensor& out)>;

  // flat_grads: the Net's flat gradient buffer (host, f32), whose layout every micro-shard's
  // gradient row follows. The rows are zeroed; with_grads false (evaluation): there are none.
  void begin_step(int64_t n, int64_t micro, const MicroShardRange& mine, const Tensor& flat_grads,
                  OrderedSum ordered_sum, bool with_grads = true);
  int64_t count() const { return range_.count; }
  // The rows of the global batch, every rank's micro-shards together.
  int64_t global_rows() const { return rows_; }
  // Local rows [begin, end) of micro-shard j (0 <= j < count()) in this rank's batch.
  int64_t begin(int64_t j) const { return j * micro_; }
  int64_t end(int64_t j) const { return std::min((j + 1) * micro_, range_.rows_end - range_.rows_begin); }
  // Micro-shard j's part of the gradient g (a view into the flat gradient buffer): a view of
  // the same shape into row j.
  Tensor grad(int64_t j, const Tensor& g) const;
  // (count(), P) f32: row j is micro-shard j's gradient of every parameter.
  const Tensor& grads() const { return grads_; }
  void ordered_sum(const Tensor& parts, Tensor& out) const { ordered_sum_(parts, out); }

 private:
  MicroShardRange range_;
  int64_t rows_ = 0, micro_ = 0;
  const Tensor* flat_ = nullptr;
  Tensor grads_;
  OrderedSum ordered_sum_;
};

// Calls f(b, e, j) for each piece of a batch of n rows: exact mode's micro-shards (micro
// non-null: rows [b, e) of micro-shard j), or once for the whole batch (f(0, n, -1)).
// Micro-shards run concurrently on the OpenMP threads, each computing alone: its ops see one
// thread (nested regions and OpenBLAS run single-threaded inside), so a micro-shard's result
// does not depend on the thread count. f must write only its piece's rows, and call only a
// backend whose exact_capable() is true. The first exception thrown is rethrown.
template <class F>
void for_each_piece(const MicroShards* micro, int64_t n, F&& f) {
  if (!micro) return f(int64_t{0}, n, int64_t{-1});
  std::exception_ptr error;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t j = 0; j < micro->count(); ++j) {
    omp_set_num_threads(1);  // this thread's nested regions (ICVs are per thread)
    try {
      f(micro->begin(j), micro->end(j), j);
    } catch (...) {
#pragma omp critical(deeptrain_piece_error)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}
// A piece's gradient of g: g itself for the whole batch (j < 0), else micro-shard j's row.
inline Tensor piece_grad(const MicroShards* micro, int64_t j, const Tensor& g) {
  return j < 0 ? g : micro->grad(j, g);
}

}  // namespace deeptrain
