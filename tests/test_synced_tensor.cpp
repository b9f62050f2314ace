// SyncedTensor and SyncHead (core/synced_tensor.h): which copy is current after each access,
// and that a copy moves only when a reader needs the other side's newer values. The "device" is
// a host backend claiming Device::cuda (its tensors are separate host buffers), counting copies.
#include <gtest/gtest.h>

#include "core/backend/cpu.h"
#include "core/synced_tensor.h"

using namespace deeptrain;

namespace {

using Current = SyncHead::Current;

class CountingDevice final : public CpuBackend {
 public:
  Device device() const override { return Device::cuda; }
  void copy(const Tensor& src, Tensor& dst) override {
    ++copies;
    CpuBackend::copy(src, dst);
  }
  int copies = 0;
};

Tensor filled(float v, int64_t n = 4) {
  Tensor t = Tensor::empty({n}, DType::f32);
  for (int64_t i = 0; i < n; ++i) t.data<float>()[i] = v + float(i);
  return t;
}

TEST(SyncHead, MovesOnlyWhenTheOtherSideIsNewer) {
  SyncHead h;
  int up = 0, down = 0;
  auto upload = [&] { ++up; };
  auto download = [&] { ++down; };
  EXPECT_EQ(h.current(), Current::host);
  h.read_host(download);  // the host is current: nothing to move
  h.write_host(download);
  EXPECT_EQ(down, 0);
  h.read_device(upload);
  EXPECT_EQ(up, 1);
  EXPECT_EQ(h.current(), Current::both);
  h.read_device(upload);
  h.read_host(download);
  EXPECT_EQ(up + down, 1);  // both current: reads on either side move nothing
  h.write_device(upload);
  EXPECT_EQ(h.current(), Current::device);
  EXPECT_EQ(up, 1);
  h.write_device(upload);  // still the device's
  h.read_host(download);
  EXPECT_EQ(down, 1);
  EXPECT_EQ(h.current(), Current::both);
  h.write_host(download);
  EXPECT_EQ(h.current(), Current::host);
  EXPECT_EQ(down, 1);
  h.write_device(upload);  // a device write after a host write: the host's values first
  EXPECT_EQ(up, 2);
  h.write_host(download);  // and the other way
  EXPECT_EQ(down, 2);
}

TEST(SyncedTensor, OnAHostBackendBothSidesAreOneBuffer) {
  SyncedTensor s(filled(1));
  CpuBackend host;
  s.place_on(host);
  EXPECT_EQ(s.device(), nullptr);
  EXPECT_EQ(s.compute().raw(), s.host().raw());
  s.mutable_compute().data<float>()[0] = 7;
  EXPECT_EQ(s.host().data<float>()[0], 7);
}

TEST(SyncedTensor, TheDeviceCopyIsFilledWhenFirstNeeded) {
  CountingDevice dev;
  SyncedTensor s(filled(1));
  s.place_on(dev);
  EXPECT_EQ(s.device(), &dev);
  EXPECT_EQ(dev.copies, 0);  // placing allocates; nothing is moved yet
  EXPECT_EQ(s.current(), Current::host);
  const Tensor& d = s.compute();
  EXPECT_NE(d.raw(), s.host().raw());
  EXPECT_EQ(dev.copies, 1);
  EXPECT_EQ(d.data<float>()[3], 4);
  s.compute();
  s.host();
  EXPECT_EQ(dev.copies, 1);
  EXPECT_EQ(s.current(), Current::both);
}

// The two bugs the type exists for: a host reader after a device step (save_weights after GPU
// training) and a device reader after a host write (an ensemble member loaded after the
// trainer placed the net).
TEST(SyncedTensor, EachSideSeesTheOthersWrites) {
  CountingDevice dev;
  SyncedTensor s(filled(1));
  s.place_on(dev);
  Tensor& d = s.mutable_compute();  // uploads, then the device's values are the new ones
  d.data<float>()[2] = 30;          // (the step writes the device copy)
  EXPECT_EQ(s.current(), Current::device);
  EXPECT_EQ(s.host().data<float>()[2], 30);
  EXPECT_EQ(s.current(), Current::both);

  s.mutable_host().data<float>()[1] = 20;  // a weights file loaded on the host
  EXPECT_EQ(s.current(), Current::host);
  EXPECT_EQ(d.data<float>()[1], 2);  // the device copy is stale until someone computes
  EXPECT_EQ(s.compute().data<float>()[1], 20);
  EXPECT_EQ(s.compute().data<float>()[2], 30);
}

// A partial host write (one parameter of the flat buffer) keeps the device's newer values of
// the rest: mutable_host() brings them back before the caller writes.
TEST(SyncedTensor, APartialHostWriteKeepsTheDevicesOtherValues) {
  CountingDevice dev;
  SyncedTensor s(filled(1));
  s.place_on(dev);
  Tensor& d = s.mutable_compute();
  for (int64_t i = 0; i < 4; ++i) d.data<float>()[i] = 100 + float(i);
  s.mutable_host().slice_flat(0, {1}).data<float>()[0] = -1;
  const Tensor& now = s.compute();
  EXPECT_EQ(now.data<float>()[0], -1);
  for (int64_t i = 1; i < 4; ++i) EXPECT_EQ(now.data<float>()[i], 100 + float(i)) << i;
}

TEST(SyncedTensor, OneDeviceOnly) {
  CountingDevice a, b;
  SyncedTensor s(filled(1));
  s.place_on(a);
  s.place_on(a);  // again on the same device: nothing changes
  EXPECT_EQ(s.device(), &a);
  EXPECT_THROW(s.place_on(b), Error);
}

}  // namespace
