#include "core/data/shard_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/io/atomic_file.h"

namespace deeptrain::data {
namespace fs = std::filesystem;

ShardWriter::ShardWriter(std::string dir, int64_t shard_bytes)
    : dir_(std::move(dir)), shard_bytes_(shard_bytes) {
  DT_CHECK(shard_bytes > 0, "shard_bytes {}", shard_bytes);
  std::error_code ec;
  if (fs::exists(fs::path(dir_) / kManifestName, ec))
    fail_input("{}: already a packed data set ({} exists); pack into another directory or remove "
               "it first", dir_, kManifestName);
  fs::create_directories(dir_, ec);
  if (ec) fail_input("{}: cannot create the output directory: {}", dir_, ec.message());
}

ShardWriter::~ShardWriter() {
  if (tar_) std::fclose(tar_);
  if (finished_) return;
  std::error_code ec;
  for (const std::string& f : tmp_files_) fs::remove(f, ec);
}

void ShardWriter::write(const void* data, size_t n) {
  if (n && std::fwrite(data, 1, n, tar_) != n)
    fail("{}: write error: {}", tar_tmp_, std::strerror(errno));
  tar_sha_.update(data, n);
  tar_size_ += n;
}

void ShardWriter::open_shard() {
  tar_tmp_ = (fs::path(dir_) / (shard_name(int64_t(shards_.size()), "tar") + ".tmp")).string();
  tmp_files_.push_back(tar_tmp_);
  tar_ = std::fopen(tar_tmp_.c_str(), "wb");
  if (!tar_) fail_input("{}: cannot create: {}", tar_tmp_, std::strerror(errno));
  tar_size_ = 0;
  tar_sha_ = Sha256();
  records_.clear();
  mask_records_.clear();
}

void ShardWriter::close_shard() {
  static const char zeros[2 * kTarBlock] = {};
  write(zeros, sizeof zeros);  // tar's end-of-archive marker
  if (std::fflush(tar_) != 0 || ::fsync(fileno(tar_)) != 0)
    fail("{}: write error: {}", tar_tmp_, std::strerror(errno));
  std::fclose(tar_);
  tar_ = nullptr;
  const int64_t i = int64_t(shards_.size());
  proto::ShardFile s;
  s.set_tar(shard_name(i, "tar"));
  s.set_index(shard_name(i, "idx"));
  s.set_first_sample(total_ - int64_t(records_.size()));
  s.set_num_samples(int64_t(records_.size()));
  s.set_tar_bytes(int64_t(tar_size_));
  s.set_tar_sha256(tar_sha_.hex());
  const std::string index = encode_index(records_, tar_size_);
  s.set_index_sha256(sha256_hex(index.data(), index.size()));
  const std::string index_tmp = (fs::path(dir_) / (s.index() + ".tmp")).string();
  tmp_files_.push_back(index_tmp);
  io::write_file_atomic(index_tmp, index);
  if (masks_ == 1) {
    s.set_mask_index(shard_name(i, "midx"));
    const std::string masks = encode_index(mask_records_, tar_size_);
    s.set_mask_index_sha256(sha256_hex(masks.data(), masks.size()));
    const std::string masks_tmp = (fs::path(dir_) / (s.mask_index() + ".tmp")).string();
    tmp_files_.push_back(masks_tmp);
    io::write_file_atomic(masks_tmp, masks);
  }
  shards_.push_back(std::move(s));
}

void ShardWriter::add(const std::string& encoded, ImageFormat format, int32_t label, int channels,
                      int height, int width, const std::string* mask,
                      const std::vector<Box>* boxes) {
  DT_CHECK(format != ImageFormat::unknown && label >= 0, "add: format/label {}", label);
  DT_CHECK(masks_ == -1 || masks_ == int(mask != nullptr), "add: a pack's samples all have masks or none does");
  masks_ = int(mask != nullptr);
  DT_CHECK(boxes_ == -1 || boxes_ == int(boxes != nullptr), "add: a pack's samples all have boxes or none does");
  boxes_ = int(boxes != nullptr);
  if (boxes_ == 1 && boxes_csv_.empty()) boxes_csv_ = "sample,label,x0,y0,x1,y1\n";
  if (boxes)
    for (const Box& b : *boxes) boxes_csv_ += fmt::format("{},{},{},{},{},{}\n", total_, b.label, b.x0, b.y0, b.x1, b.y1);
  if (!tar_) open_shard();
  const std::string key = sample_key(total_);
  const std::string image_header = tar_header(key + "." + image_format_extension(format), encoded.size());
  write(image_header.data(), image_header.size());
  records_.push_back({tar_size_, encoded.size(), label, crc32_of(encoded)});
  static const char zeros[kTarBlock] = {};
  write(encoded.data(), encoded.size());
  write(zeros, tar_padding(encoded.size()));
  const std::string cls = std::to_string(label);
  const std::string cls_header = tar_header(key + ".cls", cls.size());
  write(cls_header.data(), cls_header.size());
  write(cls.data(), cls.size());
  write(zeros, tar_padding(cls.size()));
  if (mask) {
    const std::string mask_header = tar_header(key + ".mask.png", mask->size());
    write(mask_header.data(), mask_header.size());
    mask_records_.push_back({tar_size_, mask->size(), 0, crc32_of(*mask)});
    write(mask->data(), mask->size());
    write(zeros, tar_padding(mask->size()));
  }
  if (size_t(label) >= label_counts_.size()) label_counts_.resize(size_t(label) + 1);
  ++label_counts_[size_t(label)];
  auto same = [](int& kept, int v) { kept = kept == -1 ? v : (kept == v ? v : 0); };
  same(channels_, channels);
  same(height_, height);
  same(width_, width);
  ++total_;
  if (int64_t(tar_size_) >= shard_bytes_) close_shard();
}

proto::ShardManifest ShardWriter::finish(proto::ShardManifest m) {
  if (tar_) close_shard();
  if (total_ == 0) fail_input("{}: nothing to pack: no image was read", dir_);
  if (label_counts_.size() > size_t(m.class_names_size()))
    fail_input("{}: label {} but only {} class names", dir_, label_counts_.size() - 1,
               m.class_names_size());
  DT_CHECK((masks_ == 1) == (m.mask_classes() > 0), "finish: masks {} with mask_classes {}", masks_,
           m.mask_classes());
  DT_CHECK((boxes_ == 1) == (m.box_classes() > 0), "finish: boxes {} with box_classes {}", boxes_,
           m.box_classes());
  if (boxes_ == 1) {
    m.set_boxes(kBoxesName);
    m.set_boxes_sha256(sha256_hex(boxes_csv_.data(), boxes_csv_.size()));
    const std::string tmp = (fs::path(dir_) / (std::string(kBoxesName) + ".tmp")).string();
    tmp_files_.push_back(tmp);
    io::write_file_atomic(tmp, boxes_csv_);
  }
  m.set_format_version(kShardFormatVersion);
  m.set_num_samples(total_);
  m.clear_class_counts();
  for (int c = 0; c < m.class_names_size(); ++c)
    m.add_class_counts(size_t(c) < label_counts_.size() ? label_counts_[size_t(c)] : 0);
  m.set_channels(std::max(channels_, 0));
  m.set_height(std::max(height_, 0));
  m.set_width(std::max(width_, 0));
  m.clear_shards();
  for (const proto::ShardFile& s : shards_) *m.add_shards() = s;
  for (const std::string& tmp : tmp_files_) {
    const std::string final_name = tmp.substr(0, tmp.size() - 4);
    std::error_code ec;
    fs::rename(tmp, final_name, ec);
    if (ec) fail("{}: cannot rename to {}: {}", tmp, final_name, ec.message());
  }
  tmp_files_.clear();
  io::write_file_atomic((fs::path(dir_) / kManifestName).string(), manifest_to_json(m));
  finished_ = true;
  return m;
}

}  // namespace deeptrain::data
