// Flush-to-zero and denormals-are-zero on every computing thread (core/threads.h): set on the
// calling thread and every OpenMP worker, inherited by threads started later, off on request.
#include <gtest/gtest.h>

#include <omp.h>

#include <thread>
#include <vector>

#include "core/config.h"
#include "core/threads.h"

using namespace deeptrain;

namespace {

// 1e-30 * 1e-10 = 1e-40, below float's smallest normal (1.18e-38): subnormal, or 0 when
// results are flushed; a subnormal input reads as 0 when inputs are.
float tiny_product() {
  volatile float a = 1e-30f, b = 1e-10f;
  return a * b;
}
float subnormal_input_doubled() {
  volatile float s = 1e-40f;  // stored as a subnormal by the compiler, read at run time
  return s * 2.0f;
}

// What each OpenMP worker of a team of `threads` sees.
std::vector<int> workers_flushing(int threads) {
  std::vector<int> f(size_t(threads), -1);
#pragma omp parallel num_threads(threads)
  f[size_t(omp_get_thread_num())] =
      flushes_denormals() && tiny_product() == 0.0f && subnormal_input_doubled() == 0.0f;
  return f;
}

}  // namespace

TEST(Denormals, EveryOpenMpWorkerFlushesAfterSetCpuThreads) {
  set_cpu_threads(2, /*flush_denormals=*/true);
  EXPECT_TRUE(flushes_denormals());
  EXPECT_EQ(tiny_product(), 0.0f);
  EXPECT_EQ(workers_flushing(2), std::vector<int>({1, 1}));
}

TEST(Denormals, OffKeepsSubnormalsOnEveryWorker) {
  set_cpu_threads(2, /*flush_denormals=*/false);
  EXPECT_FALSE(flushes_denormals());
  EXPECT_GT(tiny_product(), 0.0f);
  EXPECT_GT(subnormal_input_doubled(), 0.0f);
  EXPECT_EQ(workers_flushing(2), std::vector<int>({0, 0}));
  set_cpu_threads(2, true);
}

TEST(Denormals, ThreadsStartedLaterInheritTheMode) {
  set_flush_denormals(true);
  bool flushed = false;
  std::thread([&] { flushed = flushes_denormals() && tiny_product() == 0.0f; }).join();
  EXPECT_TRUE(flushed);
  set_flush_denormals(false);
  bool kept = false;
  std::thread([&] { kept = !flushes_denormals() && tiny_product() > 0.0f; }).join();
  EXPECT_TRUE(kept);
  set_flush_denormals(true);
}

TEST(Denormals, ConfigDefaultsToFlushingAndKeepsAnExplicitFalse) {
  EXPECT_TRUE(parse_config("", "(test)", {}).run().flush_denormals());
  EXPECT_FALSE(parse_config("run { flush_denormals: false }", "(test)", {}).run().flush_denormals());
}
