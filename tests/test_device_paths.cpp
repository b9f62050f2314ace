// The trainer's device paths, run on machines without a GPU. HostDeviceBackend
// (host_device_backend.h) is the reference CPU backend that calls itself a device: Net and
// Trainer then take every path they take for a GPU (parameter copies the Net keeps current,
// gradients in device memory, the data sets copied once and batches gathered by Backend::gather_samples,
// lr_scale copied to the device), while every op still runs on the host. A GPU run checks the
// ops themselves (test_backend_ops_gpu, test_gpu_layers, test_gpu_train); this checks the
// orchestration around them, in CI, bit for bit against the host path.
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include <gtest/gtest.h>
#include <unistd.h>

#include "core/backend/cpu.h"
#include "core/config.h"
#include "core/io/checkpoint.h"
#include "core/optim/optimizer.h"
#include "core/random.h"
#include "distributed/communicator.h"
#include "distributed/trainer.h"
#include "gradcheck_util.h"
#include "host_device_backend.h"
#include "net_cases.h"

using namespace deeptrain;

namespace {

using testing_util::HostDeviceBackend;

data::Dataset synthetic(int64_t n, uint64_t seed, int64_t side = 28, int classes = 10) {
  data::Dataset d;
  d.name = "synthetic";
  d.num_classes = classes;
  d.images = Tensor::empty({n, 1, side, side}, DType::u8);
  d.labels = Tensor::empty({n}, DType::i32);
  const RandomStream rs{seed, 5};
  for (int64_t k = 0; k < d.images.numel(); ++k)
    d.images.data<uint8_t>()[k] = uint8_t(rs.block(uint64_t(k))[0] & 0xff);
  for (int64_t i = 0; i < n; ++i)
    d.labels.data<int32_t>()[i] = int32_t(rs.block(uint64_t(i), 1)[0] % uint32_t(classes));
  return d;
}

struct TrainRun {
  std::vector<double> losses;
  Tensor params;
  EvalReport eval;
  std::vector<int32_t> predictions;
  Tensor probabilities;
};

// Two epochs of DeepConvNet (batch 32, Adam) on `train`, then an evaluation of `test`.
TrainRun train(Backend& be, const data::Dataset& train, const data::Dataset& test, bool augment,
               bool device_data, bool frozen_conv1, bool loss_scaling = false) {
  proto::ExperimentConfig cfg = parse_config(
      "model { preset: 'deep_convnet' } optimizer { type: ADAM lr: 0.001 } "
      "schedule { epochs: 2 batch_size: 32 lr_schedule { type: COSINE } }",
      "(test)", {});
  Net net(cfg.model(), {1, 28, 28}, 10, DType::f32);
  net.init_params(7);
  // The host optimizer updates mutable_compute_params() in place (host memory here); a GPU's
  // fused update is checked against it by GpuOptimizer (test_backend_ops_gpu).
  auto opt = make_optimizer(cfg.optimizer(), net.num_params(), nullptr);
  TrainerOptions to;
  to.batch_size = 32;
  to.eval_batch_size = 50;
  to.seed = 7;
  to.epochs = 2;
  to.lr_schedule = cfg.schedule().lr_schedule();
  to.device_data = device_data;
  to.loss_scale.enabled = loss_scaling;  // fp16's dynamic scaling: the check runs on the device
  if (augment) {
    to.augment.set_enabled(true);
    to.augment.set_shift_px(2);
    to.augment.set_rotation_deg(10);
  }
  if (frozen_conv1) {  // a transfer config's freeze: lr_scale 0 on conv1's parameters
    to.lr_scale = Tensor::empty({net.num_params()}, DType::f32);
    for (int64_t i = 0; i < net.num_params(); ++i) to.lr_scale.data<float>()[i] = 1.0f;
    for (const ParamEntry& e : net.param_entries())
      if (e.name.rfind("conv1.", 0) == 0)
        for (int64_t i = 0; i < e.shape.numel(); ++i) to.lr_scale.data<float>()[e.offset + i] = 0.0f;
  }
  SingleProcessCommunicator one;
  Trainer trainer(to, net, be, *opt, one);
  TrainRun r;
  for (int epoch = 0; epoch < 2; ++epoch)
    trainer.train_epoch(train, epoch, nullptr, [&](int64_t, int64_t, const StepMetrics& m) {
      r.losses.push_back(m.loss_sum);
    });
  r.eval = trainer.evaluate(test, &r.predictions, &r.probabilities);
  r.params = net.params().clone();
  return r;
}

void expect_same(const TrainRun& device, const TrainRun& host) {
  ASSERT_EQ(device.losses.size(), host.losses.size());
  for (size_t s = 0; s < host.losses.size(); ++s) EXPECT_EQ(device.losses[s], host.losses[s]) << s;
  ASSERT_EQ(device.params.nbytes(), host.params.nbytes());
  EXPECT_EQ(0, std::memcmp(device.params.raw(), host.params.raw(), host.params.nbytes()));
  EXPECT_EQ(device.eval.correct, host.eval.correct);
  EXPECT_EQ(device.eval.loss, host.eval.loss);
  EXPECT_EQ(device.predictions, host.predictions);
  ASSERT_EQ(device.probabilities.nbytes(), host.probabilities.nbytes());
  EXPECT_EQ(0, std::memcmp(device.probabilities.raw(), host.probabilities.raw(),
                           host.probabilities.nbytes()));
}

TEST(DevicePaths, TrainingThroughTheDevicePathsIsTheHostTrainingBitForBit) {
  const data::Dataset tr = synthetic(160, 1), te = synthetic(70, 2);
  CpuBackend host;
  const TrainRun want = train(host, tr, te, false, true, false);
  HostDeviceBackend dev;
  const TrainRun got = train(dev, tr, te, false, true, false);
  expect_same(got, want);
  // Every batch was gathered "on the device": 2 epochs of 5 steps, and 2 evaluation batches.
  EXPECT_EQ(dev.gathers, 2 * 5 + 2);
  EXPECT_GT(want.losses.front(), 0.0);
}

TEST(DevicePaths, AugmentedBatchesAndHostGatheringTakeTheHostPath) {
  const data::Dataset tr = synthetic(96, 3), te = synthetic(40, 4);
  CpuBackend host;
  HostDeviceBackend dev;
  // Augmented training batches are built on the host and copied; evaluation still gathers on
  // the device.
  expect_same(train(dev, tr, te, true, true, false), train(host, tr, te, true, true, false));
  EXPECT_EQ(dev.gathers, 1);
  HostDeviceBackend off;
  expect_same(train(off, tr, te, false, false, false), train(host, tr, te, false, false, false));
  EXPECT_EQ(off.gathers, 0);
}

// A data set with per-channel normalisation (data.transform's mean and std, as predict and
// in-memory sets carry them) is gathered on the host, which normalises; the device's gather
// computes p / 255 alone.
TEST(DevicePaths, NormalisedDataSetsAreGatheredOnTheHost) {
  data::Dataset tr = synthetic(96, 7), te = synthetic(40, 8);
  for (data::Dataset* d : {&tr, &te}) {
    d->mean = {0.25f};
    d->std = {0.5f};
  }
  CpuBackend host;
  HostDeviceBackend dev;
  expect_same(train(dev, tr, te, false, true, false), train(host, tr, te, false, true, false));
  EXPECT_EQ(dev.gathers, 0);
}

TEST(DevicePaths, FrozenParametersStayFrozenThroughTheDeviceCopy) {
  const data::Dataset tr = synthetic(64, 5), te = synthetic(20, 6);
  CpuBackend host;
  HostDeviceBackend dev;
  const TrainRun want = train(host, tr, te, false, true, true);
  expect_same(train(dev, tr, te, false, true, true), want);
}

TEST(DevicePaths, LossScalingThroughTheDeviceGradients) {
  const data::Dataset tr = synthetic(64, 7), te = synthetic(20, 8);
  CpuBackend host;
  HostDeviceBackend dev;
  const TrainRun want = train(host, tr, te, false, true, false, true);
  expect_same(train(dev, tr, te, false, true, false, true), want);
}

// The deeper nets' layers on a device: BatchNorm with its statistics and running averages in
// the backend's memory (brought home by download_params), the residual add, concat's row
// copies and global average pooling. The layers have one path, the backend's ops, so the
// stand-in device (CpuBackend's ops) matches the host bit for bit.
TEST(DevicePaths, DeeperLayersDevicePathsMatchTheHostLayers) {
  using namespace testing_util;
  const proto::ModelConfig mc = wide_graph();
  const Tensor x = random_f32({6, 1, 8, 8}, 11);
  Tensor labels = Tensor::empty({6}, DType::i32);
  for (int64_t i = 0; i < 6; ++i) labels.data<int32_t>()[i] = int32_t(i % 5);
  CpuBackend host;
  HostDeviceBackend dev;
  const NetPass want = net_pass(mc, {1, 8, 8}, 5, host, x, labels);
  const NetPass got = net_pass(mc, {1, 8, 8}, 5, dev, x, labels);
  EXPECT_EQ(rel_diff(got.logits, want.logits), 0.0);
  EXPECT_EQ(rel_diff(got.grads, want.grads), 0.0);

  // A few training steps, then evaluation with the running statistics the steps left.
  const data::Dataset tr = synthetic(48, 12, 8, 5), te = synthetic(20, 13, 8, 5);
  std::vector<std::vector<double>> losses;
  std::vector<EvalReport> evals;
  std::vector<Tensor> running;
  for (Backend* be : {static_cast<Backend*>(&host), static_cast<Backend*>(&dev)}) {
    Net net(mc, {1, 8, 8}, 5, DType::f32);
    net.init_params(3);
    proto::OptimizerConfig oc;
    oc.set_type(proto::MOMENTUM);
    oc.set_lr(0.05f);
    oc.set_momentum(0.9f);
    auto opt = make_optimizer(oc, net.num_params(), nullptr);
    TrainerOptions to;
    to.batch_size = 16;
    to.eval_batch_size = 16;
    to.seed = 3;
    SingleProcessCommunicator one;
    Trainer trainer(to, net, *be, *opt, one);
    std::vector<double> l;
    trainer.train_epoch(tr, 0, nullptr, [&](int64_t, int64_t, const StepMetrics& m) {
      l.push_back(m.loss_sum);
    });
    losses.push_back(l);
    evals.push_back(trainer.evaluate(te));
    for (auto& [name, t] : net.state()) running.push_back(t->clone());
  }
  ASSERT_EQ(losses[0].size(), 3u);
  for (size_t s = 0; s < 3; ++s) EXPECT_EQ(losses[1][s], losses[0][s]) << "step " << s;
  EXPECT_EQ(evals[1].loss, evals[0].loss);
  ASSERT_EQ(running.size() % 2, 0u);
  const size_t half = running.size() / 2;
  ASSERT_EQ(half, 10u);  // 5 BN layers, a running mean and variance each
  for (size_t k = 0; k < half; ++k)
    for (int64_t i = 0; i < running[k].numel(); ++i)
      EXPECT_EQ(running[half + k].data<double>()[i], running[k].data<double>()[i])
          << "running statistic " << k << " [" << i << "]";
}

// A checkpoint of a device run holds the device's parameters (the capture reads them through
// the Net), and a resumed device run continues bit for bit: a checkpoint after step 2 of 3 in
// epoch 1 (from the step callback, where the app saves --checkpoint-every's checkpoints: before
// the epoch's end reads anything back), a fresh net (other initial weights) restored from the file, the
// rest == 2 epochs straight (Adam, cosine rate, dropout: all keyed by the global step).
struct Rig {
  HostDeviceBackend be;
  proto::ExperimentConfig cfg = parse_config(
      "model { preset: 'deep_convnet' } optimizer { type: ADAM lr: 0.002 } "
      "schedule { epochs: 2 batch_size: 32 lr_schedule { type: COSINE } }",
      "(test)", {});
  Net net;
  std::unique_ptr<Optimizer> opt;
  SingleProcessCommunicator comm;
  std::unique_ptr<Trainer> trainer;
  // DeepConvNet on 28x28 MNIST-like images, or `graph` on side x side ones.
  explicit Rig(uint64_t init_seed, const proto::ModelConfig* graph = nullptr, int64_t side = 28,
               int classes = 10)
      : net(graph ? *graph : cfg.model(), {1, side, side}, classes, DType::f32) {
    if (graph) *cfg.mutable_model() = *graph;
    net.init_params(init_seed);
    opt = make_optimizer(cfg.optimizer(), net.num_params(), nullptr);
    TrainerOptions to;
    to.batch_size = 32;
    to.seed = 7;
    to.epochs = 2;
    to.lr_schedule = cfg.schedule().lr_schedule();
    trainer = std::make_unique<Trainer>(to, net, be, *opt, comm);
  }
  Tensor params() { return net.params().clone(); }
};

// The run of `graph` (null: DeepConvNet) on side x side images of `classes` classes: two epochs
// straight, and again with a checkpoint after step 2 of epoch 1 restored into a fresh net.
// Returns both runs' parameters and layer state (BatchNorm's running statistics), as the host
// reads them at the end.
struct ResumePair {
  std::vector<Tensor> straight, resumed;
};
ResumePair resume_through_device_copy(const proto::ModelConfig* graph, int64_t side,
                                      int classes) {
  const data::Dataset tr = synthetic(96, 21, side, classes);
  auto result = [](Rig& r) {
    std::vector<Tensor> out{r.params()};
    for (auto& [name, t] : r.net.state()) out.push_back(t->clone());
    return out;
  };
  ResumePair p;
  Rig straight(7, graph, side, classes);
  straight.trainer->train_epoch(tr, 0, nullptr);
  straight.trainer->train_epoch(tr, 1, nullptr);
  p.straight = result(straight);

  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("deeptrain_device_resume_" + std::to_string(::getpid()));
  std::string path;
  {
    Rig first(7, graph, side, classes);
    first.trainer->train_epoch(tr, 0, nullptr, [&](int64_t step, int64_t, const StepMetrics&) {
      if (step != 1) return;
      io::TrainingState s = io::capture(first.net, *first.opt);
      s.global_step = first.trainer->global_step();
      s.step_in_epoch = 2;
      s.seed = 7;
      s.config = first.cfg;
      path = io::save_checkpoint(dir.string(), s, 0);
    });
  }
  // Other initial weights: everything must come from the checkpoint. And the net has computed
  // on the device before (its statistics are there already): the restore must replace them.
  Rig resumed(99, graph, side, classes);
  resumed.trainer->evaluate(tr);
  const io::TrainingState loaded = io::load_checkpoint(path);
  io::restore_into(loaded, resumed.net, *resumed.opt);
  resumed.trainer->set_global_step(loaded.global_step);
  EXPECT_EQ(loaded.global_step, 2);
  EpochProgress rest;
  rest.steps_done = loaded.step_in_epoch;
  resumed.trainer->train_epoch(tr, 0, nullptr, {}, &rest);
  resumed.trainer->train_epoch(tr, 1, nullptr);
  p.resumed = result(resumed);
  std::filesystem::remove_all(dir);
  return p;
}

void expect_bit_identical(const ResumePair& p) {
  ASSERT_EQ(p.resumed.size(), p.straight.size());
  for (size_t k = 0; k < p.straight.size(); ++k) {
    ASSERT_EQ(p.resumed[k].nbytes(), p.straight[k].nbytes()) << "tensor " << k;
    EXPECT_EQ(0, std::memcmp(p.resumed[k].raw(), p.straight[k].raw(), p.straight[k].nbytes()))
        << (k == 0 ? "parameters" : "state tensor " + std::to_string(k - 1));
  }
}

TEST(DevicePaths, ResumeThroughTheDeviceCopyIsBitExact) {
  expect_bit_identical(resume_through_device_copy(nullptr, 28, 10));
}

// BatchNorm's running statistics live on the device while the net trains there: the mid-epoch
// checkpoint must hold the device's (read back at the capture), the restore must put them back
// on the device, and the end of the run must bring them home, bit for bit.
TEST(DevicePaths, BatchNormStateTravelsThroughTheDeviceCopyBitExact) {
  const proto::ModelConfig graph = testing_util::wide_graph();
  const ResumePair p = resume_through_device_copy(&graph, 8, 5);
  ASSERT_EQ(p.straight.size(), 11u);  // the parameters, 5 BN layers' running mean and variance
  // The statistics did move away from their start (0 and 1).
  EXPECT_NE(p.straight[1].data<double>()[0], 0.0);
  EXPECT_NE(p.straight[2].data<double>()[0], 1.0);
  expect_bit_identical(p);
}

}  // namespace
