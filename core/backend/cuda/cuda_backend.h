#pragma once
// The GPU backend: every op of backend.h on one CUDA device, on one stream of its own.
// Convolutions through cuDNN (CudaConv::cudnn, the fast path) or as im2col + one cuBLAS GEMM
// (CudaConv::im2col, the book's method); fused elementwise kernels; the fused optimizer update.
// Compiled only with DEEPTRAIN_HAVE_CUDA; this header includes no CUDA header, so host code
// can use it without the toolkit's include path.
#include <memory>
#include <string>

#include "core/backend/backend.h"

namespace deeptrain {

enum class CudaConv : uint8_t { cudnn, im2col };

// Picks the device (opt.device, else from the local rank: gpu_device.h), makes it current,
// creates the stream and the library handles. Any CUDA error here (no driver, no device) is an
// InputError that says so.
std::unique_ptr<Backend> make_cuda_backend(CudaConv conv, const BackendOptions& opt);

// The number of usable CUDA devices, 0 when there is none or no driver; `why` gets the runtime's
// message then. Never throws: callers decide whether "no GPU" is an error.
int cuda_device_count(std::string* why = nullptr);

// The raw cudaStream_t of a CUDA backend (for the NCCL communicator), null for other backends.
void* cuda_stream_of(Backend& backend);

}  // namespace deeptrain
