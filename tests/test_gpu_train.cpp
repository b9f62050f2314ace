// The GPU backend end to end (skipped without a GPU): the book's DeepConvNet trained on the GPU
// against the CPU reference path, the NCCL communicator (one rank) against the single-process
// one, fp16 training with loss scaling, MNIST accuracy, and fp16 inference of the book's weights.
// Op-by-op parity lives in test_backend_ops_gpu, parity with the book's reference values in
// test_reference_parity.
#include <cmath>

#include <gtest/gtest.h>

#include "cli_util.h"
#include "net_cases.h"
#include "core/backend/backend.h"
#include "core/data/dataset.h"
#include "core/optim/optimizer.h"
#include "distributed/trainer.h"
#ifdef DEEPTRAIN_HAVE_CUDA
#include "distributed/nccl_communicator.h"
#endif

using namespace deeptrain;

namespace {

// The backend, or a skip naming why there is none.
#define REQUIRE_GPU_BACKEND(var, name, math)                                      \
  std::unique_ptr<Backend> var;                                                   \
  try {                                                                           \
    var = make_backend(name, {math});                                             \
  } catch (const InputError& e) {                                                 \
    GTEST_SKIP() << "no GPU: " << e.what();                                       \
  }

proto::OptimizerConfig adam() {
  proto::OptimizerConfig o;
  o.set_type(proto::ADAM);
  o.set_lr(1e-3f);
  return o;
}

struct TrainRun {
  std::vector<double> losses;
  Tensor params;      // host copy after the last step
  int64_t skipped = 0;
  double loss_scale = 1;
};

// `steps` Adam steps of DeepConvNet (batch 100, seed 7) on the first MNIST training samples.
TrainRun train_steps(Backend& backend, Communicator& comm, int steps, bool loss_scaling = false) {
  static const data::DatasetSplit mnist =
      data::load_dataset("mnist", DEEPTRAIN_DATA_DIR "/mnist", false, 6000, 100);
  proto::ModelConfig mc;
  mc.set_preset("deep_convnet");
  Net net(mc, {1, 28, 28}, 10, DType::f32);
  net.init_params(7);
  auto opt = make_optimizer(adam(), net.num_params(), &backend);
  TrainerOptions to;
  to.seed = 7;
  to.lr = 1e-3f;
  to.loss_scale.enabled = loss_scaling;
  Trainer trainer(to, net, backend, *opt, comm);
  TrainRun r;
  std::vector<int64_t> ids(100);
  for (int s = 0; s < steps; ++s) {
    for (int64_t i = 0; i < 100; ++i) ids[i] = (s * 100 + i) % 6000;
    r.losses.push_back(trainer.train_step(mnist.train, ids.data(), 100).loss_sum / 100.0);
  }
  r.params = net.params().clone();
  r.skipped = trainer.skipped_steps();
  r.loss_scale = trainer.loss_scale();
  return r;
}

// Adam divides each gradient by its running RMS, so where gradients are tiny the last-bit
// differences of another summation order (cuDNN vs im2col + OpenBLAS) become full-size steps, and
// two correct runs drift apart slowly. The bounds say "the same training", not "the same bits":
// on an H200 the losses agreed to 1e-3 for the first 24 steps and to 5.8e-3 over all 30, the
// parameters to 5.8e-3 of their largest magnitude. A wrong gradient would differ from step 1 on.
TEST(GpuTrain, Fp32TrainingFollowsTheCpuReference) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not fetched";
  REQUIRE_GPU_BACKEND(gpu, "cuda", MathMode::fp32);
  auto cpu = make_backend("cpu-ref");
  SingleProcessCommunicator c1, c2;
  const TrainRun g = train_steps(*gpu, c1, 30), c = train_steps(*cpu, c2, 30);
  double worst = 0;
  for (size_t s = 0; s < g.losses.size(); ++s) {
    const double d = std::abs(g.losses[s] - c.losses[s]) / c.losses[s];
    worst = std::max(worst, d);
    EXPECT_LT(d, s < 10 ? 1e-3 : 2e-2) << "step " << s << ": gpu " << g.losses[s] << " cpu "
                                       << c.losses[s];
  }
  const double p = testing_util::rel_diff(g.params, c.params);
  EXPECT_LT(p, 2e-2);
  std::printf("[ gpu vs cpu-ref, 30 Adam steps ] worst loss difference %.2e, params %.2e "
              "(relative to max |param|); loss %.4f -> %.4f\n",
              worst, p, g.losses.front(), g.losses.back());
}

