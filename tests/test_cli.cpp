// The command line as a user meets it: config errors, missing data, weights round trips and
// the book's weights, through the real binary.
#include <gtest/gtest.h>
#include "reference_data.h"

#include <cmath>
#include <regex>
#include <sstream>

#include "cli_util.h"
#include "core/io/npz.h"
#include "hostile_util.h"

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
// bench --config takes the config's backend and threads unless the command line gives them.
TEST(Bench, TheConfigsBackendAndThreadsHoldUnlessOverridden) {
  TempDir dir;
  const std::string cfg = dir.file("b.prototxt", "run { backend: BACKEND_CPU_REF threads: 1 }\n");
  CommandResult r = run_command(deeptrain_cmd("bench --config " + cfg + " --steps 2 --warmup 0 --batch 4"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("cpu-ref train, batch 4, 1 threads"), std::string::npos) << r.output;
  r = run_command(deeptrain_cmd("bench --config " + cfg + " --steps 2 --warmup 0 --batch 4 --threads 2 --backend cpu"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("cpu train, batch 4, 2 threads"), std::string::npos) << r.output;
}

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

// ---- runs that must stop, and JSON that must stay JSON ----

// A tiny MNIST-shaped data set of plain IDX files: pixel k of sample i is (i * 7 + k) % 256,
// label i % 10.
void write_tiny_mnist(const std::filesystem::path& dir, uint32_t n_train, uint32_t n_test) {
  std::filesystem::create_directories(dir);
  auto idx = [](const std::filesystem::path& p, std::vector<uint32_t> dims, bool images) {
    std::string b = {0, 0, 8, char(dims.size())};
    uint64_t n = 1;
    for (uint32_t d : dims) {
      for (int s = 24; s >= 0; s -= 8) b += char((d >> s) & 0xFF);
      n *= d;
    }
    for (uint64_t i = 0; i < n; ++i)
      b += images ? char((i / 784 * 7 + i % 784) % 256) : char(i % 10);
    std::ofstream(p, std::ios::binary) << b;
  };
  idx(dir / "train-images-idx3-ubyte", {n_train, 28, 28}, true);
  idx(dir / "train-labels-idx1-ubyte", {n_train}, false);
  idx(dir / "t10k-images-idx3-ubyte", {n_test, 28, 28}, true);
  idx(dir / "t10k-labels-idx1-ubyte", {n_test}, false);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

// The lines of `output` that are JSON objects, and those of them holding a bare nan or inf
// where a value goes (what printf writes for a non-finite double; JSON has no such token).
std::vector<std::string> json_lines(const std::string& output) {
  std::vector<std::string> lines;
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] == '{') lines.push_back(line);
  return lines;
}
bool has_non_finite_token(const std::string& line) {
  static const std::regex bad(R"([:,\[]\s*[-+]?(nan|inf)\b)", std::regex::icase);
  return std::regex_search(line, bad);
}

TEST(Divergence, NonFiniteLossStopsTheRunAndSavesNothing) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not in " << kMnist << " (scripts/fetch_data.sh)";
  TempDir d;
  const std::string cfg =
      d.file("c.prototxt", "data { dir: '" + kMnist + "' train_limit: 500 test_limit: 100 }\n");
  const std::string run = (d.path / "run").string(), ck = (d.path / "ck").string();
  // Adam at lr 1e30: step 1 is finite, its update is not sane, step 2's loss is nan.
  CommandResult r = run_command(deeptrain_cmd(
      "train " + cfg + " --epochs 2 --batch-size 100 --lr 1e30 --json --run-dir " + run +
      " --checkpoint-dir " + ck + " --checkpoint-every 1"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  // (nan here; inf would be as much a divergence, on a CPU that rounds otherwise)
  const std::regex stopped("deeptrain: error: training diverged: the loss of global step 2 "
                           "\\(epoch 1\\) is -?(nan|inf); the last checkpoint, " + ck +
                           "/ckpt-0000000001 \\(global step 1\\), is kept");
  EXPECT_TRUE(std::regex_search(r.output, stopped)) << r.output;
  EXPECT_NE(r.output.find("no weights were saved"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(run + "/weights.bin"));
  EXPECT_FALSE(std::filesystem::exists(ck + "/ckpt-0000000002")) << "a checkpoint of the nan step";
  EXPECT_NE(read_file(run + "/log.txt").find("training diverged"), std::string::npos);
  // The checkpoint saved before is whole and valid.
  CommandResult inspect = run_command(deeptrain_cmd("inspect " + ck + " --verify"));
  EXPECT_EQ(inspect.exit_code, 0) << inspect.output;
  EXPECT_NE(inspect.output.find("ckpt-0000000001"), std::string::npos) << inspect.output;
  // What --json printed before the stop is still JSON.
  ASSERT_FALSE(json_lines(r.output).empty()) << r.output;
  for (const std::string& line : json_lines(r.output)) EXPECT_FALSE(has_non_finite_token(line)) << line;
}

TEST(Divergence, NonFiniteMetricsAreJsonNull) {
  SKIP_WITHOUT_REFERENCE_DATA();
  // Weights whose last layer is nan: the test loss is nan, which --json writes as null.
  TempDir d;
  write_tiny_mnist(d.path / "mnist", 4, 20);
  const std::string cfg =
      d.file("c.prototxt", "data { dir: '" + (d.path / "mnist").string() + "' }\n");
  auto arrays = deeptrain::io::read_npz(std::string(DEEPTRAIN_REFERENCE_DIR) +
                                        "/book_deep_convnet_params.npz");
  std::vector<std::pair<std::string, deeptrain::Tensor>> out(arrays.begin(), arrays.end());
  for (auto& [name, t] : out)
    if (name == "W8") std::fill_n(t.data<double>(), t.numel(), std::nan(""));
  const std::string npz = (d.path / "nan.npz").string();
  deeptrain::io::write_npz(npz, out);
  CommandResult r = run_command(deeptrain_cmd("eval " + cfg + " --json --init-from " + npz));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.last_line().find("\"test_loss\":null"), std::string::npos) << r.output;
  EXPECT_EQ(json_number(r.last_line(), "test_total"), 20);
  for (const std::string& line : json_lines(r.output)) EXPECT_FALSE(has_non_finite_token(line)) << line;
}

TEST(DataErrors, EmptyTestSetIsRefusedBeforeTraining) {
  TempDir d;
  write_tiny_mnist(d.path / "mnist", 20, 0);
  const std::string cfg =
      d.file("c.prototxt", "data { dir: '" + (d.path / "mnist").string() + "' }\n");
  CommandResult r = run_command(deeptrain_cmd("train " + cfg + " --epochs 1 --json --run-dir " +
                                              (d.path / "run").string()));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find((d.path / "mnist" / "t10k-images-idx3-ubyte").string() +
                          ": holds no images"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(d.path / "run" / "weights.bin"));
}

// The issue's archive through the real binary: 3 GiB of deflated zeros in 3 MB, honestly
// declared. Refused (exit 2, the file named) before inflating, so the process stays small.
TEST(DataErrors, HostileNpzIsRefusedQuicklyAndSmall) {
  TempDir d;
  write_tiny_mnist(d.path / "mnist", 4, 4);
  const std::string cfg =
      d.file("c.prototxt", "data { dir: '" + (d.path / "mnist").string() + "' }\n");
  const std::string header = std::string("\x93NUMPY\x01\x00", 8) + char(118) + '\0' +
                             "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 256, 1024, 1024), }";
  std::string npy = header;
  npy.resize(10 + 118 - 1, ' ');
  npy += '\n';
  uint32_t crc = 0;
  const std::string stream = hostile::raw_deflate_then_zeros(npy, 3072, &crc);
  const uint64_t size = npy.size() + (uint64_t(3) << 30);
  std::string zip;
  auto put = [&zip](uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) zip += char((v >> (8 * i)) & 0xFF);
  };
  const std::string name = "W1.npy";
  put(0x04034b50, 4), put(20, 2), put(0, 2), put(8, 2), put(0, 2), put(0x21, 2), put(crc, 4);
  put(stream.size(), 4), put(size, 4), put(name.size(), 2), put(0, 2);
  zip += name + stream;
  const size_t cd_at = zip.size();
  put(0x02014b50, 4), put(20, 2), put(20, 2), put(0, 2), put(8, 2), put(0, 2), put(0x21, 2);
  put(crc, 4), put(stream.size(), 4), put(size, 4), put(name.size(), 2), put(0, 2), put(0, 2);
  put(0, 2), put(0, 2), put(0, 4), put(0, 4);
  zip += name;
  const size_t cd_size = zip.size() - cd_at;
  put(0x06054b50, 4), put(0, 2), put(0, 2), put(1, 2), put(1, 2), put(cd_size, 4), put(cd_at, 4);
  put(0, 2);
  const std::string bomb = d.file("bomb.npz", zip);
  const bool timed = std::filesystem::exists("/usr/bin/time");
  CommandResult r = run_command((timed ? "/usr/bin/time -f 'maxrss_kb=%M' " : "") +
                                deeptrain_cmd("eval " + cfg + " --init-from " + bomb));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find(bomb + ": member 'W1.npy' declares"), std::string::npos) << r.output;
  if (timed) {
    const size_t at = r.output.find("maxrss_kb=");
    ASSERT_NE(at, std::string::npos) << r.output;
    // An unbounded read holds the 3 GiB member; the bounded one, the binary and a 3 MB file.
    EXPECT_LT(std::stoll(r.output.substr(at + 10)), 1 << 20) << r.output;
  }
}

// The book's trained weights, imported from its .npz (dropout folded), evaluated on the full
// test set, against the book's own forward pass in NumPy (tests/book_reference_eval.py).
TEST(BookWeights, FullTestSetMatchesTheBooksOwnCode) {
  SKIP_WITHOUT_REFERENCE_DATA();
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
