#include "core/data/cifar.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace deeptrain::data {
namespace fs = std::filesystem;
namespace {

constexpr int kClasses = 10;
constexpr int64_t kPixels = kCifarRecordBytes - 1;

std::vector<std::string> train_files() {
  std::vector<std::string> f;
  for (int i = 1; i <= 5; ++i) f.push_back("data_batch_" + std::to_string(i) + ".bin");
  return f;
}

// `dir` itself if it holds test_batch.bin, else the archive's subdirectory if that does.
fs::path batches_dir(const std::string& dir) {
  std::error_code ec;
  if (fs::is_regular_file(fs::path(dir) / "test_batch.bin", ec)) return dir;
  const fs::path sub = fs::path(dir) / "cifar-10-batches-bin";
  if (fs::is_regular_file(sub / "test_batch.bin", ec)) return sub;
  return dir;
}

}  // namespace

Dataset read_cifar10(const std::vector<std::string>& paths, int64_t limit) {
  // Sizes first, so the tensor is allocated once and a bad file fails before any reading.
  std::vector<int64_t> records;
  int64_t total = 0;
  for (const std::string& path : paths) {
    std::error_code ec;
    const uintmax_t size = fs::file_size(path, ec);
    if (ec) fail_input("{}: cannot read CIFAR-10 batch: {}", path, ec.message());
    if (size == 0 || size % kCifarRecordBytes != 0)
      fail_input("{}: {} bytes is not a whole number of CIFAR-10 records ({} bytes each: a "
                 "label byte and 3x32x32 pixels); truncated, or not the binary version?",
                 path, size, kCifarRecordBytes);
    records.push_back(int64_t(size / kCifarRecordBytes));
    total += records.back();
    if (limit > 0 && total >= limit) break;
  }
  const int64_t n = limit > 0 ? std::min(limit, total) : total;
  Dataset d;
  d.name = "cifar10";
  d.num_classes = kClasses;
  d.images = Tensor::empty({n, 3, 32, 32}, DType::u8);
  d.labels = Tensor::empty({n}, DType::i32);
  uint8_t* images = d.images.data<uint8_t>();
  int32_t* labels = d.labels.data<int32_t>();
  std::vector<uint8_t> record(kCifarRecordBytes);
  int64_t done = 0;
  for (size_t f = 0; f < records.size() && done < n; ++f) {
    std::ifstream in(paths[f], std::ios::binary);
    if (!in) fail_input("{}: cannot open: {}", paths[f], std::strerror(errno));
    for (int64_t r = 0; r < records[f] && done < n; ++r, ++done) {
      if (!in.read(reinterpret_cast<char*>(record.data()), kCifarRecordBytes))
        fail_input("{}: read failed at record {}", paths[f], r);
      if (record[0] >= kClasses)
        fail_input("{}: record {} has label {}, CIFAR-10 labels are 0..9 (a CIFAR-100 file?)",
                   paths[f], r, int(record[0]));
      labels[done] = record[0];
      std::memcpy(images + done * kPixels, record.data() + 1, kPixels);
    }
  }
  return d;
}

DatasetSplit load_cifar10(const std::string& dir, int64_t train_limit, int64_t test_limit) {
  const fs::path base = batches_dir(dir);
  std::vector<std::string> train, missing;
  for (const std::string& f : train_files()) train.push_back((base / f).string());
  const std::string test = (base / "test_batch.bin").string();
  std::vector<std::string> all = train;
  all.push_back(test);
  for (const std::string& p : all) {
    std::error_code ec;
    if (!fs::is_regular_file(p, ec)) missing.push_back(fs::path(p).filename().string());
  }
  if (!missing.empty()) {
    std::string list;
    for (const std::string& m : missing) list += (list.empty() ? "" : ", ") + m;
    fail_input("CIFAR-10 not found in {}: missing {}; download the binary version "
               "(https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz) and extract it there",
               dir, list);
  }
  DatasetSplit split;
  split.train = read_cifar10(train, train_limit);
  split.test = read_cifar10({test}, test_limit);
  return split;
}

}  // namespace deeptrain::data
