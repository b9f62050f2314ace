// Checkpoints (core/io/checkpoint.h): bit-exact round trips of parameters and optimizer state,
// every damage refused with the file named, the fallback to the previous good checkpoint,
// pruning, processes killed in the middle of a save, chunking of large tensors, .npz export,
// the --checkpoint-every parser. No training: synthetic gradients drive the optimizer.
#include <gtest/gtest.h>

#include "error_util.h"
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "core/config.h"
#include "core/io/checkpoint.h"
#include "core/io/npz.h"
#include "core/random.h"

namespace fs = std::filesystem;
using namespace deeptrain;
using namespace deeptrain::io;

namespace {

// A fresh directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            fmt::format("deeptrain-ckpt-{}-{}-{}", info->name(), ::getpid(), counter_++);
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string str() const { return path_.string(); }
  std::string operator/(const std::string& s) const { return (path_ / s).string(); }

 private:
  fs::path path_;
  static inline int counter_ = 0;
};

struct Model {
  std::unique_ptr<Net> net;
  std::unique_ptr<Optimizer> opt;
};

Model make_model(const std::string& preset, proto::OptimizerType type, uint64_t init_seed) {
  proto::ModelConfig mc;
  mc.set_preset(preset);
  Model m;
  m.net = std::make_unique<Net>(mc, Shape{1, 28, 28}, 10, DType::f32);
  m.net->init_params(init_seed);
  proto::OptimizerConfig oc;
  oc.set_type(type);
  oc.set_lr(1e-3f);
  m.opt = make_optimizer(oc, m.net->num_params());
  return m;
}

// Optimizer steps [first, first + count) with gradients drawn from (step, element).
void synthetic_steps(Model& m, int64_t first, int64_t count) {
  Tensor& g = m.net->compute_grads();
  for (int64_t s = first; s < first + count; ++s) {
    const RandomStream rs{1234, uint64_t(s)};
    for (int64_t i = 0; i < g.numel(); ++i) g.data<float>()[i] = float(0.01 * rs.normal(uint64_t(i)));
    m.opt->step(m.net->mutable_compute_params(), g, 1e-3f);
  }
}

TrainingState captured(Model& m, int64_t step) {
  TrainingState s = capture(*m.net, *m.opt);
  s.global_step = step;
  s.steps_per_epoch = 600;
  s.epoch = step / 600;
  s.step_in_epoch = step % 600;
  s.seed = 7;
  s.config.set_name("checkpoint-test");
  s.config.mutable_run()->set_seed(7);
  s.config.mutable_schedule()->set_batch_size(100);
  s.config.mutable_optimizer()->set_type(proto::ADAM);
  s.world_size = 2;
  proto::EpochMetrics h;
  h.set_epoch(1);
  h.set_step(600);
  h.set_train_loss(0.25);
  h.set_test_accuracy(0.98);
  s.history = {h};
  return s;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

void expect_same_training_state(Model& a, Model& b) {
  EXPECT_TRUE(same_bytes(a.net->params(), b.net->params()));
  EXPECT_EQ(a.opt->steps_taken(), b.opt->steps_taken());
  auto sa = a.opt->state(), sb = b.opt->state();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) EXPECT_TRUE(same_bytes(*sa[i].second, *sb[i].second)) << sa[i].first;
}

void flip_byte(const std::string& path, int64_t at) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(at);
  char c = 0;
  f.read(&c, 1);
  c = char(c ^ 0x5a);
  f.seekp(at);
  f.write(&c, 1);
}

std::vector<std::string> dir_names(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename());
  std::sort(out.begin(), out.end());
  return out;
}

// ---------------------------------------------------------------- round trips

