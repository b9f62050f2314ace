// launch/deeptrain-launch and launch/slurm/deeptrain.sbatch, run as real processes:
//  - the exact mpirun (or srun) command printed by --dry-run for several layouts: one host with
//    N ranks, hosts x ranks, a hostfile, GPUs, inside a SLURM allocation (mpirun and srun), as
//    root and as an ordinary user, the environment passed to the ranks, oversubscription;
//  - the error for each kind of bad input (exit status 2, naming the option, file:line or host);
//  - a real 2-rank training on this host through the launcher, and (root) on 3 network-namespace
//    hosts (tests/cluster/netns_cluster.sh);
//  - the SLURM batch script's requeue: USR1 stops the step with TERM and requeues the job, with
//    fake srun and scontrol standing in for SLURM (there is no SLURM here);
//  - the Dockerfiles pass dockerfilelint and the scripts shellcheck, where those are installed.
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "cli_util.h"
#include "mpi/launch_util.h"

namespace {

const std::string kSource = DEEPTRAIN_SOURCE_DIR;
const std::string kLaunch = kSource + "/launch/deeptrain-launch";
const std::string kSbatch = kSource + "/launch/slurm/deeptrain.sbatch";
const std::string kBin = DEEPTRAIN_BINARY;
const bool kRoot = geteuid() == 0;

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string mpirun_path() {
  static const std::string p = trim(run_command("command -v mpirun").output);
  return p;
}

// The cores this process may run on: what the launcher's nproc counts.
int affinity_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return CPU_COUNT(&set);
}

// The launcher in a clean environment (nothing from ctest, SLURM or the shell leaks in) plus
// `env` ("NAME=VALUE ..."); `path_prefix` goes before the standard PATH (fake tools).
CommandResult launch(const std::string& args, const std::string& env = "",
                     const std::string& path_prefix = "", const std::string& as_user = "") {
  const std::string path = path_prefix + (path_prefix.empty() ? "" : ":") +
                           "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  return run_command(as_user + "env -i HOME=/tmp PATH=" + path + " " + env + " " + kLaunch + " " +
                     args);
}

// The expected start of an mpirun command: --allow-run-as-root exactly when run as root.
std::string mpirun_prefix(bool root) {
  return mpirun_path() + (root ? " --allow-run-as-root" : "");
}

void make_executable(const std::string& path) {
  chmod(path.c_str(), 0755);
}

class Launch : public testing::Test {
 protected:
  void SetUp() override {
    if (mpirun_path().empty()) GTEST_SKIP() << "no mpirun";
    cfg_ = dir_.file("c.prototxt", "model { preset: \"simple_convnet\" }\n");
  }
  TempDir dir_;
  std::string cfg_;
};

}  // namespace

// ---- dry runs: the exact command ----

