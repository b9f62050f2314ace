#pragma once
// Where a rank runs, and how many threads it should use.
#include <string>

#include "distributed/communicator.h"

namespace deeptrain {

// The cores this process may run on (its CPU affinity mask).
int affinity_cores();

// The default thread count of this rank (run.threads = 0): its affinity cores divided by the
// number of ranks on this host whose affinity masks overlap its own (itself included), at
// least 1. Unbound ranks on one host share all its cores (2 ranks on 2 cores: 1 thread each);
// a rank that mpirun bound to one core gets 1; ranks bound to a socket share that socket.
// Collective (it exchanges the masks).
int default_threads(Communicator& comm);

// The first two ranks on one host that name the same device (device_id: a GPU's PCI bus id), as
// "ranks 0 and 1 on host-a share GPU 0000:1b:00.0"; empty when every rank has its own. NCCL
// refuses a communicator with a GPU shared by ranks; this says so before it, by rank and host.
// Collective (it exchanges the ids; ids longer than 63 bytes are compared by their first 63).
std::string shared_device(Communicator& comm, const std::string& device_id);

}  // namespace deeptrain
