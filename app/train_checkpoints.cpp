// Checkpoints, resuming and preemption in `deeptrain train` (app/train_checkpoints.h).
#include "app/train_checkpoints.h"

#include <signal.h>

#include <filesystem>

#include "report/event_file.h"
#include "report/progress.h"

namespace deeptrain::app {
namespace {

// The one piece of global mutable state: what a signal handler may touch.
volatile sig_atomic_t g_stop_signal = 0;

extern "C" void on_stop_signal(int sig) { g_stop_signal = sig; }

double steady_now() { return report::Progress::steady_seconds(); }

}  // namespace

void install_stop_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  // SA_RESTART: a signal must not make a read, a write or MPI's polling fail with EINTR.
  // SA_RESETHAND: a second signal of the same kind ends the process at once, for a user who
  // does not want to wait for the step and the checkpoint.
  sa.sa_flags = SA_RESTART | SA_RESETHAND;
  for (int sig : {SIGTERM, SIGUSR1})
    if (::sigaction(sig, &sa, nullptr) != 0) fail("cannot install the handler of signal {}", sig);
}

bool stop_signal_received() { return g_stop_signal != 0; }

std::string stop_signal_name() {
  const int sig = g_stop_signal;
  return sig == SIGTERM ? "SIGTERM" : sig == SIGUSR1 ? "SIGUSR1" : sig ? fmt::format("signal {}", sig) : "";
}

void add_checkpoint_options(CLI::App* sub, CheckpointOptionsCli& o) {
  sub->add_option("--checkpoint-dir", o.dir,
                  "write checkpoints here (DIR/ckpt-<step>): every --checkpoint-every, at the end, "
                  "and on SIGTERM or SIGUSR1 (then exit 0)");
  sub->add_option("--checkpoint-every", o.every,
                  "N steps, or a time: 30s, 10m, 2h (default: at the end of every epoch)");
  sub->add_option("--keep-checkpoints", o.keep, "keep the newest N checkpoints (0: all)")
      ->capture_default_str()
      ->check(nonnegative_integer());
  sub->add_option("--resume", o.resume,
                  "auto: continue from the newest valid checkpoint in --checkpoint-dir (if any); "
                  "or a checkpoint's path");
}

void check_checkpoint_options(const CheckpointOptionsCli& o) {
  if (o.dir.empty()) {
    if (!o.every.empty()) fail_input("--checkpoint-every: needs --checkpoint-dir (where to write)");
    if (o.resume == "auto")
      fail_input("--resume auto: needs --checkpoint-dir (where to look for the newest checkpoint)");
  }
  if (!o.every.empty()) io::parse_every(o.every);
  if (o.keep < 0) fail_input("--keep-checkpoints: must be >= 0 (0: keep all), got {}", o.keep);
}

TrainCheckpoints::TrainCheckpoints(const CheckpointOptionsCli& o, const proto::ExperimentConfig& cfg,
                                   int64_t steps_per_epoch, int world_size, bool writer)
    : o_(o), cfg_(cfg), steps_per_epoch_(steps_per_epoch), world_size_(world_size), writer_(writer),
      last_save_time_(steady_now()) {
  check_checkpoint_options(o_);
  if (!o_.every.empty()) every_ = io::parse_every(o_.every);
}

StartPoint TrainCheckpoints::resume(Net& net, Optimizer& optimizer, Trainer& trainer,
                                    const std::function<void(const std::string&)>& note) {
  if (o_.resume.empty()) return {};
  StartPoint start = load_and_restore(net, optimizer, trainer, note);
  // Each rank read the files itself: a rank that saw other files (no shared file system, a
  // save in between) would train something else, or start afresh while the others resume.
  // Every rank takes this collective, whichever way it went.
  trainer.check_replicas(start.checkpoint.empty() ? std::string("after --resume (starting afresh)")
                                                  : "after --resume from " + start.checkpoint);
  return start;
}