TEST(Checkpoint, ResumeIsBitIdenticalToTrainingStraightThrough) {
  TempDir dir;
  Model straight = make_model("deep_convnet", proto::ADAM, 1);
  synthetic_steps(straight, 0, 6);

  Model first = make_model("deep_convnet", proto::ADAM, 1);
  synthetic_steps(first, 0, 3);
  const std::string path = save_checkpoint(dir.str(), captured(first, 3), 3);
  EXPECT_EQ(path, dir / "ckpt-0000000003");

  Model resumed = make_model("deep_convnet", proto::ADAM, 99);  // other init: all must be overwritten
  const TrainingState s = load_checkpoint(path);
  restore_into(s, *resumed.net, *resumed.opt);
  expect_same_training_state(first, resumed);
  synthetic_steps(resumed, 3, 3);
  expect_same_training_state(straight, resumed);

  EXPECT_EQ(s.global_step, 3);
  EXPECT_EQ(s.epoch, 0);
  EXPECT_EQ(s.step_in_epoch, 3);
  EXPECT_EQ(s.steps_per_epoch, 600);
  EXPECT_EQ(s.seed, 7u);
  EXPECT_EQ(s.optimizer, "adam");
  EXPECT_EQ(s.optimizer_steps, 3);
  EXPECT_EQ(s.world_size, 2);
  EXPECT_EQ(s.config.name(), "checkpoint-test");
  EXPECT_EQ(s.model.layer_size(), first.net->config().layer_size());
  ASSERT_EQ(s.history.size(), 1u);
  EXPECT_EQ(s.history[0].test_accuracy(), 0.98);
  EXPECT_EQ(s.producer, "deeptrain " DEEPTRAIN_VERSION);
}

TEST(Checkpoint, LayerStateIsSavedAndRestored) {
  TempDir dir;
  proto::ExperimentConfig cfg = load_config(DEEPTRAIN_SOURCE_DIR "/examples/vgg_mnist.prototxt");
  auto net = std::make_unique<Net>(cfg.model(), Shape{1, 28, 28}, 10, DType::f32);
  auto opt = make_optimizer(cfg.optimizer(), net->num_params());
  net->init_params(3);
  TrainingState s = capture(*net, *opt);
  int state_tensors = 0;
  for (NamedTensor& t : s.tensors)
    if (t.name.starts_with("state/")) {
      ++state_tensors;
      for (int64_t i = 0; i < t.tensor.numel(); ++i) t.tensor.data<double>()[i] = 0.5 + double(i);
    }
  ASSERT_GT(state_tensors, 0);
  const std::string path = save_checkpoint(dir.str(), s, 0);
  auto net2 = std::make_unique<Net>(cfg.model(), Shape{1, 28, 28}, 10, DType::f32);
  auto opt2 = make_optimizer(cfg.optimizer(), net2->num_params());
  restore_into(load_checkpoint(path), *net2, *opt2);
  const TrainingState back = capture(*net2, *opt2);
  ASSERT_EQ(back.tensors.size(), s.tensors.size());
  for (size_t i = 0; i < s.tensors.size(); ++i)
    EXPECT_TRUE(same_bytes(s.tensors[i].tensor, back.tensors[i].tensor)) << s.tensors[i].name;
}

TEST(Checkpoint, SavingTheSameStepAgainReplacesIt) {
  TempDir dir;
  Model m = make_model("deep_convnet", proto::ADAM, 1);
  save_checkpoint(dir.str(), captured(m, 5), 3);
  synthetic_steps(m, 0, 1);
  save_checkpoint(dir.str(), captured(m, 5), 3);
  Model back = make_model("deep_convnet", proto::ADAM, 2);
  restore_into(load_checkpoint(dir / "ckpt-0000000005"), *back.net, *back.opt);
  expect_same_training_state(m, back);
  EXPECT_EQ(dir_names(dir.str()), std::vector<std::string>{"ckpt-0000000005"});
}

