#include "core/io/read_file.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "core/error.h"

namespace deeptrain::io {
namespace {

// Reads in chunks until end of file, so that files whose size stat() does not know (pipes,
// /proc) are read whole too; a regular file's size only reserves the buffer.
template <class Bytes>
Bytes read_whole(const std::string& path, uint64_t max_bytes, std::string_view what) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), std::fclose);
  if (!f) fail_input("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fileno(f.get()), &st) == 0 && S_ISDIR(st.st_mode))
    fail_input("{}: cannot read: is a directory", path);
  if (st.st_size > 0 && uint64_t(st.st_size) > max_bytes)
    fail_input("{}: {} bytes, over the limit of {} bytes for {}", path, st.st_size, max_bytes, what);
  Bytes out;
  if (st.st_size > 0) out.reserve(size_t(st.st_size));
  char chunk[1 << 16];
  size_t n;
  while ((n = std::fread(chunk, 1, sizeof chunk, f.get())) > 0) {
    if (out.size() + n > max_bytes)
      fail_input("{}: over the limit of {} bytes for {}", path, max_bytes, what);
    out.insert(out.end(), chunk, chunk + n);
  }
  if (std::ferror(f.get())) fail_input("{}: read error: {}", path, std::strerror(errno));
  return out;
}

}  // namespace

std::string read_file(const std::string& path, uint64_t max_bytes, std::string_view what) {
  return read_whole<std::string>(path, max_bytes, what);
}

std::vector<uint8_t> read_file_bytes(const std::string& path, uint64_t max_bytes,
                                     std::string_view what) {
  return read_whole<std::vector<uint8_t>>(path, max_bytes, what);
}

}  // namespace deeptrain::io
