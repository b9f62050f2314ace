#include "report/tfrecord.h"

#include <cerrno>
#include <cstring>

#include "core/error.h"
#include "core/io/read_file.h"
#include "report/crc32c.h"

namespace deeptrain::report {
namespace {

void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out += char((v >> (8 * i)) & 0xff);
}
uint64_t get_le(std::string_view s, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t(uint8_t(s[at + i])) << (8 * i);
  return v;
}

}  // namespace

std::string tfrecord_frame(std::string_view data) {
  std::string out;
  out.reserve(data.size() + 16);
  put_le(out, data.size(), 8);
  put_le(out, mask_crc(crc32c(out.data(), 8)), 4);
  out.append(data);
  put_le(out, mask_crc(crc32c(data)), 4);
  return out;
}

TfRecordWriter::TfRecordWriter(std::string path) : path_(std::move(path)) {
  file_ = std::fopen(path_.c_str(), "wb");
  if (!file_) fail("{}: cannot create: {}", path_, std::strerror(errno));
}

TfRecordWriter::~TfRecordWriter() {
  if (file_) std::fclose(file_);
}

void TfRecordWriter::write(std::string_view data) {
  const std::string framed = tfrecord_frame(data);
  if (std::fwrite(framed.data(), 1, framed.size(), file_) != framed.size())
    fail("{}: write failed: {}", path_, std::strerror(errno));
}

void TfRecordWriter::flush() {
  if (std::fflush(file_) != 0) fail("{}: write failed: {}", path_, std::strerror(errno));
}

std::vector<std::string> parse_tfrecords(std::string_view bytes, const std::string& origin) {
  std::vector<std::string> records;
  size_t at = 0;
  while (at < bytes.size()) {
    const size_t index = records.size();
    if (bytes.size() - at < 12)
      fail_input("{}: record {} at byte {}: truncated header", origin, index, at);
    const uint64_t length = get_le(bytes, at, 8);
    if (unmask_crc(uint32_t(get_le(bytes, at + 8, 4))) != crc32c(bytes.data() + at, 8))
      fail_input("{}: record {} at byte {}: length CRC mismatch", origin, index, at);
    if (length > bytes.size() - at - 12 || bytes.size() - at - 12 - length < 4)
      fail_input("{}: record {} at byte {}: truncated ({} data bytes announced)", origin, index,
                 at, length);
    const std::string_view data = bytes.substr(at + 12, length);
    if (unmask_crc(uint32_t(get_le(bytes, at + 12 + length, 4))) != crc32c(data))
      fail_input("{}: record {} at byte {}: data CRC mismatch", origin, index, at);
    records.emplace_back(data);
    at += 16 + length;
  }
  return records;
}

std::vector<std::string> read_tfrecords(const std::string& path) {
  return parse_tfrecords(io::read_file(path), path);
}

}  // namespace deeptrain::report
