// MpiCommunicator's collectives on 2 and 4 ranks (ctest runs this binary through mpiexec): sums
// of every dtype, 16-bit wire formats, broadcast, allgather, barrier, many collectives in flight
// at once, the gradient reducer's bucket sums, and the fingerprint exchange.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>
#include <memory>
#include <vector>

#include "core/backend/gpu_device.h"
#include "core/config.h"
#include "core/net.h"
#include "distributed/bootstrap.h"
#include "distributed/consistency.h"
#include "distributed/half.h"
#include "distributed/mpi_communicator.h"
#include "distributed/placement.h"
#include "distributed/reducer.h"
#include "distributed/watchdog.h"

using namespace deeptrain;

TEST(MpiComm, RankAndSize) {
  MpiCommunicator c;
  EXPECT_GE(c.size(), 1);
  EXPECT_GE(c.rank(), 0);
  EXPECT_LT(c.rank(), c.size());
  EXPECT_FALSE(c.host().empty());
  for (int r = 0; r < c.size(); ++r) EXPECT_FALSE(c.host_of(r).empty());
}

// NCCL refuses ranks that share a GPU: shared_device names the first two ranks on one host
// that give the same device id, and nothing when every rank has its own (CI's ranks share a host).
TEST(MpiComm, SharedDeviceNamesTheFirstRanksOnOneHostWithOneId) {
  MpiCommunicator c;
  EXPECT_EQ(shared_device(c, "0000:" + std::to_string(c.rank()) + "b:00.0"), "");
  EXPECT_EQ(shared_device(c, "0000:1b:00.0"),
            fmt::format("ranks 0 and 1 on {} share GPU 0000:1b:00.0", c.host_of(0)));
  if (c.size() >= 3)  // ranks 0 and 2 on the first GPU, 1 and 3 on the second
    EXPECT_EQ(shared_device(c, c.rank() % 2 ? "odd" : "even"),
              fmt::format("ranks 0 and 2 on {} share GPU even", c.host_of(0)));
}

TEST(MpiComm, AllreduceSumOfEveryDtype) {
  MpiCommunicator c;
  const int n = c.size(), r = c.rank();
  Tensor f = Tensor::empty({1000}, DType::f32);
  Tensor d = Tensor::empty({3}, DType::f64);
  Tensor i = Tensor::empty({5}, DType::i64);
  Tensor j = Tensor::empty({5}, DType::i32);
  for (int k = 0; k < 1000; ++k) f.data<float>()[k] = float(r + 1) * float(k);
  for (int k = 0; k < 3; ++k) d.data<double>()[k] = 0.5 * (r + 1) + k;
  for (int k = 0; k < 5; ++k) i.data<int64_t>()[k] = (int64_t(1) << 40) * (r + 1) + k;
  for (int k = 0; k < 5; ++k) j.data<int32_t>()[k] = r * 10 + k;
  c.allreduce_sum(f);
  c.allreduce_sum(d);
  c.allreduce_sum(i);
  c.allreduce_sum(j);
  const double tri = n * (n + 1) / 2.0;
  for (int k = 0; k < 1000; ++k) ASSERT_EQ(f.data<float>()[k], float(tri * k)) << k;
  for (int k = 0; k < 3; ++k) EXPECT_DOUBLE_EQ(d.data<double>()[k], 0.5 * tri + n * k);
  for (int k = 0; k < 5; ++k) EXPECT_EQ(i.data<int64_t>()[k], (int64_t(1) << 40) * int64_t(tri) + n * k);
  for (int k = 0; k < 5; ++k) EXPECT_EQ(j.data<int32_t>()[k], 10 * int32_t(tri - n) + n * k);
}

TEST(MpiComm, SixteenBitSumsRoundAtEachAddition) {
  MpiCommunicator c;
  const int n = c.size();
  for (DType t : {DType::f16, DType::bf16}) {
    const bool h = t == DType::f16;
    Tensor w = Tensor::empty({257}, t);
    auto* p = static_cast<uint16_t*>(w.raw());
    for (int k = 0; k < 257; ++k) {
      const float v = 0.01f * float(k - 128) + 0.001f * float(c.rank());
      p[k] = h ? f32_to_f16(v) : f32_to_bf16(v);
    }
    c.allreduce_sum(w);
    for (int k = 0; k < 257; ++k) {
      double exact = 0;
      for (int r = 0; r < n; ++r) {
        const float v = 0.01f * float(k - 128) + 0.001f * float(r);
        exact += h ? f16_to_f32(f32_to_f16(v)) : bf16_to_f32(f32_to_bf16(v));
      }
      const double got = h ? f16_to_f32(p[k]) : bf16_to_f32(p[k]);
      // One rounding per addition: at most (n - 1) half-ulps of the largest partial sum.
      const double ulp = std::ldexp(1.0, (h ? -10 : -7) + std::ilogb(std::max(std::fabs(exact), 1e-3)) + 1);
      EXPECT_LE(std::fabs(got - exact), (n - 1) * ulp) << dtype_name(t) << " element " << k;
    }
  }
}

