// Transfer learning: weights copied by name where shapes match (a new head keeps its fresh
// initialisation; BN running statistics come along), read from weights files and .npz; and
// per-parameter learning-rate multipliers, with frozen parameters bit-identical after
// optimizer steps.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include "core/io/npz.h"
#include "core/io/transfer.h"
#include "core/io/weights.h"
#include "core/optim/optimizer.h"
#include "core/random.h"
#include "distributed/trainer.h"
#include "error_util.h"

using namespace deeptrain;
namespace fs = std::filesystem;

namespace {

const char* kModel = R"(
  layer { name: "conv1" conv { out_channels: 4 kernel: 3 pad: 1 no_bias: true } }
  layer { name: "bn1" batch_norm {} }
  layer { name: "relu1" relu {} }
  layer { name: "conv2" conv { out_channels: 6 kernel: 3 stride: 2 } }
  layer { name: "gap" global_avg_pool {} }
  layer { name: "fc" affine { out_features: 10 } }
)";

Net make_net(int classes, uint64_t seed) {
  proto::ModelConfig mc;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(kModel, &mc));
  mc.mutable_layer(mc.layer_size() - 1)->mutable_affine()->set_out_features(classes);  // the head
  Net net(mc, {1, 8, 8}, classes, DType::f32);
  net.init_params(seed);
  return net;
}

std::vector<float> values(Net& net, const std::string& name) {
  Tensor v = net.param_view(net.param(name));
  return std::vector<float>(v.data<float>(), v.data<float>() + v.numel());
}

Tensor* state(Net& net, const std::string& name) {
  for (auto& [n, t] : net.mutable_state())
    if (n == name) return t;
  return nullptr;
}

// The source's tensors as a name -> tensor map (what read_weight_tensors returns), including
// its BN statistics.
std::map<std::string, Tensor> tensors_of(Net& net) {
  std::map<std::string, Tensor> m;
  for (const ParamEntry& e : net.param_entries()) m[e.name] = net.param_view(e).clone();
  for (auto& [name, t] : net.state()) m[name] = t->clone();
  return m;
}

TEST(Transfer, CopiesMatchingTensorsAndKeepsANewHead) {
  Net source = make_net(10, 1);
  state(source, "bn1.running_mean")->data<double>()[2] = 0.75;  // as if trained
  Net target = make_net(5, 2);                                  // another head: 5 classes
  const std::vector<float> fresh_head = values(target, "fc.W");
  io::TransferReport report;
  const int copied = io::init_from_weights(target, tensors_of(source), {}, &report);
  // conv1.W, bn1.gamma, bn1.beta, conv2.W, conv2.b and the two BN statistics; not fc.W / fc.b.
  EXPECT_EQ(copied, 7) << report.summary();
  for (const char* name : {"conv1.W", "bn1.gamma", "bn1.beta", "conv2.W", "conv2.b"})
    EXPECT_EQ(values(target, name), values(source, name)) << name;
  EXPECT_EQ(state(target, "bn1.running_mean")->data<double>()[2], 0.75);
  EXPECT_EQ(values(target, "fc.W"), fresh_head);
  ASSERT_EQ(report.skipped.size(), 2u);
  EXPECT_NE(report.skipped[0].find("fc.W: source shape (6, 10), model shape (6, 5)"), std::string::npos)
      << report.skipped[0];
  EXPECT_TRUE(report.unused.empty());
}