TEST_F(Launch, OneHostTwoRanksOneThreadEach) {
  const auto r = launch("--dry-run --binary " + kBin + " --ranks-per-node 2 --threads-per-rank 1 -- train " +
                        cfg_ + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(trim(r.output), mpirun_prefix(kRoot) +
                                " -np 2 --map-by ppr:2:node:PE=1 --bind-to core -x OMP_NUM_THREADS=1 " +
                                kBin + " train " + cfg_ + " --json --threads 1");
}

TEST_F(Launch, OneHostDefaultThreadsAreTheRanksShareOfTheCores) {
  const int cores = affinity_cores();
  const int threads = std::max(1, cores / 2);
  const auto r = launch("--dry-run --binary " + kBin + " --ranks-per-node 2 --oversubscribe train " + cfg_);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Oversubscribed: no binding, yielding ranks.
  EXPECT_EQ(trim(r.output), mpirun_prefix(kRoot) + " -np 2 --map-by ppr:2:node --bind-to none --oversubscribe "
                                "--mca mpi_yield_when_idle 1 -x OMP_NUM_THREADS=" +
                                std::to_string(threads) + " " + kBin + " train " + cfg_ +
                                " --threads " + std::to_string(threads));
  if (cores >= 2) {
    const auto b = launch("--dry-run --binary " + kBin + " --ranks-per-node 2 train " + cfg_);
    ASSERT_EQ(b.exit_code, 0) << b.output;
    EXPECT_NE(b.output.find("--map-by ppr:2:node:PE=" + std::to_string(cores / 2) + " --bind-to core"),
              std::string::npos)
        << b.output;
  }
}

TEST_F(Launch, ThreeHostsTimesTwoRanksOnOneNetwork) {
  const auto r = launch("--dry-run --binary " + kBin +
                        " --hosts node1,node2,node3 --ranks-per-node 2 --threads-per-rank 8 "
                        "--net 10.1.0.0/16 --mca btl_tcp_links 2 train " + cfg_);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(trim(r.output), mpirun_prefix(kRoot) +
                                " -np 6 --host node1:2,node2:2,node3:2 --map-by ppr:2:node:PE=8 "
                                "--bind-to core --mca btl_tcp_links 2 --mca btl tcp,self "
                                "--mca btl_tcp_if_include 10.1.0.0/16 --mca oob_tcp_if_include "
                                "10.1.0.0/16 -x OMP_NUM_THREADS=8 " +
                                kBin + " train " + cfg_ + " --threads 8");
}

TEST_F(Launch, HostsWithoutThreadCountLeaveThreadsToEachRank) {
  // Other hosts' cores are unknown: no binding, and deeptrain takes its share of each host.
  const auto r = launch("--dry-run --binary " + kBin + " --hosts a,b:4 --ranks-per-node 3 train " + cfg_);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(trim(r.output), mpirun_prefix(kRoot) + " -np 6 --host a:3,b:4 --map-by ppr:3:node --bind-to none " +
                                kBin + " train " + cfg_);
}

TEST_F(Launch, HostfileWithOneRankPerGpu) {
  const std::string hf = dir_.file("hosts", "# the GPU nodes\ngpu1 slots=4\n\ngpu2 slots=8 max_slots=8  # big\n");
  const auto r = launch("--dry-run --binary " + kBin + " --hostfile " + hf +
                        " --gpus-per-node 4 --threads-per-rank 6 train " + cfg_);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(trim(r.output), mpirun_prefix(kRoot) + " -np 8 --hostfile " + hf +
                                " --map-by ppr:4:node:PE=6 --bind-to core -x OMP_NUM_THREADS=6 "
                                "-x CUDA_DEVICE_ORDER=PCI_BUS_ID " +
                                kBin + " train " + cfg_ + " --threads 6");
}

TEST_F(Launch, InsideASlurmAllocationWithMpirun) {
  const std::string slurm =
      "SLURM_JOB_ID=77 SLURM_JOB_NUM_NODES=2 SLURM_NTASKS_PER_NODE=4 SLURM_CPUS_PER_TASK=2 "
      "SLURM_CPUS_ON_NODE=8 SLURM_GPUS_ON_NODE=4";
  const auto r = launch("--dry-run --binary " + kBin + " --gpus-per-node 4 train " + cfg_, slurm);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // mpirun takes the nodes from the allocation: no --host.
  EXPECT_EQ(trim(r.output), mpirun_prefix(kRoot) +
                                " -np 8 --map-by ppr:4:node:PE=2 --bind-to core -x OMP_NUM_THREADS=2 "
                                "-x CUDA_DEVICE_ORDER=PCI_BUS_ID " +
                                kBin + " train " + cfg_ + " --threads 2");
  // The allocation has 4 GPUs per node: 8 are refused.
  const auto g = launch("--dry-run --binary " + kBin + " --gpus-per-node 8 --oversubscribe train " + cfg_, slurm);
  EXPECT_EQ(g.exit_code, 2) << g.output;
  EXPECT_NE(g.output.find("--gpus-per-node 8: this host has only 4 GPU(s) (SLURM_GPUS_ON_NODE=4)"),
            std::string::npos)
      << g.output;
}

TEST_F(Launch, InsideASlurmAllocationWithSrun) {
  const std::string fake = (dir_.path / "slurm").string();
  std::filesystem::create_directories(fake);
  make_executable(dir_.file("slurm/srun", "#!/bin/sh\nexit 0\n"));
  const std::string slurm = "SLURM_JOB_ID=78 SLURM_NNODES=3 'SLURM_NTASKS_PER_NODE=2(x3)' SLURM_CPUS_PER_TASK=4";
  const auto r = launch("--dry-run --launcher srun --binary " + kBin + " -- train " + cfg_, slurm, fake);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(trim(r.output), "srun --mpi=pmix --nodes=3 --ntasks-per-node=2 --cpus-per-task=4 "
                            "--cpu-bind=cores --export=ALL,OMP_NUM_THREADS=4 " +
                                kBin + " train " + cfg_ + " --threads 4");
}

TEST_F(Launch, AllowRunAsRootOnlyForRoot) {
  const std::string args = "--dry-run --binary " + kBin + " --ranks-per-node 1 --threads-per-rank 1 train " + cfg_;
  const std::string expected_tail = " -np 1 --map-by ppr:1:node:PE=1 --bind-to core -x OMP_NUM_THREADS=1 " +
                                    kBin + " train " + cfg_ + " --threads 1";
  const auto me = launch(args);
  ASSERT_EQ(me.exit_code, 0) << me.output;
  EXPECT_EQ(trim(me.output), mpirun_prefix(kRoot) + expected_tail);
  if (!kRoot) return;
  // The same as an ordinary user (nobody): no --allow-run-as-root.
  if (run_command("command -v setpriv").exit_code != 0) GTEST_SKIP() << "no setpriv";
  chmod(dir_.path.c_str(), 0755);
  chmod(cfg_.c_str(), 0644);
  const auto nobody = launch(args, "", "", "setpriv --reuid=65534 --regid=65534 --clear-groups ");
  ASSERT_EQ(nobody.exit_code, 0) << nobody.output;
  EXPECT_EQ(trim(nobody.output), mpirun_prefix(false) + expected_tail);
}

TEST_F(Launch, PassesNcclThreadAndUserVariablesToEveryRank) {
  const auto r = launch("--dry-run --binary " + kBin + " --ranks-per-node 1 --threads-per-rank 1 "
                        "--env MY_FLAG=on --env 'GREETING=hello world' --env HOME train " + cfg_,
                        "NCCL_DEBUG=INFO NCCL_IB_DISABLE=1 OPENBLAS_CORETYPE=Haswell UNRELATED=1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(trim(r.output), mpirun_prefix(kRoot) +
                                " -np 1 --map-by ppr:1:node:PE=1 --bind-to core -x OMP_NUM_THREADS=1 "
                                "-x NCCL_DEBUG -x NCCL_IB_DISABLE -x OPENBLAS_CORETYPE -x MY_FLAG=on "
                                "-x 'GREETING=hello world' -x HOME " +
                                kBin + " train " + cfg_ + " --threads 1");
}

TEST_F(Launch, ExplicitThreadsArgumentIsKept) {
  const auto r = launch("--dry-run --binary " + kBin + " --ranks-per-node 1 --threads-per-rank 1 train " + cfg_ +
                        " --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(trim(r.output).find("--threads 1 --threads"), std::string::npos) << r.output;
  EXPECT_EQ(trim(r.output).substr(trim(r.output).size() - 11), "--threads 1") << r.output;
}

TEST_F(Launch, ConfigIsFoundAfterOptionsAndTheirValues) {
  const std::string b = "--dry-run --binary " + kBin + " --threads-per-rank 1 -- ";
  const auto ok = launch(b + "train --epochs 1 --json --run-dir /tmp/r " + cfg_);
  ASSERT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find(" train --epochs 1 --json --run-dir /tmp/r " + cfg_ + " --threads 1"), std::string::npos)
      << ok.output;
  // "1" and "/tmp/r" are option values, not the config.
  const auto none = launch(b + "train --epochs 1 --run-dir /tmp/r --json");
  EXPECT_EQ(none.exit_code, 2) << none.output;
  EXPECT_NE(none.output.find("deeptrain-launch: error: train needs a config file"), std::string::npos) << none.output;
  const auto missing = launch(b + "eval --weights=w.bin " + cfg_ + ".missing");
  EXPECT_EQ(missing.exit_code, 2) << missing.output;
  EXPECT_NE(missing.output.find("deeptrain-launch: error: config " + cfg_ + ".missing: no such file"),
            std::string::npos)
      << missing.output;
}

TEST_F(Launch, GpusCountedWithNvidiaSmiAndCudaVisibleDevices) {
  const std::string fake = (dir_.path / "bin").string();
  std::filesystem::create_directories(fake);
  make_executable(dir_.file("bin/nvidia-smi",
                            "#!/bin/sh\n[ \"$1\" = -L ] || exit 1\n"
                            "echo 'GPU 0: NVIDIA H100 (UUID: GPU-0)'\necho 'GPU 1: NVIDIA H100 (UUID: GPU-1)'\n"));
  const std::string base = "--dry-run --binary " + kBin + " --threads-per-rank 1 --oversubscribe ";
  const auto two = launch(base + "--gpus-per-node 2 train " + cfg_, "", fake);
  EXPECT_EQ(two.exit_code, 0) << two.output;
  const auto three = launch(base + "--gpus-per-node 3 train " + cfg_, "", fake);
  EXPECT_EQ(three.exit_code, 2) << three.output;
  EXPECT_NE(three.output.find("--gpus-per-node 3: this host has only 2 GPU(s) (nvidia-smi -L lists 2)"),
            std::string::npos)
      << three.output;
  const auto cvd = launch(base + "--gpus-per-node 2 train " + cfg_, "CUDA_VISIBLE_DEVICES=3", fake);
  EXPECT_EQ(cvd.exit_code, 2) << cvd.output;
  EXPECT_NE(cvd.output.find("this host has only 1 GPU(s) (CUDA_VISIBLE_DEVICES=3)"), std::string::npos)
      << cvd.output;
}

// ---- bad input: exit status 2 and a message naming what is wrong ----

TEST_F(Launch, BadInputIsRefusedWithAMessage) {
  const std::string hf_bad = dir_.file("bad_hosts", "n1 slots=2\nn2 slots=two\n");
  const std::string hf_dup = dir_.file("dup_hosts", "n1\nn2\n# again:\nn1 slots=4\n");
  const std::string hf_small = dir_.file("small_hosts", "n1 slots=4\nn2 slots=1\n");
  const std::string hf_field = dir_.file("field_hosts", "n1 cpus=4\n");
  const std::string hf_empty = dir_.file("empty_hosts", "# nothing\n\n");
  const std::string b = "--dry-run --binary " + kBin + " ";
  struct Case {
    std::string args, env, message;
  };
  const std::vector<Case> cases = {
      {"--dry-run --binary " + (dir_.path / "nope").string() + " train " + cfg_, "",
       "deeptrain binary " + (dir_.path / "nope").string() + ": no such file"},
      {"--dry-run --binary " + cfg_ + " train " + cfg_, "", "deeptrain binary " + cfg_ + ": not an executable file"},
      {b + "train " + (dir_.path / "missing.prototxt").string(), "",
       "config " + (dir_.path / "missing.prototxt").string() + ": no such file"},
      {b + "train --json", "", "train needs a config file"},
      {b + "", "", "no deeptrain command given"},
      {b + "fit " + cfg_, "", "'fit' is not a deeptrain command"},
      {b + "--hostfile " + (dir_.path / "nohosts").string() + " train " + cfg_, "",
       "hostfile " + (dir_.path / "nohosts").string() + ": no such file"},
      {b + "--hostfile " + hf_bad + " train " + cfg_, "", hf_bad + ":2: host n2: 'slots=two': not a positive number"},
      {b + "--hostfile " + hf_dup + " train " + cfg_, "", hf_dup + ":4: host n1 listed again (first at " + hf_dup + ":1)"},
      {b + "--hostfile " + hf_small + " --ranks-per-node 2 train " + cfg_, "",
       hf_small + ":2: host n2 has 1 slots, fewer than the 2 ranks per node"},
      {b + "--hostfile " + hf_field + " train " + cfg_, "", hf_field + ":1: host n1: unknown field 'cpus=4'"},
      {b + "--hostfile " + hf_empty + " train " + cfg_, "", "hostfile " + hf_empty + ": no hosts in it"},
      {b + "--hostfile " + hf_small + " --hosts n1 train " + cfg_, "", "give --hosts or --hostfile, not both"},
      {b + "--hosts n1,,n2 train " + cfg_, "", "--hosts 'n1,,n2': empty host name"},
      {b + "--hosts n1:zero train " + cfg_, "", "--hosts: 'n1:zero': expected HOST or HOST:SLOTS"},
      {b + "--hosts 'bad host' train " + cfg_, "", "--hosts: 'bad host': 'bad host' is not a host name"},
      {b + "--hosts n1,n2,n1 train " + cfg_, "", "--hosts entry 'n1': host n1 listed again (first at --hosts entry 'n1')"},
      {b + "--ranks-per-node 0 train " + cfg_, "", "--ranks-per-node '0': not a positive whole number"},
      {b + "--gpus-per-node 2 --ranks-per-node 4 --hosts a,b train " + cfg_, "",
       "--gpus-per-node 2 and --ranks-per-node 4 disagree"},
      {b + "--gpus-per-node 1 --threads-per-rank 1 train " + cfg_, "CUDA_VISIBLE_DEVICES=",
       "--gpus-per-node 1: this host has only 0 GPU(s) (CUDA_VISIBLE_DEVICES=)"},
      {b + "--ranks-per-node " + std::to_string(affinity_cores() + 1) + " --threads-per-rank 1 train " + cfg_, "",
       std::to_string(affinity_cores() + 1) + " ranks per node x 1 threads = " + std::to_string(affinity_cores() + 1) + " cores, but this host has " +
           std::to_string(affinity_cores()) + "; lower --ranks-per-node or --threads-per-rank, or add --oversubscribe"},
      {b + "--hosts a,b --bind core train " + cfg_, "", "--bind core needs --threads-per-rank here"},
      {b + "--bind tight train " + cfg_, "", "--bind 'tight': expected core, socket, numa or none"},
      {b + "--net eth1 --mca btl self,vader train " + cfg_, "",
       "MCA parameter btl given twice (--mca and --net); Open MPI refuses a repeated parameter"},
      {b + "--mca btl_tcp_links 2 train " + cfg_, "OMPI_MCA_btl_tcp_links=4",
       "MCA parameter btl_tcp_links given twice (--mca and the environment's OMPI_MCA_btl_tcp_links)"},
      {b + "--env NOT_SET_HERE train " + cfg_, "", "--env NOT_SET_HERE: NOT_SET_HERE is not set here"},
      {b + "--launcher srun train " + cfg_, "", "--launcher srun needs a SLURM allocation"},
      {b + "--launcher pbs train " + cfg_, "", "--launcher 'pbs': expected mpirun or srun"},
      {b + "--mpirun /nonexistent/mpirun train " + cfg_, "", "mpirun /nonexistent/mpirun: no such executable"},
      {b + "--frobnicate train " + cfg_, "", "unknown option '--frobnicate'"},
      {b + "train " + cfg_, "SLURM_JOB_ID=5", "SLURM_JOB_ID is set but neither SLURM_JOB_NUM_NODES nor SLURM_NNODES"},
  };
  for (const Case& c : cases) {
    const auto r = launch(c.args, c.env);
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find("deeptrain-launch: error: " + c.message), std::string::npos)
        << "args: " << c.args << "\nexpected: " << c.message << "\ngot: " << r.output;
  }
}

