#pragma once
// The project's checksums, one of each: CRC-32 (zlib's polynomial, for tensors, chunks and
// replica checks; any length, no 4 GiB truncation) and SHA-256 (OpenSSL; whole buffers, or
// streamed for files too large to hold).
#include <openssl/evp.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace deeptrain {

uint32_t crc32_of(const void* data, size_t size);
inline uint32_t crc32_of(const std::string& bytes) { return crc32_of(bytes.data(), bytes.size()); }

// Streaming SHA-256: update() any number of times, then hex() once.
class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  void update(const std::string& s) { update(s.data(), s.size()); }
  std::string hex();  // lower-case, 64 characters

 private:
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx_;
};

// SHA-256 of one buffer, lower-case hex.
std::string sha256_hex(const void* data, size_t size);

}  // namespace deeptrain
