// The benchmark scripts run: PyTorch's peer (bench/pytorch_deepconvnet.py), the side-by-side
// comparison (bench/train_throughput.sh), the whole-recipe comparison (bench/recipe_wall.sh and
// its PyTorch side, bench/pytorch_recipe.py, on 300 MNIST digits), the detection twin (bench/pytorch_centernet.py, on
// exported scenes, one epoch) and the segmentation twin (bench/pytorch_fcn.py, on
// scenes export-scenes wrote), in a few steps each. Not timings (those live in
// bench/): a check that the commands docs/results.md quotes still work. A change for the GPU had
// broken the CPU peer on Debian's PyTorch 1.13 unnoticed. Skipped where PyTorch is not
// installed (scripts/setup.sh --with-torch installs it).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

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

TEST(BenchScripts, RecipeWallTimesBothWholeRuns) {
  if (!have_torch()) GTEST_SKIP() << "PyTorch not installed (scripts/setup.sh --with-torch)";
  if (!have_mnist()) GTEST_SKIP() << "no MNIST in " << DEEPTRAIN_DATA_DIR << "/mnist";
  CommandResult r = run_command("bash " + kSource + "/bench/recipe_wall.sh --threads 1 --epochs 1 "
                                "--limit 300 --layouts nchw,channels_last --deeptrain " DEEPTRAIN_BINARY);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* row : {"| deeptrain | 1 |", "| pytorch_nchw | 1 |", "| pytorch_channels_last | 1 |",
                          "wall-time ratio, PyTorch's best layout"})
    EXPECT_NE(r.output.find(row), std::string::npos) << row << "\n" << r.output;
  EXPECT_EQ(run_command("bash " + kSource + "/bench/recipe_wall.sh --layouts nhwc --deeptrain " DEEPTRAIN_BINARY
                        " --epochs 1 --limit 100").exit_code, 2);
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

