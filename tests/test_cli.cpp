// The command line as a user meets it: config errors, missing data, weights round trips and
// the book's weights, through the real binary.
#include <gtest/gtest.h>

#include "cli_util.h"

namespace {

const std::string kMnist = std::string(DEEPTRAIN_DATA_DIR) + "/mnist";

TEST(ConfigErrors, UnknownFieldNamesFileLineAndField) {
  TempDir d;
  const std::string cfg = d.file("bad.prototxt", "model { preset: 'deep_convnet' }\nschedule { epoch: 3 }\n");
  CommandResult r = run_command(deeptrain_cmd("train " + cfg));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find(cfg + ":2:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("no field named \"epoch\""), std::string::npos) << r.output;
}

TEST(ConfigErrors, WrongTypeNamesLine) {
  TempDir d;
  const std::string cfg = d.file("bad.prototxt", "schedule {\n  batch_size: \"many\"\n}\n");
  CommandResult r = run_command(deeptrain_cmd("train " + cfg));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find(cfg + ":2:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("batch_size"), std::string::npos) << r.output;
}

TEST(ConfigErrors, ImpossibleValuesNameTheField) {
  TempDir d;
  const std::pair<const char*, const char*> cases[] = {
      {"schedule { batch_size: -5 }", "schedule.batch_size: must be > 0, got -5"},
      {"optimizer { lr: -1 }", "optimizer.lr: must be > 0, got -1"},
      {"optimizer { type: ADAM beta1: 1.5 }", "optimizer.beta1"},
      {"model { preset: 'lenet' }", "model.preset: unknown 'lenet'"},
      {"model { layer { name: 'a' affine { out_features: 10 } } layer { name: 'a' relu {} } }",
       "duplicate name 'a'"},
      {"model { layer { name: 'd' dropout { ratio: 1.5 } } }", "dropout.ratio must be in [0, 1)"},
      {"data { dataset: 'cifar100' }", "data.dataset: unknown 'cifar100'"},
  };
  for (auto [text, expected] : cases) {
    const std::string cfg = d.file("c.prototxt", text);
    CommandResult r = run_command(deeptrain_cmd("train " + cfg + " --epochs 1 --data-dir " + kMnist));
    EXPECT_EQ(r.exit_code, 2) << text << "\n" << r.output;
    EXPECT_NE(r.output.find(expected), std::string::npos) << text << "\n" << r.output;
  }
}

TEST(ConfigErrors, CommandLineOverridesAreValidatedToo) {
  TempDir d;
  const std::string cfg = d.file("ok.prototxt", "model { preset: 'deep_convnet' }\n");
  CommandResult r = run_command(deeptrain_cmd("train " + cfg + " --batch-size 0 --epochs -2"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("schedule.epochs: must be > 0, got -2"), std::string::npos) << r.output;
}

TEST(DataErrors, MissingFilesAreNamedWithTheFetchCommand) {
  TempDir d;
  const std::string cfg = d.file("c.prototxt", "data { dir: '" + d.path.string() + "/nowhere' }\n");
  CommandResult r = run_command(deeptrain_cmd("train " + cfg));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("train-images-idx3-ubyte"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("fetch_data.sh"), std::string::npos) << r.output;
}

TEST(Help, EveryCommandHasHelpWithExamples) {
  for (const char* cmd : {"", "train ", "eval ", "bench "}) {
    CommandResult r = run_command(deeptrain_cmd(std::string(cmd) + "--help"));
    EXPECT_EQ(r.exit_code, 0) << cmd;
    EXPECT_NE(r.output.find("xample"), std::string::npos) << cmd << r.output;
  }
}

// bench --profile: one phase per layer and direction, plus the step's own phases, each timed.
TEST(Bench, ProfileTimesEveryLayerForwardAndBackward) {
  CommandResult r = run_command(deeptrain_cmd(
      "bench --profile --json --steps 3 --warmup 1 --threads 1 --batch 8"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string line = r.last_line();
  EXPECT_GT(json_number(line, "phases_ms_total"), 0.0) << line;
  EXPECT_EQ(json_number(line, "steps"), 3) << line;
  // DeepConvNet's ReLUs are fused into the convolutions and fc7: they have no phase.
  for (const char* layer : {"conv1", "conv2", "pool1", "conv3", "conv4", "pool2", "conv5", "conv6",
                            "pool3", "fc7", "drop7", "fc8", "drop8"})
    for (const char* dir : {"forward ", "backward "})
      EXPECT_NE(line.find(std::string("\"phase\":\"") + dir + layer + "\""), std::string::npos)
          << dir << layer << "\n" << line;
  for (const char* phase : {"batch", "loss", "gradient reduction", "optimizer"})
    EXPECT_NE(line.find(std::string("\"phase\":\"") + phase + "\""), std::string::npos) << phase;
  EXPECT_EQ(line.find("relu"), std::string::npos) << line;
  CommandResult table = run_command(deeptrain_cmd("bench --profile --steps 2 --warmup 0 --batch 4"));
  ASSERT_EQ(table.exit_code, 0) << table.output;
  EXPECT_NE(table.output.find("backward conv2"), std::string::npos) << table.output;
}

TEST(Weights, SaveThenEvalGivesTheSameAccuracyAndCorruptionIsRefused) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not in " << kMnist << " (scripts/fetch_data.sh)";
  TempDir d;
  const std::string cfg = d.file("c.prototxt", "data { dir: '" + kMnist + "' train_limit: 1000 test_limit: 500 }\n");
  const std::string w = (d.path / "w.weights").string();
  CommandResult train = run_command(deeptrain_cmd("train " + cfg + " --epochs 1 --json --save-weights " + w));
  ASSERT_EQ(train.exit_code, 0) << train.output;
  CommandResult eval = run_command(deeptrain_cmd("eval " + cfg + " --json --weights " + w));
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  EXPECT_EQ(json_number(train.last_line(), "test_correct"), json_number(eval.last_line(), "test_correct"));
  EXPECT_EQ(json_number(eval.last_line(), "test_total"), 500);

  // Flip one byte inside the last tensor's data: its CRC-32 check names it.
  std::string bytes;
  {
    std::ifstream in(w, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  bytes[bytes.size() - 40] ^= 0x55;
  d.file("w.weights", bytes);
  CommandResult bad = run_command(deeptrain_cmd("eval " + cfg + " --weights " + w));
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("fc8.b"), std::string::npos) << bad.output;
  EXPECT_NE(bad.output.find("CRC-32"), std::string::npos) << bad.output;
}

// The book's trained weights, imported from its .npz (dropout folded), evaluated on the full
// test set, against the book's own forward pass in NumPy (tests/book_reference_eval.py).
TEST(BookWeights, FullTestSetMatchesTheBooksOwnCode) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not in " << kMnist;
  const std::string params = std::string(DEEPTRAIN_REFERENCE_DIR) + "/book_deep_convnet_params.npz";
  CommandResult numpy = run_command("/usr/bin/python3 " DEEPTRAIN_SOURCE_DIR "/tests/book_reference_eval.py " +
                                    params + " " + kMnist);
  if (numpy.exit_code != 0) GTEST_SKIP() << "NumPy reference unavailable: " << numpy.output;
  TempDir d;
  const std::string cfg = d.file("c.prototxt", "data { dir: '" + kMnist + "' }\n");
  CommandResult ours = run_command(deeptrain_cmd("eval " + cfg + " --json --init-from " + params));
  ASSERT_EQ(ours.exit_code, 0) << ours.output;
  const double expected = std::stod(numpy.output);
  EXPECT_EQ(json_number(ours.last_line(), "test_correct"), expected);
  EXPECT_EQ(json_number(ours.last_line(), "test_total"), 10000);
  std::printf("book weights: deeptrain %s / numpy %g correct\n", ours.last_line().c_str(), expected);
}

}  // namespace
