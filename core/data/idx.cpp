#include "core/data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <memory>

#include "core/error.h"

namespace deeptrain::data {
namespace {

bool has_gzip_magic(const std::vector<uint8_t>& b, size_t at = 0) {
  return b.size() >= at + 2 && b[at] == 0x1f && b[at + 1] == 0x8b;
}

std::vector<uint8_t> read_raw(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), std::fclose);
  if (!f) fail_input("{}: cannot open: {}", path, std::strerror(errno));
  std::vector<uint8_t> out;
  uint8_t chunk[1 << 16];
  size_t n;
  while ((n = std::fread(chunk, 1, sizeof chunk, f.get())) > 0)
    out.insert(out.end(), chunk, chunk + n);
  if (std::ferror(f.get())) fail_input("{}: read error: {}", path, std::strerror(errno));
  return out;
}

// Inflates one or more concatenated gzip members (what `gzip` itself accepts).
std::vector<uint8_t> gunzip(const std::string& path, const std::vector<uint8_t>& in) {
  if (in.size() > UINT_MAX) fail_input("{}: gzip file over 4 GiB is not supported", path);
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) fail("{}: zlib inflateInit2 failed", path);
  std::unique_ptr<z_stream, int (*)(z_stream*)> guard(&zs, inflateEnd);
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = static_cast<uInt>(in.size());

  // The gzip trailer holds the uncompressed size mod 2^32: a good first guess for the buffer.
  // Capped at 32x the input, so a cut or corrupt file cannot ask for gigabytes up front.
  size_t n = in.size();
  size_t hint = n >= 4 ? (size_t(in[n - 4]) | size_t(in[n - 3]) << 8 | size_t(in[n - 2]) << 16 |
                          size_t(in[n - 1]) << 24)
                       : 0;
  hint = std::min(hint, 32 * n);
  std::vector<uint8_t> out(std::max<size_t>(hint, 1 << 16) + 1);
  size_t produced = 0;
  for (;;) {
    if (produced == out.size()) out.resize(out.size() * 2);
    zs.next_out = out.data() + produced;
    zs.avail_out = static_cast<uInt>(std::min<size_t>(out.size() - produced, UINT_MAX));
    uInt before = zs.avail_out;
    int ret = inflate(&zs, Z_NO_FLUSH);
    produced += before - zs.avail_out;
    if (ret == Z_STREAM_END) {
      if (zs.avail_in == 0) break;
      size_t at = in.size() - zs.avail_in;
      if (!has_gzip_magic(in, at))
        fail_input("{}: corrupted gzip file: {} bytes of trailing garbage after the gzip stream",
                   path, zs.avail_in);
      inflateReset(&zs);  // next member
    } else if (ret == Z_OK) {
      continue;
    } else if (ret == Z_BUF_ERROR && zs.avail_in == 0) {
      fail_input("{}: truncated gzip file: the compressed stream ends early ({} bytes read, {} "
                 "bytes decompressed)", path, in.size(), produced);
    } else {
      fail_input("{}: corrupted gzip file: {}", path, zs.msg ? zs.msg : zError(ret));
    }
  }
  out.resize(produced);
  return out;
}

const char* idx_type_name(uint8_t t) {
  switch (t) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "short";
    case 0x0C: return "int";
    case 0x0D: return "float";
    case 0x0E: return "double";
  }
  return "unknown";
}

std::string dims_str(const std::vector<int64_t>& dims) {
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? " x " : "") + std::to_string(dims[i]);
  return s;
}

}  // namespace

std::vector<uint8_t> read_file_content(const std::string& path, bool* was_gzip) {
  std::vector<uint8_t> raw = read_raw(path);
  bool gz = has_gzip_magic(raw);
  if (was_gzip) *was_gzip = gz;
  return gz ? gunzip(path, raw) : raw;
}

IdxArray parse_idx(const std::string& path, std::vector<uint8_t> content, bool gzipped) {
  const char* has = gzipped ? "decompressed file has" : "file has";
  const size_t size = content.size();
  if (size < 4)
    fail_input("{}: truncated: not even an IDX magic number ({} has {} bytes)", path, has, size);
  uint32_t magic = uint32_t(content[0]) << 24 | uint32_t(content[1]) << 16 |
                   uint32_t(content[2]) << 8 | content[3];
  if (content[0] != 0 || content[1] != 0 || content[3] == 0)
    fail_input("{}: not an IDX file: magic number 0x{:08X}, expected 0x00000801 (labels) or "
               "0x00000803 (images)", path, magic);
  if (content[2] != 0x08)
    fail_input("{}: IDX element type 0x{:02X} ({}) is not supported; only unsigned byte (0x08) "
               "files are (magic 0x{:08X})", path, content[2], idx_type_name(content[2]), magic);

  const int ndims = content[3];
  const size_t header = 4 + 4 * size_t(ndims);
  if (size < header)
    fail_input("{}: truncated: the header of a {}-d IDX file is {} bytes, {} {} bytes", path,
               ndims, header, has, size);
  IdxArray a;
  int64_t items = 1;
  for (int i = 0; i < ndims; ++i) {
    const uint8_t* p = &content[4 + 4 * i];
    int64_t d = int64_t(uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]);
    a.dims.push_back(d);
    // Guard the product before multiplying; anything this large cannot match a real file.
    if (d != 0 && items > (int64_t(1) << 50) / d)
      fail_input("{}: header dims {} are implausibly large", path, dims_str(a.dims));
    items *= d;
  }
  const size_t expected = header + size_t(items);
  if (size != expected)
    fail_input("{}: {}: header says {} items ({} bytes), {} {} bytes", path,
               size < expected ? "truncated" : "trailing data", dims_str(a.dims), expected, has,
               size);
  // Strip the header in place: one memmove, no second buffer.
  content.erase(content.begin(), content.begin() + header);
  a.bytes = std::move(content);
  return a;
}

IdxArray read_idx(const std::string& path) {
  bool gz = false;
  std::vector<uint8_t> content = read_file_content(path, &gz);
  return parse_idx(path, std::move(content), gz);
}

}  // namespace deeptrain::data
