#include "core/data/sha256.h"

#include <openssl/evp.h>

#include "core/error.h"

namespace deeptrain::data {

std::string sha256_hex(const uint8_t* data, size_t size) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  // One-shot EVP call: no context to leak on the error path.
  if (EVP_Digest(data, size, digest, &len, EVP_sha256(), nullptr) != 1 || len != 32)
    fail("OpenSSL EVP_Digest(sha256) failed on {} bytes", size);
  static const char* hex = "0123456789abcdef";
  std::string out(2 * len, '0');
  for (unsigned int i = 0; i < len; ++i) {
    out[2 * i] = hex[digest[i] >> 4];
    out[2 * i + 1] = hex[digest[i] & 15];
  }
  return out;
}

}  // namespace deeptrain::data
