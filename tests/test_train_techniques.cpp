// The training techniques of chapter 8 as the Trainer uses them: the learning-rate schedule
// (the rate each optimizer step receives), augmentation (a step trains on the transformed
// images of its global sample ids, whatever the rank count), BatchNorm running statistics
// through weights files (evaluation after loading equals evaluation before saving), and the
// ensemble's scoring of averaged probabilities.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "core/data/augment.h"
#include "core/eval/ensemble.h"
#include "core/io/transfer.h"
#include "core/io/weights.h"
#include "core/optim/optimizer.h"
#include "core/optim/schedule.h"
#include "core/random.h"
#include "distributed/trainer.h"
#include "error_util.h"

using namespace deeptrain;
namespace fs = std::filesystem;

namespace {

// Records the rate (and whether a per-element scale came along) of every step; changes nothing.
class RecordingOptimizer : public Optimizer {
 public:
  const char* name() const override { return "recording"; }
  void step(Tensor&, const Tensor&, float lr, const Tensor* lr_scale) override {
    rates.push_back(lr);
    scales.push_back(lr_scale);
    ++t_;
  }
  std::vector<std::pair<std::string, Tensor*>> state() override { return {}; }
  std::vector<float> rates;
  std::vector<const Tensor*> scales;
};

// Rank `rank` of `world` with collectives that return this rank's own values: each rank's
// forward pass runs alone on its shard, and a step's loss is the sum over that shard.
class ShardOnlyCommunicator : public SingleProcessCommunicator {
 public:
  ShardOnlyCommunicator(int rank, int world) : rank_(rank), world_(world) {}
  int rank() const override { return rank_; }
  int size() const override { return world_; }

 private:
  int rank_, world_;
};

// n MNIST-shaped images of blobs whose position depends on the label.
data::Dataset blobs(int64_t n, int64_t side = 28) {
  data::Dataset d;
  d.name = "blobs";
  d.num_classes = 10;
  d.images = Tensor::empty({n, 1, side, side}, DType::u8);
  d.labels = Tensor::empty({n}, DType::i32);
  const RandomStream rs{3, 0xB10B};
  for (int64_t i = 0; i < n; ++i) {
    const int label = int(i % 10);
    d.labels.data<int32_t>()[i] = label;
    const double cy = side * (0.2 + 0.2 * (label / 3)), cx = side * (0.2 + 0.2 * (label % 3));
    for (int64_t k = 0; k < side * side; ++k) {
      const double y = double(k / side), x = double(k % side);
      const double v = 255 * std::exp(-((y - cy) * (y - cy) + (x - cx) * (x - cx)) / 12.0) +
                       20 * rs.normal(uint64_t(i * side * side + k));
      d.images.data<uint8_t>()[i * side * side + k] = uint8_t(std::clamp(v, 0.0, 255.0));
    }
  }
  return d;
}

proto::ModelConfig model(const char* text) {
  proto::ModelConfig m;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &m)) << text;
  return m;
}

// No dropout, no BN: a step's loss depends only on the parameters and the images.
const char* kConvNet = R"(
  layer { name: "conv1" conv { out_channels: 4 kernel: 3 pad: 1 } }
  layer { name: "relu1" relu {} }
  layer { name: "pool1" max_pool {} }
  layer { name: "fc" affine { out_features: 10 } }
)";

const char* kBnNet = R"(
  layer { name: "conv1" conv { out_channels: 4 kernel: 3 pad: 1 no_bias: true } }
  layer { name: "bn1" batch_norm {} }
  layer { name: "relu1" relu {} }
  layer { name: "gap" global_avg_pool {} }
  layer { name: "fc" affine { out_features: 10 } }
)";

