// deeptrain verify-invariance: shows, on the user's own machines, that the rank and thread
// counts do not change what is trained (docs/exact_mode.md). It trains the config for K steps
// once per (ranks, threads) pair, each a real job (mpirun for more than one rank) that stops
// with a checkpoint, then compares every checkpoint's tensors with the first's.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>

#include <CLI/CLI.hpp>

#include "app/commands.h"
#include "core/config.h"
#include "core/io/checkpoint.h"
#include "core/io/read_file.h"

namespace deeptrain::app {
namespace {

namespace fs = std::filesystem;

struct VerifyOptions {
  std::string config;
  std::vector<int> ranks{1, 2, 4};
  std::vector<int> threads{1, 2};
  int64_t steps = 20;
  std::string mpirun = "mpirun";
  std::string work_dir;       // empty: a temporary directory, removed afterwards
  bool default_path = false;  // compare the default (non-exact) path instead
  ConfigOverrides overrides;  // --data-dir, --train-limit, --batch-size
};

std::string self_binary() {
  std::error_code ec;
  const fs::path p = fs::read_symlink("/proc/self/exe", ec);
  if (ec) fail("verify-invariance: cannot find this program's path (/proc/self/exe): {}", ec.message());
  return p.string();
}

std::string tail(const std::string& text, size_t lines) {
  size_t pos = text.size();
  for (size_t n = 0; n <= lines && pos > 0; ++n) pos = text.rfind('\n', pos - 1);
  return pos == std::string::npos ? text : text.substr(pos + 1);
}

// Runs argv with stdout and stderr into log; throws naming the command when it fails.
void run_logged(const std::vector<std::string>& argv, const std::string& log) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) fail("verify-invariance: fork failed: {}", std::strerror(errno));
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    execvp(args[0], args.data());
    std::fprintf(stderr, "cannot run %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string cmd, log_tail;
    for (const std::string& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
    try {
      log_tail = tail(io::read_file(log), 15);
    } catch (const Error& e) {  // the command could not even open its log: say so instead
      log_tail = e.what();
    }
    fail("verify-invariance: `{}` failed ({}); the end of {}:\n{}", cmd,
         WIFEXITED(status) ? fmt::format("exit {}", WEXITSTATUS(status)) : "killed by a signal",
         log, log_tail);
  }
}

struct Diff {
  double params = 0, optim = 0, state = 0;  // max |a - b| per kind of tensor
  bool tensors_file_identical = false;
  double largest() const { return std::max({params, optim, state}); }
};

double max_abs_diff(const Tensor& a, const Tensor& b) {
  DT_CHECK(a.numel() == b.numel() && a.dtype() == b.dtype(), "tensors of different shapes");
  const Tensor x = a.to(DType::f64), y = b.to(DType::f64);
  double m = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double d = std::fabs(x.data<double>()[i] - y.data<double>()[i]);
    m = std::max(m, std::isnan(d) ? INFINITY : d);
  }
  // Equal values with different bits (-0 and +0) still count as a difference.
  if (m == 0 && std::memcmp(a.raw(), b.raw(), a.nbytes()) != 0) m = 1e-300;
  return m;
}

Diff compare(const io::TrainingState& ref, const io::TrainingState& run, const std::string& ref_dir,
             const std::string& run_dir) {
  if (run.global_step != ref.global_step)
    fail("verify-invariance: {} stopped at step {}, {} at step {}", run_dir, run.global_step,
         ref_dir, ref.global_step);
  std::map<std::string, const Tensor*> by_name;
  for (const io::NamedTensor& t : ref.tensors) by_name[t.name] = &t.tensor;
  Diff d;
  for (const io::NamedTensor& t : run.tensors) {
    const auto it = by_name.find(t.name);
    if (it == by_name.end()) fail("verify-invariance: {} has tensor {}, {} has not", run_dir, t.name, ref_dir);
    const double m = max_abs_diff(*it->second, t.tensor);
    double& kind = t.name.rfind("param/", 0) == 0 ? d.params
                   : t.name.rfind("optim/", 0) == 0 ? d.optim : d.state;
    kind = std::max(kind, m);
  }
  d.tensors_file_identical =
      io::read_file(ref_dir + "/tensors.pb") == io::read_file(run_dir + "/tensors.pb");
  return d;
}

std::string list(const std::vector<int>& v) {
  std::string s;
  for (int x : v) s += (s.empty() ? "" : ", ") + std::to_string(x);
  return s;
}

