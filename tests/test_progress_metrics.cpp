// Progress on a terminal and in a log, the metrics files (JSON Lines and CSV) and the run
// directory's name and refusals.
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

TEST(Progress, PlainModePrintsATenthOfTheEpochPerLine) {
  std::ostringstream out;
  double t = 0;
  Progress p(out, false, "epoch 3/20", 100, 0, [&] { return t; });
  for (int s = 1; s <= 100; ++s) {
    t = s;  // one second per step of 100 images
    p.update(s, 100 * s, 0.5);
  }
  p.finish();
  const auto lines = lines_of(out.str());
  ASSERT_EQ(lines.size(), 10u) << out.str();
  EXPECT_EQ(out.str().find('\r'), std::string::npos);
  EXPECT_EQ(lines[0], "epoch 3/20  step 10/100  100 img/s  loss 0.5000  ETA 1:30");
  EXPECT_EQ(lines[9], "epoch 3/20  step 100/100  100 img/s  loss 0.5000  ETA 0:00");
}

TEST(Progress, PlainModeAlsoPrintsTheLastStep) {
  std::ostringstream out;
  Progress p(out, false, "e", 25, 0, [] { return 0.0; });
  for (int s = 1; s <= 25; ++s) p.update(s, s, 1);
  const auto lines = lines_of(out.str());
  ASSERT_EQ(lines.size(), 13u);  // every 2 steps, and step 25
  EXPECT_NE(lines.back().find("step 25/25"), std::string::npos);
}

TEST(Progress, TerminalBarRedrawsInPlaceAtMostTenTimesASecondAndErasesItself) {
  std::ostringstream out;
  double t = 0;
  Progress p(out, true, "epoch 1/2", 200, 0, [&] { return t; });
  for (int s = 1; s <= 200; ++s) {
    t = s * 0.01;  // 2 s in all
    p.update(s, 50 * s, 0.25);
  }
  const std::string drawn = out.str();
  EXPECT_EQ(drawn.find('\n'), std::string::npos);
  const size_t redraws = count(drawn, "\r");
  EXPECT_GE(redraws, 19u);
  EXPECT_LE(redraws, 22u);  // 2 s at 10 per second, plus the first and last step
  const std::string last = drawn.substr(drawn.rfind('\r') + 1);
  EXPECT_EQ(last, "epoch 1/2 [####################] 200/200  5000 img/s  loss 0.2500  ETA 0:00");
  EXPECT_TRUE(std::regex_search(drawn, std::regex(R"(\[#{5,15}\.{5,15}\] \d+/200  )"))) << drawn;
  p.finish();
  const std::string erased = out.str().substr(drawn.size());
  EXPECT_EQ(erased, "\r" + std::string(last.size(), ' ') + "\r");
}

TEST(Progress, DurationFormat) {
  EXPECT_EQ(format_duration(0), "0:00");
  EXPECT_EQ(format_duration(65), "1:05");
  EXPECT_EQ(format_duration(3723), "1:02:03");
  EXPECT_EQ(format_duration(-3), "0:00");
}

// ------------------------------------------------------------------------------ metrics files

TEST(MetricsFiles, JsonLinesAndCsvOfTheSameRows) {
  TempDir d;
  const std::string base = (d.path / "m").string();
  {
    MetricsFiles m(base, {"step", "loss", "lr"});
    m.append({1, 0.25, 1e-3});
    m.append({2, NAN, 1e-3});
  }
  EXPECT_EQ(read_file(base + ".jsonl"),
            "{\"step\":1,\"loss\":0.25,\"lr\":0.001}\n{\"step\":2,\"loss\":null,\"lr\":0.001}\n");
  EXPECT_EQ(read_file(base + ".csv"), "step,loss,lr\n1,0.25,0.001\n2,nan,0.001\n");
  const MetricsTable t = read_metrics_csv(base + ".csv");
  EXPECT_EQ(t.columns, (std::vector<std::string>{"step", "loss", "lr"}));
  ASSERT_EQ(t.rows.size(), 2u);
  EXPECT_EQ(t.values("loss")[0], 0.25);
  EXPECT_TRUE(std::isnan(t.values("loss")[1]));
  EXPECT_THROW(t.values("accuracy"), InputError);
  d.file("bad.csv", "a,b\n1,2\n3,x\n");
  try {
    read_metrics_csv((d.path / "bad.csv").string());
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.csv:3: 'x' is not a number"), std::string::npos) << e.what();
  }
}

// ------------------------------------------------------------------------------ figures

TEST(RunDir, DefaultNameAndNoCollisions) {
  std::tm t{};
  t.tm_year = 124, t.tm_mon = 4, t.tm_mday = 1, t.tm_hour = 12, t.tm_min = 3, t.tm_sec = 4;
  t.tm_isdst = -1;
  EXPECT_EQ(default_run_dir("deep convnet/mnist", std::mktime(&t)),
            "runs/deep_convnet_mnist-20240501-120304");
  EXPECT_EQ(default_run_dir("", std::mktime(&t)), "runs/run-20240501-120304");
  TempDir d;
  const fs::path cwd = fs::current_path();
  fs::current_path(d.path);
  const std::string a = create_run_dir("", "x"), b = create_run_dir("", "x");
  fs::current_path(cwd);
  EXPECT_NE(a, b);
  EXPECT_TRUE(fs::is_directory(d.path / a));
  EXPECT_TRUE(fs::is_directory(d.path / b));
}

TEST(RunDir, RefusesAFileAndAnExistingRun) {
  TempDir d;
  const std::string file = d.file("f", "x");
  try {
    create_run_dir(file, "x");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), "run directory " + file + ": exists and is not a directory");
  }
  const std::string run = (d.path / "r").string();
  EXPECT_EQ(create_run_dir(run, "x"), run);
  EXPECT_EQ(create_run_dir(run, "x"), run);  // an empty directory may be reused
  d.file("r/metrics_epochs.csv", "epoch\n");
  try {
    create_run_dir(run, "x");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("already holds a run (metrics_epochs.csv)"), std::string::npos)
        << e.what();
  }
}

// ------------------------------------------------------------------------------ the CLI

// One short training run (300 images, 2 epochs) whose run directory several tests inspect.

}  // namespace
