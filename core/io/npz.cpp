#include "core/io/npz.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <set>
#include <string_view>

#include "core/io/atomic_file.h"

namespace deeptrain::io {

namespace {

// ---------------------------------------------------------------------------------------------
// Little-endian fields: zip records and .npy headers are little-endian whatever the host is.

uint16_t get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }
uint32_t get32(const uint8_t* p) { return get16(p) | static_cast<uint32_t>(get16(p + 2)) << 16; }
uint64_t get64(const uint8_t* p) { return get32(p) | static_cast<uint64_t>(get32(p + 4)) << 32; }

void put16(std::string& out, uint16_t v) {
  out += static_cast<char>(v & 0xFF);
  out += static_cast<char>(v >> 8);
}
void put32(std::string& out, uint32_t v) {
  put16(out, static_cast<uint16_t>(v & 0xFFFF));
  put16(out, static_cast<uint16_t>(v >> 16));
}
void put64(std::string& out, uint64_t v) {
  put32(out, static_cast<uint32_t>(v & 0xFFFFFFFF));
  put32(out, static_cast<uint32_t>(v >> 32));
}

// ---------------------------------------------------------------------------------------------
// .npy: magic, version, header length, a Python dict literal padded with spaces, the raw data.
// https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html

constexpr std::string_view kNpyMagic("\x93NUMPY", 6);

struct NpyType {
  const char* descr;
  DType dtype;
};
// Writing uses the first entry of a dtype, so |u1 (not |b1) for u8.
constexpr NpyType kNpyTypes[] = {{"<f4", DType::f32}, {"<f8", DType::f64}, {"<i4", DType::i32},
                                 {"<i8", DType::i64}, {"|u1", DType::u8},  {"|b1", DType::u8}};

// As Python prints a shape: "()", "(16,)", "(3, 4)".
std::string numpy_shape(const std::vector<int64_t>& dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + (dims.size() == 1 ? ",)" : ")");
}

struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;
};

// Parses what numpy writes, e.g. {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
// (and the "3L" integers of old Python 2 files); anything else is rejected, not guessed at.
class NpyHeaderParser {
 public:
  NpyHeaderParser(std::string_view text, const std::string& what) : text_(text), what_(what) {}

  NpyHeader parse() {
    NpyHeader h;
    std::set<std::string> seen;
    expect('{');
    while (!accept('}')) {
      std::string key = parse_string();
      expect(':');
      if (key == "descr") {
        skip_spaces();
        if (pos_ < text_.size() && text_[pos_] == '[')
          fail_input("{}: structured (record) dtypes unsupported: {}", what_, text_);
        h.descr = parse_string();
      } else if (key == "fortran_order") {
        h.fortran_order = parse_bool();
      } else if (key == "shape") {
        h.shape = parse_shape();
      } else {
        bad("unexpected key '" + key + "'");
      }
      seen.insert(key);
      if (!accept(',')) {
        expect('}');
        break;
      }
    }
    skip_spaces();  // the padding, ending in '\n'
    if (pos_ != text_.size()) bad("text after the closing brace");
    for (const char* key : {"descr", "fortran_order", "shape"})
      if (!seen.count(key)) bad(std::string("no '") + key + "' key");
    return h;
  }

 private:
  [[noreturn]] void bad(const std::string& why) {
    fail_input("{}: malformed .npy header ({} at offset {}): {}", what_, why, pos_, text_);
  }
  void skip_spaces() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\n')) ++pos_;
  }
  bool accept(char c) {
    skip_spaces();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!accept(c)) bad(std::string("expected '") + c + "'");
  }
  std::string parse_string() {
    skip_spaces();
    char quote = pos_ < text_.size() ? text_[pos_] : '\0';
    if (quote != '\'' && quote != '"') bad("expected a quoted string");
    size_t end = text_.find(quote, pos_ + 1);
    if (end == std::string_view::npos) bad("unterminated string");
    std::string s(text_.substr(pos_ + 1, end - pos_ - 1));
    pos_ = end + 1;
    return s;
  }
  bool parse_bool() {
    skip_spaces();
    for (bool value : {true, false}) {
      std::string_view word = value ? "True" : "False";
      if (text_.substr(pos_, word.size()) == word) {
        pos_ += word.size();
        return value;
      }
    }
    bad("expected True or False");
  }
  std::vector<int64_t> parse_shape() {
    std::vector<int64_t> dims;
    expect('(');
    while (!accept(')')) {
      skip_spaces();
      size_t start = pos_;
      int64_t d = 0;
      for (; pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9'; ++pos_) {
        if (d > (INT64_MAX - 9) / 10) bad("dimension too large");
        d = d * 10 + (text_[pos_] - '0');
      }
      if (pos_ == start) bad("expected a non-negative integer");
      if (pos_ < text_.size() && text_[pos_] == 'L') ++pos_;  // Python 2 long
      dims.push_back(d);
      if (!accept(',')) {
        expect(')');
        break;
      }
    }
    return dims;
  }

  std::string_view text_;
  const std::string& what_;
  size_t pos_ = 0;
};

