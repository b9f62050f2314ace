#pragma once
// What GPU software this machine has, found at run time with dlopen, so one binary runs (and
// `deeptrain doctor` reports) on machines with and without CUDA. Any failure (no library, no
// driver, no device) means "no GPU", with the reason; nothing here throws or links CUDA.
#include <string>
#include <vector>

namespace deeptrain::app {

struct GpuDevice {
  std::string name;
  int cc_major = 0, cc_minor = 0, multiprocessors = 0;
  double memory_gib = 0;  // 0 when unknown
};

struct CudaProbe {
  std::string library;        // the CUDA runtime that loaded; empty if none did
  std::string problem;        // why there are no devices, if there are none
  int runtime_version = 0;    // e.g. 12040
  int driver_version = 0;     // the newest CUDA the driver supports, 0 without a driver
  std::vector<GpuDevice> devices;
};

struct LibraryProbe {
  std::string library;  // what loaded; empty if nothing did
  std::string version;  // "9.1.0"
  std::string problem;
};

CudaProbe probe_cuda();
LibraryProbe probe_cudnn();
LibraryProbe probe_nccl();
// 12040 -> "12.4"
std::string cuda_version_string(int v);

}  // namespace deeptrain::app
