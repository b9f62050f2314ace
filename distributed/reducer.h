#pragma once
// Gradient synchronisation across ranks. The flat gradient buffer is cut into buckets: contiguous
// ranges of whole layers, filled in reverse layer order (the order backward completes them) until
// a bucket holds at least GradientSyncOptions::bucket_bytes. During backward the Net reports each
// layer's finished range (grads_ready); when a bucket is complete its allreduce starts at once
// (non-blocking), in bucket order on every rank, so communication overlaps the rest of backward.
// finish() starts whatever has not started (all of it for a rank with no samples this step), waits
// for every bucket and leaves the sum over ranks in the buffer; the loss is scaled by 1/global
// batch, so that sum is the mean gradient of the global batch. On a GPU transport (NCCL) finish()
// only makes the compute stream wait for the buckets, so the optimizer step is enqueued without
// the host waiting for backward; settle() then waits on the host (failures, deadlines) before
// anything on the host reads the buffer or the next step begins.
//
// Compression (optional) puts 16-bit values on the wire: bf16 as is; f16 after multiplying by the
// global batch size (the wire then carries sums of per-sample gradients, which are well inside
// f16's normal range where mean gradients of 1e-6 would be subnormal), divided again on arrival.
// The sum over ranks is rounded to the wire type at each addition, so results differ from the
// uncompressed sum by about the wire type's precision (2^-11 for f16, 2^-8 for bf16), the same on
// every rank, so replicas stay identical. A 1-rank job never compresses (nothing goes on a wire).
#include <memory>
#include <string>
#include <vector>

#include "core/micro_shards.h"
#include "core/net.h"
#include "distributed/communicator.h"

namespace deeptrain {

struct ReducerStats {
  int64_t steps = 0;
  int64_t collectives = 0;      // gradient allreduces started
  int64_t wire_bytes = 0;       // bytes handed to allreduce by this rank, summed over steps
  double comm_seconds = 0;      // union over steps of the times gradient allreduces were in flight
  double exposed_seconds = 0;   // time the step waited in finish() and settle() after backward
  double backward_seconds = 0;  // from begin_step() to finish()
  // The share of communication time that ran while backward was still computing.
  double hidden_fraction() const {
    return comm_seconds > 0 ? std::max(0.0, 1.0 - exposed_seconds / comm_seconds) : 0.0;
  }
};

class Reducer {
 public:
  struct Bucket {
    int64_t begin, end;  // elements of the flat gradient buffer
    std::string name;    // "gradient bucket 2/4 (conv6..affine1)"
  };

  Reducer(Communicator& comm, Net& net, const GradientSyncOptions& opt);
  ~Reducer();

  const std::vector<Bucket>& buckets() const { return buckets_; }
  const GradientSyncOptions& options() const { return opt_; }

  // Before the step's backward (or, for a rank with no samples, before finish()).
  void begin_step(int64_t global_batch);
  // The callback to pass to Net::backward (empty when there is nothing to overlap).
  Net::GradsReady callback();
  void grads_ready(int64_t begin, int64_t end);
  // Reduces what is left and waits (on a GPU transport: the compute stream waits); afterwards
  // the device's work sees the sum over ranks in the buffer.
  void finish();
  // Exact mode (core/micro_shards.h): no buckets; the micro-shards' gradient rows summed in
  // global micro-shard order (distributed/ordered_sum.h) into the flat buffer, on the host.
  // Replaces finish(); settle() then has nothing left to do.
  void finish_exact(const MicroShards& micro);
  // Waits on the host for what finish() left to the device (nothing else to do otherwise), and
  // accounts the step; afterwards the host may read the buffer too. Before the next begin_step.
  void settle();

  const ReducerStats& stats() const { return stats_; }
  void reset_stats() { stats_ = {}; }

 private:
  void launch(size_t b);
  Communicator& comm_;
  Net& net_;
  GradientSyncOptions opt_;
  std::vector<Bucket> buckets_;
  std::vector<int64_t> remaining_;  // elements of bucket b not yet reported this step
  size_t next_ = 0;                 // the next bucket to launch
  std::vector<std::unique_ptr<CommRequest>> pending_;  // per bucket (or one for no-overlap)
  Tensor wire_;                     // f16/bf16 staging, same layout as the gradients
  bool compress_ = false;
  float prescale_ = 1;
  bool active_ = false;
  bool settling_ = false;  // finish() left the host wait to settle()
  double t_begin_ = 0, t_finish_ = 0, finish_seconds_ = 0;
  ReducerStats stats_;
};

// Buckets for layer ranges given in reverse layer order (the order backward reports them):
// consecutive ranges are merged until a bucket reaches cap_elems (0: one bucket for everything).
// Exposed for tests.
std::vector<std::pair<int64_t, int64_t>> plan_buckets(
    const std::vector<std::pair<int64_t, int64_t>>& reverse_layer_ranges, int64_t cap_elems);

}  // namespace deeptrain
