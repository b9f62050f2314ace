// Where `deeptrain train` writes, through the real binary and real file systems:
//  - Output paths are checked when the run starts, before the data loads: a --save-weights in a
//    missing directory, a read-only run directory or --checkpoint-dir fail at once (exit 2, the
//    path named). The configs of those tests point at a data directory that does not exist, so
//    a run that loaded its data first would fail with another message.
//  - A file system that fills up during the run (a tiny tmpfs): failed checkpoint saves are
//    warnings and retried at the next save, failed metrics/curves writes are warnings, training
//    finishes, and the final weights fall back to the run directory, or to the temp directory.
//  - The checkpoint directory's lock: a second trainer is refused naming the first's pid; after
//    kill -9 of the first, a new run takes the stale lock over and resumes; a lock recorded by
//    another host is refused.
// Read-only and full file systems are tmpfs mounts (chmod does not stop root, and a full disk
// cannot be had otherwise): those tests need root and are skipped where mount(2) is refused.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "cli_util.h"
#include "core/io/checkpoint.h"
#include "error_util.h"
#include "mpi/launch_util.h"

namespace fs = std::filesystem;

namespace {

// A tmpfs mounted at `dir` for the object's life. `options`: mount(2) data ("size=64k").
class Tmpfs {
 public:
  Tmpfs(const fs::path& dir, const std::string& options, bool read_only = false) : dir_(dir) {
    fs::create_directories(dir);
    if (::geteuid() != 0) {
      why_ = "needs root (mount)";
      return;
    }
    if (::mount("tmpfs", dir.c_str(), "tmpfs", read_only ? MS_RDONLY : 0, options.c_str()) != 0) {
      why_ = std::string("mount -t tmpfs failed: ") + std::strerror(errno);
      return;
    }
    mounted_ = true;
  }
  ~Tmpfs() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }
  const std::string& why_not() const { return why_; }
  bool remount(const std::string& options) {
    return ::mount("tmpfs", dir_.c_str(), "tmpfs", MS_REMOUNT, options.c_str()) == 0;
  }

 private:
  fs::path dir_;
  bool mounted_ = false;
  std::string why_;
};

#define MOUNT_OR_SKIP(m) \
  if (!(m).mounted()) GTEST_SKIP() << (m).why_not()

// DeepConvNet on 400 MNIST images, batches of 40: 10 steps per epoch.
std::string config(const TempDir& t, int epochs, const std::string& data_dir) {
  return t.file("paths.prototxt",
                "name: \"paths\"\n"
                "model { preset: \"deep_convnet\" }\n"
                "data { dataset: \"mnist\" dir: \"" + data_dir + "\" train_limit: 400 test_limit: 100 }\n"
                "optimizer { type: ADAM lr: 0.001 }\n"
                "schedule { epochs: " + std::to_string(epochs) + " batch_size: 40 }\n"
                "run { seed: 3 threads: 1 }\n");
}
std::string mnist() { return std::string(DEEPTRAIN_DATA_DIR) + "/mnist"; }

// A config whose data cannot load: a run that got to its data would fail naming that directory.
std::string no_data_config(const TempDir& t) { return config(t, 1, (t.path / "no-data").string()); }

void expect_no_training(const CommandResult& r) {
  EXPECT_EQ(r.output.find("no-data"), std::string::npos) << "it loaded the data first:\n" << r.output;
  EXPECT_EQ(r.output.find("epoch"), std::string::npos) << r.output;
}

TEST(OutputPaths, SaveWeightsInAMissingDirectoryFailsBeforeTheDataLoads) {
  TempDir t;
  const std::string weights = (t.path / "missing" / "w.bin").string();
  const double t0 = mpitest::now_s();
  const CommandResult r = run_command(deeptrain_cmd(
      "train " + no_data_config(t) + " --save-weights " + weights + " --run-dir " + (t.path / "run").string()));
  const double seconds = mpitest::now_s() - t0;
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_CONTAINS(r.output, "--save-weights " + weights + ": directory " + (t.path / "missing").string() +
                                " does not exist");
  expect_no_training(r);
  EXPECT_FALSE(fs::exists(t.path / "run")) << "no run directory for a run that never started";
  // Process start and a config parse; generous for a loaded machine, far below any training.
  EXPECT_LT(seconds, 5.0);
  std::printf("[figures] refused in %.3f s\n", seconds);
}

TEST(OutputPaths, SaveWeightsThatIsADirectoryFailsAtOnce) {
  TempDir t;
  const CommandResult r = run_command(deeptrain_cmd("train " + no_data_config(t) + " --save-weights " +
                                                    t.path.string() + " --run-dir " + (t.path / "run").string()));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_CONTAINS(r.output, "--save-weights " + t.path.string() + ": is a directory");
  expect_no_training(r);
}