// ---- real jobs ----

TEST_F(Launch, TwoRanksOnThisHostTrain) {
  if (!have_mnist()) GTEST_SKIP() << "no MNIST in " << DEEPTRAIN_DATA_DIR;
  const std::string cfg = dir_.file("two.prototxt",
                                    "model { preset: \"deep_convnet\" }\n"
                                    "data { dataset: \"mnist\" dir: \"" DEEPTRAIN_DATA_DIR "/mnist\" "
                                    "train_limit: 200 test_limit: 100 }\n"
                                    "schedule { epochs: 1 batch_size: 100 }\n"
                                    "run { seed: 1 }\n");
  // One thread per rank on their own cores where there are 2; oversubscribed where not.
  const std::string layout = affinity_cores() >= 2 ? "--threads-per-rank 1" : "--oversubscribe";
  const auto r = run_command("timeout 600 env -u OMPI_MCA_rmaps_base_oversubscribe -u OMPI_MCA_mpi_yield_when_idle " +
                             kLaunch + " --binary " + kBin + " --ranks-per-node 2 " + layout +
                             " --mpirun-arg --report-bindings -- train " + cfg + " --json --run-dir " +
                             (dir_.path / "run").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Both ranks were started (mpirun reports each one's binding) and trained 2 global steps.
  EXPECT_NE(r.output.find("MCW rank 0 "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("MCW rank 1 "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\"event\":\"epoch\",\"epoch\":1,\"steps\":2,"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\"event\":\"summary\""), std::string::npos) << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir_.path / "run" / "metrics_epochs.csv"));
  std::printf("[figures] 2 ranks through deeptrain-launch: %s\n", r.last_line().c_str());
}

TEST_F(Launch, ThreeNamespaceHostsTrain) {
  if (!kRoot) GTEST_SKIP() << "network namespaces need root";
  if (!have_mnist()) GTEST_SKIP() << "no MNIST in " << DEEPTRAIN_DATA_DIR;
  const std::string script = kSource + "/tests/cluster/netns_cluster.sh";
  const int id = int(getpid() % 100000);
  const std::string prefix = "dl" + std::to_string(id), subnet = "10.214." + std::to_string(20 + id % 200);
  const auto up = run_command(script + " up " + prefix + " 3 " + subnet);
  if (up.exit_code == 3) GTEST_SKIP() << "no network namespaces here: " << up.output;
  struct Down {
    std::string cmd;
    ~Down() { run_command(cmd); }
  } down{script + " down " + prefix};
  ASSERT_EQ(up.exit_code, 0) << up.output;
  const std::string cfg = dir_.file("three.prototxt",
                                    "model { preset: \"deep_convnet\" }\n"
                                    "data { dataset: \"mnist\" dir: \"" DEEPTRAIN_DATA_DIR "/mnist\" "
                                    "train_limit: 180 test_limit: 90 }\n"
                                    "schedule { epochs: 1 batch_size: 90 }\n"
                                    "run { seed: 1 }\n");
  const std::string hosts = prefix + "-h1," + prefix + "-h2," + prefix + "-h3";
  // mpirun runs in host 1; the launch agent enters the other hosts' namespaces. The 3 "hosts"
  // share this machine's cores: no binding (each would bind to its core 0).
  const auto r = run_command(
      "timeout 600 env -u OMPI_MCA_rmaps_base_oversubscribe -u OMPI_MCA_mpi_yield_when_idle "
      "ip netns exec " + prefix + "-h1 " + kLaunch + " --binary " + kBin + " --hosts " + hosts +
      " --ranks-per-node 1 --threads-per-rank 1 --bind none --net " + subnet + ".0/24 --rsh-agent " + kSource +
      "/tests/cluster/netns_agent.sh --mca plm_rsh_no_tree_spawn 1 --mpirun-arg --report-bindings"
      " -- train " + cfg + " --json --run-dir " + (dir_.path / "run").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (int h = 1; h <= 3; ++h)
    EXPECT_NE(r.output.find("MCW rank " + std::to_string(h - 1) + " "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\"event\":\"epoch\",\"epoch\":1,\"steps\":2,"), std::string::npos) << r.output;
  std::printf("[figures] 3 namespace hosts through deeptrain-launch: %s\n", r.last_line().c_str());
}

// ---- the SLURM batch script, with fake srun and scontrol ----

namespace {

struct FakeSlurm {
  TempDir dir;
  std::string bin, binary;
  explicit FakeSlurm(bool binary_has_resume) {
    bin = (dir.path / "bin").string();
    std::filesystem::create_directories(bin);
    const std::string log = dir.path.string();
    // srun: records its arguments, then "trains" until TERM, which it records.
    make_executable(dir.file("bin/srun", "#!/bin/sh\necho \"$@\" > " + log +
                                             "/srun.args\ntrap 'echo TERM >> " + log +
                                             "/srun.signals; exit 143' TERM\n"
                                             "while :; do sleep 0.1; done\n"));
    make_executable(dir.file("bin/scontrol", "#!/bin/sh\necho \"$@\" >> " + log + "/scontrol.args\n"));
    binary = dir.file("bin/deeptrain",
                      std::string("#!/bin/sh\necho '  --json'\n") +
                          (binary_has_resume ? "echo '  --checkpoint-dir DIR'\necho '  --resume auto|FILE'\n" : ""));
    make_executable(binary);
  }
  std::vector<std::string> argv(const std::string& config) const {
    return {"env", "-i", "HOME=/tmp", "PATH=" + bin + ":/usr/bin:/bin", "SLURM_JOB_ID=4242",
            "SLURM_JOB_NAME=dt", "SLURM_JOB_NUM_NODES=2", "SLURM_NTASKS_PER_NODE=2",
            "SLURM_CPUS_PER_TASK=3", "SLURM_RESTART_COUNT=1", "SLURM_SUBMIT_DIR=" + kSource,
            "DEEPTRAIN_BINARY=" + binary, "CHECKPOINT_DIR=" + (dir.path / "ckpt").string(),
            "GRACE_S=20", kSbatch, config, "--json"};
  }
  std::string read(const std::string& name) const { return mpitest::read_file((dir.path / name).string()); }
};

}  // namespace

TEST_F(Launch, SlurmBatchScriptRequeuesOnUsr1AndResumes) {
  FakeSlurm s(true);
  mpitest::Job job(s.argv(cfg_), (s.dir.path / "job.log").string(), "");
  const double until = mpitest::now_s() + 30;
  while (!std::filesystem::exists(s.dir.path / "srun.args") && mpitest::now_s() < until) usleep(50000);
  ASSERT_TRUE(std::filesystem::exists(s.dir.path / "srun.args")) << job.output();
  usleep(200000);
  // What SLURM does 90 s before the time limit (--signal=B:USR1@90).
  ASSERT_EQ(::kill(job.pid(), SIGUSR1), 0);
  const auto status = job.wait_exit(30);
  ASSERT_TRUE(status.has_value()) << job.output();
  EXPECT_EQ(*status, 0) << job.output();
  const std::string ckpt = (s.dir.path / "ckpt").string();
  EXPECT_EQ(trim(s.read("srun.args")),
            "--mpi=pmix --nodes=2 --ntasks-per-node=2 --cpus-per-task=3 --cpu-bind=cores "
            "--export=ALL,OMP_NUM_THREADS=3 " + s.binary + " train " + cfg_ + " --checkpoint-dir " + ckpt +
                " --resume auto --json --threads 3");
  EXPECT_EQ(trim(s.read("srun.signals")), "TERM") << job.output();
  EXPECT_EQ(trim(s.read("scontrol.args")), "requeue 4242") << job.output();
  EXPECT_NE(job.output().find("job 4242 start 2"), std::string::npos) << job.output();
  EXPECT_NE(job.output().find("USR1 received"), std::string::npos) << job.output();
  EXPECT_TRUE(std::filesystem::is_directory(ckpt));
}

TEST_F(Launch, SlurmBatchScriptRefusesADeeptrainThatCannotResume) {
  FakeSlurm s(false);
  mpitest::Job job(s.argv(cfg_), (s.dir.path / "job.log").string(), "");
  const auto status = job.wait_exit(30);
  ASSERT_TRUE(status.has_value()) << job.output();
  EXPECT_EQ(*status, 2) << job.output();
  EXPECT_NE(job.output().find("deeptrain.sbatch: error: " + s.binary +
                              " has no 'train --resume': a requeued job would start over"),
            std::string::npos)
      << job.output();
  EXPECT_FALSE(std::filesystem::exists(s.dir.path / "srun.args"));
}

// ---- linters, where installed ----

TEST(LaunchLint, ScriptsPassShellcheck) {
  if (run_command("command -v shellcheck").exit_code != 0) GTEST_SKIP() << "no shellcheck (apt-get install shellcheck)";
  const auto r = run_command("shellcheck " + kLaunch + " " + kSbatch + " " + kSource + "/docker/entrypoint.sh " +
                             kSource + "/scripts/build_image.sh " + kSource + "/scripts/lint_docker.sh " + kSource +
                             "/scripts/run_multi_container.sh " + kSource + "/docker/cluster-node.sh " + kSource +
                             "/scripts/color_digits.sh " + kSource + "/bench/data_throughput.sh " + kSource +
                             "/bench/shards_vs_idx.sh " + kSource + "/bench/shards_memory.sh");
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST(LaunchLint, DockerfilesPassDockerfilelint) {
  // dockerfilelint (npm): on PATH, or where scripts/lint_docker.sh installs it.
  std::string lint = trim(run_command("command -v dockerfilelint").output);
  const std::string local = kSource + "/build/tools/node_modules/.bin/dockerfilelint";
  if (lint.empty() && std::filesystem::exists(local)) lint = local;
  if (lint.empty()) GTEST_SKIP() << "no dockerfilelint (scripts/lint_docker.sh installs it from npm)";
  const auto r = run_command(lint + " " + kSource + "/docker/Dockerfile.cpu " + kSource + "/docker/Dockerfile.cuda " +
                             kSource + "/docker/Dockerfile.cluster");
  EXPECT_EQ(r.exit_code, 0) << r.output;
}
