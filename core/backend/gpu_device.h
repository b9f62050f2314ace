#pragma once
// Which GPU a rank drives. Each MPI rank drives exactly one GPU: the one at its local rank (its
// index among the ranks on its host), modulo the host's GPU count. Launchers name the local rank
// in different variables; without any, a single process takes GPU 0.
#include <functional>
#include <optional>
#include <string>

namespace deeptrain {

struct LocalRank {
  int rank = 0;
  std::string source;  // the variable it came from ("OMPI_COMM_WORLD_LOCAL_RANK"), or "default"
};

// Reads OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID, MPI_LOCALRANKID (MPICH), LOCAL_RANK (torchrun
// style), in that order, from getenv (a parameter so tests can pass their own environment).
// A value that is not a non-negative integer is an InputError naming the variable.
LocalRank local_rank_from_env(const std::function<const char*(const char*)>& getenv_fn);

// The GPU for local rank `local` on a host with `count` GPUs: explicit >= 0 wins (it must be
// < count); otherwise local % count. count == 0 is an InputError ("no CUDA device ...") that
// carries `why_none` (the runtime's message).
int choose_gpu(int explicit_device, const LocalRank& local, int count, const std::string& why_none);

}  // namespace deeptrain
