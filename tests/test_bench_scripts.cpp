// The benchmark scripts run: PyTorch's peer (bench/pytorch_deepconvnet.py), the side-by-side
// comparison (bench/train_throughput.sh), the detection twin (bench/pytorch_centernet.py, on
// exported scenes, one epoch) and the segmentation twin (bench/pytorch_fcn.py, on
// scenes export-scenes wrote), in a few steps each. Not timings (those live in
// bench/): a check that the commands docs/results.md quotes still work. A change for the GPU had
// broken the CPU peer on Debian's PyTorch 1.13 unnoticed. Skipped where PyTorch is not
// installed (scripts/setup.sh --with-torch installs it).
#include <gtest/gtest.h>

#include "cli_util.h"

namespace {

const std::string kSource = DEEPTRAIN_SOURCE_DIR;

bool have_torch() {
  return run_command("/usr/bin/python3 -c 'import torch, numpy'").exit_code == 0;
}

TEST(BenchScripts, PytorchPeerTrainsInfersAndProfilesOnTheCpu) {
  if (!have_torch()) GTEST_SKIP() << "PyTorch not installed (scripts/setup.sh --with-torch)";
  TempDir d;
  for (const char* mode : {"train", "infer"}) {
    const std::string prof = (d.path / (std::string(mode) + ".txt")).string();
    CommandResult r = run_command("/usr/bin/python3 " + kSource +
                                  "/bench/pytorch_deepconvnet.py --threads 1 --steps 2 --warmup 1 "
                                  "--batch 16 --mode " + mode + " --profile " + prof);
    ASSERT_EQ(r.exit_code, 0) << mode << "\n" << r.output;
    EXPECT_GT(json_number(r.last_line(), "images_per_sec"), 0) << r.last_line();
    EXPECT_NE(r.last_line().find(std::string("\"mode\": \"") + mode + "\""), std::string::npos)
        << r.last_line();
    std::ifstream in(prof);
    const std::string table((std::istreambuf_iterator<char>(in)), {});
    EXPECT_NE(table.find("conv"), std::string::npos) << table;  // the convolutions' ops
  }
}

TEST(BenchScripts, ThroughputComparisonPrintsBothSides) {
  if (!have_torch()) GTEST_SKIP() << "PyTorch not installed (scripts/setup.sh --with-torch)";
  CommandResult r = run_command("bash " + kSource + "/bench/train_throughput.sh --threads 1 "
                                "--rounds 1 --steps 2 --warmup 1 --deeptrain " DEEPTRAIN_BINARY);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* row : {"train img/s (median)", "infer img/s (median)"})
    EXPECT_NE(r.output.find(row), std::string::npos) << row << "\n" << r.output;
}

// bench/cpu_table.py: every example network built in PyTorch from its config has deeptrain's
// parameter count (the script exits 1 otherwise), and a row per network comes out.
TEST(BenchScripts, CpuTableBuildsEveryExampleNetworkInPytorch) {
  if (!have_torch()) GTEST_SKIP() << "PyTorch not installed (scripts/setup.sh --with-torch)";
  CommandResult r = run_command("/usr/bin/python3 " + kSource + "/bench/cpu_table.py --threads 1 "
                                "--rounds 1 --steps 1 --warmup 1 --modes train --maths fp32 "
                                "--deeptrain " DEEPTRAIN_BINARY);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* row : {"| deep_convnet_mnist | train | fp32 |", "| vgg_mnist | train | fp32 |",
                          "| googlenet_mnist | train | fp32 |",
                          "| resnet20_fashion_mnist | train | fp32 |"})
    EXPECT_NE(r.output.find(row), std::string::npos) << row << "\n" << r.output;
}

