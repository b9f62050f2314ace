#pragma once
// One value with a host copy and, on a device backend, a device copy, and one owner that knows
// which copy is current (in the spirit of Caffe's SyncedMemory). Readers and writers say which
// side they use and whether they write; the owner copies only when a reader needs the other
// side's newer values. So no caller moves data between host and device, and none can forget to.
//
//   host()            to read on the host: the device's values first, if they are newer
//   mutable_host()    to write on the host: as host(), then the device copy is stale
//   compute()         to read where the backend computes: the host's values first, if newer
//   mutable_compute() to write there: as compute(), then the host copy is stale
//
// A write goes through its own mutable_*() call, made just before it: a handle kept from an
// earlier call and written after the other side was touched is exactly the stale copy this
// type exists to prevent. Handles and views stay valid for the owner's lifetime (the copies
// are allocated once).
#include "core/backend/backend.h"
#include "core/tensor.h"

namespace deeptrain {

// Which of two copies is current, and when a move is due. The moves themselves are the
// caller's (a tensor copy, or the layers' state_to_device/state_to_host): SyncHead calls them.
class SyncHead {
 public:
  enum class Current { host, device, both };
  Current current() const { return current_; }

  // Before reading on the host: `download` runs if only the device copy is current.
  template <class F> void read_host(F&& download) {
    if (current_ == Current::device) {
      download();
      current_ = Current::both;
    }
  }
  // Before writing on the host: up to date first (a write may cover part of the value).
  template <class F> void write_host(F&& download) {
    read_host(download);
    current_ = Current::host;
  }
  template <class F> void read_device(F&& upload) {
    if (current_ == Current::host) {
      upload();
      current_ = Current::both;
    }
  }
  template <class F> void write_device(F&& upload) {
    read_device(upload);
    current_ = Current::device;
  }

 private:
  Current current_ = Current::host;  // a value starts on the host (initialised, loaded)
};

class SyncedTensor {
 public:
  SyncedTensor() = default;
  explicit SyncedTensor(Tensor host) : host_(std::move(host)) {}

  // From now on the compute side is a copy in `backend`'s memory, filled when it is first
  // needed. A host backend computes on the host copy: nothing changes. Once only.
  void place_on(Backend& backend);
  Backend* device() const { return device_; }  // null while the compute side is the host

  const Tensor& host() const;
  Tensor& mutable_host();
  const Tensor& compute() const;
  Tensor& mutable_compute();
  SyncHead::Current current() const { return head_.current(); }

 private:
  void download() const;
  void upload() const;

  // Mutable: reading a current value may refresh a stale copy; the value itself is unchanged.
  mutable Tensor host_, device_copy_;
  mutable SyncHead head_;
  Backend* device_ = nullptr;
};

}  // namespace deeptrain
