#pragma once
// The two data sets of the book's chapter 8: MNIST and Fashion-MNIST (same shapes, 10 classes).
#include <cstdint>
#include <string>

#include "core/tensor.h"

namespace deeptrain::data {

struct Dataset {
  std::string name;
  Tensor images;  // u8 (N, C, H, W)
  Tensor labels;  // i32 (N)
  int num_classes = 0;
};

struct DatasetSplit {
  Dataset train, test;
};

// dataset_name: "mnist" or "fashion_mnist". `dir` holds the four standard files, each either
// plain (train-images-idx3-ubyte) or gzip'ed (train-images-idx3-ubyte.gz); plain wins when both
// exist. Validates images vs labels count, label range [0, num_classes) and image dims.
// verify_checksums: SHA-256 of the uncompressed content against the published files.
// train_limit / test_limit > 0 keep only the first that many samples (for quick runs).
DatasetSplit load_dataset(const std::string& dataset_name, const std::string& dir,
                          bool verify_checksums, int64_t train_limit = 0, int64_t test_limit = 0);

// Book normalisation: x = pixel / 255.0f (a float division, to match numpy float32 bit for bit).
// Copies samples ids[0..n) into x (f32, (n, C, H, W), already allocated) and t (i32, (n)).
void gather_batch(const Dataset& d, const int64_t* ids, int64_t n, Tensor& x, Tensor& t);

// What the doctor/eval commands print: files found, sizes, checksum status. Never throws for
// missing or bad files (that is what it reports); throws InputError for an unknown data set.
std::string describe_files(const std::string& dataset_name, const std::string& dir);

}  // namespace deeptrain::data
