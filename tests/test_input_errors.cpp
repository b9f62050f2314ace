// Issue 16's input classes that one process shows, through the real binary: the exit-code
// contract for command-line errors, an explicit 0 that is a value and not "unset", a config
// that does not fit its data, a resume of another experiment, weights of another model.
// (Start-up failures on one rank of several: test_mpi_faults.)
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "cli_util.h"

namespace {

std::string mnist_dir() { return std::string(DEEPTRAIN_DATA_DIR) + "/mnist"; }

std::string small(const std::string& model = "model { preset: \"simple_convnet\" }",
                  const std::string& extra = "", const std::string& data_extra = "") {
  return model + "\ndata { dataset: \"mnist\" dir: \"" + mnist_dir() +
         "\" train_limit: 200 test_limit: 100 " + data_extra +
         " }\nschedule { epochs: 1 batch_size: 50 }\n" + extra;
}

void expect_error(const CommandResult& r, int code, const std::string& want) {
  EXPECT_EQ(r.exit_code, code) << r.output;
  EXPECT_NE(r.output.find(want), std::string::npos) << "wanted: " << want << "\n" << r.output;
}

}  // namespace

// Every command-line mistake is bad input (exit 2) with a message that says what is wanted;
// help exits 0.
TEST(InputErrors, CommandLineErrorsExitTwoWithPlainMessages) {
  TempDir dir;
  const std::string cfg = dir.file("c.prototxt", small());
  expect_error(run_command(deeptrain_cmd("train " + cfg + " --frob")), 2, "--frob");
  expect_error(run_command(deeptrain_cmd("train")), 2, "config is required");
  expect_error(run_command(deeptrain_cmd("train " + (dir.path / "none.prototxt").string())), 2,
               "none.prototxt");
  expect_error(run_command(deeptrain_cmd("bench --steps -3")), 2, "--steps: must be an integer > 0, got -3");
  expect_error(run_command(deeptrain_cmd("bench --batch 0")), 2, "--batch: must be an integer > 0, got 0");
  const CommandResult r = run_command(deeptrain_cmd("bench --steps 5x"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_EQ(r.output.find("1.797e+308"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("1.797e308"), std::string::npos) << r.output;
  EXPECT_EQ(run_command(deeptrain_cmd("train --help")).exit_code, 0);
}

// An explicit 0 is checked as a value: it never silently becomes the default.
TEST(InputErrors, AnExplicitZeroIsRefusedNotTakenForUnset) {
  TempDir dir;
  const std::string cfg = dir.file("c.prototxt", small());
  expect_error(run_command(deeptrain_cmd("train " + cfg + " --epochs 0")), 2,
               "schedule.epochs: must be > 0, got 0");
  expect_error(run_command(deeptrain_cmd("train " + cfg + " --lr 0")), 2,
               "optimizer.lr: must be > 0, got 0");
  expect_error(run_command(deeptrain_cmd("train " + cfg + " --batch-size 0")), 2,
               "schedule.batch_size: must be > 0, got 0");
  const std::string zero = dir.file("z.prototxt", small("model { preset: \"simple_convnet\" }",
                                                        "run { eval_batch_size: 0 }"));
  expect_error(run_command(deeptrain_cmd("train " + zero)), 2, "run.eval_batch_size: must be > 0");
}

// A config that does not fit its data is an input error naming the field, before any run
// directory is made.
TEST(InputErrors, AConfigThatDoesNotFitTheDataIsRefusedBeforeTheRunDirectory) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not fetched (scripts/fetch_data.sh)";
  TempDir dir;
  const std::string classes =
      dir.file("k.prototxt", small("model { preset: \"simple_convnet\" num_classes: 5 }"));
  const std::string run_dir = (dir.path / "run").string();
  expect_error(run_command(deeptrain_cmd("train " + classes + " --run-dir " + run_dir)), 2,
               "model.num_classes: 5, but sample");
  EXPECT_FALSE(std::filesystem::exists(run_dir));
  const std::string shape = dir.file(
      "s.prototxt", small("model { preset: \"simple_convnet\" input { channels: 3 height: 32 width: 32 } }"));
  expect_error(run_command(deeptrain_cmd("train " + shape + " --run-dir " + run_dir)), 2,
               "model.input: the model takes (3, 32, 32) per sample, data set 'mnist' has (1, 28, 28)");
  EXPECT_FALSE(std::filesystem::exists(run_dir));
}

// A checkpoint resumes only the experiment that saved it: another preset, data set,
// augmentation or optimizer hyper-parameter is refused, naming each difference; the epochs and
// the rate may change.
TEST(InputErrors, ResumingAnotherExperimentIsRefusedNamingTheDifferences) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not fetched (scripts/fetch_data.sh)";
  TempDir dir;
  const std::string ckpt = (dir.path / "ckpt").string();
  const std::string base = "optimizer { type: ADAM beta1: 0.9 }";
  const std::string first = dir.file("a.prototxt", small("model { preset: \"simple_convnet\" }", base));
  ASSERT_EQ(run_command(deeptrain_cmd("train " + first + " --checkpoint-dir " + ckpt + " --run-dir " +
                                      (dir.path / "r1").string())).exit_code, 0);
  const std::string other = dir.file(
      "b.prototxt", small("model { preset: \"simple_convnet\" }",
                          "optimizer { type: ADAM beta1: 0.5 }", "augment { enabled: true shift_px: 2 }"));
  CommandResult r = run_command(deeptrain_cmd("train " + other + " --epochs 2 --resume auto --checkpoint-dir " +
                                              ckpt + " --run-dir " + (dir.path / "r2").string()));
  expect_error(r, 2, "resume: the checkpoint was saved by another experiment");
  EXPECT_NE(r.output.find("beta1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("augment"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("transfer { init_from"), std::string::npos) << r.output;
  // The same experiment, more epochs and another rate: resumed.
  r = run_command(deeptrain_cmd("train " + first + " --epochs 2 --lr 0.0005 --resume auto --checkpoint-dir " +
                                ckpt + " --run-dir " + (dir.path / "r3").string()));
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

// Weights files carry their model: evaluating them under another model is refused.
TEST(InputErrors, WeightsOfAnotherModelAreRefused) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not fetched (scripts/fetch_data.sh)";
  TempDir dir;
  const std::string weights = (dir.path / "w.bin").string();
  const std::string a = dir.file("a.prototxt", small("model { preset: \"deep_convnet\" }"));
  ASSERT_EQ(run_command(deeptrain_cmd("train " + a + " --train-limit 100 --save-weights " + weights +
                                      " --run-dir " + (dir.path / "r").string())).exit_code, 0);
  EXPECT_EQ(run_command(deeptrain_cmd("eval " + a + " --weights " + weights)).exit_code, 0);
  // The book's variant: the same tensors, another dropout.
  const std::string b = dir.file("b.prototxt", small("model { preset: \"deep_convnet_book\" }"));
  const CommandResult r = run_command(deeptrain_cmd("eval " + b + " --weights " + weights));
  expect_error(r, 2, "the weights belong to another model than the config's");
  EXPECT_NE(r.output.find("mode"), std::string::npos) << r.output;
}

// Resources: more threads than the process's CPU affinity allows is said (a warning naming the
// counts and what to do), and a graph far beyond any network is refused before it is built.
TEST(InputErrors, OversubscribedThreadsWarnAndAbsurdGraphsAreRefused) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not fetched (scripts/fetch_data.sh)";
  TempDir dir;
  const std::string cfg = dir.file("c.prototxt", small());
  const int cores = int(std::thread::hardware_concurrency());
  const CommandResult r = run_command(deeptrain_cmd(
      "train " + cfg + " --threads " + std::to_string(4 * cores) + " --max-steps 1 --run-dir " +
      (dir.path / "r").string()));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("warning: " ), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(std::to_string(4 * cores) + " threads on the "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("oversubscribed"), std::string::npos) << r.output;
  std::string layers;
  for (int i = 0; i < 20001; ++i) layers += "layer { name: \"r" + std::to_string(i) + "\" relu {} }\n";
  const std::string huge = dir.file("huge.prototxt", small("model { " + layers + " }"));
  const auto t0 = std::chrono::steady_clock::now();
  expect_error(run_command(deeptrain_cmd("train " + huge)), 2,
               "model: 20001 layers; deeptrain builds graphs of at most 20000 layers");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 30.0);
}