DType dtype_from_descr(const std::string& descr, const std::string& what) {
  for (const NpyType& t : kNpyTypes)
    if (descr == t.descr) return t.dtype;
  if (!descr.empty() && descr[0] == '>')
    fail_input("{}: big-endian dtype '{}' unsupported (save it as '<{}')", what, descr,
               descr.substr(1));
  fail_input("{}: dtype '{}' unsupported (supported: <f4 <f8 <i4 <i8 |u1 |b1)", what, descr);
}

// ---------------------------------------------------------------------------------------------
// Zip records (PKWARE APPNOTE.TXT). numpy writes every member with zip64 extra fields.

constexpr uint32_t kLocalHeaderSig = 0x04034b50;    // 30 bytes, then name and extra field
constexpr uint32_t kCentralHeaderSig = 0x02014b50;  // 46 bytes, then name, extra, comment
constexpr uint32_t kZip64EndSig = 0x06064b50;       // 56 bytes
constexpr uint32_t kZip64LocatorSig = 0x07064b50;   // 20 bytes, right before the end record
constexpr uint32_t kEndSig = 0x06054b50;            // 22 bytes, then a comment of <= 64 KiB
constexpr size_t kLocalHeaderSize = 30, kCentralHeaderSize = 46, kZip64EndSize = 56,
                 kZip64LocatorSize = 20, kEndSize = 22;
constexpr uint16_t kZip64ExtraId = 0x0001;
constexpr uint32_t kZip64Marker = 0xFFFFFFFF;  // "the real value is in the zip64 record/extra"
constexpr uint16_t kMethodStored = 0, kMethodDeflate = 8;

struct Member {
  std::string name;
  uint16_t flags = 0;
  uint16_t method = 0;
  uint32_t crc = 0;
  uint64_t compressed_size = 0;
  uint64_t size = 0;
  uint64_t local_header_offset = 0;
};

// The whole archive is held in memory: a file over max_bytes (the limit on the members' declared
// sizes too) is refused before it is read.
std::vector<uint8_t> read_whole_file(const std::string& path, uint64_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_input("cannot open '{}': {}", path, std::strerror(errno));
  std::vector<uint8_t> bytes;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && st.st_size > 0) {
    if (static_cast<uint64_t>(st.st_size) > max_bytes) {
      ::close(fd);
      fail_input("{}: {} bytes, over the limit of {} bytes for a .npz archive (read_npz's "
                 "max_bytes)", path, st.st_size, max_bytes);
    }
    bytes.reserve(static_cast<size_t>(st.st_size));
  }
  uint8_t chunk[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      fail_input("cannot read '{}': {}", path, std::strerror(err));
    }
    if (n == 0) break;
    bytes.insert(bytes.end(), chunk, chunk + n);
  }
  ::close(fd);
  return bytes;
}

