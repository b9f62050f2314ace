#pragma once
// HostDeviceBackend: the reference CPU backend calling itself a device. Net, Trainer and the
// layers then take every path they take for a GPU (parameter, gradient and state copies, data
// sets copied once and batches gathered by Backend::gather_samples, BatchNorm's statistics kept
// "on the device") while every op runs on the host as CpuBackend's own ops, so CI checks that
// orchestration without a GPU (tests/test_device_paths.cpp, test_mpi_train).
#include <string>

#include "core/backend/cpu.h"

namespace deeptrain::testing_util {

class HostDeviceBackend final : public CpuBackend {
 public:
  std::string name() const override { return "host-device (test)"; }
  Device device() const override { return Device::cuda; }
  void gather_samples(const Tensor& images, const Tensor& labels, const int64_t* ids, int64_t n,
                      Tensor& x, Tensor& t) override {
    ++gathers;
    CpuBackend::gather_samples(images, labels, ids, n, x, t);
  }
  int gathers = 0;
};

}  // namespace deeptrain::testing_util
