// Data-parallel training on 2 and 4 ranks equals training in one process (ctest runs this binary
// through mpiexec -n 2 and -n 4), on the default path: ranks sum their shards' gradients with
// MPI, in an order that depends on the rank count. (Exact mode, where every rank count gives the
// same model to the last bit, is tested with == in test_mpi_exact.cpp.)
//
// The data: 242 synthetic MNIST-shaped images whose class is a bright square's position, global
// batch 30, so an epoch has 9 steps: 30 does not divide by 4 (shards of 8, 8, 7, 7) and the last
// batch has 2 samples (on 4 ranks, ranks 2 and 3 get none and still join every collective).
//
// Tolerances, derived from the computation, not from one machine's output. On the default path
// N ranks and 1 differ in the order of float32 additions (each rank's GEMMs sum its shard, MPI
// sums the shards) and in the kernels a batch's shape selects. Those differences grow without
// bound over steps: the first-maximum rule of max pooling (and ReLU at 0) makes backward a
// discrete function of the activations, and once rounding swaps two values of a pooling window
// the runs part (measured 7e-3 after 18 SGD steps on an Intel Xeon). So multi-step equality is
// exact mode's to test; here the comparison that cannot drift: the first step's gradient, from
// identical parameters, normwise, against a tolerance set from the same batch: a tenth of the
// smallest change a reduction error makes, i.e. losing one sample of the global batch (the
// gradient of the other B - 1, scaled by (B - 1) / B), computed here for every sample. A lost
// shard, a bucket reduced twice or skipped, or a wrong scale fails it; rounding is orders of
// magnitude below it (the figures lines print both).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include <google/protobuf/text_format.h>

#include "core/backend/backend.h"
#include "core/data/sampler.h"
#include "core/net.h"
#include "core/optim/optimizer.h"
#include "core/random.h"
#include "core/threads.h"
#include "distributed/host_staged_communicator.h"
#include "distributed/mpi_communicator.h"
#include "distributed/trainer.h"
#include "synthetic_squares.h"
#include "host_device_backend.h"

using namespace deeptrain;

namespace {


data::Dataset synthetic(int64_t n) {
  return testing_util::synthetic_squares(n, {12345, 0xDA7A, 200, 56, 40});
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
// host_staged: the device paths' collectives through make_host_staged_communicator over a
// communicator of comm's ranks (distributed.device_transport: DEVICE_TRANSPORT_HOST_MPI).
Result train(Communicator& comm, const GradientSyncOptions& sync, int epochs,
             const data::Dataset& d, proto::OptimizerType type = proto::ADAM,
             const std::string& model_text = "", bool device_paths = false,
             bool host_staged = false) {
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
  std::unique_ptr<Communicator> staged;
  if (host_staged)
    staged = make_host_staged_communicator(std::make_unique<MpiCommunicator>(), *backend);
  Trainer tr(to, net, *backend, *opt, staged ? *staged : comm);
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


const char* kBatchNormModel = R"(
    layer { name: "conv1" conv { out_channels: 8 kernel: 3 pad: 1 } }
    layer { name: "bn1" batch_norm { sync: true } }
    layer { name: "relu1" relu {} }
    layer { name: "pool1" max_pool {} }
    layer { name: "fc" affine { out_features: 10 } })";

// A net and a trainer whose every gradient() starts from the same initial parameters (restored
// after each step) and dropout masks (step 0).
struct GradientProbe {
  std::unique_ptr<Net> net;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Optimizer> opt;
  std::unique_ptr<Trainer> trainer;
  GradientProbe(Communicator& comm, const GradientSyncOptions& sync, const std::string& model_text,
                bool device_paths) {
    set_cpu_threads(1);
    proto::ModelConfig m;
    if (model_text.empty()) m.set_preset("deep_convnet");
    else EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(model_text, &m));
    net = std::make_unique<Net>(m, Shape{1, 28, 28}, 10, DType::f32);
    net->init_params(7);
    backend = device_paths ? std::unique_ptr<Backend>(new testing_util::HostDeviceBackend())
                           : make_backend("cpu-ref");
    proto::OptimizerConfig oc;
    oc.set_type(proto::SGD);
    oc.set_lr(0.1f);
    opt = make_optimizer(oc, net->num_params());
    TrainerOptions to;
    to.batch_size = 30;
    to.seed = 99;
    to.lr = oc.lr();
    to.sync = sync;
    trainer = std::make_unique<Trainer>(to, *net, *backend, *opt, comm);
    initial = net->params().clone();
  }
  Tensor initial;
  // The reduced gradient (mean over the global batch `ids`) of step 0.
  std::vector<double> gradient(const data::Dataset& d, const std::vector<int64_t>& ids) {
    trainer->set_global_step(0);
    trainer->train_step(d, ids.data(), int64_t(ids.size()));
    Tensor g = backend->to_host(net->compute_grads());
    net->mutable_params().copy_from(initial);
    return std::vector<double>(g.data<float>(), g.data<float>() + g.numel());
  }
};

double norm(const std::vector<double>& a) {
  double s = 0;
  for (double v : a) s += v * v;
  return std::sqrt(s);
}
double norm_diff(const std::vector<double>& a, const std::vector<double>& b, double scale_b = 1) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (a[i] - scale_b * b[i]) * (a[i] - scale_b * b[i]);
  return std::sqrt(s);
}

