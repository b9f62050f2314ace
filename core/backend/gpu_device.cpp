#include "core/backend/gpu_device.h"

#include <charconv>
#include <cstring>

#include "core/error.h"

namespace deeptrain {

LocalRank local_rank_from_env(const std::function<const char*(const char*)>& getenv_fn) {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID",
                          "LOCAL_RANK"}) {
    const char* v = getenv_fn(var);
    if (!v || !*v) continue;
    int r = -1;
    auto [end, ec] = std::from_chars(v, v + std::strlen(v), r);
    if (ec != std::errc() || *end != '\0' || r < 0)
      fail_input("environment variable {}='{}': expected a local rank (an integer >= 0)", var, v);
    return {r, var};
  }
  return {0, "default"};
}

int choose_gpu(int explicit_device, const LocalRank& local, int count,
               const std::string& why_none) {
  if (count <= 0)
    fail_input("no CUDA device is usable on this machine ({}); use a CPU backend "
               "(run.backend: \"cpu\")", why_none);
  if (explicit_device >= 0) {
    if (explicit_device >= count)
      fail_input("GPU {} was asked for, but this machine has {} (indices 0..{})", explicit_device,
                 count, count - 1);
    return explicit_device;
  }
  return local.rank % count;
}

}  // namespace deeptrain
