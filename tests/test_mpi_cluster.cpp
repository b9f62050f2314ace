// Ranks on different "hosts": 3 network namespaces joined by a bridge (tests/cluster/
// netns_cluster.sh), mpirun launching into them over TCP through a launch agent. Root only
// (skipped otherwise), and needs MNIST and mpirun.
//  - a short DeepConvNet training on 3 hosts (global batch 90 = 30 per host, 3 steps, dropout
//    on, Adam) gives the single-process parameters within 2e-6 and the same loss;
//  - a link cut mid-training (the bridge port of host 2 set down) ends the job with a non-zero
//    status, the watchdog of the other hosts naming rank 1 on host 2.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "cli_util.h"
#include "core/io/weights.h"
#include "core/net.h"
#include "mpi/launch_util.h"

using mpitest::Job;

namespace {

const std::string kScript = DEEPTRAIN_NETNS_SCRIPT;

class MpiCluster : public testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "network namespaces need root";
    if (!have_mnist()) GTEST_SKIP() << "no MNIST in " << DEEPTRAIN_DATA_DIR << "/mnist";
    if (std::string(DEEPTRAIN_MPIEXEC).empty()) GTEST_SKIP() << "no MPI";
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
    // Environment MCA settings meant for single-host tests would clash with the harness's
    // command line (a parameter given twice is fatal) or do not apply.
    unsetenv("OMPI_MCA_rmaps_base_oversubscribe");
    const int id = int(getpid() % 100000);
    prefix_ = "dt" + std::to_string(id);
    subnet_ = "10.213." + std::to_string(20 + id % 200);
    const CommandResult up = run_command(kScript + " up " + prefix_ + " 3 " + subnet_);
    if (up.exit_code == 3) GTEST_SKIP() << "no network namespaces here: " << up.output;
    ASSERT_EQ(up.exit_code, 0) << up.output;
    is_up_ = true;
  }
  void TearDown() override {
    if (is_up_) run_command(kScript + " down " + prefix_);
  }
  std::vector<std::string> mpirun(const std::vector<std::string>& args) {
    std::vector<std::string> v{kScript, "mpirun", prefix_, "3", subnet_, "--"};
    v.insert(v.end(), args.begin(), args.end());
    return v;
  }
  std::string data_line() const {
    return "data { dataset: \"mnist\" dir: \"" + std::string(DEEPTRAIN_DATA_DIR) + "/mnist\" ";
  }
  TempDir dir_;
  std::string prefix_, subnet_;
  bool is_up_ = false;
};

// The "epoch" JSON line of a --json training output.
std::string epoch_line(const std::string& out) {
  const size_t at = out.find("{\"event\":\"epoch\"");
  return at == std::string::npos ? "" : out.substr(at, out.find('\n', at) - at);
}

}  // namespace

TEST_F(MpiCluster, DeepConvNetOnThreeHostsMatchesOneProcess) {
  const std::string cfg = dir_.file("c.prototxt",
                                    "model { preset: \"deep_convnet\" }\n" + data_line() +
                                        "train_limit: 270 test_limit: 100 }\n"
                                        "optimizer { type: ADAM lr: 0.001 }\n"
                                        "schedule { epochs: 1 batch_size: 90 }\n"
                                        // The reference backend: rank count changes only the
                                        // summation order there (the fast path also picks
                                        // other kernels for other batch shapes).
                                        "run { seed: 3 threads: 1 backend: BACKEND_CPU_REF }\n");
  const std::string w3 = (dir_.path / "three.weights").string(), w1 = (dir_.path / "one.weights").string();
  Job job(mpirun({DEEPTRAIN_BINARY, "train", cfg, "--json", "--run-dir",
                  (dir_.path / "r3").string(), "--save-weights", w3}),
          (dir_.path / "three.log").string(), "");
  const auto status = job.wait_exit(300);
  const std::string out3 = job.output();
  ASSERT_TRUE(status.has_value()) << out3;
  ASSERT_EQ(*status, 0) << out3;
  const CommandResult one = run_command(deeptrain_cmd("train " + cfg + " --json --run-dir " +
                                                      (dir_.path / "r1").string() +
                                                      " --save-weights " + w1));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  const std::string e3 = epoch_line(out3), e1 = epoch_line(one.output);
  ASSERT_FALSE(e3.empty()) << out3;
  EXPECT_NEAR(json_number(e3, "train_loss"), json_number(e1, "train_loss"), 1e-5) << e3 << "\n" << e1;
  EXPECT_EQ(json_number(e3, "test_correct"), json_number(e1, "test_correct"));

  deeptrain::proto::ModelConfig m;
  m.set_preset("deep_convnet");
  deeptrain::Net a(m, deeptrain::Shape{1, 28, 28}, 10, deeptrain::DType::f32);
  deeptrain::Net b(m, deeptrain::Shape{1, 28, 28}, 10, deeptrain::DType::f32);
  deeptrain::io::load_weights(w3, a);
  deeptrain::io::load_weights(w1, b);
  double worst = 0;
  for (int64_t i = 0; i < a.num_params(); ++i)
    worst = std::max(worst, std::fabs(double(a.params().data<float>()[i]) - b.params().data<float>()[i]));
  std::printf("[figures] 3 namespace hosts vs 1 process, DeepConvNet 3 steps: max |param diff| "
              "%.3g\n", worst);
  EXPECT_LE(worst, 2e-6);
}

TEST_F(MpiCluster, CutLinkEndsTheJobNamingTheUnreachableRank) {
  const std::string cfg = dir_.file("cut.prototxt",
                                    "model { preset: \"simple_convnet\" }\n" + data_line() +
                                        "train_limit: 300 test_limit: 100 }\n"
                                        "schedule { epochs: 100000 batch_size: 60 }\n"
                                        "run { seed: 1 threads: 1 }\n"
                                        "distributed { collective_timeout_s: 2 step_timeout_s: 4 }\n");
  Job job(mpirun({DEEPTRAIN_BINARY, "train", cfg, "--json", "--run-dir", (dir_.path / "r").string()}),
          (dir_.path / "cut.log").string(), "");
  ASSERT_TRUE(job.wait_output("\"event\":\"epoch\"", 120)) << job.output();
  const double t0 = mpitest::now_s();
  const CommandResult cut = run_command("ip netns exec " + prefix_ + "-br ip link set " + prefix_ + "b2 down");
  ASSERT_EQ(cut.exit_code, 0) << cut.output;
  const auto status = job.wait_exit(90);
  const std::string out = job.output();
  ASSERT_TRUE(status.has_value()) << "the job hung after the link was cut\n" << out;
  EXPECT_NE(*status, 0) << out;
  std::printf("[figures] job ended %.1f s after the link to host 2 was cut (collective timeout "
              "2 s), status %d\n", job.ended_at() - t0, *status);
  EXPECT_NE(out.find("exceeded 2s (waiting for rank 1 on " + prefix_ + "-h2"), std::string::npos) << out;
}
