#include "distributed/placement.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

namespace deeptrain {

namespace {
cpu_set_t my_mask() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) {
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    for (long i = 0; i < std::min<long>(n, CPU_SETSIZE); ++i) CPU_SET(i, &set);
  }
  return set;
}
}  // namespace

int affinity_cores() {
  cpu_set_t set = my_mask();
  return std::max(1, CPU_COUNT(&set));
}

int default_threads(Communicator& comm) {
  cpu_set_t mine = my_mask();
  const int cores = std::max(1, CPU_COUNT(&mine));
  if (comm.size() == 1) return cores;
  const int64_t bytes = sizeof(cpu_set_t);
  Tensor in = Tensor::empty({bytes}, DType::u8), all = Tensor::empty({bytes * comm.size()}, DType::u8);
  std::memcpy(in.raw(), &mine, bytes);
  comm.allgather(in, all, "cpu affinity masks");
  int sharing = 0;
  const std::string host = comm.host();
  for (int r = 0; r < comm.size(); ++r) {
    if (comm.host_of(r) != host) continue;
    cpu_set_t other, both;
    std::memcpy(&other, static_cast<const uint8_t*>(all.raw()) + r * bytes, bytes);
    CPU_AND(&both, &mine, &other);
    if (r == comm.rank() || CPU_COUNT(&both) > 0) ++sharing;
  }
  return std::max(1, cores / std::max(1, sharing));
}

std::string shared_device(Communicator& comm, const std::string& device_id) {
  constexpr int64_t kId = 64;
  Tensor in = Tensor::empty({kId}, DType::u8), all = Tensor::empty({kId * comm.size()}, DType::u8);
  in.fill_zero();
  std::memcpy(in.raw(), device_id.data(), std::min<size_t>(device_id.size(), kId - 1));
  comm.allgather(in, all, "device ids");
  const auto id_of = [&](int r) { return std::string(static_cast<const char*>(all.raw()) + r * kId); };
  for (int a = 0; a < comm.size(); ++a)
    for (int b = a + 1; b < comm.size(); ++b)
      if (comm.host_of(a) == comm.host_of(b) && id_of(a) == id_of(b))
        return fmt::format("ranks {} and {} on {} share GPU {}", a, b, comm.host_of(a), id_of(a));
  return {};
}

}  // namespace deeptrain
