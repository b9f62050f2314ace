// Through the real binary: a short training run's files (--json lines, metrics, TensorBoard
// events, figures, config, weights), `plot`, `eval --errors`, plain progress lines, `doctor`,
// help texts, and each documented error message for its bad input.
#include <png.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>

#include <gtest/gtest.h>

#include "cli_util.h"
#include "core/error.h"
#include "report/crc32c.h"
#include "report/event_file.h"
#include "report/learning_curves.h"
#include "report/metrics_file.h"
#include "report/misclassified.h"
#include "report/progress.h"
#include "report/run_dir.h"
#include "report/tfrecord.h"
#include "report_test_util.h"

namespace {

using namespace deeptrain;
using namespace deeptrain::report;
using namespace report_test;
namespace fs = std::filesystem;

const std::string kMnist = std::string(DEEPTRAIN_DATA_DIR) + "/mnist";

class ShortRun : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!have_mnist()) return;
    dir_ = new TempDir;
    const std::string cfg = dir_->file("tiny.prototxt", "name: 'tiny'\ndata { dir: '" + kMnist + "' }\n");
    run_dir_ = (dir_->path / "run").string();
    result_ = new CommandResult(run_command(deeptrain_cmd(
        "train " + cfg + " --train-limit 300 --test-limit 200 --epochs 2 --json --run-dir " + run_dir_)));
  }
  static void TearDownTestSuite() {
    delete result_;
    delete dir_;
  }
  void SetUp() override {
    if (!have_mnist()) GTEST_SKIP() << "MNIST not in " << kMnist << " (scripts/fetch_data.sh)";
    ASSERT_EQ(result_->exit_code, 0) << result_->output;
  }
  static fs::path file(const std::string& name) { return fs::path(run_dir_) / name; }
  static TempDir* dir_;
  static std::string run_dir_;
  static CommandResult* result_;
};
TempDir* ShortRun::dir_ = nullptr;
std::string ShortRun::run_dir_;
CommandResult* ShortRun::result_ = nullptr;

TEST_F(ShortRun, JsonOutputIsOnlyTheJsonLines) {
  const auto lines = lines_of(result_->output);
  ASSERT_EQ(lines.size(), 3u) << result_->output;
  EXPECT_EQ(lines[0].rfind("{\"event\":\"epoch\",\"epoch\":1,\"steps\":3,\"train_loss\":", 0), 0u);
  EXPECT_EQ(lines[1].rfind("{\"event\":\"epoch\",\"epoch\":2,", 0), 0u);
  EXPECT_EQ(lines[2].rfind("{\"event\":\"summary\",\"epochs\":2,\"test_correct\":", 0), 0u);
  // log.txt has what was printed, and the plain progress lines.
  const std::string log = read_file(file("log.txt"));
  for (const auto& l : lines) EXPECT_NE(log.find(l), std::string::npos) << l;
  EXPECT_NE(log.find("epoch 2/2  step 3/3"), std::string::npos) << log;
}

TEST_F(ShortRun, MetricsFilesHoldEveryStepAndEpoch) {
  const auto steps_csv = lines_of(read_file(file("metrics_steps.csv")));
  ASSERT_EQ(steps_csv.size(), 1u + 6u);  // header, 3 steps x 2 epochs
  EXPECT_EQ(steps_csv[0], "step,epoch,epoch_step,loss,accuracy,learning_rate,images_per_sec,"
                          "loss_scale,seconds,wall_time");
  EXPECT_EQ(steps_csv[4].rfind("4,2,1,", 0), 0u) << steps_csv[4];
  const auto steps_jsonl = lines_of(read_file(file("metrics_steps.jsonl")));
  ASSERT_EQ(steps_jsonl.size(), 6u);
  EXPECT_EQ(json_number(steps_jsonl[5], "step"), 6);
  EXPECT_EQ(json_number(steps_jsonl[5], "learning_rate"), 0.001);
  EXPECT_GT(json_number(steps_jsonl[5], "images_per_sec"), 0);

  const MetricsTable epochs = read_metrics_csv(file("metrics_epochs.csv").string());
  ASSERT_EQ(epochs.rows.size(), 2u);
  const auto epochs_jsonl = lines_of(read_file(file("metrics_epochs.jsonl")));
  ASSERT_EQ(epochs_jsonl.size(), 2u);
  const auto out = lines_of(result_->output);
  for (int e = 0; e < 2; ++e) {
    EXPECT_EQ(epochs.values("epoch")[e], e + 1);
    EXPECT_EQ(epochs.values("step")[e], 3 * (e + 1));
    EXPECT_EQ(epochs.values("test_total")[e], 200);
    EXPECT_EQ(json_number(epochs_jsonl[e], "test_correct"), json_number(out[e], "test_correct"));
    EXPECT_NEAR(json_number(epochs_jsonl[e], "train_loss"), json_number(out[e], "train_loss"), 1e-6);
    EXPECT_EQ(epochs.values("test_correct")[e], json_number(out[e], "test_correct"));
  }
}

