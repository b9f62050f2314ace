// Data-parallel training on 2 and 4 ranks equals training in one process (ctest runs this binary
// through mpiexec -n 2 and -n 4). Every rank trains the book's DeepConvNet (dropout on, Adam)
// both ways: with the job's MpiCommunicator, and alone with a SingleProcessCommunicator over
// the whole global batch, then compares parameters and loss trajectories.
//
// The data: 242 synthetic MNIST-shaped images whose class is a bright square's position, global
// batch 30, so an epoch has 9 steps: 30 does not divide by 4 (shards of 8, 8, 7, 7) and the last
// batch has 2 samples (on 4 ranks, ranks 2 and 3 get none and still join every collective).
//
// Tolerances. The rank count changes only the order in which per-sample gradients are summed
// (each rank's GEMMs sum its shard, MPI sums the shards), i.e. float32 rounding, about 1e-8 on a
// gradient element. Parameters are compared after the first epoch, K = 9 steps: measured max
// |difference| 6e-8 to 1.2e-7 (SGD) and 7e-7 (Adam, whose first step moves an element with a
// 1e-7 gradient by a sizeable part of lr, so its rounding shows); allowed: 1e-6 (SGD), 2e-6
// (Adam). Losses are compared at all 18 steps of two epochs: measured 6e-8 to 2.2e-6
// relative, allowed 1e-5.
// Why not parameters after many more steps: the first-maximum rule of max pooling (and ReLU at
// 0) makes the backward pass a discrete function of the activations. When rounding makes two
// values of a pooling window swap order (typically where a dead ReLU region yields an exact
// bias-valued tie that a 1e-9 activation breaks in one run only), the gradient is routed to the
// other position, and from that step on the runs differ by O(lr * gradient) in a few hundred
// elements, growing slowly (measured: at step 11 on 4 ranks with Adam, reaching 1.9e-4 at step
// 18; the losses still agree to 2e-6). A failure here after a kernel or data change that shows a
// sudden jump in the per-step difference is such a flip, not a reduction error; a reduction
// error (a wrong bucket, a lost shard) shows from the first step and in the loss.
// Between bucketed/overlapped and one-allreduce reduction the per-element sums are the same
// numbers added by MPI: bit-identical on 2 ranks (a + b); on 4 the ring algorithm's chunks
// depend on the message size, so the order of the 4 terms may differ (measured 6e-7 after 9
// Adam steps; allowed 2e-6).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <vector>

#include <google/protobuf/text_format.h>

#include "core/backend/backend.h"
#include "core/net.h"
#include "core/optim/optimizer.h"
#include "core/random.h"
#include "core/threads.h"
#include "distributed/mpi_communicator.h"
#include "distributed/trainer.h"
#include "host_device_backend.h"

using namespace deeptrain;