// bench/peak_flops (built beside deeptrain): one JSON line with positive peaks.
TEST(BenchScripts, PeakFlopsReportsThePeaks) {
  const std::string bin = std::filesystem::path(DEEPTRAIN_BINARY).parent_path() / "peak_flops";
  if (!std::filesystem::exists(bin)) GTEST_SKIP() << "built without oneDNN: no peak_flops";
  CommandResult r = run_command(bin + " --threads 1 --rounds 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_GT(json_number(r.last_line(), "fma_f32_gflops"), 0) << r.output;
  EXPECT_GT(json_number(r.last_line(), "matmul_f32_gflops"), 0) << r.output;
  EXPECT_EQ(run_command(bin + " --threads 0").exit_code, 2);
}

TEST(BenchScripts, PytorchFcnTwinTrainsOnExportedScenes) {
  if (!have_torch()) GTEST_SKIP() << "PyTorch not installed (scripts/setup.sh --with-torch)";
  if (!have_mnist()) GTEST_SKIP() << "no MNIST in " << DEEPTRAIN_DATA_DIR << "/mnist";
  TempDir d;
  const std::string scenes = (d.path / "scenes").string();
  CommandResult e = run_command(std::string(DEEPTRAIN_BINARY) + " export-scenes " + kSource +
                                "/examples/fcn_mnist_scenes.prototxt --limit 12 --data-dir " +
                                std::string(DEEPTRAIN_DATA_DIR) + "/mnist --out " + scenes +
                                " 2>&1");
  ASSERT_EQ(e.exit_code, 0) << e.output;
  CommandResult r = run_command("/usr/bin/python3 " + kSource + "/bench/pytorch_fcn.py --scenes " +
                                scenes + " --epochs 1 --batch 6 --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_GT(json_number(r.last_line(), "train_loss"), 0) << r.last_line();
  EXPECT_GE(json_number(r.last_line(), "test_mean_iou"), 0) << r.last_line();
}

TEST(BenchScripts, PytorchCenterNetTwinTrainsOnExportedScenes) {
  if (!have_torch()) GTEST_SKIP() << "PyTorch not installed (scripts/setup.sh --with-torch)";
  if (run_command("/usr/bin/python3 -c 'import torchvision'").exit_code != 0)
    GTEST_SKIP() << "torchvision not installed (scripts/setup.sh --with-torch)";
  if (!have_mnist()) GTEST_SKIP() << "no MNIST in " << DEEPTRAIN_DATA_DIR << "/mnist";
  TempDir d;
  const std::string scenes = (d.path / "scenes").string();
  CommandResult e = run_command(std::string(DEEPTRAIN_BINARY) + " export-scenes " + kSource +
                                "/examples/centernet_mnist_scenes.prototxt --limit 12 --data-dir " +
                                std::string(DEEPTRAIN_DATA_DIR) + "/mnist --out " + scenes +
                                " 2>&1");
  ASSERT_EQ(e.exit_code, 0) << e.output;
  CommandResult r = run_command("/usr/bin/python3 " + kSource + "/bench/pytorch_centernet.py --scenes " +
                                scenes + " --epochs 1 --batch 6 --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_GT(json_number(r.last_line(), "train_loss"), 0) << r.last_line();
  EXPECT_GE(json_number(r.last_line(), "test_map50"), 0) << r.last_line();
  EXPECT_GE(json_number(r.last_line(), "test_map"), 0) << r.last_line();
}

}  // namespace

// The data pipeline's benchmarks (bench/README.md), each on a few images: the table lines they
// print are there with a ratio, the memory run states its bound.
TEST(BenchScripts, DataPipelineBenchmarksRunOnAFewImages) {
  if (run_command("/usr/bin/python3 -c 'import torchvision, numpy'").exit_code != 0)
    GTEST_SKIP() << "torchvision not installed (scripts/setup.sh --with-torch)";
  if (!have_mnist()) GTEST_SKIP() << "MNIST not fetched";
  TempDir d;
  CommandResult r = run_command("bash " + kSource + "/bench/data_throughput.sh --images 64 --batch 16 "
                                "--steps 1 --warmup 1 --sizes 64 --work " + (d.path / "dt").string() +
                                " --deeptrain " DEEPTRAIN_BINARY);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("png    64           1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("jpeg   64           1"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("inf"), std::string::npos) << r.output;  // both sides measured
  r = run_command("bash " + kSource + "/bench/shards_vs_idx.sh --rounds 1 --images 100 --models "
                  "deep_convnet --work " + (d.path / "si").string() + " --deeptrain " DEEPTRAIN_BINARY);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("deep_convnet"), std::string::npos) << r.output;
  r = run_command("bash " + kSource + "/bench/shards_memory.sh --samples 20 --work " +
                  (d.path / "mem").string() + " --deeptrain " DEEPTRAIN_BINARY);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("within the bound"), std::string::npos) << r.output;
}
