// Resuming training from checkpoints, end to end: the real binary (and mpiexec), real files, real
// MNIST (400 training images: 10 steps of 40 per epoch, 2 epochs, DeepConvNet with its dropout).
//  - A straight run vs. a fresh process resuming from the straight run's checkpoint of step 7
//    (mid-epoch): the checkpoints of steps 14 and 20 hold bit-identical parameters, layer state
//    and Adam state, and the epochs' metrics are the same; with 1 rank and with mpiexec -n 2.
//  - Saved with 1 rank, resumed with 2, and the reverse (backend cpu-ref, as the MPI equivalence
//    tests): the per-step losses continue those of the uninterrupted run within 1e-4 relative.
//  - A resumed run's directory: metrics_epochs (so the curves) start with the finished epochs.
//  - A damaged newest checkpoint (flipped byte; truncated manifest): --resume auto falls back to
//    the previous good one, naming each file passed over and what is wrong with it; with none
//    left it refuses (exit 2).
//  - SIGUSR1 to mpiexec (which forwards it to every rank), SIGTERM to one rank of two, SIGTERM to
//    a single process: all ranks stop after the same step, a checkpoint is written, exit 0; a
//    resumed run ends with the same weights as the uninterrupted one.
//  - Ranks that resume from different files (no shared file system) refuse to train, naming them.
//  - --checkpoint-every with a time saves as time passes; --keep-checkpoints prunes older ones.
// Needs MNIST in data/mnist (scripts/fetch_data.sh); the multi-rank tests need mpiexec.
#include <gtest/gtest.h>
#include <signal.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "core/config.h"
#include "cli_util.h"
#include "core/io/checkpoint.h"
#include "error_util.h"
#include "mpi/launch_util.h"

namespace fs = std::filesystem;
using mpitest::Job;

