// The single-process communicator (collectives are identities) and the detection of an MPI
// launcher from the environment, in a process that no MPI job started.
#include <gtest/gtest.h>

#include <cstdlib>

#include "distributed/communicator.h"
#include "distributed/mpi_communicator.h"
#include "distributed/placement.h"

using namespace deeptrain;

TEST(SingleProcess, CollectivesAreIdentities) {
  SingleProcessCommunicator c;
  EXPECT_EQ(c.rank(), 0);
  EXPECT_EQ(c.size(), 1);
  EXPECT_EQ(c.where(), "rank 0 on " + local_host_name());
  Tensor t = Tensor::empty({3}, DType::f32);
  t.data<float>()[1] = 2.5f;
  c.allreduce_sum(t);
  c.broadcast(t, 0);
  c.barrier();
  EXPECT_EQ(t.data<float>()[1], 2.5f);
  Tensor out = Tensor::empty({3}, DType::f32);
  c.allgather(t, out);
  EXPECT_EQ(out.data<float>()[1], 2.5f);
  auto r = c.iallreduce_sum(t);
  EXPECT_TRUE(r->test());
  EXPECT_EQ(c.watchdog(), nullptr);
  EXPECT_GE(default_threads(c), 1);
  EXPECT_EQ(default_threads(c), affinity_cores());
}

TEST(Launch, DetectsMpiLaunchersFromTheEnvironment) {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"}) unsetenv(v);
  EXPECT_FALSE(launched_under_mpi());
  EXPECT_FALSE(mpi_active());  // nothing here initialises MPI
  setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
  EXPECT_TRUE(launched_under_mpi());
  unsetenv("OMPI_COMM_WORLD_SIZE");
  setenv("PMIX_RANK", "0", 1);
  EXPECT_TRUE(launched_under_mpi());
  unsetenv("PMIX_RANK");
  EXPECT_EQ(make_world_communicator()->size(), 1);
}
