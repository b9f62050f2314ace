// main() of the MPI test binaries (run by ctest through mpiexec -n 2 and -n 4). Every rank runs
// all tests; the ranks then combine their results, so one failing rank fails the test on all
// ranks (and mpiexec exits non-zero). A failed test aborts the job (AbortOnFailure). Rank 0 prints GoogleTest's usual output; the other ranks
// print only their failures, prefixed with their rank.
#include <cstdio>

#include <gtest/gtest.h>
#include <mpi.h>

#include "distributed/mpi_communicator.h"

namespace {

class RankFailurePrinter : public testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_,
                 r.file_name() ? r.file_name() : "?", r.line_number(), r.summary());
  }
  void OnTestEnd(const testing::TestInfo& t) override {
    if (t.result()->Failed())
      std::fprintf(stderr, "[rank %d] FAILED %s.%s\n", rank_, t.test_suite_name(), t.name());
  }

 private:
  int rank_;
};

// A failed test ends the whole job at once: a rank that failed (an exception above all) may
// have left the others waiting in one of that test's collectives, and would meet them with the
// next test's, so going on could hang until ctest's timeout instead of naming the test.
class AbortOnFailure : public testing::EmptyTestEventListener {
 public:
  explicit AbortOnFailure(int rank) : rank_(rank) {}
  void OnTestEnd(const testing::TestInfo& t) override {
    if (!t.result()->Failed()) return;
    std::fflush(stdout);
    std::fprintf(stderr, "[rank %d] %s.%s failed: ending the job (the other ranks may be waiting "
                 "in one of its collectives)\n", rank_, t.test_suite_name(), t.name());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  deeptrain::MpiRuntime mpi(&argc, &argv);
  testing::InitGoogleTest(&argc, argv);
  if (mpi.world_rank() != 0) {
    auto& listeners = testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(mpi.world_rank()));
  }
  testing::UnitTest::GetInstance()->listeners().Append(new AbortOnFailure(mpi.world_rank()));
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0, any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (mpi.world_rank() == 0) {
    std::fflush(stdout);
    std::printf("[mpi] %d ranks: %s\n", mpi.world_size(),
                any ? "FAILED on at least one rank" : "all ranks passed");
  }
  return any;
}
