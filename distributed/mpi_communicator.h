#pragma once
// MPI: the process-wide runtime (init/finalize, abort) and a Communicator over MPI_COMM_WORLD.
//
// Progress and overlap. Open MPI (4.1, no asynchronous progress thread for collectives)
// advances a non-blocking collective only inside MPI calls. MpiCommunicator therefore owns a
// communication thread that makes every MPI call of the communicator: callers queue a collective
// and get a CommRequest at once; the thread starts queued collectives in order (so all ranks
// issue them in the same order) as non-blocking MPI calls and drives them with MPI_Testsome,
// polling back-to-back for a few rounds and then sleeping in growing steps up to 100 us between
// polls, so that it neither stalls the transfer nor takes a core away from the computing threads
// (this machine has 2 cores for 2 ranks). The computing thread only ever blocks in
// CommRequest::wait() on a condition variable; while it does, nothing computes for this rank,
// and the communication thread polls without sleeping (yielding the core between polls). MPI is initialised with MPI_THREAD_MULTIPLE so the
// watchdog thread may call MPI_Abort while the communication thread is inside MPI.
//
// Hang diagnosis. Before starting collective #k the thread sends a small "arrived at k" message
// to every peer on a duplicate communicator and keeps a receive posted for theirs, so when a
// collective stalls the Watchdog can name the ranks that never arrived (a stopped process, a
// cut link) and how long ago each was last heard from.
#include <memory>
#include <string>
#include <vector>

#include "distributed/communicator.h"

namespace deeptrain {

// True when this process was started by an MPI launcher (mpirun/mpiexec of Open MPI, or a
// PMI/PMIx launcher): OMPI_COMM_WORLD_SIZE, PMIX_RANK, PMI_RANK or PMI_SIZE is set. A plain
// `deeptrain train` never initialises MPI.
bool launched_under_mpi();
// Whether this build has MPI support.
bool mpi_available();
// MPI_Init has run and MPI_Finalize has not.
bool mpi_active();
// This process's rank in MPI_COMM_WORLD; 0 without an active MPI runtime. Needs no
// communicator, so a command can act on rank 0 alone before its session starts.
int world_rank();

// The process's MPI runtime: MPI_Init_thread(MPI_THREAD_MULTIPLE) on construction,
// MPI_Finalize on destruction. Unless the environment says otherwise it selects Open MPI's ring
// algorithm for non-blocking allreduce (coll_libnbc_iallreduce_algorithm = 1; see the .cpp). One per process, owned by main; everything that uses MPI must be
// gone before it is destroyed.
class MpiRuntime {
 public:
  MpiRuntime(int* argc, char*** argv);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;
  int world_rank() const { return rank_; }
  int world_size() const { return size_; }

 private:
  int rank_ = 0, size_ = 1;
};

// Ends every rank of the job (MPI_Abort on MPI_COMM_WORLD) with exit code `code`; without an
// active MPI runtime, ends this process (std::_Exit). For main and for watchdogs only.
[[noreturn]] void abort_job(int code);

class MpiCommunicator : public Communicator {
 public:
  // A duplicate of MPI_COMM_WORLD. Needs an active MpiRuntime. Collective: every rank constructs
  // it at the same point (it exchanges host names).
  MpiCommunicator();
  ~MpiCommunicator() override;

  int rank() const override;
  int size() const override;
  std::string host() const override;
  std::string host_of(int rank) const override;
  std::unique_ptr<CommRequest> iallreduce_sum(Tensor& t, const char* what = "allreduce") override;
  std::unique_ptr<CommRequest> ibroadcast(Tensor& t, int root,
                                          const char* what = "broadcast") override;
  std::unique_ptr<CommRequest> iallgather(const Tensor& in, Tensor& out,
                                          const char* what = "allgather") override;
  std::unique_ptr<CommRequest> ibarrier(const char* what = "barrier") override;

  // Guards every collective with `w` (owned by the caller, outliving this communicator) and
  // lets it name the ranks a stalled collective waits for.
  void set_watchdog(Watchdog* w);
  Watchdog* watchdog() const override;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// The job's communicator: an MpiCommunicator when MPI is active, else a single process.
std::unique_ptr<Communicator> make_world_communicator();

}  // namespace deeptrain
