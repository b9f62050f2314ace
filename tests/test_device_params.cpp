// Host readers and writers of a net that computes on a device: an ensemble's members loaded
// after the trainer placed the net, weights saved after device steps, checkpoints, their .npz
// export and transfer. None of them moves parameters: the Net does (core/synced_tensor.h).
// HostDeviceBackend keeps the "device" copies in host buffers of their own, so a missing move
// leaves a stale copy; every test compares with a result that a stale copy would not give
// (the initial weights, another member's, a net that never ran on a device).
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "core/backend/cpu.h"
#include "core/io/checkpoint.h"
#include "core/io/npz.h"
#include "core/io/transfer.h"
#include "core/io/weights.h"
#include "core/optim/optimizer.h"
#include "distributed/communicator.h"
#include "distributed/trainer.h"
#include "host_device_backend.h"
#include "synthetic_squares.h"

using namespace deeptrain;

namespace {

using testing_util::HostDeviceBackend;

proto::ModelConfig model(bool batch_norm) {
  proto::ModelConfig mc;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(
      std::string(R"(layer { name: "conv" conv { out_channels: 4 kernel: 5 stride: 2 } })") +
          (batch_norm ? R"(layer { name: "bn" batch_norm {} })" : "") + R"(
      layer { name: "relu" relu {} }
      layer { name: "pool" max_pool { kernel: 2 } }
      layer { name: "fc" affine { out_features: 10 } })",
      &mc));
  return mc;
}

data::Dataset squares(int64_t n, uint64_t stream) {
  return testing_util::synthetic_squares(n, {77, stream, 200, 56, 40});
}

