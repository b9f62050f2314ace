// Gradient buckets (distributed/reducer.h) without an MPI job: bucket planning, a reducer over
// one rank, and the reducer's protocol with a transport that orders work on the device (NCCL's).
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "core/error.h"
#include "core/net.h"
#include "distributed/communicator.h"
#include "distributed/reducer.h"

using namespace deeptrain;

TEST(Buckets, MergeReverseLayerRangesUpToTheCap) {
  // Layers of 10, 20, 30, 40 elements at [0,10) [10,30) [30,60) [60,100), reported in reverse.
  const std::vector<std::pair<int64_t, int64_t>> r{{60, 100}, {30, 60}, {10, 30}, {0, 10}};
  using V = std::vector<std::pair<int64_t, int64_t>>;
  EXPECT_EQ(plan_buckets(r, 0), (V{{0, 100}}));
  EXPECT_EQ(plan_buckets(r, 1), (V{{60, 100}, {30, 60}, {10, 30}, {0, 10}}));
  EXPECT_EQ(plan_buckets(r, 45), (V{{30, 100}, {0, 30}}));
  EXPECT_EQ(plan_buckets(r, 50), (V{{30, 100}, {0, 30}}));
  EXPECT_EQ(plan_buckets(r, 71), (V{{10, 100}, {0, 10}}));
  EXPECT_EQ(plan_buckets(r, 101), (V{{0, 100}}));
  EXPECT_THROW(plan_buckets({{60, 100}, {0, 10}}, 1000), Error);  // a gap
}

TEST(Buckets, ReducerWithOneRankDoesNothing) {
  proto::ModelConfig m;
  m.set_preset("deep_convnet");
  Net net(m, Shape{1, 28, 28}, 10, DType::f32);
  SingleProcessCommunicator one;
  GradientSyncOptions o;
  o.compression = WireCompression::f16;
  Reducer red(one, net, o);
  EXPECT_FALSE(bool(red.callback()));
  net.compute_grads().data<float>()[5] = 1.2345f;
  red.begin_step(100);
  red.finish();
  EXPECT_EQ(net.compute_grads().data<float>()[5], 1.2345f);  // not even rounded through f16
  EXPECT_EQ(red.stats().collectives, 0);
  EXPECT_THROW(red.finish(), Error);  // finish twice
}

// SingleProcessCommunicator with the ordering a GPU transport offers (order_on_device), counting
// the host's waits: the reducer's protocol with NCCL, without a GPU.
class DeviceOrderedComm final : public SingleProcessCommunicator {
 public:
  struct Request final : CommRequest {
    explicit Request(DeviceOrderedComm& c) : comm(c) {}
    void wait() override { ++comm.waits; }
    bool test() override { return true; }
    bool order_on_device() override {
      ++comm.ordered;
      return comm.device_order;
    }
    DeviceOrderedComm& comm;
  };
  bool reduces_alone() const override { return true; }
  std::unique_ptr<CommRequest> iallreduce_sum(Tensor&, const char*) override {
    ++started;
    return std::make_unique<Request>(*this);
  }
  bool device_order = true;
  int started = 0, ordered = 0, waits = 0;
};

// finish() leaves the host's wait to settle() when the transport orders the device's work
// after the buckets (the optimizer step is then enqueued without waiting for backward), and
// waits itself when it cannot.
TEST(Buckets, ATransportOrderedOnTheDeviceIsWaitedForInSettle) {
  proto::ModelConfig m;
  m.set_preset("deep_convnet");
  Net net(m, Shape{1, 28, 28}, 10, DType::f32);
  DeviceOrderedComm comm;
  GradientSyncOptions o;
  o.bucket_bytes = 100 * 1024;
  Reducer red(comm, net, o);
  const int buckets = int(red.buckets().size());
  ASSERT_GT(buckets, 1);
  red.begin_step(100);
  red.finish();  // no backward ran: every bucket starts here
  EXPECT_EQ(comm.started, buckets);
  EXPECT_EQ(comm.ordered, buckets);
  EXPECT_EQ(comm.waits, 0);
  EXPECT_EQ(red.stats().steps, 0);
  EXPECT_THROW(red.begin_step(100), Error);  // settle() first
  red.settle();
  EXPECT_EQ(comm.waits, buckets);
  EXPECT_EQ(red.stats().steps, 1);
  red.settle();  // nothing left: no second wait
  EXPECT_EQ(comm.waits, buckets);

  comm.device_order = false;
  red.begin_step(100);
  red.finish();
  EXPECT_EQ(comm.waits, 2 * buckets);  // finish() waited
  EXPECT_EQ(red.stats().steps, 2);
  red.settle();
  EXPECT_EQ(comm.waits, 2 * buckets);
}