TEST(Checkpoint, RefusesAnotherModelOrOptimizerAndLeavesTheTargetUntouched) {
  TempDir dir;
  Model simple = make_model("simple_convnet", proto::ADAM, 1);
  const std::string p1 = save_checkpoint(dir.str(), captured(simple, 1), 0);
  Model target = make_model("deep_convnet", proto::ADAM, 5);
  Model untouched = make_model("deep_convnet", proto::ADAM, 5);
  std::string e = error_of([&] { restore_into(load_checkpoint(p1), *target.net, *target.opt); });
  EXPECT_CONTAINS(e, "parameter 0 is 'conv1.W' (30, 1, 5, 5)");
  EXPECT_CONTAINS(e, "the model's is 'conv1.W' (16, 1, 3, 3)");
  expect_same_training_state(target, untouched);

  Model adam = make_model("deep_convnet", proto::ADAM, 1);
  const std::string p2 = save_checkpoint(dir.str(), captured(adam, 2), 0);
  Model sgd = make_model("deep_convnet", proto::SGD, 1);
  e = error_of([&] { restore_into(load_checkpoint(p2), *sgd.net, *sgd.opt); });
  EXPECT_CONTAINS(e, "tensor 'optim/m' has no place in this run");
  EXPECT_CONTAINS(e, "optimizer 'adam', this one is 'sgd'");
  const std::string p3 = save_checkpoint(dir.str(), captured(sgd, 3), 0);
  e = error_of([&] { restore_into(load_checkpoint(p3), *adam.net, *adam.opt); });
  EXPECT_CONTAINS(e, "has no tensor 'optim/m' (checkpoint of optimizer 'sgd', this one is 'adam')");
}

TEST(Checkpoint, ResumeCompatibilityNamesTheField) {
  Model m = make_model("deep_convnet", proto::ADAM, 1);
  const TrainingState s = captured(m, 10);
  proto::ExperimentConfig cfg = s.config;
  EXPECT_EQ(error_of([&] { check_resume_compatible(s, cfg, 600); }), "(no error)");
  cfg.mutable_run()->set_seed(8);
  EXPECT_CONTAINS(error_of([&] { check_resume_compatible(s, cfg, 600); }),
                  "saved with run.seed 7, this run has 8");
  cfg = s.config;
  cfg.mutable_schedule()->set_batch_size(200);
  EXPECT_CONTAINS(error_of([&] { check_resume_compatible(s, cfg, 300); }), "schedule.batch_size");
  cfg = s.config;
  EXPECT_CONTAINS(error_of([&] { check_resume_compatible(s, cfg, 599); }), "steps per epoch");
}

// ---------------------------------------------------------------- damage

struct Saved {
  TempDir dir;
  std::string path, tensors, manifest;
};

std::unique_ptr<Saved> save_one(int64_t step = 400) {
  auto s = std::make_unique<Saved>();
  Model m = make_model("deep_convnet", proto::ADAM, 1);
  synthetic_steps(m, 0, 1);
  s->path = save_checkpoint(s->dir.str(), captured(m, step), 0);
  s->tensors = s->path + "/tensors.pb";
  s->manifest = s->path + "/MANIFEST.pb";
  return s;
}

TEST(Checkpoint, AFlippedByteInTheTensorsIsRefusedNamingTensorAndChunk) {
  auto s = save_one();
  const proto::CheckpointManifest m = read_checkpoint_manifest(s->path);
  ASSERT_EQ(m.tensor(0).name(), "param/conv1.W");
  flip_byte(s->tensors, m.tensor(0).file_bytes() - 10);  // inside conv1.W's data
  EXPECT_EQ(error_of([&] { load_checkpoint(s->path); }),
            s->tensors + ": tensor 'param/conv1.W' chunk 0 fails its CRC-32 check");
}

