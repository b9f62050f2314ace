#include "core/backend/backend.h"
#include "core/backend/cpu.h"
#if defined(DEEPTRAIN_HAVE_DNNL) && __has_include("core/backend/cpu_dnnl.h")
#include "core/backend/cpu_dnnl.h"
#define DEEPTRAIN_FAST_CPU 1
#endif

namespace deeptrain {

std::unique_ptr<Backend> make_backend(const std::string& name) {
  if (name == "cpu-ref") return std::make_unique<CpuBackend>();
  if (name == "cpu") {
#ifdef DEEPTRAIN_FAST_CPU
    return std::make_unique<DnnlBackend>();
#else
    return std::make_unique<CpuBackend>();  // built without oneDNN: the reference is the CPU path
#endif
  }
  fail_input("unknown backend '{}' (known: cpu, cpu-ref)", name);
}

}  // namespace deeptrain