TEST_F(ShortRun, EventFileHasScalarsForEveryStepAndTheMisclassifiedImage) {
  std::vector<fs::path> event_files;
  for (const auto& f : fs::directory_iterator(run_dir_))
    if (f.path().filename().string().rfind("events.out.tfevents.", 0) == 0) event_files.push_back(f.path());
  ASSERT_EQ(event_files.size(), 1u);
  const auto events = read_event_file(event_files[0].string());
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events[0].file_version(), "brain.Event:2");
  std::map<std::string, std::vector<int64_t>> steps_of;
  const tensorboard::Summary::Image* image = nullptr;
  for (const auto& e : events)
    for (const auto& v : e.summary().value()) {
      steps_of[v.tag()].push_back(e.step());
      if (v.has_image()) image = &v.image();
    }
  for (const char* tag : {"train/loss", "train/accuracy", "train/learning_rate",
                          "train/images_per_sec", "train/loss_scale"})
    EXPECT_EQ(steps_of[tag], (std::vector<int64_t>{1, 2, 3, 4, 5, 6})) << tag;
  for (const char* tag : {"epoch/train_loss", "epoch/train_accuracy", "epoch/test_loss",
                          "epoch/test_accuracy", "epoch/images_per_sec"})
    EXPECT_EQ(steps_of[tag], (std::vector<int64_t>{3, 6})) << tag;
  // A classifier has no per-pixel or detection metrics: no flat zero curves for them.
  for (const char* tag : {"epoch/test_mean_iou", "epoch/test_map50", "epoch/test_map"})
    EXPECT_EQ(steps_of.count(tag), 0u) << tag;
  ASSERT_NE(image, nullptr);
  const DecodedPng png = decode_png(image->encoded_image_string());
  EXPECT_EQ(png.width, uint32_t(image->width()));
  EXPECT_EQ(png.height, uint32_t(image->height()));
  EXPECT_EQ(read_file(file("misclassified.png")), image->encoded_image_string());
}

TEST_F(ShortRun, FiguresConfusionConfigAndWeights) {
  const DecodedPng curves = decode_png(read_file(file("curves.png")));
  EXPECT_EQ(curves.width, uint32_t(kCurvesWidth));
  EXPECT_EQ(curves.height, uint32_t(kCurvesHeight));
  const std::string svg = read_file(file("curves.svg"));
  check_xml(svg);
  EXPECT_EQ(count(svg, "<polyline"), 5u);

  const auto confusion = lines_of(read_file(file("confusion.csv")));
  ASSERT_EQ(confusion.size(), 11u);
  int64_t total = 0, diagonal = 0;
  for (int t = 0; t < 10; ++t) {
    std::stringstream ss(confusion[t + 1]);
    std::string cell;
    std::getline(ss, cell, ',');
    EXPECT_EQ(cell, std::to_string(t));
    for (int p = 0; std::getline(ss, cell, ','); ++p) {
      total += std::stoll(cell);
      if (p == t) diagonal += std::stoll(cell);
    }
  }
  EXPECT_EQ(total, 200);
  EXPECT_EQ(diagonal, json_number(lines_of(result_->output).back(), "test_correct"));

  const std::string cfg = read_file(file("config.prototxt"));  // the effective config
  EXPECT_NE(cfg.find("train_limit: 300"), std::string::npos) << cfg;
  EXPECT_NE(cfg.find("epochs: 2"), std::string::npos) << cfg;
  EXPECT_NE(cfg.find("name: \"tiny\""), std::string::npos) << cfg;
  EXPECT_TRUE(fs::exists(file("weights.bin")));
}

