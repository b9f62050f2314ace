#pragma once
// Writing a file so that readers see either the old contents or the new, never a torn mix:
// a crash or a full disk during a save must not destroy the previous weights or checkpoint.
#include <cstddef>
#include <string>

namespace deeptrain::io {

// Writes `path.tmp.<pid>` next to `path`, fsyncs it, renames it over `path` and fsyncs the
// directory. On failure the temporary file is removed and an Error naming the path and the
// system error is thrown; `path` is then untouched. Two threads of one process must not write
// the same path at the same time (they would share the temporary name).
void write_file_atomic(const std::string& path, const void* data, size_t n);
void write_file_atomic(const std::string& path, const std::string& contents);

}  // namespace deeptrain::io
