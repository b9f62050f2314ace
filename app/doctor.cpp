// `deeptrain doctor [CONFIG]`: what a run would use on this machine, for bug reports and for
// checking a cluster node before a long job: the MPI job (from the launcher's environment),
// GPUs and the CUDA/cuDNN/NCCL libraries (probed at run time), BLAS and oneDNN, threads, and the
// data set files with their checksums.
#include <omp.h>
#include <sched.h>

#include <cblas.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <thread>

#ifdef DEEPTRAIN_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif

#include "app/commands.h"
#include "app/gpu_probe.h"
#include "core/data/dataset.h"
#include "core/data/shard_reader.h"
#include "core/threads.h"
#include "report/event_file.h"

namespace deeptrain::app {
namespace {

struct DoctorOptions {
  std::string config;
  ConfigOverrides overrides;
};

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// The first set variable of `names`, as "NAME=value"; empty if none is.
std::string first_env(std::initializer_list<const char*> names, std::string* value = nullptr) {
  for (const char* n : names)
    if (!env(n).empty()) {
      if (value) *value = env(n);
      return fmt::format("{}={}", n, env(n));
    }
  return "";
}

// MPI launchers (Open MPI, MPICH/Intel MPI's Hydra, MVAPICH) and SLURM announce the job in the
// environment of every rank, which lets doctor describe the job without initialising MPI.
std::string mpi_section() {
  std::string size, rank, local_size;
  const std::string size_var =
      first_env({"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_NTASKS"}, &size);
  first_env({"OMPI_COMM_WORLD_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK", "SLURM_PROCID"}, &rank);
  first_env({"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "MV2_COMM_WORLD_LOCAL_SIZE",
             "SLURM_NTASKS_PER_NODE"}, &local_size);
  std::string out = "MPI\n";
  if (size_var.empty()) {
    out += fmt::format("  ranks: 1 (not started by mpirun/srun)\n  host: {}\n",
                       report::host_name());
    return out;
  }
  out += fmt::format("  ranks: {} ({}); this is rank {}\n", size, size_var, rank.empty() ? "?" : rank);
  if (!local_size.empty()) out += fmt::format("  ranks on this host: {}\n", local_size);
  out += fmt::format("  this host: {}\n", report::host_name());
  if (!env("SLURM_JOB_NODELIST").empty())
    out += fmt::format("  hosts: {} ({} nodes)\n", env("SLURM_JOB_NODELIST"), env("SLURM_NNODES"));
  return out;
}

std::string gpu_section() {
  std::string out = "GPUs\n";
  const CudaProbe cuda = probe_cuda();
  if (cuda.library.empty()) {
    out += fmt::format("  none: CUDA runtime {}\n", cuda.problem);
  } else {
    out += fmt::format("  CUDA runtime {} ({}), driver supports CUDA {}\n",
                       cuda_version_string(cuda.runtime_version), cuda.library,
                       cuda.driver_version ? cuda_version_string(cuda.driver_version) : "none");
    if (cuda.devices.empty()) out += fmt::format("  none: {}\n", cuda.problem);
    for (size_t d = 0; d < cuda.devices.size(); ++d) {
      const GpuDevice& g = cuda.devices[d];
      out += fmt::format("  gpu {}: {} (compute capability {}.{}, {} SMs{})\n", d,
                         g.name.empty() ? "?" : g.name, g.cc_major, g.cc_minor, g.multiprocessors,
                         g.memory_gib > 0 ? fmt::format(", {:.1f} GiB", g.memory_gib) : "");
    }
  }
  for (auto [name, probe] : {std::pair{"cuDNN", probe_cudnn()}, std::pair{"NCCL", probe_nccl()}})
    out += probe.library.empty() ? fmt::format("  {}: {}\n", name, probe.problem)
                                 : fmt::format("  {}: {} ({})\n", name, probe.version, probe.library);
  return out;
}

// OpenBLAS core names whose kernels use AVX2 or better (DYNAMIC_ARCH builds pick one at start).
bool uses_avx2_kernels(std::string core) {
  for (char& c : core) c = char(std::tolower(static_cast<unsigned char>(c)));
  for (const char* k : {"haswell", "zen", "skylakex", "cooperlake", "sapphirerapids"})
    if (core.find(k) != std::string::npos) return true;
  return false;
}

std::string cpu_section(int threads) {
  std::string out = "CPU\n";
  cpu_set_t set;
  const int affinity = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : -1;
  out += fmt::format("  threads: {} (run.threads; 0 = every core this process may use)\n", threads);
  out += fmt::format("  cores: {} in this process's affinity mask, {} on the machine\n", affinity,
                     std::thread::hardware_concurrency());
  out += fmt::format("  OpenMP max threads: {}\n", omp_get_max_threads());
  const std::string core = openblas_get_corename();
  out += fmt::format("  BLAS: {} (kernels for {}), {} threads\n", openblas_get_config(), core,
                     openblas_get_num_threads());
  if (__builtin_cpu_supports("avx2") && !uses_avx2_kernels(core))
    out += fmt::format(
        "  warning: this CPU has AVX2 but OpenBLAS chose {} kernels (it does not recognise the "
        "CPU model, common in VMs); OPENBLAS_CORETYPE=Haswell (or SkylakeX with AVX-512) "
        "selects faster ones\n", core);
#ifdef DEEPTRAIN_HAVE_DNNL
  const dnnl_version_t* v = dnnl_version();
  out += fmt::format("  oneDNN: {}.{}.{} ({})\n", v->major, v->minor, v->patch, v->hash);
#else
  out += "  oneDNN: not built in (cmake -DDEEPTRAIN_DNNL=OFF); the fast backend uses its own kernels\n";
#endif
  return out;
}

std::string indent(const std::string& text) {
  std::string out;
  for (size_t at = 0; at < text.size();) {
    const size_t end = std::min(text.find('\n', at), text.size());
    out += "  " + text.substr(at, end - at) + "\n";
    at = end + 1;
  }
  return out;
}

int run_doctor(const DoctorOptions& o) {
  const proto::ExperimentConfig cfg =
      o.config.empty() ? parse_config("", "(built-in defaults)", o.overrides)
                       : load_config(o.config, o.overrides);
  const int threads = set_cpu_threads(cfg.run().threads());
  std::string out = fmt::format("deeptrain {} doctor{}\n\n", DEEPTRAIN_VERSION,
                                o.config.empty() ? "" : " for " + o.config);
  out += mpi_section() + "\n" + gpu_section() + "\n" + cpu_section(threads) + "\n";
  out += fmt::format("backend: {} (run.backend)\n\n", backend_word(cfg.run().backend()));
  out += "data\n";
  const auto& d = cfg.data();
  if (d.dataset() == "cifar10")  // binary batches: checked when a run reads them
    out += indent(fmt::format("cifar10: binary batches in {} (not checked here)\n", d.dir()));
  else if (d.dataset() == "mnist_scenes")  // drawn from the MNIST files when a run starts
    out += indent("mnist_scenes: generated from MNIST:\n" + data::describe_files("mnist", d.dir()));
  else if (d.dataset() == "shards")
    for (const char* split : {"train", "test"})
      out += indent(data::describe_pack((std::filesystem::path(d.dir()) / split).string()));
  else
    out += indent(data::describe_files(d.dataset(), d.dir()));
  if (o.config.empty() && !o.overrides.data_dir)  // no config: both data sets of the book
    out += indent(data::describe_files("fashion_mnist", "data/fashion_mnist"));
  std::fputs(out.c_str(), stdout);
  return 0;
}

}  // namespace

void add_doctor_command(CLI::App& cli) {
  auto o = std::make_shared<DoctorOptions>();
  CLI::App* sub = cli.add_subcommand(
      "doctor", "print what a run would use: MPI ranks and hosts, GPUs, CUDA/cuDNN/NCCL, BLAS, "
                "threads, data files and checksums");
  sub->add_option("config", o->config, "an experiment config (default: the built-in one)")
      ->check(CLI::ExistingFile);
  sub->add_option("--threads", o->overrides.threads, "override run.threads (0 = all cores)");
  sub->add_option("--data-dir", o->overrides.data_dir, "override data.dir");
  sub->footer(
      "Examples:\n"
      "  deeptrain doctor\n"
      "  deeptrain doctor examples/deep_convnet_mnist.prototxt --threads 2\n"
      "  mpirun -n 2 deeptrain doctor examples/deep_convnet_mnist.prototxt");
  sub->callback([o] { run_doctor(*o); });
}

}  // namespace deeptrain::app
