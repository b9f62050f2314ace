// A segmentation model (FCN: transposed convolutions, crops, skip additions, the per-pixel loss
// with ignored pixels) trains on N ranks as in one process, under the rules classification
// follows (test_mpi_train.cpp, test_mpi_exact.cpp). ctest runs this binary through mpiexec -n 2
// and -n 4.
//  - Default path: the first step's reduced gradient, from identical parameters, equals one
//    process's within a tenth of the smallest normwise change that losing one sample of the
//    global batch makes (computed here from the batch; rounding is far below it).
//  - Exact mode: two epochs give parameters, Adam's moments and every step's loss equal to one
//    process's with ==; so does an epoch with data.augment's flip and shift moving the label
//    maps with the images (the pixels shifted in from off the canvas are ignored).
// The data: 70 scenes (canvas 24) of bright squares standing for digits, global batch 12 (an
// epoch of 6 steps, the last of 10 samples: 4 ranks split it unevenly).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include <google/protobuf/text_format.h>

#include "core/backend/backend.h"
#include "core/data/mnist_scenes.h"
#include "core/data/sampler.h"
#include "core/net.h"
#include "core/optim/optimizer.h"
#include "core/threads.h"
#include "distributed/mpi_communicator.h"
#include "distributed/trainer.h"
#include "synthetic_squares.h"

using namespace deeptrain;

namespace {

constexpr int64_t kScenes = 70, kBatch = 12;

const char* kFcn = R"(
    loss { type: PIXEL_SOFTMAX_CE class_weights: [0.5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2] }
    layer { name: "conv1" conv { out_channels: 8 kernel: 3 pad: 1 } }
    layer { name: "relu1" relu {} }
    layer { name: "pool1" max_pool { kernel: 2 } }
    layer { name: "conv2" conv { out_channels: 8 kernel: 3 pad: 1 } }
    layer { name: "relu2" relu {} }
    layer { name: "pool2" max_pool { kernel: 2 } }
    layer { name: "score_fr" conv { out_channels: 11 kernel: 1 } }
    layer { name: "up2" deconv { out_channels: 11 kernel: 4 stride: 2 pad: 1 init: BILINEAR } }
    layer { name: "score_pool1" input: "pool1" conv { out_channels: 11 kernel: 1 } }
    layer { name: "score_pool1c" input: "score_pool1" input: "up2" crop {} }
    layer { name: "fuse" input: "up2" input: "score_pool1c" add {} }
    layer { name: "up4" deconv { out_channels: 11 kernel: 6 stride: 2 pad: 1 } }
    layer { name: "score" input: "up4" input: "data" crop { offset_h: 1 offset_w: 1 } })";

const data::Dataset& scenes() {
  static const data::Dataset d = [] {
    data::DatasetSplit digits;
    digits.train = testing_util::synthetic_squares(60, {21, 1, 200, 56, 1});
    digits.test = testing_util::synthetic_squares(10, {21, 2, 200, 56, 1});
    proto::MnistScenesConfig o;
    o.set_canvas(28);
    o.set_min_digits(1);
    o.set_max_digits(3);
    o.set_min_scale(0.6f);
    o.set_max_scale(1.0f);
    o.set_train_scenes(kScenes);
    o.set_test_scenes(1);
    o.set_seed(5);
    return data::make_mnist_scenes(digits, o).train;
  }();
  return d;
}

struct FcnRun {
  std::unique_ptr<Net> net;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Optimizer> opt;
  std::unique_ptr<Trainer> trainer;
  FcnRun(Communicator& comm, proto::OptimizerType type, int64_t micro_batch,
         const proto::AugmentConfig& augment = {}) {
    set_cpu_threads(1);
    proto::ModelConfig m;
    EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(kFcn, &m));
    net = std::make_unique<Net>(m, Shape{1, 28, 28}, 11, DType::f32);
    net->init_params(7);
    backend = make_backend("cpu-ref");
    proto::OptimizerConfig oc;
    oc.set_type(type);
    oc.set_lr(type == proto::SGD ? 0.1f : 2e-3f);
    opt = make_optimizer(oc, net->num_params());
    TrainerOptions to;
    to.batch_size = kBatch;
    to.seed = 99;
    to.lr = oc.lr();
    to.micro_batch = micro_batch;
    to.augment = augment;
    trainer = std::make_unique<Trainer>(to, *net, *backend, *opt, comm);
    initial = net->params().clone();
  }
  Tensor initial;
  std::vector<double> gradient(const std::vector<int64_t>& ids) {
    trainer->set_global_step(0);
    trainer->train_step(scenes(), ids.data(), int64_t(ids.size()));
    Tensor g = backend->to_host(net->compute_grads());
    net->mutable_params().copy_from(initial);
    return std::vector<double>(g.data<float>(), g.data<float>() + g.numel());
  }
};

