// `deeptrain verify-invariance` and what it stands on (`train --exact`, `train --max-steps`),
// end to end: the real binary, real mpirun jobs, real checkpoints, MNIST.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "cli_util.h"

namespace {

// A small model with everything exact mode must handle: convolution, synchronised BatchNorm,
// pooling, dropout, affine layers. 600 MNIST images, batch 50 in micro-shards of 10.
std::string small_config(const TempDir& dir) {
  return dir.file("small.prototxt", std::string(R"(
    model {
      layer { name: "conv1" conv { out_channels: 8 kernel: 3 pad: 1 } }
      layer { name: "bn1" batch_norm { sync: true } }
      layer { name: "relu1" relu {} }
      layer { name: "pool1" max_pool {} }
      layer { name: "fc1" affine { out_features: 32 } }
      layer { name: "relu2" relu {} }
      layer { name: "drop1" dropout { ratio: 0.3 } }
      layer { name: "fc2" affine { out_features: 10 } }
    }
    data { dataset: "mnist" dir: ")") + DEEPTRAIN_DATA_DIR + R"(/mnist" train_limit: 600 test_limit: 200 }
    optimizer { type: ADAM lr: 0.003 }
    schedule { epochs: 1 batch_size: 50 }
    run { seed: 3 }
    distributed { micro_batch: 10 })");
}

bool have_mpirun() { return run_command("mpirun --version").exit_code == 0; }

}  // namespace

TEST(VerifyInvariance, ExactModeIsBitIdenticalOnOneTwoAndThreeRanksAtOneAndTwoThreads) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not fetched (scripts/fetch_data.sh)";
  if (!have_mpirun()) GTEST_SKIP() << "no mpirun";
  TempDir dir;
  const CommandResult r = run_command(deeptrain_cmd(
      "verify-invariance " + small_config(dir) + " --ranks 1,2,3 --threads 1,2 --steps 5 --work-dir " +
      (dir.path / "work").string()));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("largest difference: 0: bit-identical"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("exact mode (micro-shards of 10)"), std::string::npos) << r.output;
  // Six runs: the reference and five compared, each with identical checkpoint tensors.
  size_t identical = 0;
  for (size_t at = 0; (at = r.output.find(" identical\n", at)) != std::string::npos; ++at) ++identical;
  EXPECT_EQ(identical, 5u) << r.output;
  for (const char* run : {"ranks1-threads1", "ranks3-threads2"})
    EXPECT_TRUE(std::filesystem::exists(dir.path / "work" / run / "ckpt" / "ckpt-0000000005"))
        << run << "\n" << r.output;
}

// The default path sums in an order that depends on the rank count: the command says by how
// much, and fails.
TEST(VerifyInvariance, TheDefaultPathDiffersAndTheCommandSaysSo) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not fetched (scripts/fetch_data.sh)";
  if (!have_mpirun()) GTEST_SKIP() << "no mpirun";
  TempDir dir;
  const CommandResult r = run_command(deeptrain_cmd(
      "verify-invariance " + small_config(dir) + " --default-path --ranks 1,2 --threads 1 --steps 5"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("not bit-identical: largest difference"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("exact mode (--exact, distributed.exact) does not"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find(" differs\n"), std::string::npos) << r.output;
}

TEST(VerifyInvariance, MaxStepsStopsWithACheckpointAndExactNeedsTheReferenceKernels) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not fetched (scripts/fetch_data.sh)";
  TempDir dir;
  const std::string cfg = small_config(dir);
  CommandResult r = run_command(deeptrain_cmd(
      "train " + cfg + " --exact --max-steps 3 --checkpoint-dir " + (dir.path / "ckpt").string() +
      " --run-dir " + (dir.path / "run").string()));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("stopped by --max-steps 3 after global step 3"), std::string::npos) << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir.path / "ckpt" / "ckpt-0000000003")) << r.output;
  // oneDNN's weight gradients change with the thread count: exact mode refuses it by name.
  r = run_command(deeptrain_cmd("train " + cfg + " --exact --backend cpu"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("distributed.exact"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("cpu-ref"), std::string::npos) << r.output;
  // Exact mode needs synchronised BatchNorm: the layer is named.
  const std::string unsynced = dir.file("unsynced.prototxt", R"(
    model {
      layer { name: "conv1" conv { out_channels: 4 kernel: 3 } }
      layer { name: "bn_local" batch_norm {} }
      layer { name: "fc" affine { out_features: 10 } }
    }
    data { dataset: "mnist" dir: ")" + std::string(DEEPTRAIN_DATA_DIR) + R"(/mnist" train_limit: 100 test_limit: 100 }
    distributed { exact: true })");
  r = run_command(deeptrain_cmd("train " + unsynced + " --max-steps 1"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("layer 'bn_local' needs batch_norm.sync: true"), std::string::npos) << r.output;
}
