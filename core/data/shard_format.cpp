#include "core/data/shard_format.h"

#include <google/protobuf/util/json_util.h>

#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/io/read_file.h"

namespace deeptrain::data {
namespace fs = std::filesystem;
namespace {

constexpr char kIndexMagic[8] = {'D', 'T', 'S', 'H', 'I', 'D', 'X', '1'};
constexpr size_t kIndexHeader = 24, kRecordBytes = 24;

void put_le(std::string& s, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s.push_back(char((v >> (8 * i)) & 0xff));
}
uint64_t get_le(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t(uint8_t(p[i])) << (8 * i);
  return v;
}

}  // namespace

std::string shard_name(int64_t shard, const char* ext) {
  return fmt::format("shard-{:05d}.{}", shard, ext);
}
std::string sample_key(int64_t global_index) { return fmt::format("{:09d}", global_index); }

std::string tar_header(const std::string& name, uint64_t size) {
  DT_CHECK(name.size() < 100, "tar member name '{}' too long", name);
  std::string h(kTarBlock, '\0');
  std::memcpy(&h[0], name.data(), name.size());
  auto field = [&](size_t at, size_t len, const std::string& v) { std::memcpy(&h[at], v.data(), std::min(v.size(), len)); };
  field(100, 8, "0000644");
  field(108, 8, "0000000");  // uid
  field(116, 8, "0000000");  // gid
  field(124, 12, fmt::format("{:011o}", size));
  field(136, 12, fmt::format("{:011o}", 0));  // mtime 0: a pack's bytes depend on its input only
  h[156] = '0';             // a regular file
  field(257, 6, std::string("ustar\0", 6));
  field(263, 2, "00");
  // The checksum is the byte sum with the checksum field itself read as spaces.
  std::memset(&h[148], ' ', 8);
  unsigned sum = 0;
  for (char c : h) sum += uint8_t(c);
  field(148, 8, fmt::format("{:06o}", sum) + std::string("\0 ", 2));
  return h;
}

std::string encode_index(const std::vector<IndexRecord>& records, uint64_t tar_bytes) {
  std::string s(kIndexMagic, 8);
  put_le(s, tar_bytes, 8);
  put_le(s, records.size(), 8);
  for (const IndexRecord& r : records) {
    put_le(s, r.offset, 8);
    put_le(s, r.size, 8);
    put_le(s, uint32_t(r.label), 4);
    put_le(s, r.crc32, 4);
  }
  return s;
}

std::vector<IndexRecord> decode_index(const std::string& path, const std::string& b,
                                      uint64_t* tar_bytes) {
  if (b.size() < kIndexHeader || std::memcmp(b.data(), kIndexMagic, 8) != 0)
    fail_input("{}: not a deeptrain shard index (no DTSHIDX1 header)", path);
  *tar_bytes = get_le(b.data() + 8, 8);
  const uint64_t count = get_le(b.data() + 16, 8);
  if (count > (b.size() - kIndexHeader) / kRecordBytes || b.size() != kIndexHeader + count * kRecordBytes)
    fail_input("{}: {} bytes, but its header promises {} records ({} bytes): truncated or corrupt",
               path, b.size(), count, kIndexHeader + count * kRecordBytes);
  std::vector<IndexRecord> r(count);
  for (uint64_t i = 0; i < count; ++i) {
    const char* p = b.data() + kIndexHeader + i * kRecordBytes;
    r[i] = {get_le(p, 8), get_le(p + 8, 8), int32_t(uint32_t(get_le(p + 16, 4))),
            uint32_t(get_le(p + 20, 4))};
    if (r[i].offset > *tar_bytes || r[i].size > *tar_bytes - r[i].offset)
      fail_input("{}: record {} (offset {}, {} bytes) lies outside its tar of {} bytes", path, i,
                 r[i].offset, r[i].size, *tar_bytes);
  }
  return r;
}

std::string manifest_to_json(const proto::ShardManifest& m) {
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.preserve_proto_field_names = true;
  std::string s;
  const auto status = google::protobuf::util::MessageToJsonString(m, &s, o);
  DT_CHECK(status.ok(), "manifest to JSON: {}", status.ToString());
  return s;
}

proto::ShardManifest read_manifest(const std::string& dir) {
  const std::string path = (fs::path(dir) / kManifestName).string();
  std::error_code ec;
  if (!fs::exists(path, ec))
    fail_input("{}: missing: {} is not a packed data set, or an unfinished pack (deeptrain pack "
               "writes the manifest last)", path, dir);
  const std::string text = io::read_file(path, uint64_t(64) << 20, "a shard manifest");
  proto::ShardManifest m;
  const auto status = google::protobuf::util::JsonStringToMessage(text, &m);
  if (!status.ok()) fail_input("{}: not a shard manifest: {}", path, status.ToString());
  if (m.format_version() != kShardFormatVersion)
    fail_input("{}: packing format version {}, this deeptrain reads version {}: re-pack the data "
               "with this deeptrain's `deeptrain pack`", path, m.format_version(),
               kShardFormatVersion);
  if (m.class_names_size() == 0 || m.class_counts_size() != m.class_names_size())
    fail_input("{}: {} class names but {} class counts", path, m.class_names_size(),
               m.class_counts_size());
  int64_t total = 0, counted = 0;
  for (const auto& s : m.shards()) {
    if (s.first_sample() != total)
      fail_input("{}: shard {} starts at sample {}, expected {}", path, s.tar(), s.first_sample(),
                 total);
    total += s.num_samples();
  }
  for (int64_t c : m.class_counts()) counted += c;
  if (total != m.num_samples() || counted != m.num_samples() || total == 0)
    fail_input("{}: num_samples {}, the shards hold {}, the class counts sum to {}{}", path,
               m.num_samples(), total, counted, total == 0 ? " (an empty set cannot be trained on)" : "");
  return m;
}

}  // namespace deeptrain::data