// Finds the end-of-central-directory record (searching back over a possible comment), follows
// the zip64 locator if there is one, and returns every member of the central directory.
std::vector<Member> read_central_directory(const std::vector<uint8_t>& file,
                                           const std::string& path) {
  const uint8_t* p = file.data();
  const size_t size = file.size();
  size_t end_pos = SIZE_MAX;
  for (size_t back = kEndSize; back <= size && back <= kEndSize + 0xFFFF; ++back) {
    if (get32(p + size - back) == kEndSig) {
      end_pos = size - back;
      break;
    }
  }
  if (end_pos == SIZE_MAX) {
    std::string_view start(reinterpret_cast<const char*>(p), std::min<size_t>(size, 6));
    if (start == kNpyMagic) fail_input("{}: is a single .npy array, not a .npz archive", path);
    if (start.substr(0, 4) == "PK\x03\x04")
      fail_input("{}: truncated zip archive (no end-of-central-directory record)", path);
    fail_input("{}: not a zip archive (no end-of-central-directory record)", path);
  }

  uint64_t entries = get16(p + end_pos + 10);
  uint64_t cd_size = get32(p + end_pos + 12);
  uint64_t cd_offset = get32(p + end_pos + 16);
  size_t cd_limit = end_pos;  // the central directory ends where the end records begin
  const size_t locator_pos = end_pos - kZip64LocatorSize;  // if there is a locator
  if (end_pos >= kZip64LocatorSize && get32(p + locator_pos) == kZip64LocatorSig) {
    const uint64_t record = get64(p + locator_pos + 8);
    if (locator_pos < kZip64EndSize || record > locator_pos - kZip64EndSize ||
        get32(p + record) != kZip64EndSig)
      fail_input("{}: corrupt zip archive (zip64 end-of-central-directory record missing)", path);
    entries = get64(p + record + 32);
    cd_size = get64(p + record + 40);
    cd_offset = get64(p + record + 48);
    cd_limit = record;
  }
  if (cd_offset > cd_limit || cd_size > cd_limit - cd_offset)
    fail_input(
        "{}: truncated central directory ({} bytes at offset {}, but the archive has {} "
        "bytes before its end record)",
        path, cd_size, cd_offset, cd_limit);

  std::vector<Member> members;
  size_t pos = cd_offset;
  const size_t cd_end = cd_offset + cd_size;
  for (uint64_t i = 0; i < entries; ++i) {
    if (cd_end - pos < kCentralHeaderSize || get32(p + pos) != kCentralHeaderSig)
      fail_input("{}: truncated central directory (entry {} of {} missing)", path, i + 1, entries);
    const uint8_t* h = p + pos;
    size_t name_len = get16(h + 28), extra_len = get16(h + 30), comment_len = get16(h + 32);
    if (cd_end - pos - kCentralHeaderSize < name_len + extra_len + comment_len)
      fail_input("{}: truncated central directory (entry {} of {} cut short)", path, i + 1,
                 entries);
    Member m;
    m.name.assign(reinterpret_cast<const char*>(h + kCentralHeaderSize), name_len);
    m.flags = get16(h + 8);
    m.method = get16(h + 10);
    m.crc = get32(h + 16);
    m.compressed_size = get32(h + 20);
    m.size = get32(h + 24);
    m.local_header_offset = get32(h + 42);

    // Fields too large for 32 bits (or written as zip64 anyway) hold the marker; their values
    // follow in the zip64 extra field, in this fixed order.
    const uint8_t* extra = h + kCentralHeaderSize + name_len;
    for (size_t e = 0; e + 4 <= extra_len;) {
      uint16_t id = get16(extra + e), len = get16(extra + e + 2);
      if (e + 4 + len > extra_len) break;
      if (id == kZip64ExtraId) {
        const uint8_t* field = extra + e + 4;
        const uint8_t* field_end = field + len;
        for (uint64_t* value : {&m.size, &m.compressed_size, &m.local_header_offset}) {
          if (*value != kZip64Marker) continue;
          if (field_end - field < 8)
            fail_input("{}: member '{}': corrupt zip64 extra field", path, m.name);
          *value = get64(field);
          field += 8;
        }
      }
      e += 4 + len;
    }
    members.push_back(std::move(m));
    pos += kCentralHeaderSize + name_len + extra_len + comment_len;
  }
  return members;
}

// A member's bytes in order, never more than the central directory's size: stored members are
// read from the file's bytes, deflated ones (raw deflate, no zlib header, as zip stores it)
// inflated piece by piece straight into the caller's buffer. Nothing is allocated here, so a
// member that inflates to gigabytes costs no memory: reading stops at the first byte too many.
// zlib counts in 32-bit units, so large pieces are fed and drained in parts.
class MemberReader {
 public:
  MemberReader(const uint8_t* src, const Member& m, const std::string& what)
      : src_(src), m_(m), what_(what), deflate_(m.method == kMethodDeflate) {
    if (deflate_ && inflateInit2(&zs_, -15) != Z_OK) fail("{}: zlib inflateInit2 failed", what);
  }
  ~MemberReader() {
    if (deflate_) inflateEnd(&zs_);
  }
  MemberReader(const MemberReader&) = delete;
  MemberReader& operator=(const MemberReader&) = delete;

