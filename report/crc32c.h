#pragma once
// CRC-32C (Castagnoli), the checksum of TFRecord framing (and of iSCSI, RFC 3720). Debian 12
// packages no C library for it, and event files are small, so a byte-wise table does.
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace deeptrain::report {

// `crc` continues a previous value: crc32c(ab) == crc32c(b, crc32c(a)).
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);
inline uint32_t crc32c(std::string_view s, uint32_t crc = 0) { return crc32c(s.data(), s.size(), crc); }

// TFRecord stores CRCs "masked" (rotated and offset) because a CRC over data that itself
// contains CRCs is weak; these are TensorFlow's Mask/Unmask.
constexpr uint32_t kCrcMaskDelta = 0xa282ead8u;
constexpr uint32_t mask_crc(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + kCrcMaskDelta; }
constexpr uint32_t unmask_crc(uint32_t masked) {
  const uint32_t rot = masked - kCrcMaskDelta;
  return (rot >> 17) | (rot << 15);
}

}  // namespace deeptrain::report