TEST(Transfer, SkipPatternsAndTensorsMissingFromTheSource) {
  Net source = make_net(10, 1);
  Net target = make_net(10, 2);
  const std::vector<float> conv2 = values(target, "conv2.W");
  std::map<std::string, Tensor> src = tensors_of(source);
  src.erase("bn1.beta");
  src["old_layer.W"] = Tensor::zeros({3}, DType::f32);
  io::TransferReport report;
  const int copied = io::init_from_weights(target, src, {"conv2.*"}, &report);
  EXPECT_EQ(copied, 6);  // conv1.W, bn1.gamma, fc.W, fc.b and the two BN statistics
  EXPECT_EQ(values(target, "conv2.W"), conv2);
  EXPECT_EQ(values(target, "fc.W"), values(source, "fc.W"));
  const std::string s = report.summary();
  EXPECT_NE(s.find("conv2.W: matches skip pattern 'conv2.*'"), std::string::npos) << s;
  EXPECT_NE(s.find("bn1.beta: not in the source"), std::string::npos) << s;
  EXPECT_EQ(report.unused, std::vector<std::string>{"old_layer.W"});
}

TEST(Transfer, ReadsWeightsFilesAndNpz) {
  Net source = make_net(10, 1);
  const fs::path dir = fs::temp_directory_path() / ("deeptrain_transfer_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const std::string weights = (dir / "w.dtw").string(), npz = (dir / "w.npz").string();
  io::save_weights(weights, source);
  std::vector<std::pair<std::string, Tensor>> arrays;
  for (const ParamEntry& e : source.param_entries()) arrays.push_back({e.name, source.param_view(e)});
  io::write_npz(npz, arrays);
  for (const std::string& path : {weights, npz}) {
    const std::map<std::string, Tensor> m = io::read_weight_tensors(path);
    // The weights file also holds the BN statistics (2 tensors); the .npz only parameters.
    ASSERT_EQ(m.size(), source.param_entries().size() + (path == weights ? 2 : 0)) << path;
    Net target = make_net(10, 9);
    EXPECT_EQ(io::init_from_weights(target, m, {}), int(m.size())) << path;
    EXPECT_EQ(values(target, "conv2.W"), values(source, "conv2.W")) << path;
  }
  // A corrupted tensor fails its CRC, named.
  std::string bytes;
  {
    std::ifstream in(weights, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  bytes[bytes.size() / 2] ^= 0x40;
  {
    std::ofstream out(weights, std::ios::binary);
    out << bytes;
  }
  try {
    io::read_weight_tensors(weights);
    ADD_FAILURE() << "corruption not detected";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(weights), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(Transfer, LrScaleFromGlobsLastMatchWins) {
  Net net = make_net(10, 1);
  const Tensor s = io::make_lr_scale(net, {{"conv*", 0.0f}, {"conv2.b", 0.5f}, {"fc.*", 2.0f}});
  ASSERT_EQ(s.numel(), net.num_params());
  for (const ParamEntry& e : net.param_entries()) {
    const float expect = e.name == "conv2.b" ? 0.5f
                         : e.name.starts_with("conv") ? 0.0f
                         : e.name.starts_with("fc.") ? 2.0f
                                                     : 1.0f;
    for (int64_t i = 0; i < e.shape.numel(); ++i)
      ASSERT_EQ(s.data<float>()[e.offset + i], expect) << e.name;
  }
  try {
    io::make_lr_scale(net, {{"cnov*", 0.0f}});
    ADD_FAILURE() << "a pattern matching nothing was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("cnov*"), std::string::npos);
  }
  proto::TransferConfig cfg;
  cfg.add_freeze("conv1.*");
  auto* m = cfg.add_lr_mult();
  m->set_pattern("fc.*");
  m->set_scale(0.1f);
  const auto mult = io::lr_multipliers(cfg);
  ASSERT_EQ(mult.size(), 2u);  // freezing last: it wins over any multiplier
  EXPECT_EQ(mult[0], (std::pair<std::string, float>{"fc.*", 0.1f}));
  EXPECT_EQ(mult[1], (std::pair<std::string, float>{"conv1.*", 0.0f}));
  EXPECT_NO_THROW(io::validate_transfer(cfg));
  m->set_scale(-1);
  EXPECT_THROW(io::validate_transfer(cfg), InputError);
}

// Frozen parameters stay bit-identical through steps of every optimizer, weight decay
// included, while the others move; a multiplier of 0.5 halves plain SGD's step.
TEST(Transfer, FrozenParametersAreBitIdenticalAfterOptimizerSteps) {
  for (proto::OptimizerType type : {proto::SGD, proto::MOMENTUM, proto::ADAM, proto::ADAMW, proto::RMSPROP}) {
    Net net = make_net(10, 1);
    const Tensor scale = io::make_lr_scale(net, {{"conv*", 0.0f}, {"bn1.*", 0.0f}, {"fc.b", 0.5f}});
    proto::OptimizerConfig oc;
    oc.set_type(type);
    oc.set_lr(0.01f);
    oc.set_weight_decay(0.01f);
    auto opt = make_optimizer(oc, net.num_params());
    const Tensor before = net.params().clone();
    const RandomStream rs{4, 4};
    for (int step = 0; step < 5; ++step) {
      for (int64_t i = 0; i < net.num_params(); ++i)
        net.compute_grads().data<float>()[i] = float(rs.normal(uint64_t(step * 100000 + i)));
      opt->step(net.mutable_compute_params(), net.compute_grads(), 0.01f, &scale);
    }
    for (const ParamEntry& e : net.param_entries()) {
      int64_t moved = 0;
      for (int64_t i = 0; i < e.shape.numel(); ++i)
        moved += net.params().data<float>()[e.offset + i] != before.data<float>()[e.offset + i];
      if (e.name.starts_with("conv") || e.name.starts_with("bn1."))
        EXPECT_EQ(moved, 0) << e.name << " optimizer " << type;
      else
        EXPECT_GT(moved, 0) << e.name << " optimizer " << type;
    }
  }
  // SGD without weight decay: p -= lr * scale * g.
  Net net = make_net(10, 1);
  const Tensor scale = io::make_lr_scale(net, {{"fc.b", 0.5f}});
  proto::OptimizerConfig oc;
  oc.set_type(proto::SGD);
  oc.set_lr(0.1f);
  auto opt = make_optimizer(oc, net.num_params());
  const ParamEntry& b = net.param("fc.b");
  const float p0 = net.params().data<float>()[b.offset];
  net.compute_grads().fill_zero();
  net.compute_grads().data<float>()[b.offset] = 1.0f;
  opt->step(net.mutable_compute_params(), net.compute_grads(), 0.1f, &scale);
  EXPECT_FLOAT_EQ(net.params().data<float>()[b.offset], p0 - 0.05f);
}

// transfer.init_from through the trainer: the matching tensors come from the file, the skipped
// head keeps its fresh initialisation with the new class count, and frozen parameters are
// bit-identical after training while the others move.
TEST(Transfer, InitFromThenTrainingKeepsFrozenLayersBitIdentical) {
  Net source = make_net(10, 1);
  state(source, "bn1.running_var")->data<double>()[1] = 2.5;
  const fs::path dir = fs::temp_directory_path() / ("deeptrain_transfer2_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const std::string weights = (dir / "source.weights").string();
  io::save_weights(weights, source);

  Net target = make_net(5, 2);  // a 5-class head
  const std::vector<float> fresh_head = values(target, "fc.W");
  proto::TransferConfig cfg;
  cfg.set_init_from(weights);
  cfg.add_skip("fc");
  cfg.add_freeze("conv1");
  cfg.add_freeze("bn1");
  auto* slower = cfg.add_lr_mult();  // matches conv1 too: the freeze must still win
  slower->set_pattern("conv*");
  slower->set_scale(0.5f);
  io::validate_transfer(cfg);
  const io::TransferReport report = io::apply_init_from(target, cfg);
  EXPECT_EQ(report.copied.size(), 7u) << report.summary();
  EXPECT_EQ(values(target, "conv2.W"), values(source, "conv2.W"));
  EXPECT_EQ(state(target, "bn1.running_var")->data<double>()[1], 2.5);
  EXPECT_EQ(values(target, "fc.W"), fresh_head);
  EXPECT_EQ(target.param("fc.W").shape, (Shape{6, 5}));

  data::Dataset d;
  d.num_classes = 5;
  d.images = Tensor::empty({24, 1, 8, 8}, DType::u8);
  d.labels = Tensor::empty({24}, DType::i32);
  const RandomStream rs{8, 8};
  for (int64_t i = 0; i < d.images.numel(); ++i) d.images.data<uint8_t>()[i] = uint8_t(rs.block(i)[0]);
  for (int64_t i = 0; i < 24; ++i) d.labels.data<int32_t>()[i] = int32_t(i % 5);
  auto backend = make_backend("cpu-ref");
  proto::OptimizerConfig oc;
  oc.set_type(proto::ADAM);
  oc.set_lr(1e-2f);
  oc.set_weight_decay(1e-3f);
  auto opt = make_optimizer(oc, target.num_params());
  TrainerOptions to;
  to.batch_size = 8;
  to.lr = oc.lr();
  to.lr_scale = io::make_lr_scale(target, io::lr_multipliers(cfg));
  SingleProcessCommunicator one;
  Trainer trainer(to, target, *backend, *opt, one);
  for (int e = 0; e < 2; ++e) trainer.train_epoch(d, e, nullptr);
  for (const char* name : {"conv1.W", "bn1.gamma", "bn1.beta"})
    EXPECT_EQ(values(target, name), values(source, name)) << name << " is frozen";
  for (const char* name : {"conv2.W", "conv2.b"})
    EXPECT_NE(values(target, name), values(source, name)) << name << " trains";
  EXPECT_NE(values(target, "fc.W"), fresh_head);
  fs::remove_all(dir);
}

// Strict loading: a model tensor that the file holds with another shape, or lacks, is refused
// with the file, the tensor, both shapes and the skip entry that would keep it fresh.
TEST(Transfer, InitFromRefusesMismatchedAndMissingTensorsByName) {
  Net source = make_net(10, 1);
  const fs::path dir = fs::temp_directory_path() / ("deeptrain_transfer3_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const std::string weights = (dir / "source.weights").string(), npz = (dir / "params.npz").string();
  io::save_weights(weights, source);
  proto::TransferConfig cfg;
  cfg.set_init_from(weights);
  Net target = make_net(5, 2);
  const std::vector<float> conv1 = values(target, "conv1.W");
  std::string e = error_of([&] { io::apply_init_from(target, cfg); });
  EXPECT_CONTAINS(e, "transfer.init_from: " + weights);
  EXPECT_CONTAINS(e, "fc.W: source shape (6, 10), model shape (6, 5)");
  EXPECT_CONTAINS(e, "fc.b: source shape (10), model shape (5)");
  EXPECT_CONTAINS(e, "skip: \"fc\"");
  // An .npz of parameters only lacks the BN statistics.
  std::vector<std::pair<std::string, Tensor>> arrays;
  for (const ParamEntry& p : source.param_entries()) arrays.push_back({p.name, source.param_view(p)});
  io::write_npz(npz, arrays);
  cfg.set_init_from(npz);
  cfg.add_skip("fc");
  Net same_classes = make_net(5, 2);
  e = error_of([&] { io::apply_init_from(same_classes, cfg); });
  EXPECT_CONTAINS(e, "bn1.running_mean: not in the source");
  EXPECT_CONTAINS(e, "skip: \"bn1\"");
  EXPECT_EQ(e.find("fc.W"), std::string::npos) << e;  // skipped as asked
  // Skipping them too, the rest loads.
  cfg.add_skip("bn1.running_*");
  EXPECT_NO_THROW(io::apply_init_from(same_classes, cfg));
  EXPECT_EQ(values(same_classes, "conv1.W"), values(source, "conv1.W"));
  EXPECT_NE(values(same_classes, "conv1.W"), conv1);
  fs::remove_all(dir);
}

}  // namespace
