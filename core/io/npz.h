#pragma once
// NumPy .npz archives (a zip of .npy arrays): how the book's weights, the reference batches and
// our exports travel between Python and the trainer.
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace deeptrain::io {

// The most read_npz holds by default: the file, and the uncompressed sizes its central directory
// declares, summed over the members. 1 GiB: the largest archives this trainer reads are a few MB
// (the book's weights 1 MB, examples/vgg_mnist.prototxt's exported weights 2.3 MB).
constexpr uint64_t kNpzMaxBytes = uint64_t(1) << 30;

// Reads every array of a .npz. Keys are the member names without ".npy".
// Supported: stored and deflate-compressed members (np.savez, np.savez_compressed), zip64,
// .npy versions 1.0/2.0/3.0, dtypes <f4 <f8 <i4 <i8 |u1 and |b1 (read as u8), C order,
// 0-d arrays (shape ()). Every member's CRC-32 is verified.
// Untrusted archives cost bounded memory: a file or declared sizes over max_bytes are refused
// before anything is inflated; a member's .npy header must account for exactly the size the
// central directory declares before its tensor is allocated; inflation streams into that tensor
// and stops at the first byte beyond the declared size.
// Throws InputError naming the file, the member and what is wrong.
std::map<std::string, Tensor> read_npz(const std::string& path, uint64_t max_bytes = kNpzMaxBytes);

// Writes f32, f64, i32, i64 and u8 arrays (plain layout, on the CPU) as an uncompressed .npz that
// numpy.load reads, in the given order, atomically (see atomic_file.h). The archive always uses
// zip64 records, as numpy's own writer does, so there is no 4 GiB limit.
void write_npz(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& arrays);

// One .npy file held in memory; `what` (e.g. "x.npz: member 'W1.npy'") starts every error message.
Tensor parse_npy(const void* data, size_t n, const std::string& what);
// The .npy (version 1.0, or 2.0 if the header needs it) bytes of a tensor.
std::string format_npy(const Tensor& t, const std::string& what);

}  // namespace deeptrain::io
