#include "core/backend/backend.h"
#include "core/config.h"
#include "core/backend/cpu.h"
#if defined(DEEPTRAIN_HAVE_DNNL) && __has_include("core/backend/cpu_dnnl.h")
#include "core/backend/cpu_dnnl.h"
#define DEEPTRAIN_FAST_CPU 1
#endif
#ifdef DEEPTRAIN_HAVE_CUDA
#include "core/backend/cuda/cuda_backend.h"
#endif

namespace deeptrain {

MathMode math_mode(proto::MathMode m) {
  switch (m) {
    case proto::MATH_UNSET:
    case proto::MATH_FP32: return MathMode::fp32;
    case proto::MATH_TF32: return MathMode::tf32;
    case proto::MATH_BF16: return MathMode::bf16;
    case proto::MATH_FP16: return MathMode::fp16;
    default: fail_input("run.math: unknown value {} (known: {})", int(m), math_words());
  }
}

std::unique_ptr<Backend> make_backend(const std::string& word, const BackendOptions& opt) {
  return make_backend(backend_from_word(word, "backend"), opt);
}

std::unique_ptr<Backend> make_backend(proto::Backend kind, const BackendOptions& opt) {
  const std::string name = backend_word(kind);
#ifndef DEEPTRAIN_FAST_CPU
  const bool fast_cpu = false;
#else
  const bool fast_cpu = kind == proto::BACKEND_CPU;
#endif
  if (opt.conv == ConvAlgo::winograd && !fast_cpu)
    fail_input("run.conv_algorithm: winograd runs on oneDNN's CPU kernels (backend cpu{}); "
               "backend {} computes its convolutions its own way",
               kind == proto::BACKEND_CPU ? ", in a build with oneDNN" : "", name);
  if (kind == proto::BACKEND_CPU_REF) {
    if (opt.math != MathMode::fp32)
      fail_input("run.math: {} is not the reference's: {} computes in fp32 (bf16 on the CPU runs "
                 "on BACKEND_CPU)", math_mode_name(opt.math), name);
    return std::make_unique<CpuBackend>();
  }
  if (kind == proto::BACKEND_CPU) {
#ifdef DEEPTRAIN_FAST_CPU
    return std::make_unique<DnnlBackend>(opt.math, opt.conv);
#else
    if (opt.math != MathMode::fp32)
      fail_input("run.math: {} on the CPU needs oneDNN, and this deeptrain was built without it",
                 math_mode_name(opt.math));
    return std::make_unique<CpuBackend>();  // built without oneDNN: the reference is the CPU path
#endif
  }
  if (kind == proto::BACKEND_CUDA || kind == proto::BACKEND_CUDA_IM2COL) {
#ifdef DEEPTRAIN_HAVE_CUDA
    return make_cuda_backend(kind == proto::BACKEND_CUDA ? CudaConv::cudnn : CudaConv::im2col, opt);
#else
    fail_input("backend '{}': this deeptrain was built without CUDA (configure with "
               "-DDEEPTRAIN_CUDA=ON on a machine with the CUDA toolkit)", name);
#endif
  }
  fail_input("unknown backend '{}' (known: {})", name, backend_words());
}

}  // namespace deeptrain