  uint64_t left() const { return m_.size - done_; }

  // The next n bytes (n <= left()) into dst. Throws when the data ends first or is corrupt.
  void read(uint8_t* dst, size_t n) {
    DT_CHECK(n <= left(), "{}: reading {} bytes, {} left", what_, n, left());
    if (!deflate_) {
      std::memcpy(dst, src_ + done_, n);
    } else {
      for (size_t got = 0; got < n;) {
        const size_t produced = inflate_some(dst + got, std::min<size_t>(n - got, UINT_MAX));
        if (produced == 0 && ended_)
          fail_input("{}: decompresses to {} bytes, but the central directory says {}", what_,
                     done_ + got, m_.size);
        got += produced;
      }
    }
    crc_ = static_cast<uint32_t>(crc32_z(crc_, dst, n));
    done_ += n;
  }

  // After the last byte the central directory promises: the member must end here (one spare
  // byte of output reveals data longer than promised), and its CRC-32 must match.
  void finish() {
    DT_CHECK(left() == 0, "{}: {} bytes left unread", what_, left());
    if (deflate_) {
      uint8_t spare;
      while (!ended_)
        if (inflate_some(&spare, 1) != 0)
          fail_input("{}: decompresses to more than the {} bytes the central directory says",
                     what_, m_.size);
    }
    if (crc_ != m_.crc)
      fail_input(
          "{}: CRC-32 mismatch (archive says {:08x}, data gives {:08x}): the file is corrupt",
          what_, m_.crc, crc_);
  }

 private:
  // One inflate call into dst (n <= UINT_MAX); returns the bytes produced. Sets ended_ at the
  // end of the deflate stream; throws on corrupt or cut data.
  size_t inflate_some(uint8_t* dst, size_t n) {
    if (ended_) return 0;
    zs_.next_in = const_cast<uint8_t*>(src_) + in_pos_;
    zs_.avail_in = static_cast<uInt>(std::min<uint64_t>(m_.compressed_size - in_pos_, UINT_MAX));
    zs_.next_out = dst;
    zs_.avail_out = static_cast<uInt>(n);
    const uInt in_before = zs_.avail_in;
    const int ret = inflate(&zs_, Z_NO_FLUSH);
    in_pos_ += in_before - zs_.avail_in;
    const size_t produced = n - zs_.avail_out;
    if (ret == Z_STREAM_END) {
      ended_ = true;
    } else if (ret == Z_BUF_ERROR && in_pos_ == m_.compressed_size) {
      fail_input("{}: corrupt deflate data (the compressed data ends early)", what_);
    } else if ((ret != Z_OK && ret != Z_BUF_ERROR) || (produced == 0 && in_before == zs_.avail_in)) {
      fail_input("{}: corrupt deflate data ({})", what_, zs_.msg ? zs_.msg : zError(ret));
    }
    return produced;
  }

