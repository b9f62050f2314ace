#pragma once
// SHA-256 for checking data files against the published hashes (OpenSSL libcrypto underneath).
#include <cstddef>
#include <cstdint>
#include <string>

namespace deeptrain::data {

// Lower-case hex digest, 64 characters.
std::string sha256_hex(const uint8_t* data, size_t size);

}  // namespace deeptrain::data
