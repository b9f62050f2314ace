#pragma once
// Reading a whole file: the one reader behind every reader of whole files (configs, weights
// files, checkpoint manifests, IDX files, TFRecord files), so that each error names the file.
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace deeptrain::io {

inline constexpr uint64_t kNoSizeLimit = std::numeric_limits<uint64_t>::max();

// The file's bytes, read in binary. Throws InputError "<path>: cannot open: <reason>" or
// "<path>: read error: <reason>"; a regular file over max_bytes is refused before anything is
// read: "<path>: N bytes, over the limit of M bytes for <what>".
std::string read_file(const std::string& path, uint64_t max_bytes = kNoSizeLimit,
                      std::string_view what = "this file");
// The same bytes as a byte vector (the data readers' buffers).
std::vector<uint8_t> read_file_bytes(const std::string& path, uint64_t max_bytes = kNoSizeLimit,
                                     std::string_view what = "this file");

}  // namespace deeptrain::io
