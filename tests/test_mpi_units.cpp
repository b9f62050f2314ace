// The pieces of distributed/ that need no MPI job: 16-bit wire conversions, bucket planning,
// the consistency guard's comparison and messages, the watchdog's deadlines and messages, the
// config's distributed section, and the single-process communicator.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "core/config.h"
#include "core/error.h"
#include "core/net.h"
#include "distributed/communicator.h"
#include "distributed/consistency.h"
#include "distributed/half.h"
#include "distributed/mpi_communicator.h"
#include "distributed/placement.h"
#include "distributed/reducer.h"
#include "distributed/watchdog.h"

using namespace deeptrain;

// ---------------------------------------------------------------- f16 / bf16

TEST(WireFormats, F16RoundTripsEveryHalfExactly) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const uint16_t x = uint16_t(h);
    const float f = f16_to_f32(x);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
      continue;
    }
    ASSERT_EQ(f32_to_f16(f), x) << std::hex << h;
  }
}

TEST(WireFormats, F16RoundsToNearestEven) {
  EXPECT_EQ(f16_to_f32(f32_to_f16(1.0f)), 1.0f);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);         // below the halfway point to 65536
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);         // halfway: rounds to even = infinity
  EXPECT_EQ(f32_to_f16(1e-8f), 0x0000);            // below half the smallest subnormal
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);  // the smallest subnormal
  EXPECT_EQ(f32_to_f16(std::ldexp(1.5f, -24)), 0x0002);  // tie between 1 and 2 ulps: even
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);  // tie between 0 and 1 ulp: even
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie: stays at even 1.0
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(3.0f, -11)), 0x3c02);  // tie: up to even
  EXPECT_EQ(f32_to_f16(-2.0f), 0xc000);
  // Against every float in a sweep: the result is one of the two neighbours, the nearer one.
  for (int i = -200000; i <= 200000; ++i) {
    const float f = float(i) * 0.000731f;
    const float r = f16_to_f32(f32_to_f16(f));
    ASSERT_LE(std::fabs(r - f), std::ldexp(std::fabs(f), -11) + std::ldexp(1.0f, -25)) << f;
  }
}

TEST(WireFormats, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);       // tie: even
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(3.0f, -8)), 0x3f82);       // tie: even (up)
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::nanf("")))));
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = bf16_to_f32(uint16_t(h));
    if (!std::isnan(f)) ASSERT_EQ(f32_to_bf16(f), uint16_t(h));
  }
}

TEST(WireFormats, ArrayVersionsRoundLikeTheScalarOnes) {
  // The arrays use F16C where compiled in; hosts with and without it must agree bit for bit.
  std::vector<float> x;
  for (uint32_t h = 0; h < 0x10000; h += 1) {
    const float f = f16_to_f32(uint16_t(h));
    if (std::isnan(f)) continue;
    x.push_back(f);
    x.push_back(std::nextafter(f, 1e9f));   // just above: rounding, ties' neighbours
    x.push_back(std::nextafter(f, -1e9f));
  }
  for (int i = 0; i < 100000; ++i) x.push_back(std::ldexp(float((i * 2654435761u) % 1000003) - 500000.0f, -30 + i % 40));
  const int64_t n = int64_t(x.size());
  std::vector<uint16_t> a(n), b(n);
  f32_to_f16_array(x.data(), a.data(), n, 3.0f);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(a[i], f32_to_f16(x[i] * 3.0f)) << x[i];
  std::vector<float> back(n);
  f16_to_f32_array(a.data(), back.data(), n, 0.25f);
  for (int64_t i = 0; i < n; ++i)
    if (!std::isnan(back[i])) ASSERT_EQ(back[i], f16_to_f32(a[i]) * 0.25f);
  f32_to_f16_array(x.data(), b.data(), n, 1.0f);
  std::vector<uint16_t> c = b;
  f16_sum_array(a.data(), c.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    const float want = f16_to_f32(f32_to_f16(f16_to_f32(a[i]) + f16_to_f32(b[i])));
    const float got = f16_to_f32(c[i]);
    if (!std::isnan(want)) ASSERT_EQ(got, want) << i;
  }
}