TEST(OutputPaths, ReadOnlyCheckpointDirectoryIsRefusedAtStart) {
  TempDir t;
  const fs::path ro = t.path / "ro";
  Tmpfs m(ro, "size=64k", true);
  MOUNT_OR_SKIP(m);
  const CommandResult r = run_command(deeptrain_cmd("train " + no_data_config(t) + " --checkpoint-dir " +
                                                    ro.string() + " --run-dir " + (t.path / "run").string()));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_CONTAINS(r.output, "--checkpoint-dir " + ro.string() + ": not writable");
  EXPECT_CONTAINS(r.output, "Read-only file system");
  expect_no_training(r);
  EXPECT_FALSE(fs::exists(t.path / "run"));
}

TEST(OutputPaths, ReadOnlyRunDirectoryIsRefusedAtStart) {
  TempDir t;
  const fs::path ro = t.path / "ro";
  Tmpfs m(ro, "size=64k", true);
  MOUNT_OR_SKIP(m);
  const CommandResult r =
      run_command(deeptrain_cmd("train " + no_data_config(t) + " --run-dir " + ro.string()));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_CONTAINS(r.output, "run directory " + ro.string() + ": not writable");
  EXPECT_CONTAINS(r.output, "Read-only file system");
  expect_no_training(r);
}

class FullDisk : public testing::Test {
 protected:
  void SetUp() override {
    if (!have_mnist()) GTEST_SKIP() << "no MNIST in " << mnist();
  }
};

TEST_F(FullDisk, FailedCheckpointsWarnAndTheWeightsFallBackToTheRunDirectory) {
  TempDir t;
  const fs::path full = t.path / "full", run = t.path / "run";
  // Room for the start's probe and lock file, not for a checkpoint (1.4 MiB) or the weights.
  Tmpfs m(full, "size=64k");
  MOUNT_OR_SKIP(m);
  const std::string wanted = (full / "w.bin").string();
  const CommandResult r = run_command(deeptrain_cmd(
      "train " + config(t, 1, mnist()) + " --json --run-dir " + run.string() + " --checkpoint-dir " +
      (full / "ckpt").string() + " --checkpoint-every 3 --save-weights " + wanted));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_CONTAINS(r.output, "warning: checkpoint at step 3 not saved: ");
  EXPECT_CONTAINS(r.output, "No space left on device; retrying at the next save");
  EXPECT_CONTAINS(r.output, "warning: checkpoint at step 6 not saved: ");  // retried
  EXPECT_CONTAINS(r.output, "\"event\":\"checkpoint_failed\",\"step\":9,");
  EXPECT_CONTAINS(r.output, "warning: checkpoint at step 10 not saved: ");
  EXPECT_CONTAINS(r.output, "warning: weights not saved to " + wanted);
  const std::string fallback = (run / "weights.bin").string();
  EXPECT_CONTAINS(r.output, "the final weights were saved to " + fallback + " instead of " + wanted);
  EXPECT_CONTAINS(r.last_line(), "\"weights\":\"" + fallback + "\"");
  EXPECT_FALSE(fs::exists(full / "ckpt" / deeptrain::io::checkpoint_name(3)));
  // The fallback holds the trained model: it evaluates to the accuracy the run reported.
  const CommandResult e = run_command(deeptrain_cmd("eval " + config(t, 1, mnist()) + " --json --weights " + fallback));
  ASSERT_EQ(e.exit_code, 0) << e.output;
  EXPECT_EQ(json_number(e.last_line(), "test_accuracy"), json_number(r.last_line(), "test_accuracy"))
      << r.output << e.output;
}

TEST_F(FullDisk, ACheckpointSaveIsRetriedOnceThereIsRoomAgain) {
  TempDir t;
  const fs::path full = t.path / "full", ckpt = full / "ckpt";
  Tmpfs m(full, "size=64k");
  MOUNT_OR_SKIP(m);
  mpitest::Job job({DEEPTRAIN_BINARY, "train", config(t, 2, mnist()), "--run-dir", (t.path / "run").string(),
                    "--checkpoint-dir", ckpt.string(), "--checkpoint-every", "2"},
                   (t.path / "job.log").string(), "");
  ASSERT_TRUE(job.wait_output("warning: checkpoint at step 2 not saved", 300)) << job.output();
  ASSERT_TRUE(m.remount("size=16m")) << std::strerror(errno);
  const auto status = job.wait_exit(300);
  ASSERT_TRUE(status.has_value()) << job.output();
  EXPECT_EQ(*status, 0) << job.output();
  // Saved again after the remount, up to the last step (20).
  const auto latest = deeptrain::io::find_latest_checkpoint(ckpt.string());
  ASSERT_TRUE(latest.has_value()) << job.output();
  EXPECT_EQ(*latest, (ckpt / deeptrain::io::checkpoint_name(20)).string()) << job.output();
  EXPECT_EQ(deeptrain::io::load_checkpoint(*latest).global_step, 20);
}

