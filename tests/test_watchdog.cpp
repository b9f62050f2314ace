// The watchdog (distributed/watchdog.h): step and collective deadlines, and messages that name
// the rank, the step, the collective and what it waits for.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "distributed/watchdog.h"

using namespace deeptrain;

TEST(WatchdogTest, CollectiveDeadlineNamesStepCollectiveAndWhatItWaitsFor) {
  std::string msg;
  std::atomic<bool> fired{false};
  WatchdogOptions o;
  o.collective_timeout_s = 0.3;
  Watchdog w(o, "rank 1 on hostB", [&](const std::string& m) {
    msg = m;
    fired = true;
  });
  w.set_describer([](uint64_t seq) { return fmt::format("rank 2 on hostC: has not reached #{}", seq); });
  w.step_begin(17);
  w.collective_begin(5, "gradient bucket 2/4 (conv6)");
  w.collective_end(5);  // finished in time: no alarm for it
  w.collective_begin(6, "gradient bucket 3/4 (conv4..conv5)");
  for (int i = 0; i < 100 && !fired; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(fired);
  EXPECT_EQ(msg, "deeptrain: rank 1 on hostB: step 17 collective 'gradient bucket 3/4 "
                 "(conv4..conv5)' (#6) exceeded 0.3s (waiting for rank 2 on hostC: has not "
                 "reached #6)");
  EXPECT_TRUE(w.fired());
}

TEST(WatchdogTest, StepDeadlineWhileComputing) {
  std::string msg;
  std::atomic<bool> fired{false};
  WatchdogOptions o;
  o.step_timeout_s = 0.2;
  o.collective_timeout_s = 10;
  Watchdog w(o, "rank 0 on h", [&](const std::string& m) {
    msg = m;
    fired = true;
  });
  w.step_begin(3);
  w.step_end();  // a quick step
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_FALSE(fired);
  w.step_begin(4);
  for (int i = 0; i < 100 && !fired; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(fired);
  EXPECT_EQ(msg, "deeptrain: rank 0 on h: step 4 exceeded 0.2s (computing, not in a collective)");
}

TEST(WatchdogTest, NoDeadlinesNoThread) {
  Watchdog w(WatchdogOptions{}, "rank 0 on h", [](const std::string&) { FAIL(); });
  w.step_begin(1);
  w.collective_begin(1, "x");
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(w.fired());
}