namespace {

constexpr double kSgdAbsTol = 1e-6;
constexpr double kAdamAbsTol = 2e-6;
constexpr double kLossRelTol = 1e-5;

data::Dataset synthetic(int64_t n) {
  data::Dataset d;
  d.name = "synthetic";
  d.num_classes = 10;
  d.images = Tensor::empty({n, 1, 28, 28}, DType::u8);
  d.labels = Tensor::empty({n}, DType::i32);
  const RandomStream rs{12345, 0xDA7A};
  for (int64_t i = 0; i < n; ++i) {
    const int label = int(rs.block(uint64_t(i), 1)[0] % 10);
    d.labels.data<int32_t>()[i] = label;
    uint8_t* img = d.images.data<uint8_t>() + i * 784;
    const int y0 = 2 + 6 * (label / 4), x0 = 2 + 6 * (label % 4) ;
    for (int p = 0; p < 784; ++p) {
      const int y = p / 28, x = p % 28;
      const bool on = y >= y0 && y < y0 + 8 && x >= x0 && x < x0 + 8;
      img[p] = uint8_t(on ? 200 + rs.block(uint64_t(i * 784 + p))[0] % 56
                          : rs.block(uint64_t(i * 784 + p))[0] % 40);
    }
  }
  return d;
}

struct Result {
  std::vector<double> losses;  // per step, global mean
  std::vector<float> params;                 // at the end
  std::vector<std::vector<float>> by_epoch;  // after each epoch
  ReducerStats stats;
};

// DeepConvNet, or the model of `model_text` (protobuf text of a ModelConfig).
// device_paths: through HostDeviceBackend, the paths a GPU takes (BatchNorm's statistics in
// the backend's memory, summed over the ranks there), every op on the host.
Result train(Communicator& comm, const GradientSyncOptions& sync, int epochs,
             const data::Dataset& d, proto::OptimizerType type = proto::ADAM,
             const std::string& model_text = "", bool device_paths = false) {
  set_cpu_threads(1);
  proto::ModelConfig m;
  if (model_text.empty()) m.set_preset("deep_convnet");
  else EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(model_text, &m));
  Net net(m, Shape{1, 28, 28}, 10, DType::f32);
  net.init_params(7);
  // The reference backend: there N ranks differ from 1 only in summation order. The fast path
  // also picks other oneDNN kernels for other batch shapes, and those rounding differences grow
  // through ReLU masks (measured: 3e-3 relative loss difference by step 14 at N = 2).
  std::unique_ptr<Backend> backend = device_paths
                                         ? std::make_unique<testing_util::HostDeviceBackend>()
                                         : make_backend("cpu-ref");
  proto::OptimizerConfig oc;
  oc.set_type(type);
  oc.set_lr(type == proto::SGD ? 0.1f : 1e-3f);
  auto opt = make_optimizer(oc, net.num_params());
  TrainerOptions to;
  to.batch_size = 30;
  to.seed = 99;
  to.lr = oc.lr();
  to.sync = sync;
  Trainer tr(to, net, *backend, *opt, comm);
  Result r;
  for (int e = 0; e < epochs; ++e) {
    tr.train_epoch(d, e, nullptr, [&](int64_t, int64_t, const StepMetrics& s) {
      r.losses.push_back(s.loss_sum / double(s.samples));
    });
    r.by_epoch.emplace_back(net.params().data<float>(), net.params().data<float>() + net.num_params());
  }
  r.params.assign(net.params().data<float>(), net.params().data<float>() + net.num_params());
  r.stats = tr.reducer().stats();
  return r;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}

// The reference, once per process: one rank training on the whole global batch.
const Result& single_process_result(proto::OptimizerType type = proto::ADAM) {
  static std::map<int, Result> cache;
  auto it = cache.find(int(type));
  if (it == cache.end()) {
    SingleProcessCommunicator one;
    it = cache.emplace(int(type), train(one, GradientSyncOptions{}, 2, synthetic(242), type)).first;
  }
  return it->second;
}

}  // namespace

TEST(MpiTrain, ShardsAndStepsCoverTheGlobalBatch) {
  MpiCommunicator c;
  // Every rank runs ceil(242 / 30) = 9 steps an epoch; shards are balanced and contiguous.
  const GlobalSampler s{242, 30, 99};
  EXPECT_EQ(s.steps_per_epoch(), 9);
  for (int64_t step = 0; step < 9; ++step) {
    const int64_t n = s.batch_end(step) - s.batch_begin(step);
    int64_t covered = 0, prev_end = 0;
    for (int r = 0; r < c.size(); ++r) {
      const ShardRange sh = shard_of_batch(n, r, c.size());
      EXPECT_EQ(sh.begin, prev_end);
      EXPECT_LE(sh.end - sh.begin, n / c.size() + 1);
      covered += sh.end - sh.begin;
      prev_end = sh.end;
    }
    EXPECT_EQ(covered, n);
  }
}