  const uint8_t* src_;
  const Member& m_;
  const std::string& what_;
  const bool deflate_;
  z_stream zs_{};
  uint64_t in_pos_ = 0, done_ = 0;
  bool ended_ = false;
  uint32_t crc_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Writing: stored members, always with zip64 fields (as numpy does), dated 1980-01-01 so the
// same arrays always give the same bytes.

constexpr uint16_t kZip64Version = 45;  // "version needed to extract" for zip64
constexpr uint16_t kMadeByUnix = 3 << 8 | kZip64Version;
constexpr uint16_t kUtf8NameFlag = 1 << 11;    // names are UTF-8, not code page 437
constexpr uint16_t kDosDate1980 = 1 << 5 | 1;  // 1980-01-01; the time field is 00:00
constexpr uint32_t kUnixFileMode644 = 0100644u << 16;

// The fields that a local and a central header share, from "version needed" to the extra
// field's length: stored, UTF-8 names, 1980-01-01, sizes in the zip64 extra field.
void put_shared_header_fields(std::string& out, const std::string& name, uint32_t crc,
                              uint16_t extra_length) {
  put16(out, kZip64Version);
  put16(out, kUtf8NameFlag);
  put16(out, kMethodStored);
  put16(out, 0);  // time 00:00
  put16(out, kDosDate1980);
  put32(out, crc);
  put32(out, kZip64Marker);  // compressed size
  put32(out, kZip64Marker);  // size
  put16(out, static_cast<uint16_t>(name.size()));
  put16(out, extra_length);
}

void append_local_header(std::string& zip, const std::string& name, uint32_t crc, uint64_t size) {
  put32(zip, kLocalHeaderSig);
  put_shared_header_fields(zip, name, crc, 4 + 16);
  zip += name;
  put16(zip, kZip64ExtraId);
  put16(zip, 16);
  put64(zip, size);
  put64(zip, size);  // compressed size: stored, so the same
}

void append_central_header(std::string& cd, const std::string& name, uint32_t crc, uint64_t size,
                           uint64_t local_header_offset) {
  put32(cd, kCentralHeaderSig);
  put16(cd, kMadeByUnix);
  put_shared_header_fields(cd, name, crc, 4 + 24);
  put16(cd, 0);       // comment length
  put16(cd, 0);       // disk number
  put16(cd, 0);       // internal attributes
  put32(cd, kUnixFileMode644);
  put32(cd, kZip64Marker);  // local header offset
  cd += name;
  put16(cd, kZip64ExtraId);
  put16(cd, 24);
  put64(cd, size);
  put64(cd, size);
  put64(cd, local_header_offset);
}

void append_end_records(std::string& zip, uint64_t entries, uint64_t cd_offset, uint64_t cd_size) {
  const uint64_t zip64_end_offset = zip.size();
  put32(zip, kZip64EndSig);
  put64(zip, kZip64EndSize - 12);  // size of the rest of this record
  put16(zip, kMadeByUnix);
  put16(zip, kZip64Version);
  put32(zip, 0);  // this disk
  put32(zip, 0);  // disk of the central directory
  put64(zip, entries);
  put64(zip, entries);
  put64(zip, cd_size);
  put64(zip, cd_offset);

  put32(zip, kZip64LocatorSig);
  put32(zip, 0);  // disk of the zip64 end record
  put64(zip, zip64_end_offset);
  put32(zip, 1);  // number of disks

  put32(zip, kEndSig);
  put16(zip, 0);
  put16(zip, 0);
  put16(zip, 0xFFFF);  // entries: see the zip64 record
  put16(zip, 0xFFFF);
  put32(zip, kZip64Marker);  // central directory size
  put32(zip, kZip64Marker);  // central directory offset
  put16(zip, 0);             // comment length
}

}  // namespace

// -----------------------------------------------------------------------------------------------

namespace {

// Where a .npy's header text starts and how long it is, from its first 10 bytes (12 for
// versions 2.0 and 3.0; p holds them when `total`, the .npy's size, is that large).
struct NpyPrefix {
  size_t prefix = 0, header_len = 0;
};
NpyPrefix npy_prefix(const uint8_t* p, uint64_t total, const std::string& what) {
  if (total < 10 || std::string_view(reinterpret_cast<const char*>(p), 6) != kNpyMagic)
    fail_input("{}: not a .npy array (no \\x93NUMPY magic)", what);
  const int major = p[6], minor = p[7];
  NpyPrefix r;
  if (major == 1) {
    r.prefix = 10;
    r.header_len = get16(p + 8);
  } else if (major == 2 || major == 3) {
    if (total < 12) fail_input("{}: truncated .npy header", what);
    r.prefix = 12;
    r.header_len = get32(p + 8);
  } else {
    fail_input("{}: .npy format version {}.{} unsupported (supported: 1.0, 2.0, 3.0)", what, major,
               minor);
  }
  if (r.header_len > total - r.prefix)
    fail_input("{}: truncated .npy header ({} bytes promised, {} present)", what, r.header_len,
               total - r.prefix);
  return r;
}

// What the header text describes: the array's shape and dtype and the bytes of its data, the
// product computed without overflow. Nothing is allocated for it.
struct NpyLayout {
  NpyHeader h;
  DType dtype;
  uint64_t data_bytes = 0;
};
NpyLayout npy_layout(std::string_view text, const std::string& what) {
  NpyLayout l;
  l.h = NpyHeaderParser(text, what).parse();
  // Column-major data differs from row-major only if two or more dimensions exceed 1.
  const auto long_dims =
      std::count_if(l.h.shape.begin(), l.h.shape.end(), [](int64_t d) { return d > 1; });
  if (l.h.fortran_order && long_dims > 1)
    fail_input("{}: fortran_order arrays unsupported (save np.ascontiguousarray(a) instead)", what);
  l.dtype = dtype_from_descr(l.h.descr, what);
  l.data_bytes = dtype_size(l.dtype);
  for (int64_t d : l.h.shape)
    if (__builtin_mul_overflow(l.data_bytes, static_cast<uint64_t>(d), &l.data_bytes))
      fail_input("{}: shape {} is too large", what, numpy_shape(l.h.shape));
  return l;
}

}  // namespace