TEST(TrainerSchedule, EachStepGetsTheScheduledRate) {
  const data::Dataset d = blobs(40);  // batch 10: 4 steps an epoch
  auto backend = make_backend("cpu-ref");
  SingleProcessCommunicator one;
  struct Case {
    const char* schedule;
    std::vector<double> expected;  // per step, 3 epochs, base rate 0.1
  };
  const std::vector<Case> cases = {
      // STEP at milestones 1 and 2 (gamma 0.5): the rate halves at steps 4 and 8.
      {"type: STEP milestones: 1 milestones: 2 gamma: 0.5",
       {0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.025}},
      // A 1-epoch linear warm-up over a constant rate: (s + 1) / 4 of it for s < 4.
      {"warmup_epochs: 1", {0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1}},
      // COSINE over 12 steps: 0.05 * (1 + cos(pi * s / 12)).
      {"type: COSINE", {}},
  };
  for (const Case& c : cases) {
    Net net(model(kConvNet), {1, 28, 28}, 10, DType::f32);
    net.init_params(1);
    RecordingOptimizer opt;
    TrainerOptions to;
    to.batch_size = 10;
    to.lr = 0.1f;
    to.epochs = 3;
    ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(c.schedule, &to.lr_schedule));
    Trainer trainer(to, net, *backend, opt, one);
    std::vector<double> reported;
    for (int e = 0; e < 3; ++e)
      trainer.train_epoch(d, e, nullptr,
                          [&](int64_t, int64_t, const StepMetrics&) { reported.push_back(trainer.last_lr()); });
    ASSERT_EQ(opt.rates.size(), 12u) << c.schedule;
    std::vector<double> expected = c.expected;
    if (expected.empty())
      for (int s = 0; s < 12; ++s) expected.push_back(0.05 * (1 + std::cos(M_PI * s / 12.0)));
    for (size_t s = 0; s < 12; ++s) {
      EXPECT_FLOAT_EQ(opt.rates[s], float(expected[s])) << c.schedule << " step " << s;
      EXPECT_EQ(float(reported[s]), opt.rates[s]) << "last_lr() at step " << s;
      EXPECT_EQ(opt.scales[s], nullptr);  // no transfer config: no per-element scale
    }
  }
}

TEST(TrainerSchedule, PassesTheTransferLrScaleToTheOptimizer) {
  const data::Dataset d = blobs(20);
  auto backend = make_backend("cpu-ref");
  SingleProcessCommunicator one;
  Net net(model(kConvNet), {1, 28, 28}, 10, DType::f32);
  net.init_params(1);
  RecordingOptimizer opt;
  TrainerOptions to;
  to.batch_size = 10;
  to.lr_scale = io::make_lr_scale(net, {{"conv1", 0.0f}});
  Trainer trainer(to, net, *backend, opt, one);
  trainer.train_epoch(d, 0, nullptr);
  ASSERT_EQ(opt.scales.size(), 2u);
  ASSERT_NE(opt.scales[0], nullptr);
  const Tensor& s = *opt.scales[0];
  const ParamEntry& w = net.param("conv1.W");
  const ParamEntry& fc = net.param("fc.W");
  EXPECT_EQ(s.data<float>()[w.offset], 0.0f);
  EXPECT_EQ(s.data<float>()[fc.offset], 1.0f);
}

// The loss of one step on `ids` (epoch 1) computed outside the trainer: the batch from
// gather_batch_augmented, forward in training mode, summed cross-entropy.
double manual_step_loss(Net& net, Backend& backend, const data::Dataset& d,
                        const std::vector<int64_t>& ids, uint64_t seed,
                        const proto::AugmentConfig& aug) {
  const int64_t n = int64_t(ids.size());
  Tensor x = Tensor::empty({n, 1, 28, 28}, DType::f32), t = Tensor::empty({n}, DType::i32);
  Tensor probs = Tensor::empty({n, 10}, DType::f32);
  data::gather_batch_augmented(d, ids.data(), n, 1, seed, aug, x, t);
  StepContext ctx{backend, true, seed, 0, ids.data()};
  return backend.softmax_ce_forward(net.forward(ctx, x), t, 1e-7, probs, nullptr);
}

