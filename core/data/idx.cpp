#include "core/data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <memory>

#include "core/error.h"
#include "core/io/read_file.h"

namespace deeptrain::data {
namespace {

bool has_gzip_magic(const std::vector<uint8_t>& b, size_t at = 0) {
  return b.size() >= at + 2 && b[at] == 0x1f && b[at + 1] == 0x8b;
}

const char* idx_type_name(uint8_t t);
std::string dims_str(const std::vector<int64_t>& dims);

// The magic number (4 bytes at p): only unsigned-byte IDX is read.
void check_idx_magic(const std::string& path, const uint8_t* p) {
  const uint32_t magic = uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
  if (p[0] != 0 || p[1] != 0 || p[3] == 0)
    fail_input("{}: not an IDX file: magic number 0x{:08X}, expected 0x00000801 (labels) or "
               "0x00000803 (images)", path, magic);
  if (p[2] != 0x08)
    fail_input("{}: IDX element type 0x{:02X} ({}) is not supported; only unsigned byte (0x08) "
               "files are (magic 0x{:08X})", path, p[2], idx_type_name(p[2]), magic);
}

// The dims (p: a header of 4 + 4 * p[3] bytes, magic checked) and the file's whole size,
// header + elements, which must stay within kMaxIdxBytes: checked before the product can
// overflow, and before anything is allocated for the elements.
size_t idx_dims(const std::string& path, const uint8_t* p, std::vector<int64_t>& dims) {
  const int ndims = p[3];
  const size_t header = 4 + 4 * size_t(ndims);
  uint64_t items = 1;
  for (int i = 0; i < ndims; ++i) {
    const uint8_t* d = p + 4 + 4 * i;
    dims.push_back(int64_t(uint32_t(d[0]) << 24 | uint32_t(d[1]) << 16 | uint32_t(d[2]) << 8 | d[3]));
    const uint64_t dim = uint64_t(dims.back());
    if (dim != 0 && items > (kMaxIdxBytes - header) / dim)
      fail_input("{}: header dims {}{} claim more than {} bytes, the limit of an IDX file here "
                 "(MNIST's largest file has 47 MB)", path, dims_str(dims),
                 i + 1 < ndims ? " x ..." : "", kMaxIdxBytes);
    items *= dim;
  }
  return header + size_t(items);
}

std::vector<uint8_t> read_raw(const std::string& path, bool* gz) {
  // Neither a plain file over the limit nor a gzip'ed one (which is never larger than what it
  // holds, give or take its headers) can be a valid IDX file: refused before reading.
  std::vector<uint8_t> out = io::read_file_bytes(path, kMaxIdxBytes, "an IDX file");
  *gz = has_gzip_magic(out);
  return out;
}

// Inflates one or more concatenated gzip members (what `gzip` itself accepts), reading the IDX
// header from the first bytes that come out: inflation stops, with an InputError, as soon as
// the content is longer than that header says (header + elements), so a small file of
// deflated zeros cannot fill memory. The output grows with what actually arrives.
std::vector<uint8_t> gunzip_idx(const std::string& path, const std::vector<uint8_t>& in) {
  if (in.size() > UINT_MAX) fail_input("{}: gzip file over 4 GiB is not supported", path);
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) fail("{}: zlib inflateInit2 failed", path);
  std::unique_ptr<z_stream, int (*)(z_stream*)> guard(&zs, inflateEnd);
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = static_cast<uInt>(in.size());

  std::vector<uint8_t> out;
  std::vector<int64_t> dims;
  size_t expected = 0;  // header + elements, once the header has arrived
  uint8_t chunk[1 << 16];
  for (;;) {
    zs.next_out = chunk;
    zs.avail_out = sizeof chunk;
    int ret = inflate(&zs, Z_NO_FLUSH);
    out.insert(out.end(), chunk, chunk + (sizeof chunk - zs.avail_out));
    if (expected == 0 && out.size() >= 4) {
      check_idx_magic(path, out.data());
      if (out.size() >= 4 + 4 * size_t(out[3])) {
        expected = idx_dims(path, out.data(), dims);
        // Deflate expands at most 1032:1: no more is reserved than the input can hold.
        out.reserve(std::min<uint64_t>(expected, 1032 * uint64_t(in.size()) + 64) + 1);
      }
    }
    if (expected != 0 && out.size() > expected)
      fail_input("{}: trailing data: header says {} items ({} bytes), the decompressed stream "
                 "holds more (stopped reading after {} bytes)", path, dims_str(dims), expected,
                 out.size());
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
                 "bytes decompressed)", path, in.size(), out.size());
    } else {
      fail_input("{}: corrupted gzip file: {}", path, zs.msg ? zs.msg : zError(ret));
    }
  }
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
  bool gz = false;
  std::vector<uint8_t> raw = read_raw(path, &gz);
  if (was_gzip) *was_gzip = gz;
  return gz ? gunzip_idx(path, raw) : raw;
}

IdxArray parse_idx(const std::string& path, std::vector<uint8_t> content, bool gzipped) {
  const char* has = gzipped ? "decompressed file has" : "file has";
  const size_t size = content.size();
  if (size < 4)
    fail_input("{}: truncated: not even an IDX magic number ({} {} bytes)", path, has, size);
  check_idx_magic(path, content.data());
  const int ndims = content[3];
  const size_t header = 4 + 4 * size_t(ndims);
  if (size < header)
    fail_input("{}: truncated: the header of a {}-d IDX file is {} bytes, {} {} bytes", path,
               ndims, header, has, size);
  IdxArray a;
  const size_t expected = idx_dims(path, content.data(), a.dims);
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
