#include "distributed/watchdog.h"

#include <chrono>
#include <limits>

#include <fmt/format.h>

#include "distributed/communicator.h"

namespace deeptrain {

Watchdog::Watchdog(WatchdogOptions opt, std::string where, Expired on_expiry)
    : opt_(opt), where_(std::move(where)), on_expiry_(std::move(on_expiry)) {
  if (opt_.step_timeout_s > 0 || opt_.collective_timeout_s > 0) thread_ = std::thread([this] { run(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Watchdog::set_describer(Describe d) {
  std::lock_guard lk(mu_);
  describe_ = std::move(d);
}

void Watchdog::step_begin(int64_t step) {
  {
    std::lock_guard lk(mu_);
    step_ = step;
    in_step_ = true;
    step_start_ = now_seconds();
  }
  cv_.notify_all();
}

void Watchdog::step_end() {
  std::lock_guard lk(mu_);
  in_step_ = false;
}

void Watchdog::collective_begin(uint64_t seq, const std::string& what) {
  {
    std::lock_guard lk(mu_);
    collectives_[seq] = Pending{what, now_seconds()};
  }
  cv_.notify_all();
}

void Watchdog::collective_end(uint64_t seq) {
  std::lock_guard lk(mu_);
  collectives_.erase(seq);
}

int64_t Watchdog::step() const {
  std::lock_guard lk(mu_);
  return step_;
}

bool Watchdog::fired() const {
  std::lock_guard lk(mu_);
  return fired_;
}

void Watchdog::run() {
  std::unique_lock lk(mu_);
  const double inf = std::numeric_limits<double>::infinity();
  double prev = now_seconds();  // the loop wakes at least once a second while a deadline is set
  bool waiting_long = false;
  while (!stop_) {
    double deadline = inf;
    bool step_due = false;
    if (opt_.step_timeout_s > 0 && in_step_) deadline = step_start_ + opt_.step_timeout_s;
    // The oldest collective in flight has the earliest deadline (sequence numbers grow in time).
    if (opt_.collective_timeout_s > 0 && !collectives_.empty()) {
      const double d = collectives_.begin()->second.start + opt_.collective_timeout_s;
      if (d < deadline) deadline = d;
    }
    const double now = now_seconds();
    // A gap much longer than the longest wait means this process itself was not running (stopped
    // by SIGSTOP and continued, or starved): say so, its deadline passed while it was frozen.
    const double gap = waiting_long ? 0 : now - prev;
    prev = now;
    if (deadline == inf) {
      waiting_long = true;
      cv_.wait(lk);
      prev = now_seconds();
      continue;
    }
    waiting_long = false;
    if (now < deadline) {
      // Wake at the deadline, or when a step or collective begins (a new, maybe earlier one).
      cv_.wait_for(lk, std::chrono::duration<double>(std::min(deadline - now, 1.0)));
      continue;
    }
    step_due = opt_.step_timeout_s > 0 && in_step_ && now >= step_start_ + opt_.step_timeout_s;
    std::string step_text = in_step_     ? fmt::format("step {}", step_)
                            : step_ >= 0 ? fmt::format("after step {}", step_)
                                         : std::string("before the first step");
    std::string msg;
    if (!collectives_.empty()) {
      const auto& [seq, c] = *collectives_.begin();
      const std::string waiting = describe_ ? describe_(seq) : std::string();
      if (step_due)
        msg = fmt::format("deeptrain: {}: {} exceeded {:g}s, in collective '{}' (#{}) for {:.1f}s",
                          where_, step_text, opt_.step_timeout_s, c.what, seq, now - c.start);
      else
        msg = fmt::format("deeptrain: {}: {} collective '{}' (#{}) exceeded {:g}s", where_,
                          step_text, c.what, seq, opt_.collective_timeout_s);
      if (!waiting.empty()) msg += fmt::format(" (waiting for {})", waiting);
    } else {
      msg = fmt::format("deeptrain: {}: {} exceeded {:g}s (computing, not in a collective)",
                        where_, step_text, opt_.step_timeout_s);
    }
    if (gap > 1.5)
      msg += fmt::format(" (this process itself did not run for {:.1f} s: stopped or starved)", gap);
    fired_ = true;
    Expired f = on_expiry_;
    lk.unlock();
    if (f) f(msg);
    return;  // fired once; if on_expiry returned, the watchdog stops watching
  }
}

}  // namespace deeptrain
