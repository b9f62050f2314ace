#include "app/gpu_probe.h"

#include <dlfcn.h>

#include <cstring>
#include <initializer_list>

#include <fmt/format.h>

namespace deeptrain::app {
namespace {

// The first of `names` that dlopen loads. Libraries stay loaded: unloading the CUDA runtime
// after use can crash at exit, in its own atexit handlers.
void* open_first(std::initializer_list<const char*> names, std::string& loaded,
                 std::string& problem) {
  for (const char* n : names) {
    if (void* h = dlopen(n, RTLD_NOW | RTLD_LOCAL)) {
      loaded = n;
      return h;
    }
  }
  const char* why = dlerror();
  problem = fmt::format("not found ({})", why ? why : "dlopen failed");
  return nullptr;
}

template <class F>
F symbol(void* lib, const char* name) {
  return reinterpret_cast<F>(dlsym(lib, name));
}

}  // namespace

std::string cuda_version_string(int v) { return fmt::format("{}.{}", v / 1000, v % 1000 / 10); }

CudaProbe probe_cuda() {
  CudaProbe p;
  void* lib = open_first({"libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"},
                         p.library, p.problem);
  if (!lib) return p;
  using IntOut = int (*)(int*);
  using ErrorString = const char* (*)(int);
  using Attribute = int (*)(int*, int, int);
  using Properties = int (*)(void*, int);
  auto count = symbol<IntOut>(lib, "cudaGetDeviceCount");
  auto runtime = symbol<IntOut>(lib, "cudaRuntimeGetVersion");
  auto driver = symbol<IntOut>(lib, "cudaDriverGetVersion");
  auto error_string = symbol<ErrorString>(lib, "cudaGetErrorString");
  auto attribute = symbol<Attribute>(lib, "cudaDeviceGetAttribute");
  auto properties = symbol<Properties>(lib, "cudaGetDeviceProperties_v2");
  if (!properties) properties = symbol<Properties>(lib, "cudaGetDeviceProperties");
  if (!count || !runtime || !driver) {
    p.problem = fmt::format("{} lacks cudaGetDeviceCount", p.library);
    return p;
  }
  runtime(&p.runtime_version);
  driver(&p.driver_version);
  int n = 0;
  if (const int err = count(&n); err != 0) {
    p.problem = fmt::format("cudaGetDeviceCount: error {} ({})", err,
                            error_string ? error_string(err) : "?");
    return p;
  }
  if (n == 0) p.problem = "the CUDA runtime sees no devices";
  for (int d = 0; d < n; ++d) {
    GpuDevice g;
    // cudaDevAttrComputeCapabilityMajor/Minor, cudaDevAttrMultiProcessorCount.
    if (attribute) {
      attribute(&g.cc_major, 75, d);
      attribute(&g.cc_minor, 76, d);
      attribute(&g.multiprocessors, 16, d);
    }
    // cudaDeviceProp begins with char name[256], a 16-byte UUID, char luid[8], an unsigned
    // luidDeviceNodeMask and size_t totalGlobalMem (at offset 288) in every CUDA since 10.0; the
    // rest of its layout varies, hence the generous buffer and only these two fields.
    alignas(8) static unsigned char prop[16384];
    std::memset(prop, 0, sizeof(prop));
    if (properties && properties(prop, d) == 0) {
      g.name.assign(reinterpret_cast<const char*>(prop), strnlen(reinterpret_cast<const char*>(prop), 256));
      if (p.runtime_version >= 10000) {
        size_t bytes = 0;
        std::memcpy(&bytes, prop + 288, sizeof(bytes));
        g.memory_gib = double(bytes) / (1024.0 * 1024.0 * 1024.0);
      }
    }
    p.devices.push_back(g);
  }
  return p;
}

LibraryProbe probe_cudnn() {
  LibraryProbe p;
  void* lib = open_first({"libcudnn.so", "libcudnn.so.9", "libcudnn.so.8"}, p.library, p.problem);
  if (!lib) return p;
  auto get = symbol<size_t (*)()>(lib, "cudnnGetVersion");
  if (!get) {
    p.problem = "cudnnGetVersion missing";
    return p;
  }
  const size_t v = get();  // 9.x: 90100 = 9.1.0; 8.x: 8902 = 8.9.2
  p.version = v >= 90000 ? fmt::format("{}.{}.{}", v / 10000, v % 10000 / 100, v % 100)
                         : fmt::format("{}.{}.{}", v / 1000, v % 1000 / 100, v % 100);
  return p;
}

LibraryProbe probe_nccl() {
  LibraryProbe p;
  void* lib = open_first({"libnccl.so", "libnccl.so.2"}, p.library, p.problem);
  if (!lib) return p;
  auto get = symbol<int (*)(int*)>(lib, "ncclGetVersion");
  int v = 0;
  if (!get || get(&v) != 0) {
    p.problem = "ncclGetVersion failed";
    return p;
  }
  // Since 2.9: major * 10000 + minor * 100 + patch; before: major * 1000 + minor * 100 + patch.
  p.version = v >= 20900 ? fmt::format("{}.{}.{}", v / 10000, v % 10000 / 100, v % 100)
                         : fmt::format("{}.{}.{}", v / 1000, v % 1000 / 100, v % 100);
  return p;
}

}  // namespace deeptrain::app