TEST(MpiTrain, ParametersAndLossesEqualOneProcess) {
  MpiCommunicator c;
  const data::Dataset d = synthetic(242);
  for (proto::OptimizerType type : {proto::SGD, proto::ADAM}) {
    const Result& one = single_process_result(type);
    const Result many = train(c, GradientSyncOptions{}, 2, d, type);
    ASSERT_EQ(many.losses.size(), 18u);
    ASSERT_EQ(one.losses.size(), 18u);
    double worst_loss = 0;
    for (size_t s = 0; s < 18; ++s) {
      const double rel = std::fabs(many.losses[s] - one.losses[s]) / std::fabs(one.losses[s]);
      worst_loss = std::max(worst_loss, rel);
      EXPECT_LE(rel, kLossRelTol) << "step " << s << ": " << many.losses[s] << " vs " << one.losses[s];
    }
    const double dp = max_abs_diff(many.by_epoch[0], one.by_epoch[0]);
    const double dp18 = max_abs_diff(many.params, one.params);
    const char* name = type == proto::SGD ? "SGD" : "Adam";
    if (c.rank() == 0)
      std::printf("[figures] %s, %d ranks vs 1: max |param diff| %.3g after 9 steps, %.3g after "
                  "18; max loss rel diff %.3g over 18 steps; loss %.4f -> %.4f\n",
                  name, c.size(), dp, dp18, worst_loss, one.losses.front(), one.losses.back());
    EXPECT_LE(dp, type == proto::SGD ? kSgdAbsTol : kAdamAbsTol) << name;
    // It learned something (the squares are easy): the loss fell.
    EXPECT_LT(one.losses.back(), one.losses.front()) << name;
  }
}

TEST(MpiTrain, BucketedOverlappedEqualsOneAllreduceAfterBackward) {
  MpiCommunicator c;
  const data::Dataset d = synthetic(242);
  GradientSyncOptions after;
  after.overlap = false;
  GradientSyncOptions tiny;  // 1 KiB buckets: one per layer, many collectives in flight
  tiny.bucket_bytes = 1024;
  const Result ref = train(c, after, 1, d);
  const Result dflt = train(c, GradientSyncOptions{}, 1, d);
  const Result small = train(c, tiny, 1, d);
  EXPECT_EQ(ref.stats.collectives, 9);  // one per step
  EXPECT_GT(dflt.stats.collectives, 9 * 3);
  EXPECT_GT(small.stats.collectives, dflt.stats.collectives);
  const double d1 = max_abs_diff(dflt.params, ref.params), d2 = max_abs_diff(small.params, ref.params);
  if (c.rank() == 0)
    std::printf("[figures] %d ranks: bucketed (100 KiB) vs one allreduce: max diff %.3g; 1 KiB "
                "buckets: %.3g\n", c.size(), d1, d2);
  if (c.size() == 2) {  // a + b: the same sums whatever the bucketing
    EXPECT_EQ(d1, 0.0);
    EXPECT_EQ(d2, 0.0);
  }
  EXPECT_LE(d1, kAdamAbsTol);
  EXPECT_LE(d2, kAdamAbsTol);
  for (size_t s = 0; s < ref.losses.size(); ++s)
    EXPECT_NEAR(dflt.losses[s], ref.losses[s], kLossRelTol * ref.losses[s]);
}

TEST(MpiTrain, CompressedGradientsKeepReplicasIdenticalAndTrainAlike) {
  MpiCommunicator c;
  const data::Dataset d = synthetic(242);
  const Result& one = single_process_result();
  for (WireCompression wc : {WireCompression::f16, WireCompression::bf16}) {
    GradientSyncOptions o;
    o.compression = wc;
    // train_epoch ends with check_replicas(): it throws if any rank's parameters differ.
    Result r;
    ASSERT_NO_THROW(r = train(c, o, 2, d));
    double worst = 0;
    for (size_t s = 0; s < r.losses.size(); ++s)
      worst = std::max(worst, std::fabs(r.losses[s] - one.losses[s]) / one.losses[s]);
    const double dp = max_abs_diff(r.params, one.params);
    if (c.rank() == 0)
      std::printf("[figures] %d ranks, %s on the wire: max |param diff| vs f32 1-rank %.3g, max "
                  "loss rel diff %.3g\n", c.size(), wc == WireCompression::f16 ? "f16" : "bf16", dp, worst);
    EXPECT_LE(worst, wc == WireCompression::f16 ? 2e-2 : 5e-2);
    EXPECT_LE(dp, wc == WireCompression::f16 ? 2e-2 : 5e-2);
  }
}

