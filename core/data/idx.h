#pragma once
// IDX files (the MNIST container format): a big-endian header of magic number and dims, then
// the raw elements. Files may be plain or gzip'ed; the gzip magic decides, not the extension.
#include <cstdint>
#include <string>
#include <vector>

namespace deeptrain::data {

struct IdxArray {
  std::vector<int64_t> dims;   // e.g. {60000, 28, 28}
  std::vector<uint8_t> bytes;  // the payload, product(dims) unsigned bytes, header stripped
};

// The most an IDX file may hold, header and elements (uncompressed): 4 GiB, far above MNIST's
// largest file (47 MB). Dims that multiply to more are refused before anything is allocated.
constexpr uint64_t kMaxIdxBytes = uint64_t(4) << 30;

// The whole content of an IDX file, gunzipped when it starts with the gzip magic 0x1f8b.
// Memory is bounded by what the IDX header promises: a gzip stream's header (magic, dims) is
// checked as soon as it is inflated, and inflation stops with an InputError once the content
// is longer than header + elements; a file over kMaxIdxBytes is refused before it is read.
// Throws InputError (naming the path) when unreadable, when the gzip stream is corrupt or cut,
// or when the header is not an unsigned-byte IDX header (parse_idx's messages).
std::vector<uint8_t> read_file_content(const std::string& path, bool* was_gzip = nullptr);

// Parses IDX content already in memory; `path` and `gzipped` only word the error messages.
// Only unsigned-byte data (type 0x08) is supported. The payload must match the dims exactly.
IdxArray parse_idx(const std::string& path, std::vector<uint8_t> content, bool gzipped = false);

// read_file_content + parse_idx.
IdxArray read_idx(const std::string& path);

}  // namespace deeptrain::data
