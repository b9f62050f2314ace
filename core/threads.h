#pragma once
namespace deeptrain {
// Sets the thread count of every CPU kernel library in this process (OpenMP loops, OpenBLAS,
// oneDNN). n <= 0 means all cores available to this process.
int set_cpu_threads(int n);
int cpu_threads();
}  // namespace deeptrain