namespace {

constexpr int kStepsPerEpoch = 10, kEpochs = 2, kTotalSteps = kStepsPerEpoch * kEpochs;
constexpr int kEvery = 7;  // checkpoints at steps 7 (mid-epoch 1), 14 (mid-epoch 2) and 20

bool have_mpiexec() {
  return std::string(DEEPTRAIN_MPIEXEC).size() > 0 && fs::exists(DEEPTRAIN_MPIEXEC);
}

// One directory for the whole binary: the straight runs are shared by the tests.
const fs::path& work_dir() {
  static const fs::path dir = [] {
    fs::path d = fs::temp_directory_path() / ("deeptrain_resume_" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

class Cleanup : public testing::Environment {
 public:
  void TearDown() override { fs::remove_all(work_dir()); }
};
const auto* const cleanup = testing::AddGlobalTestEnvironment(new Cleanup);

// A fresh directory under work_dir().
fs::path fresh_dir(const std::string& name) {
  static int counter = 0;
  fs::path d = work_dir() / (name + "-" + std::to_string(counter++));
  fs::create_directories(d);
  return d;
}

std::string config(const std::string& backend) {
  const fs::path p = work_dir() / ("resume-" + backend + ".prototxt");
  if (!fs::exists(p))
    std::ofstream(p) << "name: \"resume\"\n"
                        "model { preset: \"deep_convnet\" }\n"
                        "data { dataset: \"mnist\" dir: \"" << DEEPTRAIN_DATA_DIR << "/mnist\" "
                        "train_limit: 400 test_limit: 100 }\n"
                        "optimizer { type: ADAM lr: 0.001 }\n"
                        "schedule { epochs: " << kEpochs << " batch_size: 40 }\n"
                        "run { seed: 3 threads: 1 backend: "
                     << deeptrain::proto::Backend_Name(deeptrain::backend_from_word(backend, "test"))
                     << " }\n";
  return p.string();
}

// The train command line of `ranks` ranks (1: no mpiexec).
std::vector<std::string> train_argv(int ranks, const std::string& backend, const fs::path& ckpt_dir,
                                    const fs::path& run_dir, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> a;
  if (ranks > 1) a = {DEEPTRAIN_MPIEXEC, "-n", std::to_string(ranks), "-x", "DT_RESUME_TAG"};
  for (std::string s : {std::string(DEEPTRAIN_BINARY), std::string("train"), config(backend),
                        std::string("--json"), std::string("--run-dir"), run_dir.string(),
                        std::string("--checkpoint-dir"), ckpt_dir.string(),
                        std::string("--checkpoint-every"), std::to_string(kEvery),
                        std::string("--keep-checkpoints"), std::string("0")})
    a.push_back(s);
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

std::string shell_line(const std::vector<std::string>& argv) {
  std::string s;
  for (const std::string& a : argv) s += "'" + a + "' ";
  return s;
}

CommandResult train(int ranks, const std::string& backend, const fs::path& ckpt_dir,
                    const fs::path& run_dir, const std::vector<std::string>& extra = {}) {
  return run_command(shell_line(train_argv(ranks, backend, ckpt_dir, run_dir, extra)));
}

fs::path ckpt(const fs::path& dir, int step) { return dir / deeptrain::io::checkpoint_name(step); }

// An uninterrupted run (checkpoints at 7, 14, 20), run once per (ranks, backend).
struct Straight {
  fs::path ckpt_dir, run_dir;
  std::string output;
};
const Straight& straight(int ranks, const std::string& backend) {
  static std::map<std::pair<int, std::string>, Straight> runs;
  auto it = runs.find({ranks, backend});
  if (it != runs.end()) return it->second;
  Straight s;
  s.ckpt_dir = fresh_dir("straight-ckpt");
  s.run_dir = work_dir() / ("straight-run-" + std::to_string(ranks) + backend);
  const CommandResult r = train(ranks, backend, s.ckpt_dir, s.run_dir);
  s.output = r.output;
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (int step : {kEvery, 2 * kEvery, kTotalSteps})
    EXPECT_TRUE(fs::exists(ckpt(s.ckpt_dir, step) / "MANIFEST.pb")) << step << "\n" << r.output;
  return runs[{ranks, backend}] = s;
}

// A checkpoint directory holding copies of some of `from`'s checkpoints.
fs::path copy_checkpoints(const fs::path& from, const std::vector<int>& steps) {
  const fs::path d = fresh_dir("ckpt");
  for (int step : steps) fs::copy(ckpt(from, step), ckpt(d, step), fs::copy_options::recursive);
  return d;
}

// Every tensor of checkpoint b byte-for-byte equal to a's (parameters, layer state, optimizer
// state), the same optimizer step count and position, and the same epoch metrics.
void expect_same_training_state(const fs::path& a_path, const fs::path& b_path) {
  using deeptrain::io::TrainingState;
  ASSERT_TRUE(fs::exists(a_path)) << a_path;
  ASSERT_TRUE(fs::exists(b_path)) << b_path;
  const TrainingState a = deeptrain::io::load_checkpoint(a_path);
  const TrainingState b = deeptrain::io::load_checkpoint(b_path);
  EXPECT_EQ(a.global_step, b.global_step);
  EXPECT_EQ(a.epoch, b.epoch);
  EXPECT_EQ(a.step_in_epoch, b.step_in_epoch);
  EXPECT_EQ(a.optimizer_steps, b.optimizer_steps);
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  int optimizer_tensors = 0;
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const auto& x = a.tensors[i];
    const auto& y = b.tensors[i];
    ASSERT_EQ(x.name, y.name);
    ASSERT_EQ(x.tensor.nbytes(), y.tensor.nbytes()) << x.name;
    EXPECT_EQ(std::memcmp(x.tensor.raw(), y.tensor.raw(), x.tensor.nbytes()), 0)
        << "tensor " << x.name << " differs between " << a_path << " and " << b_path;
    optimizer_tensors += x.name.starts_with("optim/");
  }
  EXPECT_EQ(optimizer_tensors, 2) << "Adam's m and v";
  // The partial epoch's sums and the finished epochs' metrics continue exactly.
  EXPECT_EQ(a.partial_epoch.loss_sum(), b.partial_epoch.loss_sum());
  EXPECT_EQ(a.partial_epoch.correct(), b.partial_epoch.correct());
  ASSERT_EQ(a.history.size(), b.history.size());
  for (size_t i = 0; i < a.history.size(); ++i) {
    EXPECT_EQ(a.history[i].train_loss(), b.history[i].train_loss()) << "epoch " << i + 1;
    EXPECT_EQ(a.history[i].train_accuracy(), b.history[i].train_accuracy()) << "epoch " << i + 1;
    EXPECT_EQ(a.history[i].test_loss(), b.history[i].test_loss()) << "epoch " << i + 1;
    EXPECT_EQ(a.history[i].step(), b.history[i].step()) << "epoch " << i + 1;
  }
}

// step -> loss of a run directory's metrics_steps.csv.
std::map<int, double> step_losses(const fs::path& run_dir) {
  std::ifstream in(run_dir / "metrics_steps.csv");
  std::string line;
  std::getline(in, line);
  std::vector<std::string> cols;
  std::stringstream header(line);
  for (std::string c; std::getline(header, c, ',');) cols.push_back(c);
  const auto col = [&](const std::string& name) {
    return int(std::find(cols.begin(), cols.end(), name) - cols.begin());
  };
  const int step_col = col("step"), loss_col = col("loss");
  std::map<int, double> out;
  while (std::getline(in, line)) {
    std::vector<std::string> v;
    std::stringstream row(line);
    for (std::string c; std::getline(row, c, ',');) v.push_back(c);
    if (int(v.size()) > std::max(step_col, loss_col))
      out[int(std::stod(v[step_col]))] = std::stod(v[loss_col]);
  }
  return out;
}

class Resume : public testing::Test {
 protected:
  void SetUp() override {
    if (!have_mnist()) GTEST_SKIP() << "no MNIST in " << DEEPTRAIN_DATA_DIR << "/mnist";
    // As ctest sets them (tests/CMakeLists.txt), for a direct run too.
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
    setenv("OMPI_MCA_mpi_yield_when_idle", "1", 0);
    setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 0);
    tag_ = std::to_string(getpid()) + "-" + testing::UnitTest::GetInstance()->current_test_info()->name();
    setenv("DT_RESUME_TAG", tag_.c_str(), 1);
  }
  void need_mpiexec() {
    if (!have_mpiexec()) GTEST_SKIP() << "no mpiexec (apt-get install openmpi-bin)";
  }
  // From the straight run's checkpoint of step 7 in a fresh process, to the end.
  void resume_matches_straight_run(int ranks) {
    const Straight& s = straight(ranks, "cpu");
    const fs::path dir = copy_checkpoints(s.ckpt_dir, {kEvery});
    const CommandResult r = train(ranks, "cpu", dir, fresh_dir("run"), {"--resume", "auto"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_CONTAINS(r.output, "\"event\":\"resumed\",\"step\":7,");
    EXPECT_CONTAINS(r.output, "epoch 1, 7 of its 10 steps done");
    expect_same_training_state(ckpt(s.ckpt_dir, 2 * kEvery), ckpt(dir, 2 * kEvery));
    expect_same_training_state(ckpt(s.ckpt_dir, kTotalSteps), ckpt(dir, kTotalSteps));
  }
  // Saved with `from` ranks, resumed with `to`: the losses of steps 8..20 continue the straight
  // run's (cpu-ref: the only difference is the order of the sums across ranks).
  void trajectory_continues(int from, int to) {
    const Straight& s = straight(from, "cpu-ref");
    const fs::path dir = copy_checkpoints(s.ckpt_dir, {kEvery});
    const fs::path run = fresh_dir("run");
    const CommandResult r = train(to, "cpu-ref", dir, run, {"--resume", "auto"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_CONTAINS(r.output, fmt::format("saved by {} rank{}, now {})", from, from == 1 ? "" : "s", to));
    const std::map<int, double> want = step_losses(s.run_dir), got = step_losses(run);
    ASSERT_EQ(want.size(), size_t(kTotalSteps));
    ASSERT_EQ(got.size(), size_t(kTotalSteps - kEvery)) << "steps 8..20 only";
    double worst = 0;
    for (const auto& [step, loss] : got) {
      ASSERT_TRUE(want.count(step)) << step;
      EXPECT_NEAR(loss, want.at(step), 1e-4 * want.at(step)) << "step " << step;
      worst = std::max(worst, std::abs(loss - want.at(step)) / want.at(step));
    }
    std::printf("[figures] %d -> %d ranks: largest relative loss difference over steps 8..20: %.2e\n",
                from, to, worst);
  }
  std::string tag_;
};

TEST_F(Resume, FreshProcessContinuesBitIdenticallyOneRank) { resume_matches_straight_run(1); }

TEST_F(Resume, FreshProcessContinuesBitIdenticallyTwoRanks) {
  need_mpiexec();
  resume_matches_straight_run(2);
}

TEST_F(Resume, SavedWithOneRankResumedWithTwoContinuesTheLossCurve) {
  need_mpiexec();
  trajectory_continues(1, 2);
}

TEST_F(Resume, SavedWithTwoRanksResumedWithOneContinuesTheLossCurve) {
  need_mpiexec();
  trajectory_continues(2, 1);
}

// The run directory's metrics_epochs.csv: rows of (epoch, step, train_loss, test_loss) as text.
std::vector<std::string> epoch_rows(const fs::path& run_dir) {
  std::ifstream in(run_dir / "metrics_epochs.csv");
  std::vector<std::string> rows;
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line.rfind("epoch,step,train_loss,train_accuracy,test_loss,", 0), 0u) << line;
  while (std::getline(in, line)) {
    std::vector<std::string> v;
    std::stringstream row(line);
    for (std::string c; std::getline(row, c, ',');) v.push_back(c);
    if (v.size() > 4) rows.push_back(v[0] + "," + v[1] + "," + v[2] + "," + v[4]);
  }
  return rows;
}

TEST_F(Resume, ResumedRunDirectoryCurvesStartWithTheFinishedEpochs) {
  const Straight& s = straight(1, "cpu");
  const fs::path dir = copy_checkpoints(s.ckpt_dir, {2 * kEvery}), run = fresh_dir("run") / "r";
  const CommandResult r = train(1, "cpu", dir, run, {"--resume", "auto"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Epoch 1 comes from the checkpoint's history, epoch 2 from this run: both as the straight
  // run wrote them.
  const std::vector<std::string> want = epoch_rows(s.run_dir), got = epoch_rows(run);
  ASSERT_EQ(want.size(), size_t(kEpochs));
  EXPECT_EQ(got, want);
}

TEST_F(Resume, AutoFallsBackPastDamagedCheckpointsNamingThem) {
  const Straight& s = straight(1, "cpu");
  const fs::path dir = copy_checkpoints(s.ckpt_dir, {kEvery, 2 * kEvery, kTotalSteps});
  {  // a flipped byte in the middle of the newest one's tensors
    std::fstream f(ckpt(dir, kTotalSteps) / "tensors.pb", std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(0, std::ios::end);
    const std::streamoff mid = f.tellg() / 2;
    char c;
    f.seekg(mid);
    f.get(c);
    f.seekp(mid);
    f.put(char(c ^ 0x10));
  }
  const fs::path manifest14 = ckpt(dir, 2 * kEvery) / "MANIFEST.pb";
  fs::resize_file(manifest14, fs::file_size(manifest14) / 2);  // a truncated manifest
  const CommandResult r = train(1, "cpu", dir, fresh_dir("run"), {"--resume", "auto"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_CONTAINS(r.output, "passed over " + (ckpt(dir, kTotalSteps) / "tensors.pb").string() +
                                ": tensor ");
  EXPECT_CONTAINS(r.output, "fails its CRC-32 check");
  EXPECT_CONTAINS(r.output, "passed over " + manifest14.string() +
                                ": not a deeptrain checkpoint manifest (truncated or corrupt)");
  EXPECT_CONTAINS(r.output, "falling back to " + ckpt(dir, kEvery).string());
  EXPECT_CONTAINS(r.output, "\"event\":\"resumed\",\"step\":7,");
  // The damaged ones were rewritten by the resumed run, identical to the straight run's.
  expect_same_training_state(ckpt(s.ckpt_dir, kTotalSteps), ckpt(dir, kTotalSteps));
}

TEST_F(Resume, AutoRefusesWhenEveryCheckpointIsDamaged) {
  const Straight& s = straight(1, "cpu");
  const fs::path dir = copy_checkpoints(s.ckpt_dir, {kEvery});
  fs::resize_file(ckpt(dir, kEvery) / "tensors.pb", 1000);
  const CommandResult r = train(1, "cpu", dir, fresh_dir("run"), {"--resume", "auto"});
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_CONTAINS(r.output, (ckpt(dir, kEvery) / "tensors.pb").string() + ": truncated: manifest says ");
  EXPECT_CONTAINS(r.output, "--resume auto: no valid checkpoint in " + dir.string());
  EXPECT_EQ(r.output.find("\"event\":\"epoch\""), std::string::npos) << "trained anyway:\n" << r.output;
}

TEST_F(Resume, TimeIntervalSavesAsTimePassesAndKeepsTheNewest) {
  const fs::path dir = fresh_dir("ckpt");
  // 1 ms: due after every step (each takes tens of ms); --keep-checkpoints 2 prunes the rest.
  const CommandResult r = run_command(shell_line(
      {DEEPTRAIN_BINARY, "train", config("cpu"), "--json", "--run-dir", fresh_dir("run") / "r",
       "--checkpoint-dir", dir.string(), "--checkpoint-every", "0.001s", "--keep-checkpoints", "2"}));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  size_t saves = 0;
  for (size_t at = r.output.find("\"event\":\"checkpoint\""); at != std::string::npos;
       at = r.output.find("\"event\":\"checkpoint\"", at + 1))
    ++saves;
  EXPECT_EQ(saves, size_t(kTotalSteps)) << r.output;
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir)) left.push_back(e.path().filename());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"ckpt-0000000019", "ckpt-0000000020"})) << r.output;
}

TEST_F(Resume, RanksThatReadDifferentCheckpointsRefuseToTrain) {
  need_mpiexec();
  // No shared file system: rank 0 sees the checkpoint of step 7, rank 1 an empty directory.
  const fs::path seen = copy_checkpoints(straight(1, "cpu").ckpt_dir, {kEvery}), empty = fresh_dir("ckpt");
  std::vector<std::string> a = train_argv(1, "cpu", seen, fresh_dir("run") / "r", {"--resume", "auto"});
  std::vector<std::string> b = train_argv(1, "cpu", empty, fresh_dir("run") / "r", {"--resume", "auto"});
  std::vector<std::string> job = {DEEPTRAIN_MPIEXEC, "-n", "1"};
  job.insert(job.end(), a.begin(), a.end());
  for (std::string s : {":", "-n", "1"}) job.push_back(s);
  job.insert(job.end(), b.begin(), b.end());
  const CommandResult r = run_command(shell_line(job));
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_CONTAINS(r.output, "replicas diverged after --resume");
  EXPECT_CONTAINS(r.output, "rank 1 on ");
  EXPECT_EQ(r.output.find("\"event\":\"epoch\""), std::string::npos) << "trained anyway:\n" << r.output;
}

// Preemption: `signal_job` signals a running job after its second step; the job must write a
// checkpoint of where it stopped and exit 0, and a resumed run must end where the straight run
// ended, bit for bit.
void stop_and_resume(int ranks, const std::string& tag,
                     const std::function<void(Job&)>& signal_job, const std::string& signal_name) {
  const Straight& s = straight(ranks, "cpu");
  const fs::path dir = fresh_dir("ckpt"), run = fresh_dir("run");
  const fs::path log = fresh_dir("log") / "job.log";
  Job job(train_argv(ranks, "cpu", dir, run / "r"), log.string(), tag);
  const double until = mpitest::now_s() + 120;
  while (step_losses(run / "r").size() < 2 && mpitest::now_s() < until && !job.wait_exit(0))
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_GE(step_losses(run / "r").size(), 2u) << job.output();
  signal_job(job);
  const auto status = job.wait_exit(120);
  const std::string out = job.output();
  ASSERT_TRUE(status.has_value()) << "still running 120 s after the signal\n" << out;
  EXPECT_EQ(*status, 0) << out;
  const size_t at = out.find("\"event\":\"stopped\",\"step\":");
  ASSERT_NE(at, std::string::npos) << "it did not stop early:\n" << out;
  const int stopped = std::stoi(out.substr(at + std::strlen("\"event\":\"stopped\",\"step\":")));
  EXPECT_CONTAINS(out, "\"signal\":\"" + signal_name + "\"");
  EXPECT_GE(stopped, 2);
  ASSERT_LT(stopped, kTotalSteps) << out;
  std::printf("[figures] %d rank(s): stopped after step %d of %d\n", ranks, stopped, kTotalSteps);
  std::optional<std::string> latest = deeptrain::io::find_latest_checkpoint(dir.string());
  ASSERT_TRUE(latest.has_value()) << out;
  EXPECT_EQ(*latest, ckpt(dir, stopped).string()) << out;
  EXPECT_EQ(deeptrain::io::load_checkpoint(*latest).global_step, stopped);
  // Every rank stopped after that same step: the run's metrics end there too.
  EXPECT_EQ(step_losses(run / "r").rbegin()->first, stopped);

  const CommandResult r = train(ranks, "cpu", dir, run / "resumed", {"--resume", "auto"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_CONTAINS(r.output, fmt::format("\"event\":\"resumed\",\"step\":{},", stopped));
  expect_same_training_state(ckpt(s.ckpt_dir, kTotalSteps), ckpt(dir, kTotalSteps));
}

TEST_F(Resume, SigusrToMpiexecCheckpointsAndExitsZeroThenResumesToTheSameWeights) {
  need_mpiexec();
  // Open MPI's mpiexec forwards SIGUSR1 to every rank (SIGTERM it does not: see docs/checkpoints.md).
  stop_and_resume(2, "DT_RESUME_TAG=" + tag_, [](Job& job) { ASSERT_EQ(kill(job.pid(), SIGUSR1), 0); },
                  "SIGUSR1");
}

TEST_F(Resume, SigtermToOneRankStopsBothAfterTheSameStep) {
  need_mpiexec();
  // As SLURM delivers SIGTERM to the ranks themselves; one rank only is the harder case: rank 0,
  // which writes, learns of it through the step's allreduce.
  stop_and_resume(2, "DT_RESUME_TAG=" + tag_, [](Job& job) {
    const pid_t rank1 = job.rank_pid(1);
    ASSERT_GT(rank1, 0);
    ASSERT_EQ(kill(rank1, SIGTERM), 0);
  }, "a stop signal on another rank");
}

TEST_F(Resume, SigtermToOneProcessCheckpointsAndExitsZero) {
  stop_and_resume(1, "", [](Job& job) { ASSERT_EQ(kill(job.pid(), SIGTERM), 0); }, "SIGTERM");
}

}  // namespace