// A net with its trainer: built on `be`, so placed there, with parameters from init_seed.
struct Rig {
  Rig(Backend& be, bool batch_norm, uint64_t init_seed)
      : net(model(batch_norm), {1, 28, 28}, 10, DType::f32) {
    net.init_params(init_seed);
    proto::OptimizerConfig oc;
    oc.set_type(proto::MOMENTUM);
    oc.set_lr(0.05f);
    oc.set_momentum(0.9f);
    opt = make_optimizer(oc, net.num_params(), nullptr);
    TrainerOptions to;
    to.batch_size = 20;
    to.eval_batch_size = 25;
    to.seed = 5;
    to.lr = oc.lr();
    trainer = std::make_unique<Trainer>(to, net, be, *opt, comm);
  }
  // Steps [first, first + count) on consecutive batches: no epoch end, so no replica check
  // that could read the parameters back on the way.
  void steps(const data::Dataset& d, int64_t first, int64_t count) {
    std::vector<int64_t> ids(20);
    for (int64_t s = first; s < first + count; ++s) {
      for (int64_t i = 0; i < 20; ++i) ids[i] = (s * 20 + i) % d.labels.numel();
      trainer->set_global_step(s);
      trainer->train_step(d, ids.data(), 20);
    }
  }
  Net net;
  std::unique_ptr<Optimizer> opt;
  SingleProcessCommunicator comm;
  std::unique_ptr<Trainer> trainer;
};

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("deeptrain_device_params_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

void expect_same_eval(const EvalReport& got, const EvalReport& want, const std::string& what) {
  EXPECT_EQ(got.loss, want.loss) << what;
  EXPECT_EQ(got.correct, want.correct) << what;
}

// `deeptrain eval --weights A --weights B` on a GPU: the trainer places the net (the device gets
// the initial weights), then each member's file is loaded on the host. Each member must be
// scored with its own weights: as the host backend scores it, bit for bit, and unlike the
// initial weights or the other member (what a stale device copy would give).
TEST(DeviceParams, EnsembleMembersLoadedAfterPlacementAreTheOnesEvaluated) {
  const data::Dataset test = squares(60, 2);
  std::vector<std::string> paths;
  for (uint64_t seed : {11, 12}) {
    Net member(model(false), {1, 28, 28}, 10, DType::f32);
    member.init_params(seed);
    paths.push_back(temp_path("member" + std::to_string(seed) + ".weights"));
    io::save_weights(paths.back(), member);
  }
  struct Scores {
    std::vector<EvalReport> evals;  // the initial weights, then each member
    std::vector<Tensor> probabilities;
  };
  auto score = [&](Backend& be) {
    Rig r(be, false, 1);
    Scores s;
    s.evals.push_back(r.trainer->evaluate(test));
    for (const std::string& p : paths) {
      io::load_weights(p, r.net);
      Tensor probs;
      s.evals.push_back(r.trainer->evaluate(test, nullptr, &probs));
      s.probabilities.push_back(probs);
    }
    return s;
  };
  CpuBackend host;
  HostDeviceBackend dev;
  const Scores want = score(host), got = score(dev);
  for (size_t k = 1; k < want.evals.size(); ++k) {
    expect_same_eval(got.evals[k], want.evals[k], "member " + std::to_string(k));
    ASSERT_EQ(got.probabilities[k - 1].nbytes(), want.probabilities[k - 1].nbytes());
    EXPECT_EQ(0, std::memcmp(got.probabilities[k - 1].raw(), want.probabilities[k - 1].raw(),
                             want.probabilities[k - 1].nbytes()));
  }
  EXPECT_NE(want.evals[1].loss, want.evals[0].loss);
  EXPECT_NE(want.evals[2].loss, want.evals[0].loss);
  EXPECT_NE(want.evals[2].loss, want.evals[1].loss);
  for (const std::string& p : paths) std::filesystem::remove(p);
}

// save_weights right after device steps (no epoch end, no replica check before it) writes the
// trained parameters and running statistics: a fresh net loading the file evaluates exactly as
// the trained one does on the device, and unlike the initial weights.
TEST(DeviceParams, SaveWeightsAfterDeviceStepsWritesTheTrainedValues) {
  const data::Dataset train = squares(100, 1), test = squares(50, 2);
  HostDeviceBackend dev;
  Rig trained(dev, true, 3);
  const EvalReport initial = trained.trainer->evaluate(test);
  trained.steps(train, 0, 4);
  const std::string path = temp_path("trained.weights");
  io::save_weights(path, trained.net);
  const EvalReport want = trained.trainer->evaluate(test);
  EXPECT_NE(want.loss, initial.loss);

  HostDeviceBackend dev2;
  Rig fresh(dev2, true, 99);
  io::load_weights(path, fresh.net);
  expect_same_eval(fresh.trainer->evaluate(test), want, "loaded after the trainer was built");
  Net on_host(model(true), {1, 28, 28}, 10, DType::f32);
  io::load_weights(path, on_host);
  const auto state = on_host.state();
  ASSERT_EQ(state[0].first, "bn.running_mean");
  EXPECT_NE(state[0].second->data<double>()[0], 0.0);  // trained, not the initial 0
  std::filesystem::remove(path);
}

// A checkpoint captured after device steps, restored into a net whose device copies are
// current with other weights (it has evaluated there): the restored net continues exactly as
// the captured one does, parameters and running statistics alike.
TEST(DeviceParams, CheckpointOfDeviceStepsRestoresIntoAPlacedNet) {
  const data::Dataset train = squares(100, 1), test = squares(50, 2);
  const std::string dir = temp_path("ckpt");
  HostDeviceBackend dev;
  Rig a(dev, true, 3);
  a.steps(train, 0, 3);
  io::TrainingState s = io::capture(a.net, *a.opt);
  s.global_step = 3;
  s.steps_per_epoch = 5;
  const std::string path = io::save_checkpoint(dir, s, 0);
  a.steps(train, 3, 2);

  HostDeviceBackend dev2;
  Rig b(dev2, true, 99);
  const EvalReport before = b.trainer->evaluate(test);
  io::restore_into(io::load_checkpoint(path), b.net, *b.opt);
  b.steps(train, 3, 2);
  const EvalReport want = a.trainer->evaluate(test);
  EXPECT_NE(want.loss, before.loss);
  expect_same_eval(b.trainer->evaluate(test), want, "resumed");
  ASSERT_EQ(a.net.params().nbytes(), b.net.params().nbytes());
  EXPECT_EQ(0, std::memcmp(a.net.params().raw(), b.net.params().raw(), a.net.params().nbytes()));
  const auto sa = a.net.state(), sb = b.net.state();
  ASSERT_EQ(sa.size(), 2u);
  ASSERT_EQ(sb.size(), sa.size());
  for (size_t k = 0; k < sa.size(); ++k)
    EXPECT_EQ(0, std::memcmp(sa[k].second->raw(), sb[k].second->raw(), sa[k].second->nbytes()))
        << sa[k].first;
  std::filesystem::remove_all(dir);
}

// `deeptrain export CHECKPOINT --npz` of a checkpoint captured after device steps holds the
// trained values: imported into a placed net, it evaluates as the trained net does.
TEST(DeviceParams, ExportOfADeviceCheckpointHoldsTheTrainedValues) {
  const data::Dataset train = squares(100, 1), test = squares(50, 2);
  HostDeviceBackend dev;
  Rig a(dev, true, 3);
  a.steps(train, 0, 4);
  const std::string npz = temp_path("export.npz");
  io::export_npz(io::capture(a.net, *a.opt), npz);
  const EvalReport want = a.trainer->evaluate(test);

  HostDeviceBackend dev2;
  Rig b(dev2, true, 99);
  const EvalReport before = b.trainer->evaluate(test);
  EXPECT_NE(want.loss, before.loss);
  // conv, bn and fc: 2 parameters each; bn: 2 statistics
  EXPECT_EQ(io::import_npz(npz, b.net, io::NpzDropout::inverted), 8);
  expect_same_eval(b.trainer->evaluate(test), want, "imported");
  std::filesystem::remove(npz);
}

// transfer.init_from into a net already placed and computing on the device, from tensors read
// off another device-trained net: the target then evaluates as the source does.
TEST(DeviceParams, TransferIntoAPlacedNetFromADeviceTrainedOne) {
  const data::Dataset train = squares(100, 1), test = squares(50, 2);
  HostDeviceBackend dev;
  Rig source(dev, true, 3);
  source.steps(train, 0, 4);
  std::map<std::string, Tensor> tensors;
  for (const ParamEntry& e : source.net.param_entries())
    tensors[e.name] = source.net.param_view(e).clone();
  for (auto& [name, t] : source.net.state()) tensors[name] = t->clone();
  const EvalReport want = source.trainer->evaluate(test);

  HostDeviceBackend dev2;
  Rig target(dev2, true, 99);
  const EvalReport before = target.trainer->evaluate(test);
  EXPECT_NE(want.loss, before.loss);
  io::TransferReport report;
  EXPECT_EQ(io::init_from_weights(target.net, tensors, {}, &report), 8) << report.summary();
  expect_same_eval(target.trainer->evaluate(test), want, "transferred");
}

}  // namespace