Tensor parse_npy(const void* data, size_t n, const std::string& what) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  const NpyPrefix np = npy_prefix(p, n, what);
  const NpyLayout l =
      npy_layout(std::string_view(reinterpret_cast<const char*>(p + np.prefix), np.header_len), what);
  const size_t data_bytes = n - np.prefix - np.header_len;
  if (l.data_bytes != data_bytes)
    fail_input("{}: header says shape {} '{}' ({} bytes) but the data has {} bytes", what,
               numpy_shape(l.h.shape), l.h.descr, l.data_bytes, data_bytes);
  Tensor t = Tensor::empty(Shape(l.h.shape), l.dtype);
  if (data_bytes) std::memcpy(t.raw(), p + np.prefix + np.header_len, data_bytes);
  return t;
}

std::string format_npy(const Tensor& t, const std::string& what) {
  const char* descr = nullptr;
  for (const NpyType& nt : kNpyTypes)
    if (nt.dtype == t.dtype() && !descr) descr = nt.descr;
  if (!descr)
    fail("{}: dtype {} cannot be written to .npy (supported: f32 f64 i32 i64 u8)", what,
         dtype_name(t.dtype()));
  if (!t.defined()) fail("{}: an undefined tensor", what);
  if (t.device() != Device::cpu) fail("{}: a device tensor; copy it to the host first", what);
  if (t.layout() != Layout::plain)
    fail("{}: a {} tensor; convert it to the plain layout first", what, layout_name(t.layout()));

  std::string dict = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}", descr,
                                 numpy_shape(t.shape().dims()));
  // Like numpy: pad with spaces and a final '\n' so the data starts at a multiple of 64 bytes.
  // Version 1.0 has a 16-bit header length; a header too long for it (a rank in the thousands)
  // needs version 2.0.
  auto padded_length = [&](size_t prefix) {
    return (prefix + dict.size() + 1 + 63) / 64 * 64 - prefix;
  };
  const int major = padded_length(10) <= 0xFFFF ? 1 : 2;
  const size_t header_len = padded_length(major == 1 ? 10 : 12);
  dict.append(header_len - dict.size() - 1, ' ');
  dict += '\n';

  std::string out(kNpyMagic);
  out += static_cast<char>(major);
  out += '\0';
  if (major == 1)
    put16(out, static_cast<uint16_t>(dict.size()));
  else
    put32(out, static_cast<uint32_t>(dict.size()));
  out += dict;
  if (t.nbytes()) out.append(static_cast<const char*>(t.raw()), t.nbytes());
  return out;
}