// The twin is the model deeptrain trains, not a look-alike: built from the same config (a
// small FCN with a learned deconv, a bilinear one, crops with offsets and a skip) and given the
// weights deeptrain wrote after an epoch, it finds deeptrain's test loss, pixel accuracy and
// mean IoU on the same scenes. Tolerance: both sum float32 products of at most 11 * 36 = 396
// terms per output (up4) through 6 layers, about 396 * 6e-8 = 2.4e-5 relative in the worst
// case (deeptrain also adds the log's 1e-7 epsilon); 1e-4 leaves room, and a wrong layer,
// offset or weight layout moves the loss by far more. Predicted classes of a pixel could flip only at a
// near-tie, so the accuracy may differ by a few pixels of the ~28000 counted.
TEST(BenchScripts, PytorchFcnTwinComputesDeeptrainsLossFromItsWeights) {
  if (!have_torch()) GTEST_SKIP() << "PyTorch not installed (scripts/setup.sh --with-torch)";
  if (!have_mnist()) GTEST_SKIP() << "no MNIST in " << DEEPTRAIN_DATA_DIR << "/mnist";
  TempDir d;
  const std::string cfg = d.file("seg.prototxt", std::string(R"(name: "seg_twin"
model {
  loss { type: PIXEL_SOFTMAX_CE }
  layer { name: "conv1" conv { out_channels: 8 kernel: 3 pad: 1 } }
  layer { name: "relu1" relu {} }
  layer { name: "pool1" max_pool { kernel: 2 } }
  layer { name: "conv2" conv { out_channels: 16 kernel: 3 pad: 1 } }
  layer { name: "relu2" relu {} }
  layer { name: "pool2" max_pool { kernel: 2 } }
  layer { name: "score_fr" conv { out_channels: 11 kernel: 1 } }
  layer { name: "up2" deconv { out_channels: 11 kernel: 4 stride: 2 pad: 1 init: BILINEAR } }
  layer { name: "score_pool1" input: "pool1" conv { out_channels: 11 kernel: 1 } }
  layer { name: "score_pool1c" input: "score_pool1" input: "up2" crop {} }
  layer { name: "fuse" input: "up2" input: "score_pool1c" add {} }
  layer { name: "up4" deconv { out_channels: 11 kernel: 6 stride: 2 pad: 1 } }
  layer { name: "score" input: "up4" input: "data" crop { offset_h: 1 offset_w: 1 } }
}
data { dataset: "mnist_scenes" dir: ")") + DEEPTRAIN_DATA_DIR + R"(/mnist"
  scenes { canvas: 28 max_digits: 3 min_scale: 0.6 max_scale: 1.0 train_scenes: 120 test_scenes: 40 } }
optimizer { type: ADAM lr: 0.002 }
schedule { epochs: 1 batch_size: 20 }
run { seed: 4 threads: 1 }
)");
  const std::string bin = DEEPTRAIN_BINARY, scenes = (d.path / "scenes").string(),
                    weights = (d.path / "w.bin").string();
  ASSERT_EQ(run_command(bin + " export-scenes " + cfg + " --out " + scenes).exit_code, 0);
  CommandResult t = run_command(bin + " train " + cfg + " --json --save-weights " + weights +
                                " --run-dir " + (d.path / "run").string());
  ASSERT_EQ(t.exit_code, 0) << t.output;
  CommandResult ours = run_command(bin + " eval " + cfg + " --json --weights " + weights);
  ASSERT_EQ(ours.exit_code, 0) << ours.output;
  CommandResult twin = run_command("/usr/bin/python3 " + kSource + "/bench/pytorch_fcn.py --scenes " +
                                   scenes + " --config " + cfg + " --init-weights " + weights +
                                   " --eval-only --threads 1");
  ASSERT_EQ(twin.exit_code, 0) << twin.output;
  const std::string a = ours.last_line(), b = twin.last_line();
  EXPECT_EQ(json_number(a, "test_total"), json_number(b, "test_total")) << a << "\n" << b;
  const double loss = json_number(a, "test_loss");
  EXPECT_GT(loss, 0.5) << a;  // trained for an epoch only: far from 0, so the bound is relative
  EXPECT_NEAR(json_number(b, "test_loss"), loss, 1e-4 * loss) << a << "\n" << b;
  EXPECT_NEAR(json_number(b, "test_pixel_accuracy"), json_number(a, "test_pixel_accuracy"),
              5.0 / json_number(a, "test_total")) << a << "\n" << b;
  EXPECT_NEAR(json_number(b, "test_mean_iou"), json_number(a, "test_mean_iou"), 1e-3) << a << "\n" << b;
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

// The detection twin is the config's network too: given the weights deeptrain wrote after a
// short run of the example, it finds deeptrain's test loss (1e-4 relative: float32 sums of at
// most 64 * 9 = 576 products per output, about 3.5e-5 in the worst case; a wrong layer or
// weight layout moves it far more) and its mAPs (the same decoded boxes unless two scores tie
// within that error: 1e-3).
TEST(BenchScripts, PytorchCenterNetTwinComputesDeeptrainsLossAndMapFromItsWeights) {
  if (!have_torch()) GTEST_SKIP() << "PyTorch not installed (scripts/setup.sh --with-torch)";
  if (run_command("/usr/bin/python3 -c 'import torchvision'").exit_code != 0)
    GTEST_SKIP() << "torchvision not installed (scripts/setup.sh --with-torch)";
  if (!have_mnist()) GTEST_SKIP() << "no MNIST in " << DEEPTRAIN_DATA_DIR << "/mnist";
  TempDir d;
  const std::string bin = DEEPTRAIN_BINARY, cfg = kSource + "/examples/centernet_mnist_scenes.prototxt",
                    data = std::string(" --data-dir ") + DEEPTRAIN_DATA_DIR + "/mnist",
                    scenes = (d.path / "scenes").string(), weights = (d.path / "w.bin").string();
  ASSERT_EQ(run_command(bin + " export-scenes " + cfg + data + " --split test --limit 40 --out " + scenes).exit_code, 0);
  CommandResult t = run_command(bin + " train " + cfg + data + " --threads 1 --epochs 1 --train-limit 400 "
                                "--test-limit 40 --save-weights " + weights + " --run-dir " + (d.path / "run").string());
  ASSERT_EQ(t.exit_code, 0) << t.output;
  CommandResult ours = run_command(bin + " eval " + cfg + data + " --threads 1 --test-limit 40 --json --weights " + weights);
  ASSERT_EQ(ours.exit_code, 0) << ours.output;
  CommandResult twin = run_command("/usr/bin/python3 " + kSource + "/bench/pytorch_centernet.py --scenes " +
                                   scenes + " --init-weights " + weights + " --eval-only --threads 1");
  ASSERT_EQ(twin.exit_code, 0) << twin.output;
  const std::string a = ours.last_line(), b = twin.last_line();
  const double loss = json_number(a, "test_loss");
  EXPECT_GT(loss, 0.1) << a;
  EXPECT_NEAR(json_number(b, "test_loss"), loss, 1e-4 * loss) << a << "\n" << b;
  EXPECT_NEAR(json_number(b, "test_map50"), json_number(a, "test_map50"), 1e-3) << a << "\n" << b;
  EXPECT_NEAR(json_number(b, "test_map"), json_number(a, "test_map"), 1e-3) << a << "\n" << b;
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

// PyTorch's twins on a GPU machine without protoc read deeptrain's schema from the descriptor set
// that scripts/gpu_bundle.sh packs: the same networks, batch and optimizer as through protoc.
TEST(BenchScripts, PytorchTwinReadsTheSchemaFromADescriptorSet) {
  if (!have_torch()) GTEST_SKIP() << "PyTorch not installed (scripts/setup.sh --with-torch)";
  TempDir d;
  const std::string desc = (d.path / "deeptrain.desc").string();
  ASSERT_EQ(run_command("protoc -I " + kSource + "/proto --descriptor_set_out=" + desc + " " +
                        kSource + "/proto/deeptrain.proto").exit_code, 0);
  const std::string script = (d.path / "compare.py").string();
  std::ofstream(script) << "import os, sys\n"
                           "sys.path.insert(0, sys.argv[1])\n"
                           "import pytorch_from_config as p\n"
                           "for cfg in sys.argv[3:]:\n"
                           "    os.environ.pop('DEEPTRAIN_SCHEMA_DESCRIPTOR', None)\n"
                           "    a = p.build(cfg)\n"
                           "    os.environ['DEEPTRAIN_SCHEMA_DESCRIPTOR'] = sys.argv[2]\n"
                           "    b = p.build(cfg)\n"
                           "    same = (str(a.model) == str(b.model) and a.batch == b.batch and\n"
                           "            str(a.optimizer) == str(b.optimizer) and str(a.config) == str(b.config))\n"
                           "    print(os.path.basename(cfg), 'same' if same else 'DIFFERENT',\n"
                           "          sum(x.numel() for x in b.model.parameters()))\n";
  CommandResult r = run_command("/usr/bin/python3 " + script + " " + kSource + "/bench " + desc + " " +
                                kSource + "/examples/resnet20_fashion_mnist.prototxt " + kSource +
                                "/examples/googlenet_mnist.prototxt " + kSource +
                                "/examples/fcn_mnist_scenes.prototxt");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // ResNet-20's 0.27 M parameters (the config's comment), each network the same both ways.
  EXPECT_NE(r.output.find("resnet20_fashion_mnist.prototxt same 272186"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("googlenet_mnist.prototxt same"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("fcn_mnist_scenes.prototxt same"), std::string::npos) << r.output;
}

// bench/gpu_check.sh on the CPU (--dry-run): every phase's commands run and every line of its
// summary is filled, so the short windows of GPU time are not spent on a broken script. The
// budget skips what no longer fits and names the phases to run next.
TEST(BenchScripts, GpuCheckDryRunFillsEveryPhaseOnTheCpu) {
  if (!have_torch()) GTEST_SKIP() << "PyTorch not installed (scripts/setup.sh --with-torch)";
  if (!have_mnist()) GTEST_SKIP() << "no MNIST in " << DEEPTRAIN_DATA_DIR << "/mnist";
  const std::filesystem::path build = std::filesystem::path(DEEPTRAIN_BINARY).parent_path();
  // Without the CUDA toolkit the GPU test binaries are not built: the other phases still run.
  const bool gpu_tests = std::filesystem::exists(build / "tests" / "test_backend_ops_gpu");
  const bool fashion = std::filesystem::exists(std::string(DEEPTRAIN_DATA_DIR) + "/fashion_mnist");
  TempDir d;
  const std::string env = "GPU_CHECK_DIR=" + (d.path / "check").string() +
                          " DATA_DIR=" DEEPTRAIN_DATA_DIR " PYTHON=/usr/bin/python3 ";
  const std::string phases = std::string(gpu_tests ? "tests " : "") +
                             "table recipes profile algos nets resnet resnet_torch ranks";
  CommandResult r = run_command(env + "PHASES='" + phases + "' bash " + kSource +
                                "/bench/gpu_check.sh --dry-run --build " + build.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::vector<std::string> lines = {"DRY RUN on the CPU", "| train | 32 | fp16 |", "| infer | 16 | bf16 |",
                                    "book-recipe fp32: test accuracy", "fast-recipe tf32: test accuracy",
                                    "median step", "train 32 tf32: ", "| resnet20_fashion_mnist | 128 | bf16 |",
                                    "| googlenet_mnist | 100 | fp32 |", "status: all passed"};
  if (gpu_tests) lines.push_back("PASS parity");
  if (run_command("command -v mpirun").exit_code == 0 &&
      run_command("ldd " DEEPTRAIN_BINARY " | grep -q libmpi").exit_code == 0)
    for (const char* l : {"2 ranks on one GPU through host-mpi, batch 32 (global) fp32: ",
                          "2 ranks, fast recipe through host-mpi: test accuracy"})
      lines.push_back(l);
  if (fashion)
    for (const char* l : {"resnet20 recipe (30 epochs", "resnet20 recipe in PyTorch fp32: test accuracy 0."})
      lines.push_back(l);
  for (const std::string& line : lines) EXPECT_NE(r.output.find(line), std::string::npos) << line << "\n" << r.output;
  // Every table row has both sides and a ratio.
  EXPECT_EQ(r.output.find("| failed |"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("| - |"), std::string::npos) << r.output;

  // A check's directory is not reused (its runs would collide with the old ones).
  r = run_command(env + "PHASES=table bash " + kSource + "/bench/gpu_check.sh --dry-run --build " +
                  build.string());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("already holds a check"), std::string::npos) << r.output;

  const std::string env2 = "GPU_CHECK_DIR=" + (d.path / "check2").string() + " PYTHON=/usr/bin/python3 ";
  r = run_command(env2 + "BUDGET_S=1 PHASES='table nets' bash " + kSource +
                  "/bench/gpu_check.sh --dry-run --build " + build.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("SKIPPED phase table"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("next: PHASES=\"table nets\""), std::string::npos) << r.output;
  r = run_command("PHASES='table gpu' bash " + kSource + "/bench/gpu_check.sh --dry-run --build " +
                  build.string());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("PHASES: no phase 'gpu'"), std::string::npos) << r.output;
}
