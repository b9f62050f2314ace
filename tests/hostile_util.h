#pragma once
// Hostile compressed inputs for the readers' tests: a few megabytes of deflate data that inflate
// to gigabytes of zeros, made in milliseconds, and this process's peak memory to show that
// reading them stayed small.
#include <zlib.h>

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace hostile {

// Deflates `in` with `flush`, returning what comes out.
inline std::string deflate_piece(z_stream& zs, const void* in, size_t n, int flush) {
  std::string out;
  zs.next_in = static_cast<Bytef*>(const_cast<void*>(in));
  zs.avail_in = static_cast<uInt>(n);
  char buf[1 << 16];
  do {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof buf;
    deflate(&zs, flush);
    out.append(buf, sizeof buf - zs.avail_out);
  } while (zs.avail_out == 0 || (flush == Z_FINISH && zs.avail_in > 0));
  return out;
}

// Raw deflate (what a zip member holds) of `prefix` followed by `mib` MiB of zeros. Each MiB is
// compressed once and its bytes repeated: after Z_FULL_FLUSH the compressor starts afresh, so
// every MiB of zeros compresses to the same bytes (asserted on two of them). crc: the CRC-32 of
// the whole inflated content.
inline std::string raw_deflate_then_zeros(const std::string& prefix, uint64_t mib, uint32_t* crc) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, 9, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out = deflate_piece(zs, prefix.data(), prefix.size(), Z_FULL_FLUSH);
  const std::vector<char> zeros(1 << 20, 0);
  const std::string a = deflate_piece(zs, zeros.data(), zeros.size(), Z_FULL_FLUSH);
  const std::string b = deflate_piece(zs, zeros.data(), zeros.size(), Z_FULL_FLUSH);
  EXPECT_EQ(a, b) << "a MiB of zeros after a full flush compresses differently the second time";
  for (uint64_t i = 0; i < mib; ++i) out += a;
  out += deflate_piece(zs, nullptr, 0, Z_FINISH);
  deflateEnd(&zs);
  uLong c = crc32(0, reinterpret_cast<const Bytef*>(prefix.data()), uInt(prefix.size()));
  const uLong mib_crc = crc32(0, reinterpret_cast<const Bytef*>(zeros.data()), uInt(zeros.size()));
  for (uint64_t i = 0; i < mib; ++i) c = crc32_combine(c, mib_crc, zeros.size());
  *crc = uint32_t(c);
  return out;
}

// The same as a well-formed .gz file (RFC 1952 header and trailer, CRC-32 and size right).
inline std::string gzip_then_zeros(const std::string& prefix, uint64_t mib) {
  uint32_t crc = 0;
  const std::string body = raw_deflate_then_zeros(prefix, mib, &crc);
  std::string out("\x1f\x8b\x08\0\0\0\0\0\0\x03", 10);  // deflate, no name, no time, Unix
  out += body;
  const uint32_t isize = uint32_t(prefix.size() + (mib << 20));  // mod 2^32
  for (uint32_t v : {crc, isize})
    for (int i = 0; i < 4; ++i) out += char((v >> (8 * i)) & 0xFF);
  return out;
}

// /proc/self/status's field (kB), e.g. VmHWM (peak resident memory) or VmRSS.
inline int64_t proc_status_kb(const std::string& field) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1));
  return -1;
}

// The peak resident memory (kB) that `f` adds to this process: the peak is reset first where
// the kernel allows it (writing 5 to /proc/self/clear_refs), else measured against the peak
// so far, which this test process keeps far below what an unbounded read would reach.
template <class F>
int64_t peak_growth_kb(F&& f) {
  { std::ofstream("/proc/self/clear_refs") << "5"; }
  const int64_t before = proc_status_kb("VmHWM");
  f();
  return proc_status_kb("VmHWM") - before;
}

}  // namespace hostile