TEST(TrainerAugment, StepsTrainOnTheAugmentedImagesOfTheirGlobalIds) {
  const data::Dataset d = blobs(64);
  auto backend = make_backend("cpu-ref");
  proto::AugmentConfig aug;
  aug.set_enabled(true);
  aug.set_rotation_deg(15);
  aug.set_shift_px(2);
  const uint64_t seed = 11;
  std::vector<int64_t> ids;  // a global batch of 13 scattered samples
  for (int64_t i = 0; i < 13; ++i) ids.push_back((i * 29 + 5) % 64);
  // Large weights make the loss sensitive to every pixel: a wrong image shows.
  auto make_net = [] {
    auto net = std::make_unique<Net>(model(kConvNet), Shape{1, 28, 28}, 10, DType::f32);
    net->init_params(2);
    for (int64_t i = 0; i < net->num_params(); ++i) net->params().data<float>()[i] *= 8;
    return net;
  };
  auto step_loss = [&](int rank, int world, const proto::AugmentConfig& a) {
    auto net = make_net();
    RecordingOptimizer opt;
    ShardOnlyCommunicator comm(rank, world);
    TrainerOptions to;
    to.batch_size = 13;
    to.seed = seed;
    to.augment = a;
    Trainer trainer(to, *net, *backend, opt, comm);
    return trainer.train_step(d, ids.data(), int64_t(ids.size()), 1).loss_sum;
  };
  const double one = step_loss(0, 1, aug);
  {
    auto net = make_net();
    EXPECT_EQ(one, manual_step_loss(*net, *backend, d, ids, seed, aug));
    proto::AugmentConfig off;
    const double plain = manual_step_loss(*net, *backend, d, ids, seed, off);
    EXPECT_EQ(step_loss(0, 1, off), plain);
    // The augmented batch is not the plain one.
    EXPECT_GT(std::fabs(one - plain), 1e-2 * std::fabs(plain)) << one << " vs " << plain;
    // Nor that of another epoch (the transforms are drawn per epoch).
    std::vector<int64_t> same = ids;
    const int64_t n = int64_t(ids.size());
    Tensor x = Tensor::empty({n, 1, 28, 28}, DType::f32), t = Tensor::empty({n}, DType::i32);
    Tensor x2 = x.clone();
    data::gather_batch_augmented(d, same.data(), n, 1, seed, aug, x, t);
    data::gather_batch_augmented(d, same.data(), n, 2, seed, aug, x2, t);
    int64_t differ = 0;
    for (int64_t i = 0; i < x.numel(); ++i) differ += x.data<float>()[i] != x2.data<float>()[i];
    EXPECT_GT(differ, x.numel() / 4);
  }
  // Split over 2, 3 and 5 ranks, the shards' losses add up to the one-process loss: each rank
  // transformed its samples by their global ids. (Only float rounding of batch-size-dependent
  // GEMM blocking may differ; a sample transformed by another id changes the loss by percents.)
  for (int world : {2, 3, 5}) {
    double sum = 0;
    for (int r = 0; r < world; ++r) sum += step_loss(r, world, aug);
    EXPECT_NEAR(sum, one, 1e-6 * std::fabs(one)) << world << " ranks";
  }
}