// ---------------------------------------------------------------- buckets

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

// ---------------------------------------------------------------- consistency guard

TEST(Consistency, FingerprintRoundTripsThroughText) {
  Fingerprint f;
  f.add("a.b", "1");
  f.add("model structure, layer 0", "conv1 Conv (16, 28, 28) 160");
  f.add("multi", "x\ny\\z");
  const Fingerprint g = Fingerprint::parse(f.serialize());
  EXPECT_EQ(g.facts, f.facts);
}

TEST(Consistency, MessageNamesTheFirstDifferenceAndTheRanksOnEachSide) {
  auto fp = [](const std::string& bs, const std::string& lr) {
    Fingerprint f;
    f.add("deeptrain.version", "0.1.0");
    f.add("schedule.batch_size", bs);
    f.add("optimizer.lr", lr);
    return f;
  };
  const std::vector<std::string> hosts{"h1", "h2", "h3"};
  EXPECT_EQ(compare_fingerprints({fp("100", "0.001"), fp("100", "0.001"), fp("100", "0.001")}, hosts), "");
  const std::string m =
      compare_fingerprints({fp("100", "0.001"), fp("64", "0.002"), fp("100", "0.001")}, hosts);
  EXPECT_EQ(m.rfind("ranks disagree on schedule.batch_size: 100 on rank 0 (h1), rank 2 (h3); 64 "
                    "on rank 1 (h2). ", 0), 0u) << m;
  EXPECT_EQ(m.find("optimizer.lr"), std::string::npos) << m;  // only the first difference
  // A fact one rank lacks is "(unset)" there.
  Fingerprint extra = fp("100", "0.001");
  extra.add("distributed.compression", "COMPRESSION_FP16");
  const std::string u = compare_fingerprints({fp("100", "0.001"), extra}, {"a", "b"});
  EXPECT_NE(u.find("ranks disagree on distributed.compression: (unset) on rank 0 (a); "
                   "COMPRESSION_FP16 on rank 1 (b)"), std::string::npos) << u;
}

TEST(Consistency, JobFingerprintSkipsPerRankFieldsAndCoversTheModel) {
  proto::ExperimentConfig a = parse_config("run { threads: 1 save_weights: \"x\" } data { dir: \"/a\" }", "a");
  proto::ExperimentConfig b = parse_config("run { threads: 2 } data { dir: \"/b\" verify_checksums: true }", "b");
  Net net(a.model(), Shape{1, 28, 28}, 10, DType::f32);
  const Fingerprint fa = job_fingerprint(a, net, nullptr), fb = job_fingerprint(b, net, nullptr);
  EXPECT_EQ(compare_fingerprints({fa, fb}, {"h", "h"}), "");
  bool has_structure = false, has_count = false, has_bucket = false;
  for (const auto& [k, v] : fa.facts) {
    has_structure |= k == "model structure, layer 0";
    has_count |= k == "model parameter count";
    has_bucket |= k == "distributed.bucket_mb";
    EXPECT_NE(k, "run.threads");
    EXPECT_NE(k, "data.dir");
  }
  EXPECT_TRUE(has_structure && has_count && has_bucket);
  proto::ExperimentConfig c = parse_config("distributed { compression: COMPRESSION_BF16 }", "c");
  const std::string m = compare_fingerprints({fa, job_fingerprint(c, net, nullptr)}, {"h1", "h2"});
  EXPECT_NE(m.find("ranks disagree on distributed.compression"), std::string::npos) << m;
}

// ---------------------------------------------------------------- config

TEST(DistributedConfig, DefaultsAndErrorsNameTheField) {
  const proto::ExperimentConfig c = parse_config("", "x");
  EXPECT_FLOAT_EQ(c.distributed().bucket_mb(), 0.1f);
  EXPECT_FLOAT_EQ(c.distributed().step_timeout_s(), 600);
  EXPECT_FLOAT_EQ(c.distributed().collective_timeout_s(), 300);
  EXPECT_EQ(c.distributed().compression(), proto::COMPRESSION_NONE);
  try {
    parse_config("distributed { bucket_mb: -1 }", "cfg.prototxt");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("cfg.prototxt: distributed.bucket_mb: must be in (0, 1024] MiB, got -1"),
              std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_config("distributed { compression: ZIP }", "cfg"), InputError);
  EXPECT_NO_THROW(parse_config("distributed { step_timeout_s: -1 collective_timeout_s: 2.5 }", "cfg"));
}