TEST(Checkpoint, EveryFlippedByteAnywhereIsRefused) {
  auto s = save_one();
  const int64_t tensors_size = int64_t(fs::file_size(s->tensors));
  // Every byte of the manifest; bytes all over tensors.pb (the first record's framing included).
  const int64_t manifest_size = int64_t(fs::file_size(s->manifest));
  for (int64_t at = 0; at < manifest_size; ++at) {
    flip_byte(s->manifest, at);
    EXPECT_CONTAINS(error_of([&] { read_checkpoint_manifest(s->path); }), s->manifest);
    flip_byte(s->manifest, at);
  }
  std::vector<int64_t> spots = {0, 1, 2, 3, 4, 5, 8, 16, 20, 24, 30, tensors_size - 1};
  for (int64_t at = 37; at < tensors_size; at += tensors_size / 40) spots.push_back(at);
  for (int64_t at : spots) {
    flip_byte(s->tensors, at);
    EXPECT_CONTAINS(error_of([&] { load_checkpoint(s->path); }), s->tensors) << "byte " << at;
    flip_byte(s->tensors, at);
  }
  EXPECT_EQ(error_of([&] { load_checkpoint(s->path); }), "(no error)");
}

TEST(Checkpoint, TruncatedFilesAreRefusedWithTheSizes) {
  auto s = save_one();
  const auto size = fs::file_size(s->tensors);
  fs::resize_file(s->tensors, 1024);
  EXPECT_EQ(error_of([&] { load_checkpoint(s->path); }),
            fmt::format("{}: truncated: manifest says {} bytes, file has 1024", s->tensors, size));
  fs::resize_file(s->tensors, 0);
  EXPECT_CONTAINS(error_of([&] { load_checkpoint(s->path); }), "file has 0");

  const auto msize = fs::file_size(s->manifest);
  for (auto cut : {msize - 1, msize / 2, uintmax_t(3), uintmax_t(0)}) {
    fs::resize_file(s->manifest, cut);
    EXPECT_CONTAINS(error_of([&] { load_checkpoint(s->path); }), s->manifest + ": ") << "cut " << cut;
  }
  fs::remove(s->manifest);
  EXPECT_EQ(error_of([&] { load_checkpoint(s->path); }),
            s->path + ": incomplete checkpoint: no MANIFEST.pb (its save did not finish)");
}

TEST(Checkpoint, FindLatestFallsBackPastCorruptAndIncompleteOnes) {
  TempDir dir;
  Model m = make_model("deep_convnet", proto::ADAM, 1);
  for (int64_t step : {100, 200, 300}) save_checkpoint(dir.str(), captured(m, step), 0);
  flip_byte(dir / "ckpt-0000000300/tensors.pb", 100);
  fs::create_directory(dir / "ckpt-0000000400");  // a save that never finished
  std::ofstream(dir / "ckpt-0000000400/tensors.pb") << "partial";
  fs::create_directory(dir / "unrelated");

  std::vector<std::string> skipped;
  EXPECT_EQ(find_latest_checkpoint(dir.str(), &skipped), dir / "ckpt-0000000200");
  ASSERT_EQ(skipped.size(), 2u);
  EXPECT_CONTAINS(skipped[0], "ckpt-0000000400: incomplete checkpoint: no MANIFEST.pb");
  EXPECT_CONTAINS(skipped[1], "ckpt-0000000300/tensors.pb: tensor 'param/conv1.W' chunk 0");

  // --resume PATH / inspect / export: a checkpoint is taken as given (damaged or not), a
  // directory of checkpoints gives its newest valid one.
  skipped.clear();
  EXPECT_EQ(resolve_checkpoint(dir.str(), &skipped), dir / "ckpt-0000000200");
  EXPECT_EQ(skipped.size(), 2u);
  EXPECT_EQ(resolve_checkpoint(dir / "ckpt-0000000300/"), dir / "ckpt-0000000300/");
  EXPECT_EQ(resolve_checkpoint(dir / "ckpt-0000000200/MANIFEST.pb"), dir / "ckpt-0000000200/MANIFEST.pb");
  EXPECT_TRUE(load_checkpoint(dir / "ckpt-0000000200/").global_step == 200);
  EXPECT_EQ(error_of([&] { resolve_checkpoint(dir / "unrelated"); }),
            dir / "unrelated" + ": no complete, valid checkpoint (it holds no ckpt-* directory)");
  EXPECT_EQ(error_of([&] { resolve_checkpoint(dir / "missing"); }),
            dir / "missing" + ": no such checkpoint or checkpoint directory");

  save_checkpoint(dir / "ckpt-runs/", captured(m, 7), 0);  // a root named like a checkpoint
  EXPECT_EQ(resolve_checkpoint(dir / "ckpt-runs"), dir / "ckpt-runs/ckpt-0000000007");

  EXPECT_EQ(find_latest_checkpoint(dir / "nothing-here"), std::nullopt);
  TempDir empty;
  EXPECT_EQ(find_latest_checkpoint(empty.str()), std::nullopt);
}

