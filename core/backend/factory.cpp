#include "core/backend/backend.h"
#include "core/backend/cpu.h"
#if defined(DEEPTRAIN_HAVE_DNNL) && __has_include("core/backend/cpu_dnnl.h")
#include "core/backend/cpu_dnnl.h"
#define DEEPTRAIN_FAST_CPU 1
#endif
#ifdef DEEPTRAIN_HAVE_CUDA
#include "core/backend/cuda/cuda_backend.h"
#endif

namespace deeptrain {

std::unique_ptr<Backend> make_backend(const std::string& name, const BackendOptions& opt) {
  if (name == "cpu-ref") return std::make_unique<CpuBackend>();
  if (name == "cpu") {
#ifdef DEEPTRAIN_FAST_CPU
    return std::make_unique<DnnlBackend>();
#else
    return std::make_unique<CpuBackend>();  // built without oneDNN: the reference is the CPU path
#endif
  }
  if (name == "cuda" || name == "cuda-im2col") {
#ifdef DEEPTRAIN_HAVE_CUDA
    return make_cuda_backend(name == "cuda" ? CudaConv::cudnn : CudaConv::im2col, opt);
#else
    fail_input("backend '{}': this deeptrain was built without CUDA (configure with "
               "-DDEEPTRAIN_CUDA=ON on a machine with the CUDA toolkit)", name);
#endif
  }
  fail_input("unknown backend '{}' (known: cpu, cpu-ref, cuda, cuda-im2col)", name);
}

}  // namespace deeptrain