// ---------------------------------------------------------------- watchdog

TEST(WatchdogTest, CollectiveDeadlineNamesStepCollectiveAndWhatItWaitsFor) {
  std::string msg;
  std::atomic<bool> fired{false};
  WatchdogOptions o;
  o.collective_timeout_s = 0.3;
  Watchdog w(o, "rank 1 on hostB", [&](const std::string& m) {
    msg = m;
    fired = true;
  });
  w.set_describer([](uint64_t seq) { return fmt::format("rank 2 on hostC: has not reached #{}", seq); });
  w.step_begin(17);
  w.collective_begin(5, "gradient bucket 2/4 (conv6)");
  w.collective_end(5);  // finished in time: no alarm for it
  w.collective_begin(6, "gradient bucket 3/4 (conv4..conv5)");
  for (int i = 0; i < 100 && !fired; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(fired);
  EXPECT_EQ(msg, "deeptrain: rank 1 on hostB: step 17 collective 'gradient bucket 3/4 "
                 "(conv4..conv5)' (#6) exceeded 0.3s (waiting for rank 2 on hostC: has not "
                 "reached #6)");
  EXPECT_TRUE(w.fired());
}

TEST(WatchdogTest, StepDeadlineWhileComputing) {
  std::string msg;
  std::atomic<bool> fired{false};
  WatchdogOptions o;
  o.step_timeout_s = 0.2;
  o.collective_timeout_s = 10;
  Watchdog w(o, "rank 0 on h", [&](const std::string& m) {
    msg = m;
    fired = true;
  });
  w.step_begin(3);
  w.step_end();  // a quick step
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_FALSE(fired);
  w.step_begin(4);
  for (int i = 0; i < 100 && !fired; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(fired);
  EXPECT_EQ(msg, "deeptrain: rank 0 on h: step 4 exceeded 0.2s (computing, not in a collective)");
}

TEST(WatchdogTest, NoDeadlinesNoThread) {
  Watchdog w(WatchdogOptions{}, "rank 0 on h", [](const std::string&) { FAIL(); });
  w.step_begin(1);
  w.collective_begin(1, "x");
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(w.fired());
}

// ---------------------------------------------------------------- single process, launch

TEST(SingleProcess, CollectivesAreIdentities) {
  SingleProcessCommunicator c;
  EXPECT_EQ(c.rank(), 0);
  EXPECT_EQ(c.size(), 1);
  EXPECT_EQ(c.where(), "rank 0 on " + local_host_name());
  Tensor t = Tensor::empty({3}, DType::f32);
  t.data<float>()[1] = 2.5f;
  c.allreduce_sum(t);
  c.broadcast(t, 0);
  c.barrier();
  EXPECT_EQ(t.data<float>()[1], 2.5f);
  Tensor out = Tensor::empty({3}, DType::f32);
  c.allgather(t, out);
  EXPECT_EQ(out.data<float>()[1], 2.5f);
  auto r = c.iallreduce_sum(t);
  EXPECT_TRUE(r->test());
  EXPECT_EQ(c.watchdog(), nullptr);
  EXPECT_GE(default_threads(c), 1);
  EXPECT_EQ(default_threads(c), affinity_cores());
}

TEST(Launch, DetectsMpiLaunchersFromTheEnvironment) {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"}) unsetenv(v);
  EXPECT_FALSE(launched_under_mpi());
  EXPECT_FALSE(mpi_active());  // nothing here initialises MPI
  setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
  EXPECT_TRUE(launched_under_mpi());
  unsetenv("OMPI_COMM_WORLD_SIZE");
  setenv("PMIX_RANK", "0", 1);
  EXPECT_TRUE(launched_under_mpi());
  unsetenv("PMIX_RANK");
  EXPECT_EQ(make_world_communicator()->size(), 1);
}
