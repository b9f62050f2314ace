#include "core/threads.h"

#include <omp.h>
#include <sched.h>

#include <cblas.h>

namespace deeptrain {

static int available_cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
  return omp_get_num_procs();
}

int set_cpu_threads(int n) {
  if (n <= 0) n = available_cores();
  omp_set_num_threads(n);        // our loops and oneDNN (built on OpenMP)
  openblas_set_num_threads(n);   // OpenBLAS keeps its own pool
  return n;
}

int cpu_threads() { return omp_get_max_threads(); }

}  // namespace deeptrain
