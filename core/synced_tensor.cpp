#include "core/synced_tensor.h"

#include "core/error.h"

namespace deeptrain {

void SyncedTensor::place_on(Backend& backend) {
  if (backend.device() == Device::cpu || device_ == &backend) return;
  DT_CHECK(device_ == nullptr, "a value is placed on one device only");
  device_copy_ = backend.empty(host_.shape(), host_.dtype());
  device_ = &backend;
  // The host copy stays the current one: the first compute-side access uploads it.
}

void SyncedTensor::download() const {
  device_->copy(device_copy_, host_);
  device_->synchronize();  // a host reader reads right after this returns
}

// Waited for too: an asynchronous copy from pageable memory may still be reading the host
// buffer when it returns, and the next mutable_host() may write it. Uploads are rare (after
// initialising, loading or restoring), never once per step.
void SyncedTensor::upload() const {
  device_->copy(host_, device_copy_);
  device_->synchronize();
}

const Tensor& SyncedTensor::host() const {
  if (device_) head_.read_host([this] { download(); });
  return host_;
}

Tensor& SyncedTensor::mutable_host() {
  if (device_) head_.write_host([this] { download(); });
  return host_;
}

const Tensor& SyncedTensor::compute() const {
  if (!device_) return host_;
  head_.read_device([this] { upload(); });
  return device_copy_;
}

Tensor& SyncedTensor::mutable_compute() {
  if (!device_) return host_;
  head_.write_device([this] { upload(); });
  return device_copy_;
}

}  // namespace deeptrain