#ifdef DEEPTRAIN_HAVE_CUDA
TEST(GpuTrain, NcclWithOneRankIsTheSingleProcessPath) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not fetched";
  REQUIRE_GPU_BACKEND(gpu, "cuda", MathMode::fp32);
  SingleProcessCommunicator single;
  const TrainRun a = train_steps(*gpu, single, 10);
  auto nccl = make_nccl_communicator(std::make_unique<SingleProcessCommunicator>(), *gpu, 60);
  const TrainRun b = train_steps(*gpu, *nccl, 10);
  ASSERT_EQ(a.params.nbytes(), b.params.nbytes());
  // The bucketed NCCL allreduce over one rank leaves every gradient as it was, and cuDNN picks
  // the same (deterministic) algorithms: the runs agree bit for bit.
  EXPECT_EQ(0, std::memcmp(a.params.raw(), b.params.raw(), a.params.nbytes()));
  for (size_t s = 0; s < a.losses.size(); ++s) EXPECT_EQ(a.losses[s], b.losses[s]) << s;
}
#endif

// fp16 math learns as fp32 does. DeepConvNet's training loss stays high (dropout on the logits):
// over these 200 steps a CPU fp32 run goes from 2.33 (mean of the first 20) to 1.48 (last 20),
// and on an H200 the fp16 run went to 1.56, with no overflow at the initial scale 2^16.
TEST(GpuTrain, Fp16TrainsAsFp32WithDynamicLossScaling) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not fetched";
  REQUIRE_GPU_BACKEND(gpu, "cuda", MathMode::fp16);
  auto fp32 = make_backend("cuda", {MathMode::fp32});
  SingleProcessCommunicator c1, c2;
  const TrainRun r = train_steps(*gpu, c1, 200, /*loss_scaling=*/true);
  const TrainRun ref = train_steps(*fp32, c2, 200);
  auto mean = [](const std::vector<double>& v, size_t b, size_t e) {
    double m = 0;
    for (size_t i = b; i < e; ++i) m += v[i] / double(e - b);
    return m;
  };
  for (double l : r.losses) EXPECT_TRUE(std::isfinite(l));
  const double first = mean(r.losses, 0, 20), last = mean(r.losses, 180, 200);
  const double ref_last = mean(ref.losses, 180, 200);
  EXPECT_LT(last, 0.75 * first) << "fp16 training does not learn";
  EXPECT_LT(last, 1.15 * ref_last) << "fp16 learns more slowly than fp32";
  EXPECT_LT(r.skipped, 20) << "too many overflow steps";
  std::printf("[ fp16, 200 steps ] mean loss of the first 20 steps %.4f, of the last 20 %.4f "
              "(fp32: %.4f); %ld steps skipped for overflow, loss scale now %.0f\n",
              first, last, ref_last, long(r.skipped), r.loss_scale);
}

// The real CLI on the GPU: one epoch reaches 98% (issue 5). The book's recipe needs two (one
// gives 97.4-97.8% on every backend, see test_train_mnist); the fast example's one-cycle rate
// (Adam up to 4e-3 and down again) at the book's batch of 100 does it in one: 98.24-98.43% over
// seeds 1-5 on the CPU (`train examples/deep_convnet_mnist_fast.prototxt --epochs 1
// --batch-size 100 --seed N`).
TEST(GpuTrain, OneMnistEpochReaches98Percent) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not fetched";
  REQUIRE_GPU_BACKEND(gpu, "cuda", MathMode::fp32);
  gpu.reset();
  CommandResult r = run_command(deeptrain_cmd(
      "train " DEEPTRAIN_SOURCE_DIR "/examples/deep_convnet_mnist_fast.prototxt --backend cuda "
      "--epochs 1 --batch-size 100 --json --data-dir " DEEPTRAIN_DATA_DIR "/mnist"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::printf("%s", r.output.c_str());
  EXPECT_GE(json_number(r.last_line(), "test_accuracy"), 0.98) << r.last_line();
}

// The book's half-precision experiment: its trained weights, evaluated with fp16 math, keep the
// fp32 accuracy.
TEST(GpuTrain, Fp16InferenceOfTheBookWeightsKeepsTheAccuracy) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not fetched";
  REQUIRE_GPU_BACKEND(gpu, "cuda", MathMode::fp32);
  gpu.reset();
  auto eval = [](const char* math) {
    CommandResult r = run_command(deeptrain_cmd(
        std::string("eval " DEEPTRAIN_SOURCE_DIR "/examples/deep_convnet_mnist.prototxt "
                    "--backend cuda --json --init-from " DEEPTRAIN_REFERENCE_DIR
                    "/book_deep_convnet_params.npz --data-dir " DEEPTRAIN_DATA_DIR
                    "/mnist --math ") + math));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return json_number(r.last_line(), "test_correct");
  };
  const double fp32 = eval("fp32"), fp16 = eval("fp16"), bf16 = eval("bf16");
  std::printf("[ book weights on the GPU ] correct of 10000: fp32 %.0f, fp16 %.0f, bf16 %.0f\n",
              fp32, fp16, bf16);
  // The book's NumPy forward pass gives 9935 (test_cli checks the CPU paths give exactly that);
  // another summation order may flip an image that sits on a decision boundary.
  EXPECT_NEAR(fp32, 9935, 2);
  EXPECT_NEAR(fp16, fp32, 2);  // "the same accuracy": within 2 of 10000 images
}

}  // namespace
