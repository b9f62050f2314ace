// Learning-rate schedules against values computed by hand (the one-cycle ones with the
// formulas of PyTorch's OneCycleLR), warm-up on top of each type, and validation messages.
#include <cmath>

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/optim/schedule.h"

using namespace deeptrain;

namespace {

proto::LrSchedule parse(const char* text) {
  proto::LrSchedule s;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &s)) << text;
  return s;
}

// base 0.1, 10 steps per epoch, 100 steps in all unless given.
double lr(const char* text, int64_t step, int64_t total = 100) {
  return lr_at(parse(text), 0.1, step, 10, total);
}

TEST(LrSchedule, ConstantIsTheBaseRate) {
  EXPECT_EQ(lr("", 0), 0.1);
  EXPECT_EQ(lr("type: CONSTANT", 99), 0.1);
}

TEST(LrSchedule, StepDecaysEveryStepEpochsOrAtMilestones) {
  const char* every2 = "type: STEP step_epochs: 2 gamma: 0.5";
  EXPECT_DOUBLE_EQ(lr(every2, 0), 0.1);
  EXPECT_DOUBLE_EQ(lr(every2, 19), 0.1);   // epoch 1
  EXPECT_DOUBLE_EQ(lr(every2, 20), 0.05);  // epoch 2
  EXPECT_DOUBLE_EQ(lr(every2, 45), 0.025); // epoch 4
  EXPECT_NEAR(lr("type: STEP step_epochs: 3", 30), 0.01, 1e-17);  // default gamma 0.1
  const char* milestones = "type: STEP milestones: 3 milestones: 5 gamma: 0.1";
  EXPECT_DOUBLE_EQ(lr(milestones, 29), 0.1);
  EXPECT_NEAR(lr(milestones, 30), 0.01, 1e-17);
  EXPECT_NEAR(lr(milestones, 49), 0.01, 1e-17);
  EXPECT_NEAR(lr(milestones, 50), 0.001, 1e-17);
  EXPECT_NEAR(lr(milestones, 99), 0.001, 1e-17);
}

TEST(LrSchedule, ExponentialDecaysOncePerEpoch) {
  EXPECT_DOUBLE_EQ(lr("type: EXPONENTIAL gamma: 0.9", 9), 0.1);
  EXPECT_NEAR(lr("type: EXPONENTIAL gamma: 0.9", 25), 0.081, 1e-16);  // epoch 2: 0.1 * 0.9^2
  EXPECT_NEAR(lr("type: EXPONENTIAL", 10), 0.095, 1e-16);             // default gamma 0.95
}

TEST(LrSchedule, CosineAnnealsToMinLrOverTheRun) {
  const char* c = "type: COSINE min_lr: 0.001";
  EXPECT_DOUBLE_EQ(lr(c, 0), 0.1);
  EXPECT_NEAR(lr(c, 25), 0.0855017856687341, 1e-12);  // 0.001 + 0.099 * (1 + cos(pi/4)) / 2
  EXPECT_NEAR(lr(c, 50), 0.0505, 1e-12);              // halfway: the mean of the two
  EXPECT_NEAR(lr(c, 100), 0.001, 1e-12);
  EXPECT_NEAR(lr(c, 150), 0.001, 1e-12);              // past the end: stays at min_lr
  EXPECT_NEAR(lr("type: COSINE", 100), 0.0, 1e-12);
}

