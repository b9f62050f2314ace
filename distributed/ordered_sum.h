#pragma once
// Exact mode's sum over micro-shards (core/micro_shards.h, docs/exact_mode.md). Each rank holds
// one row per micro-shard of its run; every rank gathers all rows (an allgather, each rank's run
// padded to the largest) and adds them one after another in global micro-shard order. Every
// rank, whatever the rank count, then performs the same additions in the same order: the sum
// is the same to the last bit as one process's over the whole batch.
#include <cstdint>

#include "core/micro_shards.h"
#include "distributed/communicator.h"

namespace deeptrain {

// parts: (count, L) rows of rank comm.rank()'s micro-shards (count as micro_shards_of_batch
// gives for `total` micro-shards; f32 or f64); out: L elements of parts' dtype, set to the sum
// of all `total` rows in global order. Collective.
void ordered_sum(Communicator& comm, int64_t total, const Tensor& parts, Tensor& out,
                 const char* what = "exact-mode sum");

// The MicroShards::OrderedSum of a step with `total` micro-shards over comm's ranks.
MicroShards::OrderedSum ordered_sum_over(Communicator& comm, int64_t total, const char* what);

}  // namespace deeptrain
