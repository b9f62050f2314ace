#pragma once
// Learning-rate schedules: the rate as a pure function of the global step, so resuming from a
// checkpoint and changing the rank count give the same rates. The optimizer's lr is the base.
#include <cstdint>

#include "proto/deeptrain.pb.h"

namespace deeptrain {

// Throws InputError naming the field (schedule.lr_schedule.gamma, ...) for an invalid schedule.
void validate_lr_schedule(const proto::LrSchedule& s);

// The learning rate of global step `step` (0-based) of a run of `total_steps` steps with
// `steps_per_epoch` steps per epoch. With e = floor(step / steps_per_epoch), the epoch:
//   CONSTANT     base_lr
//   STEP         base_lr * gamma^floor(e / step_epochs), or gamma^(number of milestones <= e)
//   EXPONENTIAL  base_lr * gamma^e
//   COSINE       min_lr + (base_lr - min_lr) * (1 + cos(pi * step / total_steps)) / 2
//   ONE_CYCLE    PyTorch's OneCycleLR (cosine annealing, two phases): from max_lr / div_factor
//                up to max_lr at step pct_start * total_steps - 1, then down to
//                max_lr / div_factor / final_div at step total_steps - 1 (max_lr defaults to
//                base_lr; steps past the end keep the final rate)
// then times the linear warm-up (step + 1) / W for step < W = round(warmup_epochs *
// steps_per_epoch), whatever the type.
double lr_at(const proto::LrSchedule& s, double base_lr, int64_t step, int64_t steps_per_epoch,
             int64_t total_steps);

}  // namespace deeptrain