double norm_diff(const std::vector<double>& a, const std::vector<double>& b, double scale_b = 1) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (a[i] - scale_b * b[i]) * (a[i] - scale_b * b[i]);
  return std::sqrt(s);
}

}  // namespace

TEST(MpiSegmentation, FirstStepGradientEqualsOneProcess) {
  MpiCommunicator c;
  const std::vector<int64_t> order = epoch_permutation(99, 0, kScenes);
  const std::vector<int64_t> ids(order.begin(), order.begin() + kBatch);
  SingleProcessCommunicator one;
  FcnRun ref(one, proto::SGD, 0);
  const std::vector<double> g1 = ref.gradient(ids);
  const std::vector<double> zero(g1.size(), 0.0);
  const double B = double(ids.size());
  double smallest = INFINITY;
  for (size_t i = 0; i < ids.size(); ++i) {
    std::vector<int64_t> rest = ids;
    rest.erase(rest.begin() + long(i));
    smallest = std::min(smallest, norm_diff(g1, ref.gradient(rest), (B - 1) / B));
  }
  const double tolerance = smallest / norm_diff(g1, zero) / 10;
  FcnRun many(c, proto::SGD, 0);
  const double rel = norm_diff(many.gradient(ids), g1) / norm_diff(g1, zero);
  if (c.rank() == 0)
    std::printf("[figures] FCN, %d ranks vs 1: first-step gradient differs by %.3g (normwise, "
                "relative); allowed %.3g, a tenth of the smallest lost-sample change\n",
                c.size(), rel, tolerance);
  EXPECT_GT(tolerance, 0.0);
  EXPECT_LE(rel, tolerance);
}

TEST(MpiSegmentation, ExactModeTrainsTheSameModelAsOneProcess) {
  MpiCommunicator c;
  SingleProcessCommunicator one;
  FcnRun ref(one, proto::ADAM, 4), many(c, proto::ADAM, 4);
  std::vector<double> ref_losses, losses;
  for (int e = 0; e < 2; ++e) {
    ref.trainer->train_epoch(scenes(), e, nullptr, [&](int64_t, int64_t, const StepMetrics& m) {
      ref_losses.push_back(m.loss_sum);
      EXPECT_GT(m.counted, 0);
    });
    many.trainer->train_epoch(scenes(), e, nullptr, [&](int64_t, int64_t, const StepMetrics& m) {
      losses.push_back(m.loss_sum);
    });
  }
  EXPECT_EQ(losses, ref_losses);
  ASSERT_EQ(ref.net->num_params(), many.net->num_params());
  EXPECT_EQ(std::memcmp(ref.net->params().raw(), many.net->params().raw(), ref.net->params().nbytes()), 0);
  EXPECT_LT(ref_losses.back(), ref_losses.front());  // it learns something
}

// The flip and shift move each label map with its image, drawn from (seed, epoch, global
// index): the ranks' batches are one process's, so the exact-mode parameters are too. The
// pixels shifted in from off the canvas take the ignore label: fewer pixels count than in an
// unaugmented epoch.
TEST(MpiSegmentation, AugmentedLabelMapsTrainTheSameModelAsOneProcess) {
  MpiCommunicator c;
  SingleProcessCommunicator one;
  proto::AugmentConfig aug;
  aug.set_enabled(true);
  aug.set_flip_horizontal(true);
  aug.set_shift_px(3);
  FcnRun ref(one, proto::ADAM, 4, aug), many(c, proto::ADAM, 4, aug), plain(one, proto::ADAM, 4);
  std::vector<double> ref_losses, losses;
  int64_t counted = 0, plain_counted = 0;
  ref.trainer->train_epoch(scenes(), 0, nullptr, [&](int64_t, int64_t, const StepMetrics& m) {
    ref_losses.push_back(m.loss_sum);
    counted += m.counted;
  });
  many.trainer->train_epoch(scenes(), 0, nullptr,
                            [&](int64_t, int64_t, const StepMetrics& m) { losses.push_back(m.loss_sum); });
  plain.trainer->train_epoch(scenes(), 0, nullptr,
                             [&](int64_t, int64_t, const StepMetrics& m) { plain_counted += m.counted; });
  EXPECT_EQ(losses, ref_losses);
  EXPECT_EQ(std::memcmp(ref.net->params().raw(), many.net->params().raw(), ref.net->params().nbytes()), 0);
  EXPECT_LT(counted, plain_counted);
  EXPECT_GT(counted, plain_counted / 2);
}
