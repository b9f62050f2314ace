// The CIFAR-10 binary reader on small generated files: record layout into (3, 32, 32), labels,
// limits, the archive's subdirectory, and errors that name the file.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include <gtest/gtest.h>

#include "core/data/cifar.h"

using namespace deeptrain;
namespace fs = std::filesystem;

namespace {

// Record r of file f: label (f + r) % 10, pixel k = (k * 7 + r * 3 + f) % 256.
std::vector<uint8_t> record(int f, int r) {
  std::vector<uint8_t> rec(data::kCifarRecordBytes);
  rec[0] = uint8_t((f + r) % 10);
  for (int k = 0; k < 3072; ++k) rec[1 + k] = uint8_t((k * 7 + r * 3 + f) % 256);
  return rec;
}

void write_file(const fs::path& p, const std::vector<uint8_t>& bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

// data_batch_1..5.bin with 3 records each (file index 1..5), test_batch.bin with 2 (index 0).
fs::path make_cifar_dir(const std::string& name, bool in_subdir = false) {
  fs::path dir = fs::temp_directory_path() / ("deeptrain_cifar_" + name + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::path files = in_subdir ? dir / "cifar-10-batches-bin" : dir;
  fs::create_directories(files);
  for (int f = 0; f <= 5; ++f) {
    std::vector<uint8_t> bytes;
    for (int r = 0; r < (f == 0 ? 2 : 3); ++r) {
      auto rec = record(f, r);
      bytes.insert(bytes.end(), rec.begin(), rec.end());
    }
    write_file(files / (f == 0 ? "test_batch.bin" : "data_batch_" + std::to_string(f) + ".bin"), bytes);
  }
  return dir;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(Cifar10, ReadsRecordsInFileOrderAsCHW) {
  const fs::path dir = make_cifar_dir("read");
  const data::DatasetSplit s = data::load_cifar10(dir.string());
  EXPECT_EQ(s.train.name, "cifar10");
  EXPECT_EQ(s.train.num_classes, 10);
  ASSERT_EQ(s.train.images.shape(), (Shape{15, 3, 32, 32}));
  ASSERT_EQ(s.test.images.shape(), (Shape{2, 3, 32, 32}));
  for (int i = 0; i < 15; ++i) {
    const int f = 1 + i / 3, r = i % 3;
    const std::vector<uint8_t> rec = record(f, r);
    EXPECT_EQ(s.train.labels.data<int32_t>()[i], rec[0]);
    const uint8_t* img = s.train.images.data<uint8_t>() + i * 3072;
    // Channel c, row y, column x of the image is byte 1 + c * 1024 + y * 32 + x of the record.
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; y += 7)
        for (int x = 0; x < 32; x += 5)
          ASSERT_EQ(img[(c * 32 + y) * 32 + x], rec[1 + c * 1024 + y * 32 + x]) << i;
  }
  EXPECT_EQ(s.test.labels.data<int32_t>()[1], record(0, 1)[0]);
  // A batch gathers like any other data set: pixel / 255.
  Tensor x = Tensor::empty({1, 3, 32, 32}, DType::f32), t = Tensor::empty({1}, DType::i32);
  const int64_t id = 4;
  data::gather_batch(s.train, &id, 1, x, t);
  EXPECT_EQ(x.data<float>()[5], float(record(2, 1)[6]) / 255.0f);
  fs::remove_all(dir);
}

TEST(Cifar10, LimitsAndTheArchiveSubdirectory) {
  const fs::path dir = make_cifar_dir("limit", /*in_subdir=*/true);
  const data::DatasetSplit s = data::load_cifar10(dir.string(), 4, 1);
  EXPECT_EQ(s.train.images.dim(0), 4);
  EXPECT_EQ(s.test.images.dim(0), 1);
  EXPECT_EQ(s.train.labels.data<int32_t>()[3], record(2, 0)[0]);
  fs::remove_all(dir);
}

TEST(Cifar10, ErrorsNameTheFile) {
  const fs::path dir = make_cifar_dir("errors");
  // A truncated file: its length is not a multiple of 3073.
  std::vector<uint8_t> bytes = record(3, 0);
  bytes.resize(bytes.size() + 100);
  write_file(dir / "data_batch_3.bin", bytes);
  std::string e = error_of([&] { data::load_cifar10(dir.string()); });
  EXPECT_NE(e.find("data_batch_3.bin"), std::string::npos) << e;
  EXPECT_NE(e.find("3073"), std::string::npos) << e;
  // A label out of range, with its record.
  std::vector<uint8_t> bad = record(3, 0), second = record(3, 1);
  second[0] = 10;
  bad.insert(bad.end(), second.begin(), second.end());
  write_file(dir / "data_batch_3.bin", bad);
  e = error_of([&] { data::load_cifar10(dir.string()); });
  EXPECT_NE(e.find("data_batch_3.bin"), std::string::npos) << e;
  EXPECT_NE(e.find("record 1"), std::string::npos) << e;
  EXPECT_NE(e.find("label 10"), std::string::npos) << e;
  // An empty file, and a missing one.
  write_file(dir / "data_batch_3.bin", {});
  e = error_of([&] { data::load_cifar10(dir.string()); });
  EXPECT_NE(e.find("data_batch_3.bin"), std::string::npos) << e;
  fs::remove(dir / "data_batch_5.bin");
  e = error_of([&] { data::load_cifar10(dir.string()); });
  EXPECT_NE(e.find("data_batch_5.bin"), std::string::npos) << e;
  EXPECT_NE(e.find("cifar-10-binary.tar.gz"), std::string::npos) << e;
  fs::remove_all(dir);
}

}  // namespace