// The first global batch of epoch 0 (30 samples).
std::vector<int64_t> first_batch() {
  const std::vector<int64_t> order = epoch_permutation(99, 0, 242);
  return std::vector<int64_t>(order.begin(), order.begin() + 30);
}

// One process's first-step gradient and the tolerance for comparing another gradient of the
// same batch with it: a tenth of the smallest normwise change that losing one sample makes.
struct Reference {
  std::vector<double> g;
  double tolerance = 0;  // on ||other - g|| / ||g||
};
Reference one_process_reference(const data::Dataset& d, const std::string& model_text,
                                bool device_paths) {
  SingleProcessCommunicator one;
  GradientProbe p(one, GradientSyncOptions{}, model_text, device_paths);
  const std::vector<int64_t> ids = first_batch();
  Reference r;
  r.g = p.gradient(d, ids);
  const double B = double(ids.size());
  double smallest = INFINITY;
  for (size_t i = 0; i < ids.size(); ++i) {
    std::vector<int64_t> rest = ids;
    rest.erase(rest.begin() + long(i));
    smallest = std::min(smallest, norm_diff(r.g, p.gradient(d, rest), (B - 1) / B));
  }
  r.tolerance = smallest / norm(r.g) / 10;
  return r;
}

// comm's ranks' first-step gradient against one process's, within the reference's tolerance.
void expect_first_gradient_equals_one_process(const std::string& label,
                                              const std::string& model_text = "",
                                              bool device_paths = false,
                                              const GradientSyncOptions& sync = {}) {
  MpiCommunicator c;
  const data::Dataset d = synthetic(242);
  const Reference ref = one_process_reference(d, model_text, device_paths);
  GradientProbe p(c, sync, model_text, device_paths);
  const std::vector<double> g = p.gradient(d, first_batch());
  const double rel = norm_diff(g, ref.g) / norm(ref.g);
  if (c.rank() == 0)
    std::printf("[figures] %s, %d ranks vs 1: first-step gradient differs by %.3g (normwise, "
                "relative); allowed %.3g, a tenth of the smallest lost-sample change\n",
                label.c_str(), c.size(), rel, ref.tolerance);
  EXPECT_GT(ref.tolerance, 0.0) << label;
  EXPECT_LE(rel, ref.tolerance) << label;
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

TEST(MpiTrain, FirstStepGradientEqualsOneProcess) {
  expect_first_gradient_equals_one_process("DeepConvNet");
  // One allreduce after backward (no buckets, no overlap) reduces the same way.
  GradientSyncOptions after;
  after.overlap = false;
  expect_first_gradient_equals_one_process("DeepConvNet, one allreduce", "", false, after);
}

// Training over two epochs on N ranks learns as one process does: the loss falls alike. (The
// trajectories part after a few steps, see the top; this checks that nothing breaks later,
// such as the last, smaller batch that leaves ranks empty.)
TEST(MpiTrain, TrainingOverTwoEpochsLearns) {
  MpiCommunicator c;
  const data::Dataset d = synthetic(242);
  const Result& one = single_process_result();
  const Result many = train(c, GradientSyncOptions{}, 2, d);  // Adam; replicas checked each epoch
  ASSERT_EQ(many.losses.size(), 18u);
  if (c.rank() == 0)
    std::printf("[figures] DeepConvNet (Adam), %d ranks: loss %.4f -> %.4f over 18 steps (1 "
                "process: %.4f -> %.4f)\n", c.size(), many.losses.front(), many.losses.back(),
                one.losses.front(), one.losses.back());
  EXPECT_LT(many.losses.back(), many.losses.front());
  EXPECT_LT(one.losses.back(), one.losses.front());
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
    std::printf("[figures] %d ranks: bucketed (default 0.1 MiB) vs one allreduce: max diff %.3g; 1 KiB "
                "buckets: %.3g\n", c.size(), d1, d2);
  // On 2 ranks every element is a + b, whatever the bucketing: bit-identical. On more, MPI's
  // algorithm (a ring's chunks depend on the message size) may add the terms in another order;
  // the first-step gradient test above covers the buckets there.
  if (c.size() == 2) {
    EXPECT_EQ(d1, 0.0);
    EXPECT_EQ(d2, 0.0);
  }
}

TEST(MpiTrain, SmallBucketsFirstStepGradientEqualsOneProcess) {
  GradientSyncOptions tiny;
  tiny.bucket_bytes = 1024;
  expect_first_gradient_equals_one_process("DeepConvNet, 1 KiB buckets", "", false, tiny);
}

// 16-bit gradients on the wire: the first step's gradient is within what the wire's rounding can
// do, derived element by element. Each rank's share g_r is rounded to the wire type once, and
// each of the R - 1 additions of the allreduce rounds a partial sum no larger than
// sum_r |g_r|: at most 2R roundings of relative size u (2^-11 for f16, 2^-8 for bf16) of
// sum_r |g_r|, so ||compressed - f32|| <= 2R u ||sum_r |g_r|||, plus, for f16, half a subnormal
// step (2^-25, after the prescale by the batch B) per rounding for values below its normal
// range. Then two epochs keep the replicas identical (check_replicas after each epoch) and learn.
TEST(MpiTrain, CompressedGradientsStayWithinTheWirePrecision) {
  MpiCommunicator c;
  const data::Dataset d = synthetic(242);
  const std::vector<int64_t> ids = first_batch();
  const double B = double(ids.size()), R = double(c.size());
  // sum_r |g_r|: each rank's shard's mean gradient, weighted by its share of the batch.
  SingleProcessCommunicator one;
  GradientProbe local(one, GradientSyncOptions{}, "", false);
  const ShardRange sh = shard_of_batch(int64_t(B), c.rank(), c.size());
  std::vector<double> g_r = sh.end > sh.begin
      ? local.gradient(d, std::vector<int64_t>(ids.begin() + sh.begin, ids.begin() + sh.end))
      : std::vector<double>(size_t(local.net->num_params()), 0.0);
  Tensor abs_sum = Tensor::empty({int64_t(g_r.size())}, DType::f64);
  for (size_t i = 0; i < g_r.size(); ++i)
    abs_sum.data<double>()[i] = std::fabs(g_r[i]) * double(sh.end - sh.begin) / B;
  c.allreduce_sum(abs_sum);
  const double abs_norm = norm(std::vector<double>(abs_sum.data<double>(),
                                                   abs_sum.data<double>() + abs_sum.numel()));
  GradientProbe plain(c, GradientSyncOptions{}, "", false);
  const std::vector<double> g = plain.gradient(d, ids);
  for (WireCompression wc : {WireCompression::f16, WireCompression::bf16}) {
    GradientSyncOptions o;
    o.compression = wc;
    GradientProbe compressed(c, o, "", false);
    const double diff = norm_diff(compressed.gradient(d, ids), g);
    const bool f16 = wc == WireCompression::f16;
    const double u = f16 ? std::ldexp(1.0, -11) : std::ldexp(1.0, -8);
    const double subnormal = f16 ? 2 * R * std::ldexp(1.0, -25) / B * std::sqrt(double(g.size())) : 0;
    const double bound = 2 * R * u * abs_norm + subnormal;
    if (c.rank() == 0)
      std::printf("[figures] %d ranks, %s on the wire: first-step gradient differs by %.3g "
                  "(normwise), bound %.3g; |gradient| %.3g\n", c.size(), f16 ? "f16" : "bf16",
                  diff, bound, norm(g));
    EXPECT_LE(diff, bound) << (f16 ? "f16" : "bf16");
    EXPECT_GT(diff, 0.0) << "compression should round something";
    Result r;
    ASSERT_NO_THROW(r = train(c, o, 2, d));
    EXPECT_LT(r.losses.back(), r.losses.front());
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
  if (c.rank() == c.size() - 1) net.mutable_params().data<float>()[3] += 1e-3f;
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
// on 4 ranks, covered by TrainingOverTwoEpochsLearns's path and by test_mpi_exact), and the
// first-step gradient equals one process's.
TEST(MpiTrain, SynchronisedBatchNormEqualsOneProcess) {
  expect_first_gradient_equals_one_process("sync batch norm", kBatchNormModel);
}

// The same through the paths a GPU takes: the sums, the sample count and the gradient sums
// allreduced from the backend's memory, the statistics computed there.
TEST(MpiTrain, SynchronisedBatchNormOnTheDevicePathsEqualsOneProcess) {
  expect_first_gradient_equals_one_process("sync batch norm (device paths)", kBatchNormModel, true);
}

// Over two epochs (the last batch leaves ranks empty), replicas stay identical and learn.
TEST(MpiTrain, SynchronisedBatchNormTrainsOverTwoEpochs) {
  MpiCommunicator c;
  const data::Dataset d = synthetic(242);
  for (bool device_paths : {false, true}) {
    Result r;  // train_epoch ends with check_replicas(): it throws if any rank's differ
    ASSERT_NO_THROW(r = train(c, GradientSyncOptions{}, 2, d, proto::SGD, kBatchNormModel, device_paths));
    EXPECT_LT(r.losses.back(), r.losses.front() / 4) << (device_paths ? "device paths" : "host");
  }
}

// distributed.device_transport: DEVICE_TRANSPORT_HOST_MPI (two ranks on one GPU, where NCCL
// refuses): every collective of the device paths staged through host buffers and MPI. The copies
// are exact and the sums are MPI's, so training is the plain MPI path's bit for bit: DeepConvNet
// with Adam, in one bucket and in many, and synchronised BatchNorm (its statistics allreduced
// from the backend's memory).
TEST(MpiTrain, HostStagedTransportTrainsAsThePlainMpiPathBitForBit) {
  MpiCommunicator c;
  const data::Dataset d = synthetic(242);
  GradientSyncOptions small_buckets;  // many collectives in flight at once, each its own buffer
  small_buckets.bucket_bytes = 16 << 10;
  struct Case {
    const char* label;
    std::string model;
    GradientSyncOptions sync;
  };
  for (const Case& k : {Case{"DeepConvNet", "", {}}, Case{"DeepConvNet, 16 KiB buckets", "", small_buckets},
                        Case{"sync batch norm", kBatchNormModel, {}}}) {
    const Result plain = train(c, k.sync, 2, d, proto::ADAM, k.model, true);
    const Result staged = train(c, k.sync, 2, d, proto::ADAM, k.model, true, true);
    ASSERT_EQ(plain.params.size(), staged.params.size()) << k.label;
    EXPECT_EQ(std::memcmp(plain.params.data(), staged.params.data(), plain.params.size() * sizeof(float)), 0)
        << k.label << ": parameters after 2 epochs differ by " << max_abs_diff(plain.params, staged.params);
    EXPECT_EQ(plain.losses, staged.losses) << k.label;
    EXPECT_LT(staged.losses.back(), staged.losses.front()) << k.label;
  }
}
