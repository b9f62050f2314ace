// The random streams and the global sampler: Philox against the published known-answer
// vectors (Random123's kat_vectors), and the epoch order / shard rules the trainer relies on.
#include <algorithm>
#include <set>

#include <gtest/gtest.h>

#include "core/data/sampler.h"
#include "core/random.h"

using namespace deeptrain;

TEST(Philox4x32_10, KnownAnswerVectors) {
  EXPECT_EQ(philox4x32_10({0, 0, 0, 0}, {0, 0}),
            (Philox4x32{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
  EXPECT_EQ(philox4x32_10({~0u, ~0u, ~0u, ~0u}, {~0u, ~0u}),
            (Philox4x32{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
  EXPECT_EQ(philox4x32_10({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
                          {0xa4093822u, 0x299f31d0u}),
            (Philox4x32{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}));
}

TEST(RandomStream, NormalsHaveUnitMoments) {
  const RandomStream rs{7, 1};
  double s = 0, s2 = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double x = rs.normal(i);
    s += x;
    s2 += x * x;
  }
  EXPECT_NEAR(s / n, 0.0, 0.01);
  EXPECT_NEAR(s2 / n, 1.0, 0.01);
}

TEST(EpochPermutation, IsAPermutationDrawnFromSeedAndEpoch) {
  const auto p = epoch_permutation(1, 0, 1000);
  std::vector<int64_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(sorted[i], i);
  EXPECT_EQ(p, epoch_permutation(1, 0, 1000));   // same (seed, epoch): same order
  EXPECT_NE(p, epoch_permutation(1, 1, 1000));   // next epoch: another order
  EXPECT_NE(p, epoch_permutation(2, 0, 1000));   // another seed: another order
}

TEST(GlobalSampler, LastBatchIsPartial) {
  const GlobalSampler s{1050, 100, 0};
  EXPECT_EQ(s.steps_per_epoch(), 11);
  EXPECT_EQ(s.batch_end(9) - s.batch_begin(9), 100);
  EXPECT_EQ(s.batch_end(10) - s.batch_begin(10), 50);
}

TEST(ShardOfBatch, ContiguousBalancedAndCovering) {
  for (int world : {1, 2, 3, 4, 7})
    for (int64_t n : {0, 1, 3, 50, 100, 101}) {
      int64_t next = 0, smallest = n, largest = 0;
      for (int r = 0; r < world; ++r) {
        const ShardRange s = shard_of_batch(n, r, world);
        EXPECT_EQ(s.begin, next) << n << " over " << world;
        next = s.end;
        smallest = std::min(smallest, s.end - s.begin);
        largest = std::max(largest, s.end - s.begin);
      }
      EXPECT_EQ(next, n);
      EXPECT_LE(largest - smallest, 1);
    }
}