std::string temp_path(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("deeptrain_tt_" + std::to_string(getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

TEST(BatchNormWeights, EvaluationAfterLoadingEqualsEvaluationBeforeSaving) {
  const data::Dataset train = blobs(60), test = blobs(30);
  auto backend = make_backend("cpu-ref");
  SingleProcessCommunicator one;
  Net net(model(kBnNet), {1, 28, 28}, 10, DType::f32);
  net.init_params(4);
  proto::OptimizerConfig oc;
  oc.set_type(proto::ADAM);
  oc.set_lr(1e-2f);
  auto opt = make_optimizer(oc, net.num_params());
  TrainerOptions to;
  to.batch_size = 20;
  to.eval_batch_size = 7;
  Trainer trainer(to, net, *backend, *opt, one);
  for (int e = 0; e < 3; ++e) trainer.train_epoch(train, e, nullptr);
  // Training moved the running statistics away from their start (mean 0, variance 1).
  const Tensor* mean = nullptr;
  for (auto& [name, t] : net.state())
    if (name == "bn1.running_mean") mean = t;
  ASSERT_NE(mean, nullptr);
  EXPECT_NE(mean->data<double>()[0], 0.0);
  const EvalReport before = trainer.evaluate(test);
  const std::string path = temp_path("bn.weights");
  io::save_weights(path, net);

  auto evaluate_fresh = [&](bool load) {
    Net other(model(kBnNet), {1, 28, 28}, 10, DType::f32);
    other.init_params(99);
    if (load) io::load_weights(path, other);
    else other.mutable_params().copy_from(net.params());  // parameters only: fresh statistics
    auto o2 = make_optimizer(oc, other.num_params());
    Trainer t2(to, other, *backend, *o2, one);
    return t2.evaluate(test);
  };
  const EvalReport after = evaluate_fresh(true);
  EXPECT_EQ(after.loss, before.loss);
  EXPECT_EQ(after.correct, before.correct);
  // Without the statistics the evaluation is another one: the round trip carries them.
  EXPECT_NE(evaluate_fresh(false).loss, before.loss);

  // A weights file without them (as written before they were saved) is refused, naming one.
  proto::WeightsFile f;
  {
    std::ifstream in(path, std::ios::binary);
    ASSERT_TRUE(f.ParseFromIstream(&in));
  }
  auto* tensors = f.mutable_tensor();
  for (int i = tensors->size() - 1; i >= 0; --i)
    if (tensors->Get(i).name().starts_with("bn1.running")) tensors->DeleteSubrange(i, 1);
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    ASSERT_TRUE(f.SerializeToOstream(&out));
  }
  Net other(model(kBnNet), {1, 28, 28}, 10, DType::f32);
  const std::string e = error_of([&] { io::load_weights(path, other); });
  EXPECT_CONTAINS(e, path);
  EXPECT_CONTAINS(e, "no tensor 'bn1.running_mean'");
  fs::remove_all(fs::path(path).parent_path());
}

// Three samples, two members, three classes. Member A is right on samples 0 and 1, member B on
// 1 and 2; averaged, the confident member wins each disagreement.
TEST(Ensemble, ScoresTheMeanOfTheMembersProbabilities) {
  auto probs = [](std::vector<float> v) {
    Tensor t = Tensor::empty({3, 3}, DType::f32);
    std::copy(v.begin(), v.end(), t.data<float>());
    return t;
  };
  const Tensor a = probs({0.6f, 0.3f, 0.1f,    // predicts 0
                          0.1f, 0.8f, 0.1f,    // predicts 1
                          0.5f, 0.1f, 0.4f});  // predicts 0
  const Tensor b = probs({0.4f, 0.5f, 0.1f,    // predicts 1
                          0.2f, 0.7f, 0.1f,    // predicts 1
                          0.1f, 0.1f, 0.8f});  // predicts 2
  Tensor labels = Tensor::empty({3}, DType::i32);
  labels.data<int32_t>()[0] = 0;
  labels.data<int32_t>()[1] = 1;
  labels.data<int32_t>()[2] = 2;
  EXPECT_EQ(score_probabilities(a, labels, 0).correct, 2);
  EXPECT_EQ(score_probabilities(b, labels, 0).correct, 2);
  const Tensor mean = mean_probabilities({a, b});
  EXPECT_FLOAT_EQ(mean.data<float>()[0], 0.5f);
  EXPECT_FLOAT_EQ(mean.data<float>()[8], 0.6f);
  std::vector<int32_t> predicted;
  const ProbabilityScore s = score_probabilities(mean, labels, 0, &predicted);
  // Mean rows: (0.5, 0.4, 0.1) -> 0, (0.15, 0.75, 0.1) -> 1, (0.3, 0.1, 0.6) -> 2.
  EXPECT_EQ(predicted, (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(s.correct, 3);
  EXPECT_DOUBLE_EQ(s.accuracy, 1.0);
  const double loss = -(std::log(double(0.5f)) + std::log(double((0.8f + 0.7f) / 2)) +
                        std::log(double(0.6f))) / 3;
  EXPECT_NEAR(s.loss, loss, 1e-6);
}

}  // namespace

// Evaluation (eval, ensembles) builds a Trainer without an optimizer: it scores exactly as a
// training Trainer does on the same parameters, and refuses to train.
TEST(EvaluationOnly, ScoresAsATrainingTrainerAndRefusesToTrain) {
  const data::Dataset d = blobs(50);
  auto backend = make_backend("cpu-ref");
  SingleProcessCommunicator one;
  Net net(model(kConvNet), {1, 28, 28}, 10, DType::f32);
  net.init_params(5);
  TrainerOptions to;
  to.batch_size = 10;
  std::vector<int32_t> predicted, predicted_ref;
  Tensor p, p_ref;
  Trainer evaluator(to, net, *backend, one);
  const EvalReport r = evaluator.evaluate(d, &predicted, &p);
  proto::OptimizerConfig adam;
  adam.set_type(proto::ADAM);
  adam.set_lr(1e-3f);
  auto opt = make_optimizer(adam, net.num_params());
  Trainer trainer(to, net, *backend, *opt, one);
  const EvalReport ref = trainer.evaluate(d, &predicted_ref, &p_ref);
  EXPECT_EQ(r.correct, ref.correct);
  EXPECT_EQ(r.loss, ref.loss);
  EXPECT_EQ(predicted, predicted_ref);
  ASSERT_EQ(p.nbytes(), p_ref.nbytes());
  EXPECT_EQ(std::memcmp(p.raw(), p_ref.raw(), p.nbytes()), 0);
  std::vector<int64_t> ids(10);
  for (int64_t i = 0; i < 10; ++i) ids[i] = i;
  EXPECT_CONTAINS(error_of<Error>([&] { evaluator.train_step(d, ids.data(), 10); }),
                  "evaluation-only Trainer");
}
