// peak_flops: what this machine's cores can compute, so that every throughput can be stated as
// a fraction of it (bench/README.md, docs/cpu_performance.md).
//
// Two kinds of figure, each the median of --rounds timed rounds on --threads OpenMP threads:
//   * the instruction peak: independent chains of one vector instruction, no memory traffic:
//     f32 FMA (AVX-512: vfmadd231ps zmm, 32 flops; AVX2: ymm, 16 flops) and, where the
//     processor has AVX512-BF16, vdpbf16ps (32 bf16 products summed into 16 f32 lanes:
//     64 flops);
//   * the library peak: a large oneDNN matmul (2048^3) in f32, and in bf16 where the processor
//     has it (oneDNN then uses AMX where present): what a well-blocked kernel reaches.
// Prints one JSON line (and a table with --table).
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

namespace {

constexpr int kChains = 12;  // independent accumulators: covers FMA latency x 2 ports

__attribute__((target("avx512f"))) float fma_avx512(int64_t iters) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(float(i) * 1e-3f);
  const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-4f);
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  float s = 0;
  for (int i = 0; i < kChains; ++i) s += _mm512_reduce_add_ps(acc[i]);
  return s;
}

__attribute__((target("avx2,fma"))) float fma_avx2(int64_t iters) {
  __m256 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_ps(float(i) * 1e-3f);
  const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-4f);
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  float out[8], s = 0;
  for (int i = 0; i < kChains; ++i) {
    _mm256_storeu_ps(out, acc[i]);
    for (float v : out) s += v;
  }
  return s;
}

__attribute__((target("avx512f,avx512bf16"))) float dpbf16(int64_t iters) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(float(i) * 1e-3f);
  const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80);  // bf16 1.0
  const __m512bh b = (__m512bh)_mm512_set1_epi16(0x3800);  // bf16 2^-15
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  float s = 0;
  for (int i = 0; i < kChains; ++i) s += _mm512_reduce_add_ps(acc[i]);
  return s;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// GFLOP/s of `kernel` on every thread at once: flops_per_iter per loop iteration per thread.
template <class F>
double instruction_peak(F kernel, double flops_per_iter, int threads, int rounds) {
  const int64_t iters = 20'000'000;
  std::vector<double> gflops;
  volatile float sink = 0;
  for (int r = 0; r < rounds + 1; ++r) {  // round 0 warms the cores up (clocks, AVX licence)
    const double t0 = now_s();
#pragma omp parallel num_threads(threads)
    {
      const float s = kernel(iters);
#pragma omp critical
      sink = sink + s;
    }
    const double dt = now_s() - t0;
    if (r > 0) gflops.push_back(flops_per_iter * double(iters) * threads / dt * 1e-9);
  }
  return median(gflops);
}

// GFLOP/s of a 2048^3 oneDNN matmul in `type` (f32 result).
double library_peak(dnnl::memory::data_type type, int rounds, std::string* impl) {
  using dnnl::memory;
  const int64_t n = 2048;
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream strm(eng);
  const memory::desc a({n, n}, type, memory::format_tag::ab), b({n, n}, type, memory::format_tag::any),
      c({n, n}, memory::data_type::f32, memory::format_tag::ab);
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), eng);
  *impl = pd.impl_info_str();
  memory ma(a, eng), mb(pd.weights_desc(), eng), mc(c, eng);
  std::memset(ma.get_data_handle(), 0, a.get_size());
  std::memset(mb.get_data_handle(), 0, pd.weights_desc().get_size());
  dnnl::matmul mm(pd);
  std::vector<double> gflops;
  for (int r = 0; r < rounds + 1; ++r) {
    const double t0 = now_s();
    mm.execute(strm, {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}});
    strm.wait();
    const double dt = now_s() - t0;
    if (r > 0) gflops.push_back(2.0 * n * n * n / dt * 1e-9);
  }
  return median(gflops);
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, rounds = 5;
  bool table = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--rounds" && i + 1 < argc) rounds = std::atoi(argv[++i]);
    else if (a == "--table") table = true;
    else {
      std::fprintf(stderr, "usage: peak_flops [--threads N] [--rounds N] [--table]\n");
      return 2;
    }
  }
  if (threads < 1 || rounds < 1) {
    std::fprintf(stderr, "peak_flops: --threads and --rounds must be >= 1\n");
    return 2;
  }
  omp_set_num_threads(threads);
  const bool avx512 = __builtin_cpu_supports("avx512f");
  const bool has_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool bf16 = avx512 && __builtin_cpu_supports("avx512bf16");
  if (!has_fma) {
    std::fprintf(stderr, "peak_flops: this processor has no AVX2 + FMA\n");
    return 2;
  }
  const double f32 = avx512 ? instruction_peak(fma_avx512, 32.0 * kChains, threads, rounds)
                            : instruction_peak(fma_avx2, 16.0 * kChains, threads, rounds);
  const double bf = bf16 ? instruction_peak(dpbf16, 64.0 * kChains, threads, rounds) : 0;
  std::string f32_impl, bf16_impl;
  const double lib_f32 = library_peak(dnnl::memory::data_type::f32, rounds, &f32_impl);
  // oneDNN's own view of the ISA (ONEDNN_MAX_CPU_ISA may lower it) decides whether bf16 runs.
  const unsigned need = unsigned(dnnl::cpu_isa::avx512_core_bf16);
  const bool lib_bf16_ok = (unsigned(dnnl::get_effective_cpu_isa()) & need) == need;
  const double lib_bf16 =
      lib_bf16_ok ? library_peak(dnnl::memory::data_type::bf16, rounds, &bf16_impl) : 0;

  std::printf("{\"bench\":\"peak_flops\",\"threads\":%d,\"rounds\":%d,\"vector\":\"%s\","
              "\"fma_f32_gflops\":%.1f,\"dpbf16_gflops\":%s,\"matmul_f32_gflops\":%.1f,"
              "\"matmul_f32_impl\":\"%s\",\"matmul_bf16_gflops\":%s,\"matmul_bf16_impl\":\"%s\"}\n",
              threads, rounds, avx512 ? "avx512" : "avx2", f32,
              bf16 ? std::to_string(bf).c_str() : "null", lib_f32, f32_impl.c_str(),
              lib_bf16_ok ? std::to_string(lib_bf16).c_str() : "null", bf16_impl.c_str());
  if (table) {
    std::printf("%-34s %10s\n", "peak, all threads", "GFLOP/s");
    std::printf("%-34s %10.1f\n", avx512 ? "f32 FMA (zmm)" : "f32 FMA (ymm)", f32);
    if (bf16) std::printf("%-34s %10.1f\n", "bf16 dot products (vdpbf16ps)", bf);
    std::printf("%-34s %10.1f  %s\n", "oneDNN matmul 2048^3 f32", lib_f32, f32_impl.c_str());
    if (lib_bf16_ok)
      std::printf("%-34s %10.1f  %s\n", "oneDNN matmul 2048^3 bf16", lib_bf16, bf16_impl.c_str());
  }
  return 0;
}