StartPoint TrainCheckpoints::load_and_restore(Net& net, Optimizer& optimizer, Trainer& trainer,
                                              const std::function<void(const std::string&)>& note) {
  StartPoint start;
  const double t0 = steady_now();  // finding (auto reads and checks each candidate) and loading
  std::vector<std::string> skipped;
  std::string path;
  if (o_.resume == "auto") {
    std::optional<std::string> latest = io::find_latest_checkpoint(o_.dir, &skipped);
    for (const std::string& why : skipped) note("--resume auto: passed over " + why);
    if (!latest) {
      // A damaged run is not silently restarted from scratch: the user decides.
      if (!skipped.empty())
        fail_input("--resume auto: no valid checkpoint in {} ({} damaged, see above); remove them "
                   "to start afresh, or resume from one with --resume PATH", o_.dir, skipped.size());
      note(fmt::format("--resume auto: no checkpoint in {} yet: starting at step 0", o_.dir));
      return start;
    }
    path = *latest;
    if (!skipped.empty()) note("--resume auto: falling back to " + path);
  } else {
    path = io::resolve_checkpoint(o_.resume, &skipped);
    for (const std::string& why : skipped) note("--resume: passed over " + why);
  }
  io::TrainingState s = io::load_checkpoint(path);
  io::check_resume_compatible(s, cfg_, steps_per_epoch_);
  if (s.global_step != s.epoch * s.steps_per_epoch + s.step_in_epoch || s.step_in_epoch < 0 ||
      s.step_in_epoch >= s.steps_per_epoch)
    fail_input("{}: inconsistent position: global step {} is not epoch {} x {} steps + {} (corrupt?)",
               path, s.global_step, s.epoch, s.steps_per_epoch, s.step_in_epoch);
  io::restore_into(s, net, optimizer);
  trainer.set_global_step(s.global_step);
  start.epoch = s.epoch;
  start.progress.steps_done = s.step_in_epoch;
  start.progress.loss_sum = s.partial_epoch.loss_sum();
  start.progress.correct = s.partial_epoch.correct();
  start.progress.counted = s.partial_epoch.counted();
  start.progress.samples = s.partial_epoch.samples();
  start.progress.train_seconds = s.partial_epoch.train_seconds();
  start.history = std::move(s.history);
  start.checkpoint = path;
  note(fmt::format("resumed from {} in {:.3f} s: global step {}, epoch {}, {} of its {} steps done "
                   "(saved by {} rank{}, now {})",
                   path, steady_now() - t0, s.global_step, s.epoch + 1, s.step_in_epoch,
                   s.steps_per_epoch, s.world_size, s.world_size == 1 ? "" : "s", world_size_));
  last_saved_step_ = s.global_step;  // it is on disk already
  last_path_ = path;
  return start;
}

bool TrainCheckpoints::due(int64_t global_step) const {
  if (!writer_ || !enabled() || saved_at(global_step)) return false;
  if (every_.steps > 0) return global_step % every_.steps == 0;
  if (every_.seconds > 0) return steady_now() - last_save_time_ >= every_.seconds;
  return false;
}

bool TrainCheckpoints::due_at_epoch_end(int64_t global_step) const {
  if (!writer_ || !enabled() || saved_at(global_step)) return false;
  return due(global_step) || (every_.steps == 0 && every_.seconds == 0);
}

TrainCheckpoints::Saved TrainCheckpoints::save(Net& net, Optimizer& optimizer, int64_t global_step,
                                               int64_t epoch, const EpochProgress& progress,
                                               const std::vector<proto::EpochMetrics>& history,
                                               double learning_rate) {
  Saved out;
  if (!writer_ || !enabled()) return out;
  const double t0 = steady_now();
  check_finite_params(net, global_step, "checkpoint");
  io::TrainingState s = io::capture(net, optimizer);
  s.global_step = global_step;
  s.epoch = epoch;
  s.step_in_epoch = progress.steps_done;
  if (s.step_in_epoch == steps_per_epoch_) {  // a finished epoch: the next one starts
    s.epoch += 1;
    s.step_in_epoch = 0;
  } else {
    s.partial_epoch.set_loss_sum(progress.loss_sum);
    s.partial_epoch.set_correct(progress.correct);
    s.partial_epoch.set_counted(progress.counted);
    s.partial_epoch.set_samples(progress.samples);
    s.partial_epoch.set_train_seconds(progress.train_seconds);
  }
  s.steps_per_epoch = steps_per_epoch_;
  s.seed = cfg_.run().seed();
  s.learning_rate = learning_rate;
  s.total_steps = int64_t(cfg_.schedule().epochs()) * steps_per_epoch_;
  s.config = cfg_;
  s.history = history;
  s.world_size = world_size_;
  try {
    out.path = io::save_checkpoint(o_.dir, s, o_.keep, &out.warnings);
  } catch (const std::exception& e) {
    out.failed = e.what();
    last_save_time_ = steady_now();  // a time interval waits a whole interval to retry
    return out;
  }
  out.seconds = steady_now() - t0;
  std::error_code ec;
  for (const auto& f : std::filesystem::directory_iterator(out.path, ec))
    out.bytes += int64_t(f.file_size(ec));
  last_saved_step_ = global_step;
  last_path_ = out.path;
  last_save_time_ = steady_now();
  return out;
}

proto::EpochMetrics epoch_metrics(const EpochReport& r, double test_loss, double lr,
                                  int64_t global_step) {
  proto::EpochMetrics m;
  m.set_epoch(r.epoch);
  m.set_step(global_step);
  m.set_train_loss(r.train_loss);
  m.set_train_accuracy(r.train_accuracy);
  m.set_test_loss(test_loss);
  m.set_test_accuracy(r.test_accuracy);
  m.set_test_correct(r.test_correct);
  m.set_test_total(r.test_total);
  m.set_learning_rate(lr);
  m.set_images_per_sec(r.images_per_sec);
  m.set_train_seconds(r.train_seconds);
  m.set_wall_time(report::unix_time_now());
  return m;
}

}  // namespace deeptrain::app