TEST(LrSchedule, OneCycleFollowsPyTorchOneCycleLR) {
  // Defaults: max_lr = base 0.1, div_factor 25, final_div 1e4, pct_start 0.3; 100 steps.
  // Initial 0.1 / 25 = 0.004, final 0.004 / 1e4 = 4e-7; the rise ends at step 0.3 * 100 - 1.
  const char* c = "type: ONE_CYCLE";
  EXPECT_NEAR(lr(c, 0), 0.004, 1e-15);
  EXPECT_NEAR(lr(c, 14), 0.04940133238789996, 1e-12);  // 0.1 + (0.004 - 0.1)/2 (cos(pi 14/29) + 1)
  EXPECT_NEAR(lr(c, 29), 0.1, 1e-15);
  EXPECT_NEAR(lr(c, 64), 0.0500002, 1e-12);            // halfway down: (0.1 + 4e-7) / 2
  EXPECT_NEAR(lr(c, 80), 0.017103395290759563, 1e-12); // 4e-7 + (0.1 - 4e-7)/2 (cos(pi 51/70) + 1)
  EXPECT_NEAR(lr(c, 99), 4e-7, 1e-15);
  EXPECT_NEAR(lr(c, 200), 4e-7, 1e-15);                // past the end: the final rate
  const char* custom = "type: ONE_CYCLE max_lr: 0.5 div_factor: 10 final_div: 100 pct_start: 0.25";
  EXPECT_NEAR(lr(custom, 0, 40), 0.05, 1e-15);
  EXPECT_NEAR(lr(custom, 9, 40), 0.5, 1e-15);
  EXPECT_NEAR(lr(custom, 24, 40), 0.25025, 1e-12);
  EXPECT_NEAR(lr(custom, 39, 40), 0.0005, 1e-15);
}

TEST(LrSchedule, WarmupRampsLinearlyOnTopOfAnyType) {
  // warmup_epochs 0.5 of 10 steps: W = 5 steps at 1/5, 2/5, ... of the rate.
  const char* c = "warmup_epochs: 0.5";
  EXPECT_NEAR(lr(c, 0), 0.02, 1e-16);
  EXPECT_NEAR(lr(c, 2), 0.06, 1e-16);
  EXPECT_NEAR(lr(c, 4), 0.1, 1e-16);
  EXPECT_EQ(lr(c, 5), 0.1);
  // 2 epochs of warm-up over a step decay at every epoch: step 15 is in epoch 1.
  EXPECT_NEAR(lr("type: STEP step_epochs: 1 gamma: 0.5 warmup_epochs: 2", 15), 0.05 * 16 / 20, 1e-16);
  // Fractional: 0.25 epochs of 10 steps rounds to W = 3.
  EXPECT_NEAR(lr("warmup_epochs: 0.25", 0), 0.1 / 3, 1e-16);
  EXPECT_NEAR(lr("type: COSINE warmup_epochs: 1", 4), 0.5 * (1 + std::cos(M_PI * 0.04)) * 0.1 * 0.5, 1e-15);
}

TEST(LrSchedule, IsAPureFunctionOfTheStep) {
  const proto::LrSchedule s = parse("type: ONE_CYCLE warmup_epochs: 1");
  for (int64_t step : {0, 7, 33, 99}) EXPECT_EQ(lr_at(s, 0.1, step, 10, 100), lr_at(s, 0.1, step, 10, 100));
}

TEST(LrSchedule, ValidationNamesTheField) {
  auto message = [](const char* text) {
    try {
      validate_lr_schedule(parse(text));
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(message("type: COSINE min_lr: 0.0001 warmup_epochs: 2"), "");
  EXPECT_EQ(message("type: STEP milestones: 2 milestones: 4"), "");
  EXPECT_NE(message("type: STEP").find("schedule.lr_schedule.step_epochs"), std::string::npos);
  EXPECT_NE(message("type: STEP milestones: 4 milestones: 2").find("milestones"), std::string::npos);
  EXPECT_NE(message("type: EXPONENTIAL gamma: -1").find("schedule.lr_schedule.gamma"), std::string::npos);
  EXPECT_NE(message("type: ONE_CYCLE pct_start: 1.5").find("pct_start"), std::string::npos);
  EXPECT_NE(message("warmup_epochs: -1").find("warmup_epochs"), std::string::npos);
  EXPECT_NE(message("type: COSINE min_lr: -0.1").find("min_lr"), std::string::npos);
}

}  // namespace