std::map<std::string, Tensor> read_npz(const std::string& path, uint64_t max_bytes) {
  const std::vector<uint8_t> file = read_whole_file(path, max_bytes);
  const std::vector<Member> members = read_central_directory(file, path);
  // The sizes the directory declares, against the limit, before anything is inflated: a few
  // megabytes of deflated zeros can claim gigabytes.
  uint64_t declared = 0;
  for (const Member& m : members) {
    if (m.size > max_bytes - declared)
      fail_input("{}: member '{}' declares {} bytes uncompressed, which takes the archive over "
                 "the limit of {} bytes (read_npz's max_bytes); refused before inflating",
                 path, m.name, m.size, max_bytes);
    declared += m.size;
  }
  std::map<std::string, Tensor> arrays;
  for (const Member& m : members) {
    const std::string what = fmt::format("{}: member '{}'", path, m.name);
    if (m.name.size() < 4 || m.name.compare(m.name.size() - 4, 4, ".npy") != 0)
      fail_input("{}: not a .npy array (a .npz holds only NAME.npy members)", what);
    const std::string key = m.name.substr(0, m.name.size() - 4);
    if (arrays.count(key)) fail_input("{}: appears twice in the archive", what);
    if (m.flags & 1) fail_input("{}: encrypted members unsupported", what);

    // Sizes come from the central directory: numpy's local headers may hold only zip64 markers.
    const size_t at = m.local_header_offset;
    if (at > file.size() || file.size() - at < kLocalHeaderSize ||
        get32(&file[at]) != kLocalHeaderSig)
      fail_input("{}: no local header at offset {} (corrupt archive)", what, at);
    const size_t data_at = at + kLocalHeaderSize + get16(&file[at + 26]) + get16(&file[at + 28]);
    if (data_at > file.size() || file.size() - data_at < m.compressed_size)
      fail_input("{}: data truncated ({} bytes at offset {}, the file has {})", what,
                 m.compressed_size, data_at, file.size());
    if (m.method == kMethodDeflate) {
      // Deflate expands at most 1032:1; a larger size is a corrupt directory.
      if (m.size / 1032 > m.compressed_size + 1)
        fail_input("{}: corrupt archive ({} compressed bytes cannot hold {} bytes)", what,
                   m.compressed_size, m.size);
    } else if (m.method != kMethodStored) {
      fail_input("{}: unsupported compression method {} (supported: 0 stored, 8 deflate)", what,
                 m.method);
    } else if (m.compressed_size != m.size) {
      fail_input("{}: stored member with compressed size {} != size {}", what, m.compressed_size,
                 m.size);
    }

    // The .npy header first; its shape must account for exactly the bytes the directory
    // declares before the tensor is allocated, and the data is then inflated straight into it.
    MemberReader r(&file[data_at], m, what);
    uint8_t start[12];
    r.read(start, static_cast<size_t>(std::min<uint64_t>(m.size, 10)));
    if (m.size >= 12 && (start[6] == 2 || start[6] == 3)) r.read(start + 10, 2);
    const NpyPrefix np = npy_prefix(start, m.size, what);
    std::string text;
    while (text.size() < np.header_len) {  // in pieces: the promise is checked as bytes come
      const size_t old = text.size(), piece = std::min<size_t>(np.header_len - old, 1 << 16);
      text.resize(old + piece);
      r.read(reinterpret_cast<uint8_t*>(&text[old]), piece);
    }
    const NpyLayout l = npy_layout(text, what);
    if (l.data_bytes != r.left())
      fail_input("{}: header says shape {} '{}' ({} bytes) but the central directory gives the "
                 "member {} bytes of data",
                 what, numpy_shape(l.h.shape), l.h.descr, l.data_bytes, r.left());
    Tensor t = Tensor::empty(Shape(l.h.shape), l.dtype);
    if (l.data_bytes) r.read(static_cast<uint8_t*>(t.raw()), l.data_bytes);
    r.finish();
    arrays.emplace(key, std::move(t));
  }
  return arrays;
}

void write_npz(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& arrays) {
  std::string zip;      // the whole archive, built in memory and then written atomically
  std::string central;  // the central directory, appended after the last member
  std::set<std::string> keys;
  for (const auto& [key, tensor] : arrays) {
    const std::string what = fmt::format("writing '{}': array '{}'", path, key);
    if (key.empty()) fail("writing '{}': an array has an empty name", path);
    if (!keys.insert(key).second) fail("{}: the name is used twice", what);
    const std::string name = key + ".npy";
    if (name.size() > 0xFFFF) fail("{}: the name is too long for a zip archive", what);

    const std::string npy = format_npy(tensor, what);
    const uint32_t crc =
        static_cast<uint32_t>(crc32_z(0, reinterpret_cast<const Bytef*>(npy.data()), npy.size()));
    const uint64_t local_header_offset = zip.size();
    append_local_header(zip, name, crc, npy.size());
    append_central_header(central, name, crc, npy.size(), local_header_offset);
    zip += npy;
  }
  const uint64_t cd_offset = zip.size();
  zip += central;
  append_end_records(zip, arrays.size(), cd_offset, central.size());
  write_file_atomic(path, zip);
}

}  // namespace deeptrain::io
