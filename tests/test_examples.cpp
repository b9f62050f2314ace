// Every example config in examples/ (found at run time, so a new one is tested without being
// listed) parses and validates, builds its Net, and trains for a few steps on synthetic images
// of its data set's shape with every piece the config names: its backend, optimizer,
// learning-rate schedule and augmentation. The loss must stay finite and, measured again on
// the same batch with the same dropout masks, fall.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>

#include <gtest/gtest.h>

#include "core/config.h"
#include "core/data/augment.h"
#include "core/data/mnist_scenes.h"
#include "core/io/transfer.h"
#include "core/net.h"
#include "core/optim/optimizer.h"
#include "core/optim/schedule.h"
#include "core/random.h"
#include "core/loss.h"
#include "synthetic_squares.h"

using namespace deeptrain;

namespace {

const std::string kExamples = std::string(DEEPTRAIN_SOURCE_DIR) + "/examples/";

std::vector<std::string> example_files() {
  std::vector<std::string> names;
  for (const auto& f : std::filesystem::directory_iterator(kExamples))
    if (f.path().extension() == ".prototxt") names.push_back(f.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// 32 images of blurry blobs whose position depends on the label (10 classes), so there is
// something to fit; (1, 28, 28) for MNIST and Fashion-MNIST, (3, 32, 32) for CIFAR-10.
data::Dataset synthetic_images(const std::string& dataset) {
  const int64_t n = 32, c = dataset == "cifar10" ? 3 : 1, h = dataset == "cifar10" ? 32 : 28;
  const int64_t w = h, plane = h * w;
  data::Dataset d;
  d.name = "synthetic " + dataset;
  d.num_classes = 10;
  d.images = Tensor::empty({n, c, h, w}, DType::u8);
  d.labels = Tensor::empty({n}, DType::i32);
  const RandomStream rs{5, 1};
  for (int64_t i = 0; i < n; ++i) {
    const int label = int(i % 10);
    d.labels.data<int32_t>()[i] = label;
    const double cy = 6 + 5 * (label / 3), cx = 6 + 5 * (label % 3);
    for (int64_t k = 0; k < c * plane; ++k) {
      const int64_t y = (k % plane) / w, x = k % w;
      const double v = 255 * std::exp(-((y - cy) * (y - cy) + (x - cx) * (x - cx)) / 18.0) +
                       10 * rs.normal(uint64_t(i * c * plane + k));
      d.images.data<uint8_t>()[i * c * plane + k] = uint8_t(std::clamp(v, 0.0, 255.0));
    }
  }
  return d;
}

// Scenes of bright squares standing for digits (a segmentation example's data), 32 of them.
data::Dataset synthetic_scenes(const proto::MnistScenesConfig& options) {
  data::DatasetSplit digits;
  digits.train = testing_util::synthetic_squares(40, {5, 1, 200, 56, 1});
  digits.test = testing_util::synthetic_squares(10, {5, 2, 200, 56, 1});
  return data::make_mnist_scenes(digits, options, 32, 1).train;
}

class ExampleConfig : public ::testing::TestWithParam<std::string> {};

TEST_P(ExampleConfig, BuildsAndTrainsAFewSteps) {
  const std::string path = kExamples + GetParam();
  const proto::ExperimentConfig cfg = load_config(path);
  data::validate_augment(cfg.data().augment());
  validate_lr_schedule(cfg.schedule().lr_schedule());
  io::validate_transfer(cfg.transfer());

  const bool scenes = cfg.data().dataset() == "mnist_scenes";
  data::Dataset data =
      scenes ? synthetic_scenes(cfg.data().scenes()) : synthetic_images(cfg.data().dataset());
  if (cfg.model().loss().type() == proto::LossConfig::DETECTION) {  // boxes of the 10 "digits"
    data.label_maps = Tensor();
    data.num_classes = data::kSceneClasses - 1;
  }
  const Shape input{data.images.dim(1), data.images.dim(2), data.images.dim(3)};
  Net net(cfg.model(), input, data.num_classes, DType::f32);
  net.init_params(cfg.run().seed());
  std::cout << GetParam() << ": " << net.layers().size() << " layers, " << net.num_params()
            << " parameters\n";
  auto backend = make_backend(cfg.run().backend());
  auto optimizer = make_optimizer(cfg.optimizer(), net.num_params());

  const int64_t n = 8, steps_per_epoch = 4;
  const int64_t total_steps = int64_t(cfg.schedule().epochs()) * steps_per_epoch;
  Tensor x = Tensor::empty({n, input[0], input[1], input[2]}, DType::f32);
  const LossFn loss_fn(net.config().loss(), input, data.num_classes);
  std::vector<int64_t> td{n}, pd{n};
  const Shape target = loss_fn.target_shape(), output = loss_fn.output_shape();
  for (int64_t d : target.dims()) td.push_back(d);
  for (int64_t d : output.dims()) pd.push_back(d);
  Tensor t = Tensor::empty(Shape(td), DType::i32);
  Tensor probs = Tensor::empty(Shape(pd), DType::f32), dlogits = probs.clone();
  std::vector<int64_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = (i * 7) % 32;
  data::gather_batch_augmented(data, ids.data(), n, 0, cfg.run().seed(), cfg.data().augment(), x, t);

  // The loss of the fixed batch with the dropout masks of step 0, in training mode.
  auto loss_at_step0 = [&] {
    StepContext ctx{*backend, true, cfg.run().seed(), 0, ids.data()};
    return loss_fn.forward(*backend, net.forward(ctx, x), t, 1e-7, probs).loss / double(n);
  };
  const double before = loss_at_step0();
  ASSERT_TRUE(std::isfinite(before)) << GetParam();
  const Tensor initial = net.params().clone();
  for (int64_t step = 0; step < 3; ++step) {
    StepContext ctx{*backend, true, cfg.run().seed(), step, ids.data()};
    const double loss = loss_fn.forward(*backend, net.forward(ctx, x), t, 1e-7, probs).loss / double(n);
    EXPECT_TRUE(std::isfinite(loss)) << GetParam() << " step " << step;
    loss_fn.backward(*backend, probs, t, 1.0 / double(n), dlogits);
    net.compute_grads().fill_zero();
    net.backward(ctx, dlogits);
    const double lr = lr_at(cfg.schedule().lr_schedule(), cfg.optimizer().lr(), step,
                            steps_per_epoch, total_steps);
    ASSERT_TRUE(lr > 0 && std::isfinite(lr)) << GetParam() << " step " << step;
    optimizer->step(net.mutable_compute_params(), net.compute_grads(), float(lr));
  }
  const double after = loss_at_step0();
  EXPECT_TRUE(std::isfinite(after)) << GetParam();
  EXPECT_LT(after, before) << GetParam();
  int64_t changed = 0;
  for (int64_t i = 0; i < net.num_params(); ++i)
    changed += net.params().data<float>()[i] != initial.data<float>()[i];
  EXPECT_GT(changed, net.num_params() / 2) << GetParam();

  // Evaluation mode (running statistics for BN, no dropout) gives finite logits.
  StepContext eval{*backend, false, cfg.run().seed(), 0, ids.data()};
  const Tensor logits = backend->to_plain(net.forward(eval, x));
  for (int64_t i = 0; i < logits.numel(); ++i) EXPECT_TRUE(std::isfinite(logits.data<float>()[i]));
}

INSTANTIATE_TEST_SUITE_P(Examples, ExampleConfig, ::testing::ValuesIn(example_files()),
                         [](const ::testing::TestParamInfo<std::string>& i) {
                           std::string name = i.param.substr(0, i.param.find('.'));
                           for (char& ch : name)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return name;
                         });

// The four example models of chapter 8 are there.
TEST(ExampleConfigs, IncludeTheChapter8Models) {
  const std::vector<std::string> files = example_files();
  for (const char* f : {"deep_convnet_mnist.prototxt", "vgg_mnist.prototxt",
                        "googlenet_mnist.prototxt", "resnet20_fashion_mnist.prototxt"})
    EXPECT_NE(std::find(files.begin(), files.end(), f), files.end()) << f;
}

// The ResNet's shape: 19 convolutions + 2 projections, BN after each, and every ReLU fused.
TEST(ExampleConfigs, ResNet20HasTheExpectedStructure) {
  const proto::ExperimentConfig cfg = load_config(kExamples + "resnet20_fashion_mnist.prototxt");
  Net net(cfg.model(), {1, 28, 28}, 10, DType::f32);
  int convs = 0, bns = 0, adds = 0, unfused_relus = 0;
  for (size_t i = 0; i < net.layers().size(); ++i) {
    const std::string type = net.layers()[i]->type();
    convs += type == "conv";
    bns += type == "batch_norm";
    adds += type == "add";
  }
  const std::string summary = net.summary();
  for (size_t pos = 0; (pos = summary.find(" relu ", pos)) != std::string::npos; ++pos) {
    const size_t eol = summary.find('\n', pos);
    unfused_relus += summary.substr(pos, eol - pos).find("fused") == std::string::npos;
  }
  EXPECT_EQ(convs, 21);
  EXPECT_EQ(bns, 21);
  EXPECT_EQ(adds, 9);
  EXPECT_EQ(unfused_relus, 0) << summary;
  EXPECT_LT(net.num_params(), 300000);
  EXPECT_GT(net.num_params(), 250000);
}

}  // namespace
