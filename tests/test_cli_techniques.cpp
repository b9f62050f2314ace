// Chapter 8's techniques from the command line, on the first MNIST samples: the schedule's rate
// in the step metrics, BatchNorm statistics through a trained run's weights file into `eval`,
// transfer.init_from (strict, with skip/freeze), and `eval` of an ensemble checked against
// the members' softmax probabilities averaged here.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <vector>

#include <gtest/gtest.h>

#include "cli_util.h"
#include "core/backend/backend.h"
#include "core/config.h"
#include "core/data/dataset.h"
#include "core/io/transfer.h"
#include "core/io/weights.h"
#include "core/net.h"
#include "error_util.h"

using namespace deeptrain;

namespace {

const std::string kMnist = std::string(DEEPTRAIN_DATA_DIR) + "/mnist";

// A config on the first `train` / `test` MNIST samples, 1 thread.
std::string config(const std::string& body, int train = 300, int test = 200) {
  return fmt::format(
      "data {{ dataset: \"mnist\" dir: \"{}\" train_limit: {} test_limit: {} }}\n"
      "run {{ seed: 3 threads: 1 eval_batch_size: 64 }}\n{}",
      kMnist, train, test, body);
}

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

std::vector<std::string> lines_with(const std::string& text, const std::string& part) {
  std::stringstream ss(text);
  std::vector<std::string> out;
  for (std::string l; std::getline(ss, l);)
    if (l.find(part) != std::string::npos) out.push_back(l);
  return out;
}

const char* kBnModel = R"(
model {
  layer { name: "conv1" conv { out_channels: 8 kernel: 3 pad: 1 no_bias: true } }
  layer { name: "bn1" batch_norm {} }
  layer { name: "relu1" relu {} }
  layer { name: "pool1" max_pool {} }
  layer { name: "fc" affine { out_features: 10 } }
}
)";

TEST(CliTechniques, StepMetricsShowTheScheduledRate) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not fetched";
  TempDir dir;
  // 300 samples, batch 100: 3 steps an epoch; the rate drops 10x at epoch 1.
  const std::string cfg = dir.file(
      "sched.prototxt",
      config(std::string(kBnModel) + "optimizer { type: SGD lr: 0.1 }\n"
             "schedule { epochs: 2 batch_size: 100 lr_schedule { type: STEP milestones: 1 } }\n"));
  const std::string run = (dir.path / "run").string();
  const CommandResult r =
      run_command(deeptrain_cmd("train " + cfg + " --json --run-dir " + run));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::vector<std::string> steps = lines_of(run + "/metrics_steps.jsonl");
  ASSERT_EQ(steps.size(), 6u);
  for (size_t s = 0; s < 6; ++s)
    EXPECT_NEAR(json_number(steps[s], "learning_rate"), s < 3 ? 0.1 : 0.01, 1e-9) << steps[s];
  // The checkpoint records the rate the last step ran at (0.01), not optimizer.lr (0.1).
  const std::string ckpt = (dir.path / "ckpt").string();
  ASSERT_EQ(run_command(deeptrain_cmd("train " + cfg + " --checkpoint-dir " + ckpt + " --run-dir " +
                                      (dir.path / "run2").string())).exit_code, 0);
  const CommandResult inspect = run_command(deeptrain_cmd("inspect " + ckpt + "/ckpt-0000000006"));
  ASSERT_EQ(inspect.exit_code, 0) << inspect.output;
  EXPECT_NE(inspect.output.find("last lr 0.01\n"), std::string::npos) << inspect.output;
}

// The running statistics travel in the weights file: `eval` reproduces the training run's
// final test accuracy exactly.
TEST(CliTechniques, EvalOfABatchNormModelReproducesTheTrainingRunsAccuracy) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not fetched";
  TempDir dir;
  const std::string cfg = dir.file(
      "bn.prototxt", config(std::string(kBnModel) + "optimizer { type: ADAM lr: 0.005 }\n"
                                                    "schedule { epochs: 2 batch_size: 50 }\n"));
  const std::string weights = (dir.path / "bn.weights").string();
  const CommandResult train = run_command(deeptrain_cmd(
      "train " + cfg + " --json --save-weights " + weights + " --run-dir " +
      (dir.path / "run").string()));
  ASSERT_EQ(train.exit_code, 0) << train.output;
  const std::string trained = train.last_line();
  const CommandResult eval = run_command(deeptrain_cmd("eval " + cfg + " --json --weights " + weights));
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  EXPECT_EQ(json_number(eval.last_line(), "test_correct"), json_number(trained, "test_correct"))
      << trained << "\n" << eval.last_line();
  EXPECT_EQ(json_number(eval.last_line(), "test_total"), 200);
  EXPECT_GT(json_number(eval.last_line(), "test_accuracy"), 0.3);  // it learned (chance: 0.1)
}

