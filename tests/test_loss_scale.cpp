// Dynamic loss scaling (fp16 math's guard against underflowing gradients), on the CPU reference
// backend: the trainer's logic does not depend on the device. An overflow skips the step on
// every element (parameters and optimizer state untouched) and halves the scale; good steps
// grow it again; a finite scaled step equals the unscaled one up to rounding.
#include <cmath>
#include <cstring>

#include <gtest/gtest.h>

#include "cli_util.h"
#include "core/backend/backend.h"
#include "core/data/dataset.h"
#include "core/optim/optimizer.h"
#include "distributed/trainer.h"

using namespace deeptrain;

namespace {

struct TrainerRig {
  std::unique_ptr<Backend> backend = make_backend("cpu-ref");
  std::unique_ptr<Net> net;
  std::unique_ptr<Optimizer> opt;
  SingleProcessCommunicator comm;
  std::unique_ptr<Trainer> trainer;
  explicit TrainerRig(const LossScaleOptions& ls) {
    proto::ModelConfig mc;
    mc.set_preset("deep_convnet");
    net = std::make_unique<Net>(mc, Shape{1, 28, 28}, 10, DType::f32);
    net->init_params(3);
    proto::OptimizerConfig o;
    o.set_type(proto::ADAM);
    o.set_lr(1e-3f);
    opt = make_optimizer(o, net->num_params());
    TrainerOptions to;
    to.seed = 3;
    to.loss_scale = ls;
    trainer = std::make_unique<Trainer>(to, *net, *backend, *opt, comm);
  }
};

const data::DatasetSplit& mnist() {
  static const data::DatasetSplit d =
      data::load_dataset("mnist", DEEPTRAIN_DATA_DIR "/mnist", false, 1000, 100);
  return d;
}

void step(TrainerRig& s, int k) {
  std::vector<int64_t> ids(50);
  for (int i = 0; i < 50; ++i) ids[i] = k * 50 + i;
  s.trainer->train_step(mnist().train, ids.data(), 50);
}

TEST(LossScale, AnOverflowSkipsTheStepAndBacksOff) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not fetched";
  LossScaleOptions ls;
  ls.enabled = true;
  ls.initial = 3e38;  // the scaled gradients overflow f32
  TrainerRig s(ls);
  const Tensor before = s.net->params().clone();
  step(s, 0);
  EXPECT_EQ(s.trainer->skipped_steps(), 1);
  EXPECT_EQ(s.trainer->loss_scale(), 1.5e38);
  EXPECT_EQ(s.opt->steps_taken(), 0) << "a skipped step must not count for Adam";
  EXPECT_EQ(0, std::memcmp(before.raw(), s.net->params().raw(), before.nbytes()))
      << "a skipped step changed the parameters";
  // Backing off until the gradients fit, then training as usual.
  for (int k = 1; k < 200 && s.trainer->skipped_steps() == k; ++k) step(s, k % 20);
  EXPECT_GT(s.opt->steps_taken(), 0);
  EXPECT_LE(s.trainer->loss_scale(), 1.5e38);  // no growth before growth_interval good steps
}

TEST(LossScale, GoodStepsGrowTheScaleAndMatchUnscaledTraining) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not fetched";
  LossScaleOptions ls;
  ls.enabled = true;
  ls.initial = 1024;
  ls.growth_interval = 3;
  TrainerRig scaled(ls), unscaled(LossScaleOptions{});
  for (int k = 0; k < 3; ++k) step(scaled, k), step(unscaled, k);
  EXPECT_EQ(scaled.trainer->loss_scale(), 2048);
  EXPECT_EQ(scaled.trainer->skipped_steps(), 0);
  double worst = 0;
  const float* a = scaled.net->params().data<float>();
  const float* b = unscaled.net->params().data<float>();
  for (int64_t i = 0; i < scaled.net->num_params(); ++i)
    worst = std::max(worst, double(std::abs(a[i] - b[i])));
  // Scaling by 1024 / n instead of 1 / n rounds dlogits differently: last-bit differences,
  // which Adam's normalisation turns into at most lr-sized steps.
  EXPECT_LT(worst, 3e-3);
}

}  // namespace
