#pragma once
// A packed data set (`deeptrain pack`) is a directory of
//   shard-NNNNN.tar  the encoded images in WebDataset's layout: for sample KEY (its global index,
//                    9 digits) the members KEY.png (or KEY.jpg) and KEY.cls (the label, decimal),
//                    so `tar tf`, WebDataset and any tar reader see ordinary files;
//   shard-NNNNN.idx  per sample: the image's byte offset and size in the tar, its label and the
//                    CRC-32 of its bytes (random access without scanning the tar);
//   shard-NNNNN.midx a pack with masks: the same records for each sample's label map, the tar
//                    member KEY.mask.png (label 0);
//   boxes.csv        a pack with boxes: `sample,label,x0,y0,x1,y1`, a line per box (global
//                    sample index, class, pixel box [x0, x1) x [y0, y1));
//   manifest.json    class names and counts, the shards in global order with their SHA-256, the
//                    packing options and kShardFormatVersion. Written last: a directory without
//                    it is an unfinished pack, and no shard is named without its ".tmp" until
//                    it is complete.
#include <cstdint>
#include <string>
#include <vector>

#include "proto/shards.pb.h"

namespace deeptrain::data {

constexpr int kShardFormatVersion = 1;
constexpr const char* kManifestName = "manifest.json";
constexpr const char* kBoxesName = "boxes.csv";
constexpr int64_t kTarBlock = 512;

struct IndexRecord {
  uint64_t offset = 0;  // of the image's bytes in the tar (after its member header)
  uint64_t size = 0;
  int32_t label = 0;
  uint32_t crc32 = 0;   // of the image's bytes
};

std::string shard_name(int64_t shard, const char* ext);  // "shard-00003.tar"
std::string sample_key(int64_t global_index);             // "000000123"

// A ustar member header for `name` holding `size` bytes.
std::string tar_header(const std::string& name, uint64_t size);
// Zero bytes that pad a member of `size` bytes to the next 512-byte block.
inline uint64_t tar_padding(uint64_t size) { return (kTarBlock - size % kTarBlock) % kTarBlock; }

// An index file: the magic "DTSHIDX1", the tar's size and the record count (u64 each), then the
// records (u64 offset, u64 size, i32 label, u32 crc32), all little-endian.
std::string encode_index(const std::vector<IndexRecord>& records, uint64_t tar_bytes);
// Throws InputError naming `path` for a wrong magic, a length that does not match the count,
// or a record pointing outside a tar of tar_bytes (whose size the index also states).
std::vector<IndexRecord> decode_index(const std::string& path, const std::string& bytes,
                                      uint64_t* tar_bytes);

std::string manifest_to_json(const proto::ShardManifest& m);
// Reads DIR/manifest.json. Throws InputError naming the file when it is missing (with "not a
// packed data set, or an unfinished pack"), unparseable, of another format_version, or
// inconsistent (class counts, sample counts, first_sample of each shard).
proto::ShardManifest read_manifest(const std::string& dir);

}  // namespace deeptrain::data