TEST_F(FullDisk, AFullRunDirectoryWarnsAndTheWeightsGoToTheTempDirectory) {
  TempDir t, tmp;
  const fs::path run = t.path / "run";
  // Room for the files the run creates at its start, not for curves.png or the weights.
  Tmpfs m(run, "size=48k");
  MOUNT_OR_SKIP(m);
  const CommandResult r = run_command("TMPDIR=" + tmp.path.string() + " " +
                                      deeptrain_cmd("train " + config(t, 2, mnist()) + " --json --run-dir " + run.string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_CONTAINS(r.output, "not written: ");
  EXPECT_CONTAINS(r.output, "training goes on");
  EXPECT_CONTAINS(r.output, "\"event\":\"epoch\",\"epoch\":2,");  // trained to the end
  EXPECT_CONTAINS(r.output, "warning: weights not saved to " + (run / "weights.bin").string());
  std::vector<fs::path> saved;
  for (const auto& f : fs::directory_iterator(tmp.path))
    if (f.path().filename().string().starts_with("deeptrain-weights-")) saved.push_back(f.path());
  ASSERT_EQ(saved.size(), 1u) << r.output;
  EXPECT_CONTAINS(r.output, "the final weights were saved to " + saved[0].string());
  EXPECT_GT(fs::file_size(saved[0]), 100000u) << "DeepConvNet's 123,552 parameters";
}

TEST(CheckpointLock, ASecondTrainerIsRefusedAndAKilledOnesLockIsTakenOver) {
  if (!have_mnist()) GTEST_SKIP() << "no MNIST in " << mnist();
  TempDir t;
  const fs::path ckpt = t.path / "ckpt";
  const std::string cfg = config(t, 2, mnist());
  mpitest::Job first({DEEPTRAIN_BINARY, "train", cfg, "--run-dir", (t.path / "run1").string(), "--checkpoint-dir",
                      ckpt.string(), "--checkpoint-every", "1"},
                     (t.path / "first.log").string(), "");
  // Until it has a checkpoint to resume from.
  const double until = mpitest::now_s() + 300;
  while (!deeptrain::io::find_latest_checkpoint(ckpt.string()) && mpitest::now_s() < until && !first.wait_exit(0))
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(deeptrain::io::find_latest_checkpoint(ckpt.string()).has_value()) << first.output();

  const CommandResult second = run_command(deeptrain_cmd(
      "train " + cfg + " --run-dir " + (t.path / "run2").string() + " --checkpoint-dir " + ckpt.string() +
      " --resume auto"));
  EXPECT_EQ(second.exit_code, 2) << second.output;
  EXPECT_CONTAINS(second.output, "checkpoint directory " + ckpt.string() + " is in use by pid " +
                                     std::to_string(first.pid()) + " on host ");
  EXPECT_EQ(second.output.find("resumed"), std::string::npos) << second.output;
  ASSERT_FALSE(first.wait_exit(0).has_value()) << "the first run ended too early:\n" << first.output();

  ASSERT_EQ(::kill(first.pid(), SIGKILL), 0);
  ASSERT_TRUE(first.wait_exit(30).has_value());
  ASSERT_TRUE(fs::exists(ckpt / ".lock")) << "kill -9 leaves the lock file";
  const CommandResult third = run_command(deeptrain_cmd(
      "train " + cfg + " --json --run-dir " + (t.path / "run3").string() + " --checkpoint-dir " +
      ckpt.string() + " --resume auto"));
  ASSERT_EQ(third.exit_code, 0) << third.output;
  EXPECT_CONTAINS(third.output, "took over the stale lock " + (ckpt / ".lock").string() + " of pid " +
                                    std::to_string(first.pid()));
  EXPECT_CONTAINS(third.output, "\"event\":\"resumed\"");
  EXPECT_FALSE(fs::exists(ckpt / ".lock")) << "released at exit";
  EXPECT_FALSE(fs::exists(t.path / "run3" / ".lock")) << "released at exit";
}

TEST(CheckpointLock, ALockRecordedByAnotherHostIsRefused) {
  TempDir t;
  const fs::path ckpt = t.path / "ckpt";
  fs::create_directories(ckpt);
  std::ofstream(ckpt / ".lock") << "host=elsewhere.example\npid=4242\nstarted=2026-01-01 00:00:00 +0000\n";
  const CommandResult r = run_command(deeptrain_cmd("train " + no_data_config(t) + " --checkpoint-dir " +
                                                    ckpt.string() + " --run-dir " + (t.path / "run").string()));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_CONTAINS(r.output, "checkpoint directory " + ckpt.string() +
                                " is locked by pid 4242 on host elsewhere.example (started 2026-01-01");
  EXPECT_CONTAINS(r.output, "if it has ended, remove " + (ckpt / ".lock").string());
  expect_no_training(r);
  EXPECT_TRUE(fs::exists(ckpt / ".lock")) << "another host's lock is not ours to remove";
}

}  // namespace
