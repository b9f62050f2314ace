#pragma once
namespace deeptrain {
// Sets the thread count of every CPU kernel library in this process (OpenMP loops, OpenBLAS,
// oneDNN). n <= 0 means all cores available to this process. Also sets the denormal mode
// (set_flush_denormals) on the calling thread and on every OpenMP worker.
int set_cpu_threads(int n, bool flush_denormals = true);
int cpu_threads();

// Flush-to-zero and denormals-are-zero (docs/denormals.md): results below the smallest normal
// float become 0 and subnormal inputs read as 0, so no kernel falls into the processor's slow
// microcode path for subnormals (late in training, gradients and Adam's second moments reach
// them and a step got 45% slower). A per-thread processor mode (x86 MXCSR): set here on the
// calling thread and every OpenMP worker; threads created later inherit their creator's mode
// (pthread_create copies the floating-point environment), so setting it on the main thread
// before the communication and watchdog threads start covers them. Off only for numerical
// studies (run.flush_denormals: false).
void set_flush_denormals(bool on);
// Whether the calling thread flushes (both FTZ and DAZ set).
bool flushes_denormals();
}  // namespace deeptrain
