#include "core/data/sampler.h"

#include <algorithm>
#include <numeric>

#include "core/random.h"

namespace deeptrain {

std::vector<int64_t> epoch_permutation(uint64_t seed, int64_t epoch, int64_t n) {
  std::vector<int64_t> p(n);
  std::iota(p.begin(), p.end(), 0);
  const RandomStream rs{seed, 0x5045524d00000000ull ^ uint64_t(epoch)};  // "PERM"
  for (int64_t i = n - 1; i > 0; --i) {
    const Philox4x32 r = rs.block(uint64_t(i));
    const uint64_t x = (uint64_t(r[0]) << 32) | r[1];
    std::swap(p[i], p[int64_t(x % uint64_t(i + 1))]);  // bias < (i+1)/2^64: negligible
  }
  return p;
}

int64_t GlobalSampler::batch_end(int64_t step_in_epoch) const {
  return std::min(num_samples, (step_in_epoch + 1) * batch_size);
}

ShardRange shard_of_batch(int64_t n, int rank, int world) {
  const int64_t base = n / world, extra = n % world;
  const int64_t begin = rank * base + std::min<int64_t>(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

}  // namespace deeptrain