TEST(Checkpoint, KeepLastPrunesOnlyCompleteCheckpointsOfOurs) {
  TempDir dir;
  Model m = make_model("deep_convnet", proto::ADAM, 1);
  fs::create_directory(dir / "ckpt-0000000001");  // not a checkpoint of ours: stays
  std::ofstream(dir / "ckpt-0000000001/README") << "mine";
  fs::create_directory(dir / "notes");
  for (int64_t step : {10, 20, 30, 40, 50}) save_checkpoint(dir.str(), captured(m, step), 2);
  EXPECT_EQ(dir_names(dir.str()),
            (std::vector<std::string>{"ckpt-0000000001", "ckpt-0000000040", "ckpt-0000000050", "notes"}));
  // An older step written after newer ones (a resume from an older checkpoint) is kept.
  save_checkpoint(dir.str(), captured(m, 45), 2);
  EXPECT_EQ(dir_names(dir.str()),
            (std::vector<std::string>{"ckpt-0000000001", "ckpt-0000000045", "ckpt-0000000050", "notes"}));
}

// ---------------------------------------------------------------- killed in the middle

// A child process saves step `step` and SIGKILLs itself at the `nth` time save_checkpoint
// reaches `phase` (nth 0: kill at a random time instead, from the parent).
void save_in_child_and_kill(const std::string& dir, const TrainingState& s, const char* phase, int nth) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int seen = 0;
    set_save_phase_hook([&](const char* p) {
      if (std::strcmp(p, phase) == 0 && ++seen == nth) ::raise(SIGKILL);
    });
    try {
      save_checkpoint(dir, s, 2);
    } catch (...) {
      ::_exit(3);
    }
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << phase << " " << nth;
}

// Every ckpt-* directory in dir is a whole, loadable checkpoint.
void expect_every_checkpoint_loads(const std::string& dir) {
  for (const std::string& n : dir_names(dir)) {
    if (!n.starts_with("ckpt-")) continue;
    EXPECT_EQ(error_of([&] { load_checkpoint(dir + "/" + n); }), "(no error)") << n;
  }
}

TEST(Checkpoint, KillingASaveAtAnyPhaseLeavesThePreviousCheckpointLoadable) {
  TempDir dir;
  Model m = make_model("deep_convnet", proto::ADAM, 1);
  save_checkpoint(dir.str(), captured(m, 100), 2);
  synthetic_steps(m, 0, 1);
  const TrainingState next = captured(m, 200);
  const std::vector<std::pair<const char*, int>> points = {
      {"tmp-dir", 1}, {"chunk", 1}, {"chunk", 10}, {"tensors-synced", 1}, {"manifest-written", 1}};
  for (auto [phase, nth] : points) {
    save_in_child_and_kill(dir.str(), next, phase, nth);
    EXPECT_EQ(find_latest_checkpoint(dir.str()), dir / "ckpt-0000000100") << phase;
    expect_every_checkpoint_loads(dir.str());
  }
  // After the rename the new one is complete, whatever happens next.
  save_in_child_and_kill(dir.str(), next, "renamed", 1);
  EXPECT_EQ(find_latest_checkpoint(dir.str()), dir / "ckpt-0000000200");
  // Replacing a checkpoint of the same step, killed halfway: the old one or the new one, whole.
  save_in_child_and_kill(dir.str(), captured(m, 200), "manifest-written", 1);
  EXPECT_EQ(find_latest_checkpoint(dir.str()), dir / "ckpt-0000000200");
  // The next save removes what the killed ones left behind.
  save_checkpoint(dir.str(), captured(m, 300), 2);
  EXPECT_EQ(dir_names(dir.str()), (std::vector<std::string>{"ckpt-0000000200", "ckpt-0000000300"}));
}

