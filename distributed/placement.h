#pragma once
// Where a rank runs, and how many threads it should use.
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

}  // namespace deeptrain