TEST(MpiComm, BroadcastFromEveryRoot) {
  MpiCommunicator c;
  for (int root = 0; root < c.size(); ++root) {
    Tensor t = Tensor::empty({77}, DType::f32);
    for (int k = 0; k < 77; ++k) t.data<float>()[k] = c.rank() == root ? float(k * 3 + root) : -1.0f;
    c.broadcast(t, root);
    for (int k = 0; k < 77; ++k) ASSERT_EQ(t.data<float>()[k], float(k * 3 + root));
  }
}

TEST(MpiComm, AllgatherPutsRankBlocksInOrder) {
  MpiCommunicator c;
  Tensor in = Tensor::empty({3}, DType::i64), out = Tensor::empty({3 * c.size()}, DType::i64);
  for (int k = 0; k < 3; ++k) in.data<int64_t>()[k] = 100 * c.rank() + k;
  c.allgather(in, out);
  for (int r = 0; r < c.size(); ++r)
    for (int k = 0; k < 3; ++k) EXPECT_EQ(out.data<int64_t>()[3 * r + k], 100 * r + k);
  c.barrier();
}

TEST(MpiComm, ManyNonBlockingCollectivesInFlight) {
  MpiCommunicator c;
  std::vector<Tensor> ts;
  std::vector<std::unique_ptr<CommRequest>> reqs;
  for (int b = 0; b < 40; ++b) {
    ts.push_back(Tensor::empty({int64_t(1 + b * 997)}, DType::f32));
    for (int64_t k = 0; k < ts.back().numel(); ++k) ts.back().data<float>()[k] = float(c.rank() + b);
  }
  for (auto& t : ts) reqs.push_back(c.iallreduce_sum(t, "in flight"));
  auto barrier = c.ibarrier();
  for (int b = 39; b >= 0; --b) reqs[b]->wait();  // waiting out of order is fine
  barrier->wait();
  const int n = c.size();
  for (int b = 0; b < 40; ++b) {
    EXPECT_TRUE(reqs[b]->test());
    EXPECT_GT(reqs[b]->finished_at(), 0);
    EXPECT_GE(reqs[b]->finished_at(), reqs[b]->started_at());
    ASSERT_EQ(ts[b].data<float>()[ts[b].numel() - 1], float(n * (n - 1) / 2 + n * b));
  }
}

TEST(MpiComm, ReducerSumsEveryBucketInAnyGranularity) {
  // DeepConvNet's layout; each rank fills its gradients with rank-dependent values and reports
  // the layer ranges in reverse order, as backward does.
  proto::ModelConfig m;
  m.set_preset("deep_convnet");
  Net net(m, Shape{1, 28, 28}, 10, DType::f32);
  MpiCommunicator c;
  const int n = c.size();
  std::vector<std::pair<int64_t, int64_t>> layer_ranges;  // reverse layer order
  {
    std::map<int, std::pair<int64_t, int64_t>> by;
    for (const auto& e : net.param_entries()) {
      auto [it, fresh] = by.try_emplace(e.layer, e.offset, e.offset + e.shape.numel());
      if (!fresh) it->second.second = e.offset + e.shape.numel();
    }
    for (auto it = by.rbegin(); it != by.rend(); ++it) layer_ranges.push_back(it->second);
  }
  for (int64_t bucket_bytes : {int64_t(0), int64_t(1024), int64_t(100 * 1024), int64_t(1) << 30}) {
    for (WireCompression wc : {WireCompression::none, WireCompression::bf16, WireCompression::f16}) {
      GradientSyncOptions o;
      o.bucket_bytes = bucket_bytes;
      o.compression = wc;
      Reducer red(c, net, o);
      float* g = net.compute_grads().data<float>();
      const int64_t np = net.num_params();
      for (int64_t k = 0; k < np; ++k) g[k] = 0.001f * float((k % 17) - 8) * float(c.rank() + 1);
      red.begin_step(100);
      auto cb = red.callback();
      ASSERT_EQ(bool(cb), n > 1);  // one rank: nothing to reduce, nothing to overlap
      for (const auto& [b, e] : layer_ranges)
        if (cb) cb(b, e);
      red.finish();
      const float tri = float(n * (n + 1) / 2);
      const double tol = wc == WireCompression::none ? 1e-6 : wc == WireCompression::f16 ? 2e-3 : 2e-2;
      for (int64_t k = 0; k < np; ++k) {
        const float want = 0.001f * float((k % 17) - 8) * tri;
        ASSERT_NEAR(g[k], want, tol * std::max(1.0f, std::fabs(want)) + 1e-7)
            << "element " << k << " bucket_bytes " << bucket_bytes << " compression " << int(wc);
      }
      EXPECT_EQ(red.stats().steps, 1);
      EXPECT_EQ(red.stats().collectives, int64_t(red.buckets().size()));
    }
  }
}

