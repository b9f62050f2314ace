#pragma once
// Which global samples form step s of epoch e, and which of them this rank computes.
// The order of epoch e is a pure function of (seed, e): rank and thread counts never change it.
#include <cstdint>
#include <vector>

namespace deeptrain {

// A permutation of [0, n) drawn from (seed, epoch) by Fisher-Yates over Philox draws.
std::vector<int64_t> epoch_permutation(uint64_t seed, int64_t epoch, int64_t n);

struct GlobalSampler {
  int64_t num_samples;
  int64_t batch_size;   // the global batch
  uint64_t seed;

  // ceil(num_samples / batch_size): the last batch of an epoch may be smaller.
  int64_t steps_per_epoch() const { return (num_samples + batch_size - 1) / batch_size; }
  // [begin, end) of the epoch's order that global step `step_in_epoch` covers.
  int64_t batch_begin(int64_t step_in_epoch) const { return step_in_epoch * batch_size; }
  int64_t batch_end(int64_t step_in_epoch) const;
};

// Rank r of w takes a contiguous, balanced slice of a global batch of n samples: the first
// n % w ranks take one more. A rank may get none (tiny last batch) and still joins every
// collective, so no rank waits for another that skipped a step.
struct ShardRange { int64_t begin, end; };
ShardRange shard_of_batch(int64_t n, int rank, int world);

}  // namespace deeptrain
