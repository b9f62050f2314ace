#pragma once
// A packed data set (core/data/shard_format.h) as a Dataset whose samples stream from disk:
// the labels (4 bytes a sample) and the indexes (24 bytes a sample) are held in memory, images
// are read by global index with pread (the page cache does the caching) and decoded by a pool
// of data threads. Memory beyond that is bounded by the prefetch: at most prefetch_batches
// announced batches of decoded samples wait in the pool's slots.
#include <cstdint>
#include <optional>
#include <string>

#include "core/data/dataset.h"
#include "proto/deeptrain.pb.h"

namespace deeptrain::data {

struct ShardReadOptions {
  int threads = 2;           // data threads decoding ahead (0: decode in the caller's thread)
  int prefetch_batches = 2;  // how many announced batches may be decoded ahead
  bool verify_checksums = false;  // SHA-256 of every shard against the manifest on open
  // The shape the model takes. Unset (rank 0): the manifest's, when every packed image has the
  // same shape. Without a transform, samples of another shape are an error naming them.
  Shape expected;
  // Set: every image is brought to `expected` by data.transform (core/data/image_transform.h),
  // its random draws keyed by `seed`; the Dataset gets its mean and std.
  std::optional<proto::ImageTransformConfig> transform;
  uint64_t seed = 0;
};

// Opens DIR (a pack's manifest.json, its shards and indexes). Throws InputError naming the file
// for: a missing manifest, shard or index; another format version; a shard whose size differs
// from its index's and the manifest's (truncated or replaced); an index that does not match the
// manifest (its SHA-256, its count); a label outside the class names; a checksum mismatch (with
// verify_checksums). Corrupt samples are found when read: "shard-00002.tar: sample 123 at offset
// 4096: ...". limit > 0 keeps the first `limit` samples.
Dataset open_shards(const std::string& dir, const ShardReadOptions& options, int64_t limit = 0);

// What `deeptrain doctor` prints for a pack: samples, classes, shards, shape; or why it cannot
// be opened (never throws for a bad pack).
std::string describe_pack(const std::string& dir);

}  // namespace deeptrain::data