TEST(MpiComm, ReducerBucketsFollowTheCapAndCoverEverything) {
  proto::ModelConfig m;
  m.set_preset("deep_convnet");
  Net net(m, Shape{1, 28, 28}, 10, DType::f32);
  MpiCommunicator c;
  GradientSyncOptions o;
  o.bucket_bytes = 100 * 1024;
  Reducer red(c, net, o);
  const auto& b = red.buckets();
  ASSERT_GE(b.size(), 3u);  // DeepConvNet's 0.5 MB in 100 KiB buckets
  EXPECT_EQ(b.front().end, net.num_params());
  EXPECT_EQ(b.back().begin, 0);
  for (size_t i = 1; i < b.size(); ++i) EXPECT_EQ(b[i].end, b[i - 1].begin);
  EXPECT_NE(b.front().name.find("gradient bucket 1/"), std::string::npos) << b.front().name;
  o.overlap = false;
  Reducer one(c, net, o);
  EXPECT_EQ(one.buckets().size(), 1u);
  EXPECT_FALSE(bool(one.callback()));
}

TEST(MpiComm, ConsistencyCheckPassesForEqualFingerprints) {
  MpiCommunicator c;
  Fingerprint f;
  f.add("a", "1");
  f.add("b", "multi\nline");
  EXPECT_NO_THROW(verify_consistency(c, f));
}

TEST(MpiComm, ConsistencyCheckNamesTheFirstDifferenceOnEveryRank) {
  MpiCommunicator c;
  if (c.size() < 2) GTEST_SKIP() << "needs 2 ranks";
  Fingerprint f;
  f.add("same", "x");
  f.add("schedule.batch_size", c.rank() == 1 ? "64" : "100");
  f.add("later", std::to_string(c.rank()));
  try {
    verify_consistency(c, f);
    FAIL() << "no error";
  } catch (const JobWideError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("ranks disagree on schedule.batch_size: 100 on rank 0"), std::string::npos) << m;
    EXPECT_NE(m.find("64 on rank 1 (" + c.host_of(1) + ")"), std::string::npos) << m;
    EXPECT_EQ(m.find("later"), std::string::npos) << m;
  }
}

TEST(MpiComm, WatchdogSeesCollectivesAndTheirEnd) {
  MpiCommunicator c;
  std::string fired;
  WatchdogOptions o;
  o.collective_timeout_s = 60;
  Watchdog w(o, c.where(), [&](const std::string& m) { fired = m; });
  c.set_watchdog(&w);
  Tensor t = Tensor::zeros({10}, DType::f32);
  for (int i = 0; i < 20; ++i) c.allreduce_sum(t, "watched");
  c.set_watchdog(nullptr);
  EXPECT_FALSE(w.fired());
  EXPECT_TRUE(fired.empty());
}

// The GPU bootstrap's host side, with real ranks (no GPU needed): rank 0's id reaches every
// rank, and each rank of a host picks the GPU of its local rank.
TEST(MpiComm, BootstrapIdFromRankZeroReachesEveryRank) {
  MpiCommunicator world;
  Communicator* comm = &world;
  int calls = 0;
  const std::vector<uint8_t> id = broadcast_bootstrap_id(*comm, 128, [&] {
    ++calls;
    std::vector<uint8_t> v(128);
    for (size_t i = 0; i < v.size(); ++i) v[i] = uint8_t(i * 7 + 3);
    return v;
  });
  EXPECT_EQ(calls, comm->rank() == 0 ? 1 : 0);  // made once, on rank 0
  ASSERT_EQ(id.size(), 128u);
  for (size_t i = 0; i < id.size(); ++i) ASSERT_EQ(id[i], uint8_t(i * 7 + 3)) << i;
}

TEST(MpiComm, EachRankOfAHostPicksTheGpuOfItsLocalRank) {
  MpiCommunicator world;
  Communicator* comm = &world;
  const LocalRank local = local_rank_from_env([](const char* v) { return std::getenv(v); });
  // mpirun on one host: the local rank is the world rank, as Open MPI reports it.
  EXPECT_EQ(local.source, "OMPI_COMM_WORLD_LOCAL_RANK");
  EXPECT_EQ(local.rank, comm->rank());
  // On a host with 2 GPUs, ranks 0..3 share them round-robin; an explicit index wins.
  EXPECT_EQ(choose_gpu(-1, local, 2, ""), comm->rank() % 2);
  EXPECT_EQ(choose_gpu(1, local, 2, ""), 1);
  // Gathered: every GPU of the host is used before any is used twice.
  Tensor mine = Tensor::empty({1}, DType::i32), all = Tensor::empty({comm->size()}, DType::i32);
  mine.data<int32_t>()[0] = choose_gpu(-1, local, comm->size(), "");
  comm->allgather(mine, all);
  std::set<int32_t> distinct(all.data<int32_t>(), all.data<int32_t>() + comm->size());
  EXPECT_EQ(int(distinct.size()), comm->size());
}