void run_verify(const VerifyOptions& o) {
  // The config is read here first, so that a bad one fails before any job starts.
  // Exact mode computes with the reference kernels: its runs take backend cpu-ref.
  ConfigOverrides ov = o.overrides;
  if (!o.default_path) {
    ov.exact = true;
    ov.backend = backend_word(config_defaults::kExactBackend);
  }
  const proto::ExperimentConfig cfg = load_config(o.config, ov);
  const bool exact = cfg.distributed().exact();
  const std::string self = self_binary();
  // Without --work-dir the runs go to a temporary directory, removed on every way out.
  struct TempDir {
    std::string path;
    ~TempDir() {
      std::error_code ec;
      if (!path.empty()) fs::remove_all(path, ec);
    }
  } temp;
  std::string work = o.work_dir;
  if (work.empty()) {
    char tmpl[] = "/tmp/deeptrain-verify-XXXXXX";
    if (!mkdtemp(tmpl)) fail("verify-invariance: cannot create a temporary directory: {}", std::strerror(errno));
    work = temp.path = tmpl;
  }
  fs::create_directories(work);
  std::printf("verify-invariance: %s, %ld steps, %s; ranks %s x threads %s; runs in %s\n",
              o.config.c_str(), long(o.steps),
              exact ? fmt::format("exact mode (micro-shards of {})", cfg.distributed().micro_batch()).c_str()
                    : "the default path",
              list(o.ranks).c_str(), list(o.threads).c_str(), work.c_str());
  std::printf("%5s %7s %6s %14s %14s %14s %12s\n", "ranks", "threads", "step", "params",
              "optimizer", "layer state", "tensors.pb");
  std::fflush(stdout);
  std::string ref_dir, worst_run;
  io::TrainingState ref;
  double worst = 0;
  bool all_files_identical = true;
  for (int r : o.ranks)
    for (int t : o.threads) {
      const std::string dir = fmt::format("{}/ranks{}-threads{}", work, r, t);
      fs::create_directories(dir);
      std::vector<std::string> argv;
      if (r > 1) {
        argv = {o.mpirun, "-n", std::to_string(r), "--oversubscribe"};
        if (geteuid() == 0) argv.push_back("--allow-run-as-root");
      }
      for (const std::string& a :
           {self, std::string("train"), o.config, std::string("--max-steps"), std::to_string(o.steps),
            std::string("--threads"), std::to_string(t), std::string("--checkpoint-dir"), dir + "/ckpt",
            std::string("--run-dir"), dir + "/run", std::string("--json")})
        argv.push_back(a);
      if (exact)
        argv.insert(argv.end(), {"--exact", "--backend", backend_word(config_defaults::kExactBackend)});
      if (o.overrides.data_dir) argv.insert(argv.end(), {"--data-dir", *o.overrides.data_dir});
      if (o.overrides.train_limit)
        argv.insert(argv.end(), {"--train-limit", std::to_string(*o.overrides.train_limit)});
      if (o.overrides.batch_size)
        argv.insert(argv.end(), {"--batch-size", std::to_string(*o.overrides.batch_size)});
      run_logged(argv, dir + "/log.txt");
      const std::string ckpt = io::resolve_checkpoint(dir + "/ckpt");
      io::TrainingState st = io::load_checkpoint(ckpt);
      if (ref_dir.empty()) {
        ref_dir = ckpt;
        ref = std::move(st);
        std::printf("%5d %7d %6ld %14s %14s %14s %12s\n", r, t, long(ref.global_step),
                    "(reference)", "", "", "");
        std::fflush(stdout);
        continue;
      }
      const Diff d = compare(ref, st, ref_dir, ckpt);
      all_files_identical &= d.tensors_file_identical;
      if (d.largest() > worst || (worst_run.empty() && !d.tensors_file_identical)) {
        worst = std::max(worst, d.largest());
        worst_run = fmt::format("{} ranks x {} threads", r, t);
      }
      std::printf("%5d %7d %6ld %14.3g %14.3g %14.3g %12s\n", r, t, long(st.global_step),
                  d.params, d.optim, d.state, d.tensors_file_identical ? "identical" : "differs");
      std::fflush(stdout);
    }
  if (worst == 0 && all_files_identical) {
    std::printf("largest difference: 0: bit-identical parameters, optimizer state, layer state "
                "and checkpoint tensors on %s ranks x %s threads\n",
                list(o.ranks).c_str(), list(o.threads).c_str());
    return;
  }
  fail("verify-invariance: not bit-identical: largest difference {:.3g} ({} vs {} ranks x {} "
       "threads){}", worst, worst_run, o.ranks.front(), o.threads.front(),
       exact ? "" : "; the default path sums in an order that depends on the rank count, "
                    "exact mode (--exact, distributed.exact) does not");
}

}  // namespace

void add_verify_invariance_command(CLI::App& cli) {
  auto o = std::make_shared<VerifyOptions>();
  CLI::App* sub = cli.add_subcommand(
      "verify-invariance",
      "train a config for a few steps on several rank and thread counts and compare the "
      "checkpoints: exact mode's guarantee, checked on this machine or cluster");
  sub->add_option("config", o->config, "experiment config (protobuf text format)")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("--ranks", o->ranks, "rank counts")->delimiter(',')->capture_default_str();
  sub->add_option("--threads", o->threads, "thread counts per rank")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--steps", o->steps, "global steps each run trains")
      ->capture_default_str()
      ->check(positive_integer());
  sub->add_option("--mpirun", o->mpirun, "the launcher for more than one rank (Open MPI's "
                  "mpirun; default: mpirun on PATH)");
  sub->add_option("--work-dir", o->work_dir,
                  "keep the runs (logs, checkpoints) here (default: a temporary directory)");
  sub->add_flag("--default-path", o->default_path,
                "compare the default path instead of exact mode (shows how much it differs)");
  sub->add_option("--data-dir", o->overrides.data_dir, "override data.dir");
  sub->add_option("--train-limit", o->overrides.train_limit, "use only the first N training samples");
  sub->add_option("--batch-size", o->overrides.batch_size, "override schedule.batch_size");
  sub->footer(
      "Exit status 0 when every run's parameters, optimizer state, layer state and checkpoint "
      "tensors equal the first run's bit for bit, 1 when not, 2 for bad input.\n\n"
      "Examples:\n"
      "  deeptrain verify-invariance examples/deep_convnet_mnist.prototxt --ranks 1,2,4 --steps 20\n"
      "  deeptrain verify-invariance examples/resnet20_fashion_mnist.prototxt --ranks 1,3 --threads 1,2\n"
      "  deeptrain verify-invariance examples/deep_convnet_mnist.prototxt --default-path --ranks 1,2");
  sub->callback([o] { run_verify(*o); });
}

}  // namespace deeptrain::app
