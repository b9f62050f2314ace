#include "core/threads.h"

#include <omp.h>
#include <sched.h>
#include <xmmintrin.h>

#include <cblas.h>

namespace deeptrain {
namespace {

constexpr unsigned kFtz = 0x8000;  // MXCSR bit 15: flush results to zero
constexpr unsigned kDaz = 0x0040;  // MXCSR bit 6: denormal inputs are zero

int available_cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
  return omp_get_num_procs();
}

void set_this_thread(bool on) {
  const unsigned csr = _mm_getcsr();
  _mm_setcsr(on ? (csr | kFtz | kDaz) : (csr & ~(kFtz | kDaz)));
}

}  // namespace

void set_flush_denormals(bool on) {
  set_this_thread(on);
  // Every worker of the OpenMP pool (oneDNN and OpenBLAS run on it too) sets its own register.
#pragma omp parallel num_threads(omp_get_max_threads())
  set_this_thread(on);
}

bool flushes_denormals() { return (_mm_getcsr() & (kFtz | kDaz)) == (kFtz | kDaz); }

int set_cpu_threads(int n, bool flush_denormals) {
  if (n <= 0) n = available_cores();
  omp_set_num_threads(n);        // our loops and oneDNN (built on OpenMP)
  openblas_set_num_threads(n);   // OpenBLAS keeps its own pool
  set_flush_denormals(flush_denormals);
  return n;
}

int cpu_threads() { return omp_get_max_threads(); }

}  // namespace deeptrain