TEST_F(ShortRun, PlotRedrawsAtAnotherSize) {
  CommandResult r = run_command(deeptrain_cmd("plot " + run_dir_ + " --width 800 --height 320"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("curves.png"), std::string::npos);
  const DecodedPng png = decode_png(read_file(file("curves.png")));
  EXPECT_EQ(png.width, 800u);
  EXPECT_EQ(png.height, 320u);
  EXPECT_NE(read_file(file("curves.svg")).find("width=\"800\" height=\"320\""), std::string::npos);
}

TEST_F(ShortRun, EvalErrorsWritesTheGridAndMatrixOfSavedWeights) {
  const std::string out = (dir_->path / "eval").string();
  const std::string cfg = (dir_->path / "tiny.prototxt").string();
  CommandResult r = run_command(deeptrain_cmd("eval " + cfg + " --test-limit 200 --weights " +
                                              file("weights.bin").string() + " --errors --run-dir " + out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("true\\pred"), std::string::npos) << r.output;
  EXPECT_EQ(read_file(fs::path(out) / "confusion.csv"), read_file(file("confusion.csv")));
  EXPECT_EQ(read_file(fs::path(out) / "misclassified.png"), read_file(file("misclassified.png")));
}

TEST(Cli, PlainProgressLinesWhenNotATerminal) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not in " << kMnist;
  TempDir d;
  const std::string cfg = d.file("c.prototxt", "data { dir: '" + kMnist + "' }\n");
  CommandResult r = run_command(deeptrain_cmd("train " + cfg + " --train-limit 200 --test-limit 100 "
                                              "--epochs 1 --run-dir " + (d.path / "run").string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find('\r'), std::string::npos);
  EXPECT_NE(r.output.find("epoch 1/1  step 1/2  "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("epoch 1/1  step 2/2  "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("run directory " + (d.path / "run").string()), std::string::npos);
  EXPECT_NE(r.output.find("true\\pred"), std::string::npos);
  EXPECT_EQ(read_file(d.path / "run" / "log.txt"), r.output);
}

TEST(Cli, DoctorPrintsEverySection) {
  CommandResult r = run_command(deeptrain_cmd("doctor"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* s : {"MPI\n  ranks: 1", "GPUs\n", "cuDNN: ", "NCCL: ", "CPU\n  threads: ",
                        "BLAS: OpenBLAS", "oneDNN: ", "data\n  mnist in data/mnist",
                        "fashion_mnist in data/fashion_mnist"})
    EXPECT_NE(r.output.find(s), std::string::npos) << s << "\n" << r.output;
  // Under a launcher the job comes from its environment (SLURM here: the MPI launchers'
  // variables would make deeptrain initialise MPI).
  r = run_command("env SLURM_NTASKS=4 SLURM_PROCID=0 SLURM_JOB_NODELIST='n[1-2]' SLURM_NNODES=2 " +
                  deeptrain_cmd("doctor --threads 1 --data-dir " + kMnist));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("ranks: 4 (SLURM_NTASKS=4); this is rank 0"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("hosts: n[1-2] (2 nodes)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("threads: 1 "), std::string::npos) << r.output;
  if (have_mnist()) {
    EXPECT_NE(r.output.find("sha256 ok"), std::string::npos) << r.output;
  }
}

TEST(Cli, HelpOfNewCommandsHasExamples) {
  for (const char* cmd : {"plot", "doctor"}) {
    CommandResult r = run_command(deeptrain_cmd(std::string(cmd) + " --help"));
    EXPECT_EQ(r.exit_code, 0) << cmd;
    EXPECT_NE(r.output.find("Examples:"), std::string::npos) << cmd << r.output;
  }
  CommandResult r = run_command(deeptrain_cmd("train --help"));
  EXPECT_NE(r.output.find("--run-dir"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("tensorboard --logdir runs"), std::string::npos) << r.output;
}

// Each error message docs/runs.md and docs/configs.md document, for its bad input (exit code 2).
TEST(Cli, DocumentedErrors) {
  TempDir d;
  fs::create_directories(d.path / "empty");
  fs::create_directories(d.path / "started");
  d.file("started/metrics_epochs.csv",
         "epoch,step,train_loss,train_accuracy,test_loss,test_accuracy,test_correct,test_total,"
         "learning_rate,images_per_sec,train_seconds,wall_time\n");
  fs::create_directories(d.path / "broken");
  d.file("broken/metrics_epochs.csv", "epoch,train_loss\n1,0.5\n2,oops\n");
  const std::string p = d.path.string();
  const std::pair<std::string, std::string> cases[] = {
      {"plot " + p + "/nowhere", p + "/nowhere: no such run directory"},
      {"plot " + p + "/empty", p + "/empty: no metrics_epochs.csv, so not a run directory"},
      {"plot " + p + "/started", "metrics_epochs.csv: no epoch has finished yet"},
      {"plot " + p + "/broken", "broken/metrics_epochs.csv:3: 'oops' is not a number"},
      {"plot " + p + "/started --width 10", "plot size 10x480: must be at least 200x120"},
  };
  for (const auto& [args, expected] : cases) {
    CommandResult r = run_command(deeptrain_cmd(args));
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find("deeptrain: error: "), std::string::npos) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(expected), std::string::npos) << args << "\n" << r.output;
  }
  if (!have_mnist()) return;
  const std::string cfg = d.file("c.prototxt", "data { dir: '" + kMnist + "' train_limit: 100 test_limit: 100 }\n");
  const std::string file = d.file("a_file", "x");
  const std::pair<std::string, std::string> run_cases[] = {
      {"train " + cfg + " --run-dir " + file, "run directory " + file + ": exists and is not a directory"},
      {"train " + cfg + " --run-dir " + p + "/started",
       "run directory " + p + "/started: already holds a run (metrics_epochs.csv); give a new "
       "--run-dir or remove it"},
      {"eval " + cfg + " --weights " + file + " --run-dir " + p + "/e",
       "eval: --run-dir is where --errors writes its figures; add --errors"},
  };
  for (const auto& [args, expected] : run_cases) {
    CommandResult r = run_command(deeptrain_cmd(args));
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(expected), std::string::npos) << args << "\n" << r.output;
  }
}


}  // namespace