// A weights file of 10 classes into a 12-class model (MNIST's labels 0-9 fit it; a 5-class
// model would be refused for the data first) is refused with the tensors named (before any
// training step). With the head skipped (re-initialised) and conv1 frozen, a run starts
// from the file: its saved conv1 is the source's bit for bit, its head is not.
TEST(CliTechniques, TransferInitFromIsStrictAndSkipReinitialisesTheHead) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not fetched";
  TempDir dir;
  const std::string source_cfg = dir.file(
      "source.prototxt", config(std::string(kBnModel) + "schedule { epochs: 1 batch_size: 100 }\n"));
  const std::string weights = (dir.path / "source.weights").string();
  ASSERT_EQ(run_command(deeptrain_cmd("train " + source_cfg + " --json --save-weights " + weights +
                                      " --run-dir " + (dir.path / "r0").string()))
                .exit_code,
            0);
  std::string twelve = kBnModel;
  twelve.replace(twelve.find("out_features: 10"), 16, "out_features: 12");
  twelve.replace(twelve.find("model {"), 7, "model { num_classes: 12");
  const std::string strict = dir.file(
      "strict.prototxt", config(twelve + "schedule { epochs: 1 batch_size: 100 }\n"
                                       "transfer { init_from: \"" + weights + "\" }\n"));
  const CommandResult refused = run_command(
      deeptrain_cmd("train " + strict + " --json --run-dir " + (dir.path / "r1").string()));
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_CONTAINS(refused.output, "transfer.init_from: " + weights);
  EXPECT_CONTAINS(refused.output, "fc.W: source shape (1568, 10), model shape (1568, 12)");
  EXPECT_CONTAINS(refused.output, "skip: \"fc\"");

  const std::string tuned = (dir.path / "tuned.weights").string();
  const std::string finetune = dir.file(
      "finetune.prototxt",
      config(std::string(kBnModel) + "schedule { epochs: 1 batch_size: 100 }\n"
             "transfer { init_from: \"" + weights + "\" skip: \"fc\" freeze: \"conv1\" }\n"));
  const CommandResult ok = run_command(deeptrain_cmd("train " + finetune + " --save-weights " +
                                                     tuned + " --run-dir " +
                                                     (dir.path / "r2").string()));
  ASSERT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_CONTAINS(ok.output, "initialised from " + weights + ": copied 5 tensors");
  const auto src = io::read_weight_tensors(weights), out = io::read_weight_tensors(tuned);
  auto same = [&](const std::string& name) {
    const Tensor &a = src.at(name), &b = out.at(name);
    return a.shape() == b.shape() &&
           std::equal(a.data<float>(), a.data<float>() + a.numel(), b.data<float>());
  };
  EXPECT_TRUE(same("conv1.W"));   // frozen
  EXPECT_FALSE(same("bn1.gamma"));  // copied, then trained
  EXPECT_FALSE(same("fc.W"));     // re-initialised, then trained
}

// Two members trained from different seeds; the ensemble's figures equal the mean of their
// softmax probabilities computed here from their weights files.
TEST(CliTechniques, EnsembleEvalAveragesTheMembersProbabilities) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not fetched";
  TempDir dir;
  const std::string cfg_text =
      config("model { preset: \"simple_convnet\" }\nschedule { epochs: 1 batch_size: 100 }\n",
             300, 300);
  const std::string cfg = dir.file("ens.prototxt", cfg_text);
  std::vector<std::string> weights;
  for (int seed : {1, 2}) {
    weights.push_back((dir.path / fmt::format("m{}.weights", seed)).string());
    const CommandResult r = run_command(deeptrain_cmd(fmt::format(
        "train {} --json --seed {} --save-weights {} --run-dir {}", cfg, seed, weights.back(),
        (dir.path / fmt::format("run{}", seed)).string())));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  const CommandResult r = run_command(deeptrain_cmd("eval " + cfg + " --json --weights " +
                                                    weights[0] + " --weights " + weights[1]));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::vector<std::string> members = lines_with(r.output, "\"event\":\"member\"");
  ASSERT_EQ(members.size(), 2u) << r.output;
  const std::string summary = r.last_line();
  ASSERT_NE(summary.find("\"members\":2"), std::string::npos) << summary;

  // By hand: each member's softmax in f64 from its logits, averaged, argmax.
  const proto::ExperimentConfig c = parse_config(cfg_text, "ens");
  const data::DatasetSplit d = data::load_dataset("mnist", kMnist, false, 1, 300);
  const int64_t n = d.test.labels.numel();
  auto backend = make_backend("cpu");
  Tensor x = Tensor::empty({n, 1, 28, 28}, DType::f32), t = Tensor::empty({n}, DType::i32);
  std::vector<int64_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = i;
  data::gather_batch(d.test, ids.data(), n, x, t);
  std::vector<double> mean(size_t(n) * 10, 0.0);
  for (size_t k = 0; k < 2; ++k) {
    Net net(c.model(), {1, 28, 28}, 10, DType::f32);
    io::load_weights(weights[k], net);
    StepContext ctx{*backend, false, 3, 0, ids.data()};
    const Tensor logits = backend->to_plain(net.forward(ctx, x));
    int64_t member_correct = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float* z = logits.data<float>() + i * 10;
      double zmax = z[0], sum = 0;
      for (int j = 1; j < 10; ++j) zmax = std::max(zmax, double(z[j]));
      for (int j = 0; j < 10; ++j) sum += std::exp(double(z[j]) - zmax);
      int best = 0;
      for (int j = 0; j < 10; ++j) {
        mean[size_t(i * 10 + j)] += std::exp(double(z[j]) - zmax) / sum / 2;
        if (z[j] > z[best]) best = j;
      }
      member_correct += best == t.data<int32_t>()[i];
    }
    EXPECT_EQ(json_number(members[k], "test_correct"), double(member_correct)) << members[k];
  }
  int64_t correct = 0;
  for (int64_t i = 0; i < n; ++i) {
    int best = 0;
    for (int j = 1; j < 10; ++j)
      if (mean[size_t(i * 10 + j)] > mean[size_t(i * 10 + best)]) best = j;
    correct += best == t.data<int32_t>()[i];
  }
  EXPECT_EQ(json_number(summary, "test_correct"), double(correct)) << summary;
  EXPECT_EQ(json_number(summary, "test_total"), double(n));
  std::printf("[figures] members %s / %s correct, ensemble %ld of %ld\n",
              fmt::format("{}", json_number(members[0], "test_correct")).c_str(),
              fmt::format("{}", json_number(members[1], "test_correct")).c_str(), long(correct),
              long(n));
}

}  // namespace