TEST(Checkpoint, KillingASaveAtRandomTimesNeverLeavesABrokenCheckpoint) {
  TempDir dir;
  Model m = make_model("deep_convnet", proto::ADAM, 1);
  save_checkpoint(dir.str(), captured(m, 1), 2);
  std::mt19937 rng(42);
  for (int round = 0; round < 8; ++round) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {  // saves until killed
      for (int64_t step = 1000 * (round + 1);; ++step) save_checkpoint(dir.str(), captured(m, step), 2);
    }
    ::usleep(useconds_t(std::uniform_int_distribution<int>(2000, 60000)(rng)));
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    expect_every_checkpoint_loads(dir.str());
    EXPECT_NE(find_latest_checkpoint(dir.str()), std::nullopt);
  }
}

// ---------------------------------------------------------------- large tensors, export, inspect

TEST(Checkpoint, ATensorOver64MiBIsChunked) {
  TempDir dir;
  TrainingState s;
  s.global_step = 1;
  const int64_t n = 25'000'000;  // 100 MB of f32: two chunks
  Tensor big = Tensor::empty(Shape{n}, DType::f32);
  for (int64_t i = 0; i < n; ++i) big.data<float>()[i] = float(i % 1000003);
  s.tensors = {{"optim/big", big}, {"param/small", Tensor::zeros(Shape{3}, DType::f64)}};
  const std::string path = save_checkpoint(dir.str(), s, 0);
  const proto::CheckpointManifest m = read_checkpoint_manifest(path);
  ASSERT_EQ(m.tensor_size(), 2);
  EXPECT_EQ(m.tensor(0).chunk_crc32_size(), 2);  // 64 MiB + 31.4 MiB
  EXPECT_EQ(m.tensor(1).chunk_crc32_size(), 1);
  EXPECT_GT(m.file(0).size_bytes(), 100'000'000);
  const TrainingState back = load_checkpoint(path);
  ASSERT_EQ(back.tensors.size(), 2u);
  EXPECT_TRUE(same_bytes(back.tensors[0].tensor, big));
  EXPECT_EQ(back.tensors[0].tensor.shape(), Shape{n});
  flip_byte(path + "/tensors.pb", kCheckpointChunkBytes + 1000);  // in the second chunk
  EXPECT_EQ(error_of([&] { load_checkpoint(path); }),
            path + "/tensors.pb: tensor 'optim/big' chunk 1 fails its CRC-32 check");
}

TEST(Checkpoint, ExportNpzHoldsTheModelTensorsUnderOurNames) {
  TempDir dir;
  Model m = make_model("deep_convnet", proto::ADAM, 1);
  synthetic_steps(m, 0, 1);
  const std::string path = save_checkpoint(dir.str(), captured(m, 1), 0);
  export_npz(load_checkpoint(path), dir / "w.npz");
  const std::map<std::string, Tensor> arrays = read_npz(dir / "w.npz");
  EXPECT_EQ(arrays.size(), m.net->param_entries().size());  // no optimizer state
  for (const ParamEntry& e : m.net->param_entries()) {
    ASSERT_TRUE(arrays.count(e.name)) << e.name;
    EXPECT_TRUE(same_bytes(arrays.at(e.name), m.net->param_view(e))) << e.name;
    EXPECT_EQ(arrays.at(e.name).shape(), e.shape);
  }
}

