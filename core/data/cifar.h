#pragma once
// CIFAR-10 in its binary format (https://www.cs.toronto.edu/~kriz/cifar.html, the "binary
// version" archive cifar-10-binary.tar.gz): each file is a run of 3073-byte records, one label
// byte (0..9) then 3072 pixel bytes, the red, green and blue 32x32 planes in row-major order,
// which is exactly the (3, 32, 32) layout of a Dataset sample.
#include <string>
#include <vector>

#include "core/data/dataset.h"

namespace deeptrain::data {

constexpr int kCifarRecordBytes = 1 + 3 * 32 * 32;

// Reads the records of `paths` in order into one Dataset ("cifar10", u8 (N, 3, 32, 32), i32
// labels, 10 classes). limit > 0 keeps only the first `limit` records (files past them are not
// read). Throws InputError naming the file for a missing or unreadable file, a length that is
// not a positive multiple of 3073 bytes, or a label > 9 (with its record index).
Dataset read_cifar10(const std::vector<std::string>& paths, int64_t limit = 0);

// `dir` holds data_batch_1.bin .. data_batch_5.bin and test_batch.bin, directly or in the
// archive's cifar-10-batches-bin/ subdirectory. Missing files are named in the error, with
// where to get them.
DatasetSplit load_cifar10(const std::string& dir, int64_t train_limit = 0, int64_t test_limit = 0);

}  // namespace deeptrain::data
