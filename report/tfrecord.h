#pragma once
// TFRecord framing, the container of TensorBoard event files: each record is
//   uint64 length | uint32 masked CRC-32C of those 8 bytes | data | uint32 masked CRC-32C of data
// all little-endian.
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace deeptrain::report {

// One framed record.
std::string tfrecord_frame(std::string_view data);

// Appends records to a new file (an existing one is truncated). Errors name the path.
class TfRecordWriter {
 public:
  explicit TfRecordWriter(std::string path);
  ~TfRecordWriter();
  TfRecordWriter(const TfRecordWriter&) = delete;
  TfRecordWriter& operator=(const TfRecordWriter&) = delete;
  void write(std::string_view data);
  void flush();  // hands buffered records to the OS, so a reader sees them now
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

// The records of `bytes`; a bad length or data CRC, or a truncated record, throws InputError
// naming `origin`, the record's index and its byte offset.
std::vector<std::string> parse_tfrecords(std::string_view bytes, const std::string& origin);
std::vector<std::string> read_tfrecords(const std::string& path);

}  // namespace deeptrain::report