TEST(Checkpoint, DescribeReadsTheManifestOnly) {
  auto s = save_one();
  std::string d = describe_checkpoint(s->path);
  EXPECT_CONTAINS(d, "global step 400: epoch 1 (1-based, as train prints it), 400 of its 600 steps done");
  EXPECT_CONTAINS(d, "2 ranks");
  EXPECT_CONTAINS(d, "adam, 1 steps taken, state m, v");
  EXPECT_CONTAINS(d, "param/conv1.W");
  EXPECT_CONTAINS(d, "(16, 1, 3, 3)");
  EXPECT_CONTAINS(d, "epoch   1");
  EXPECT_CONTAINS(d, "name: \"checkpoint-test\"");
  fs::resize_file(s->tensors, 10);  // not read without verify
  d = describe_checkpoint(s->path);
  EXPECT_CONTAINS(d, "(the file has 10!)");
  EXPECT_CONTAINS(error_of([&] { describe_checkpoint(s->path, true); }), "truncated");
}

TEST(Checkpoint, ParseEvery) {
  EXPECT_EQ(parse_every("500").steps, 500);
  EXPECT_EQ(parse_every("1").steps, 1);
  EXPECT_EQ(parse_every("30s").seconds, 30);
  EXPECT_EQ(parse_every("10m").seconds, 600);
  EXPECT_EQ(parse_every("2h").seconds, 7200);
  EXPECT_EQ(parse_every("1.5h").seconds, 5400);
  EXPECT_EQ(parse_every("10m").steps, 0);
  EXPECT_EQ(error_of([] { parse_every("10x"); }),
            "--checkpoint-every '10x': unknown unit (s, m or h) (give a number of steps such as 500, "
            "or a time such as 30s, 10m, 2h)");
  for (const char* bad : {"", "0", "-5", "+5", "m", "0s", "-1m", "1.5", "5 m", "abc", "99999999999999999999"})
    EXPECT_CONTAINS(error_of([&] { parse_every(bad, "--every"); }), "--every '");
}

// ---------------------------------------------------------------- timing (informational)

TEST(Checkpoint, SaveAndLoadTimes) {
  for (const char* config : {"deep_convnet_mnist", "vgg_mnist", "resnet20_fashion_mnist", "googlenet_mnist"}) {
    TempDir dir;
    proto::ExperimentConfig cfg =
        load_config(std::string(DEEPTRAIN_SOURCE_DIR "/examples/") + config + ".prototxt");
    Net net(cfg.model(), Shape{1, 28, 28}, 10, DType::f32);
    auto opt = make_optimizer(cfg.optimizer(), net.num_params());
    TrainingState s = capture(net, *opt);
    std::vector<double> save_ms, load_ms;
    std::string path;
    for (int i = 0; i < 7; ++i) {
      s.global_step = i;
      auto t0 = std::chrono::steady_clock::now();
      path = save_checkpoint(dir.str(), s, 2);
      auto t1 = std::chrono::steady_clock::now();
      load_checkpoint(path);
      auto t2 = std::chrono::steady_clock::now();
      save_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      load_ms.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
    }
    std::sort(save_ms.begin(), save_ms.end());
    std::sort(load_ms.begin(), load_ms.end());
    std::printf("[timing] %-24s %9lld params (%s): %8lld bytes, save %.1f ms, load %.1f ms (median of 7)\n",
                config, (long long)net.num_params(), opt->name(),
                (long long)(fs::file_size(path + "/tensors.pb") + fs::file_size(path + "/MANIFEST.pb")),
                save_ms[3], load_ms[3]);
  }
}

}  // namespace
