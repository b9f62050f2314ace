#include "core/optim/schedule.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "core/error.h"

namespace deeptrain {
namespace {

constexpr double kPi = 3.14159265358979323846;

// The config's floats as the decimals written in the file (0.1f -> 0.1, not 0.100000001),
// so rates are the ones a user computes by hand.
double decimal(float f) { return std::strtod(fmt::format("{}", f).c_str(), nullptr); }

double gamma_of(const proto::LrSchedule& s) {
  if (s.has_gamma()) return decimal(s.gamma());
  return s.type() == proto::EXPONENTIAL ? 0.95 : 0.1;
}

// Cosine annealing from `from` to `to` as pct goes 0 -> 1 (PyTorch's _annealing_cos).
double anneal_cos(double from, double to, double pct) {
  return to + (from - to) / 2.0 * (std::cos(kPi * pct) + 1.0);
}

double one_cycle(const proto::LrSchedule& s, double base_lr, int64_t step, int64_t total) {
  const double max_lr = s.max_lr() > 0 ? decimal(s.max_lr()) : base_lr;
  const double pct_start = s.has_pct_start() ? decimal(s.pct_start()) : 0.3;
  const double initial = max_lr / (s.has_div_factor() ? decimal(s.div_factor()) : 25.0);
  const double final_lr = initial / (s.has_final_div() ? decimal(s.final_div()) : 1e4);
  const double t = double(std::min(step, total - 1));
  // The phases end at these steps, as in torch.optim.lr_scheduler.OneCycleLR.
  const double rise_end = pct_start * double(total) - 1.0, fall_end = double(total - 1);
  if (t <= rise_end)
    return rise_end > 0 ? anneal_cos(initial, max_lr, t / rise_end) : max_lr;
  return fall_end > rise_end ? anneal_cos(max_lr, final_lr, (t - rise_end) / (fall_end - rise_end))
                             : final_lr;
}

}  // namespace

void validate_lr_schedule(const proto::LrSchedule& s) {
  const char* f = "schedule.lr_schedule";
  if (s.has_gamma() && !(s.gamma() > 0 && std::isfinite(s.gamma())))
    fail_input("{}.gamma: must be > 0, got {}", f, s.gamma());
  if (!(s.warmup_epochs() >= 0 && std::isfinite(s.warmup_epochs())))
    fail_input("{}.warmup_epochs: must be >= 0, got {}", f, s.warmup_epochs());
  switch (s.type()) {
    case proto::STEP:
      if (s.milestones_size() == 0 && s.step_epochs() <= 0)
        fail_input("{}.step_epochs: STEP needs step_epochs > 0 (or milestones), got {}", f,
                   s.step_epochs());
      for (int i = 0; i < s.milestones_size(); ++i)
        if (s.milestones(i) <= 0 || (i > 0 && s.milestones(i) <= s.milestones(i - 1)))
          fail_input("{}.milestones: must be positive epochs in ascending order, got {} at "
                     "position {}", f, s.milestones(i), i);
      break;
    case proto::COSINE:
      if (!(s.min_lr() >= 0)) fail_input("{}.min_lr: must be >= 0, got {}", f, s.min_lr());
      break;
    case proto::ONE_CYCLE:
      if (!(s.max_lr() >= 0)) fail_input("{}.max_lr: must be >= 0, got {}", f, s.max_lr());
      if (s.has_pct_start() && !(s.pct_start() > 0 && s.pct_start() < 1))
        fail_input("{}.pct_start: must be in (0, 1), got {}", f, s.pct_start());
      if (s.has_div_factor() && !(s.div_factor() > 0))
        fail_input("{}.div_factor: must be > 0, got {}", f, s.div_factor());
      if (s.has_final_div() && !(s.final_div() > 0))
        fail_input("{}.final_div: must be > 0, got {}", f, s.final_div());
      break;
    default:
      break;
  }
}

double lr_at(const proto::LrSchedule& s, double base_lr, int64_t step, int64_t steps_per_epoch,
             int64_t total_steps) {
  DT_CHECK(step >= 0 && steps_per_epoch > 0 && total_steps > 0,
           "lr_at: step {}, steps_per_epoch {}, total_steps {}", step, steps_per_epoch, total_steps);
  const int64_t epoch = step / steps_per_epoch;
  double lr = base_lr;
  switch (s.type()) {
    case proto::STEP: {
      int64_t decays = 0;
      if (s.milestones_size() > 0)
        for (int32_t m : s.milestones()) decays += epoch >= m;
      else
        decays = epoch / s.step_epochs();
      lr = base_lr * std::pow(gamma_of(s), double(decays));
      break;
    }
    case proto::EXPONENTIAL:
      lr = base_lr * std::pow(gamma_of(s), double(epoch));
      break;
    case proto::COSINE: {
      const double pct = double(std::min(step, total_steps)) / double(total_steps);
      lr = anneal_cos(base_lr, decimal(s.min_lr()), pct);
      break;
    }
    case proto::ONE_CYCLE:
      lr = one_cycle(s, base_lr, step, total_steps);
      break;
    default:
      break;
  }
  const int64_t warmup = std::llround(decimal(s.warmup_epochs()) * double(steps_per_epoch));
  if (step < warmup) lr *= double(step + 1) / double(warmup);
  return lr;
}

}  // namespace deeptrain
