// The one whole-file reader (core/io/read_file.h): bytes of any size and value come back
// exactly; every error names the file (missing, a directory, over a size limit, also for
// files whose size stat() does not know).
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "core/io/read_file.h"
#include "error_util.h"

using namespace deeptrain;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("deeptrain_read_file_" + std::to_string(getpid()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
  std::string write(const std::string& name, const std::string& bytes) const {
    const std::string p = (path / name).string();
    std::ofstream(p, std::ios::binary) << bytes;
    return p;
  }
};

}  // namespace

TEST(ReadFile, ReturnsEveryByteOfAnySize) {
  TempDir d;
  std::string bytes;
  for (int i = 0; i < 200 * 1024 + 7; ++i) bytes += char((i * 131 + i / 256) & 0xff);  // NULs too
  const std::string p = d.write("big.bin", bytes);
  EXPECT_EQ(io::read_file(p), bytes);
  const std::vector<uint8_t> v = io::read_file_bytes(p);
  EXPECT_EQ(std::string(v.begin(), v.end()), bytes);
  EXPECT_EQ(io::read_file(d.write("empty", "")), "");
  EXPECT_EQ(io::read_file(p, bytes.size(), "a test file"), bytes);  // at the limit: read
}

TEST(ReadFile, ErrorsNameTheFile) {
  TempDir d;
  const std::string missing = (d.path / "missing.bin").string();
  EXPECT_CONTAINS(error_of([&] { io::read_file(missing); }),
                  missing + ": cannot open: No such file or directory");
  EXPECT_CONTAINS(error_of([&] { io::read_file_bytes(d.path.string()); }),
                  d.path.string() + ": cannot read: is a directory");
  const std::string p = d.write("k.bin", std::string(1000, 'x'));
  EXPECT_EQ(error_of([&] { io::read_file(p, 999, "an IDX file"); }),
            p + ": 1000 bytes, over the limit of 999 bytes for an IDX file");
}

// /proc files report size 0: read whole all the same, and the limit holds while reading.
TEST(ReadFile, FilesOfUnknownSizeAreReadWholeWithinTheLimit) {
  const std::string status = io::read_file("/proc/self/status");
  EXPECT_CONTAINS(status, "Name:");
  EXPECT_CONTAINS(status, "VmRSS:");
  EXPECT_EQ(error_of([] { io::read_file("/proc/self/status", 10, "a status file"); }),
            "/proc/self/status: over the limit of 10 bytes for a status file");
}