TEST(MpiTrain, ReplicaCheckNamesADivergedRank) {
  MpiCommunicator c;
  if (c.size() < 2) GTEST_SKIP() << "needs 2 ranks";
  set_cpu_threads(1);
  proto::ModelConfig m;
  m.set_preset("simple_convnet");
  Net net(m, Shape{1, 28, 28}, 10, DType::f32);
  net.init_params(1);
  // The reference backend: there N ranks differ from 1 only in summation order. The fast path
  // also picks other oneDNN kernels for other batch shapes, and those rounding differences grow
  // through ReLU masks (measured: 3e-3 relative loss difference by step 14 at N = 2).
  auto backend = make_backend("cpu-ref");
  proto::OptimizerConfig oc;
  oc.set_type(proto::SGD);
  oc.set_lr(0.1f);
  auto opt = make_optimizer(oc, net.num_params());
  Trainer tr(TrainerOptions{}, net, *backend, *opt, c);
  EXPECT_NO_THROW(tr.check_replicas("at start"));
  if (c.rank() == c.size() - 1) net.params().data<float>()[3] += 1e-3f;
  try {
    tr.check_replicas("after the test's change");
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("replicas diverged after the test's change"), std::string::npos) << msg;
    EXPECT_NE(msg.find(fmt::format("rank {} on", c.size() - 1)), std::string::npos) << msg;
  }
}

// Synchronised batch norm: statistics over the global batch, so every rank runs forward and
// backward on every step, with an empty shard when it has no samples (the 2-sample last batch
// on 4 ranks), and the result equals one process's.
void expect_synchronised_batch_norm_equals_one_process(bool device_paths) {
  const std::string model = R"(
    layer { name: "conv1" conv { out_channels: 8 kernel: 3 pad: 1 } }
    layer { name: "bn1" batch_norm { sync: true } }
    layer { name: "relu1" relu {} }
    layer { name: "pool1" max_pool {} }
    layer { name: "fc" affine { out_features: 10 } })";
  MpiCommunicator c;
  const data::Dataset d = synthetic(242);
  SingleProcessCommunicator one_comm;
  const Result one = train(one_comm, GradientSyncOptions{}, 2, d, proto::SGD, model, device_paths);
  const Result many = train(c, GradientSyncOptions{}, 2, d, proto::SGD, model, device_paths);
  ASSERT_EQ(many.losses.size(), one.losses.size());
  // The model learns the squares almost perfectly (loss ~2e-4 after 4 steps), where a loss's
  // last digits are rounding of 1 - p: compare relative to max(loss, 0.01).
  double worst = 0, worst18 = 0;  // over the first epoch (9 steps), and over both
  for (size_t s = 0; s < one.losses.size(); ++s) {
    const double rel = std::fabs(many.losses[s] - one.losses[s]) / std::max(one.losses[s], 0.01);
    if (s < 9) worst = std::max(worst, rel);
    worst18 = std::max(worst18, rel);
  }
  const double dp = max_abs_diff(many.by_epoch[0], one.by_epoch[0]);
  if (c.rank() == 0)
    std::printf("[figures] sync batch norm%s, %d ranks vs 1: max |param diff| %.3g after 9 "
                "steps (%.3g after 18), max loss rel diff %.3g over 9 steps (%.3g over 18)\n",
                device_paths ? " (device paths)" : "", c.size(), dp,
                max_abs_diff(many.params, one.params), worst, worst18);
  EXPECT_LE(dp, kSgdAbsTol);
  EXPECT_LE(worst18, kLossRelTol);
}

TEST(MpiTrain, SynchronisedBatchNormEqualsOneProcess) {
  expect_synchronised_batch_norm_equals_one_process(false);
}

// The same through the paths a GPU takes: the sums, the sample count and the gradient sums
// allreduced from the backend's memory, the statistics computed there.
TEST(MpiTrain, SynchronisedBatchNormOnTheDevicePathsEqualsOneProcess) {
  expect_synchronised_batch_norm_equals_one_process(true);
}
