#pragma once
// Writes a packed data set (core/data/shard_format.h), one sample at a time in global order.
// Atomic as a whole: shards and indexes are written as NAME.tmp and renamed only by finish(),
// which then writes manifest.json (itself atomically) last; a pack that stops early leaves
// only .tmp files and no manifest, which no reader takes for a data set.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "core/checksum.h"
#include "core/data/dataset.h"
#include "core/data/image_codec.h"
#include "core/data/shard_format.h"

namespace deeptrain::data {

class ShardWriter {
 public:
  // Creates `dir` if needed. Throws InputError when dir already holds a manifest (a finished
  // pack is never written over). shard_bytes: a shard is closed once it reaches this size.
  ShardWriter(std::string dir, int64_t shard_bytes);
  ~ShardWriter();  // without finish(): removes the .tmp files written so far
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // Appends an encoded image (already decoded once by the caller, which passes its shape) as
  // global sample samples_written(); mask (a pack with masks: every sample has one, or none
  // does): the sample's label map as PNG bytes, checked by the caller; boxes (a pack with boxes:
  // every sample has a list, empty or not, or none does): its boxes, checked by the caller.
  void add(const std::string& encoded, ImageFormat format, int32_t label, int channels,
           int height, int width, const std::string* mask = nullptr,
           const std::vector<Box>* boxes = nullptr);
  int64_t samples_written() const { return total_; }

  // Closes the last shard, renames every shard into place and writes the manifest: `m` with
  // its shards, counts, shape and format_version filled in here (and, for a pack with boxes,
  // writes boxes.csv and names it). class_names must be set and every label added must be below
  // their count; box_classes is set exactly when boxes were added.
  proto::ShardManifest finish(proto::ShardManifest m);

 private:
  void open_shard();
  void close_shard();
  void write(const void* data, size_t n);
  std::string dir_;
  int64_t shard_bytes_;
  FILE* tar_ = nullptr;
  std::string tar_tmp_;
  uint64_t tar_size_ = 0;
  Sha256 tar_sha_;
  std::vector<IndexRecord> records_, mask_records_;
  int masks_ = -1;  // -1: no sample yet; 0/1: samples come without/with masks
  int boxes_ = -1;  // the same for boxes
  std::string boxes_csv_;
  std::vector<proto::ShardFile> shards_;
  std::vector<std::string> tmp_files_;  // written, not yet renamed
  std::vector<int64_t> label_counts_;
  int64_t total_ = 0;
  int channels_ = -1, height_ = -1, width_ = -1;  // -1: none yet; 0: they vary
  bool finished_ = false;
};

}  // namespace deeptrain::data
