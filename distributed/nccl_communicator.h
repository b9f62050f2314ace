#pragma once
// Collectives for a GPU backend. Tensors in device memory go through NCCL, on a stream of its
// own that waits for the compute stream with an event, so a gradient bucket's allreduce runs
// while backward computes the next layers. Host tensors (step metrics, fingerprints, the initial
// parameters, the bootstrap) go to the host communicator this one wraps (MPI, or the
// single-process one): Open MPI here is not CUDA-aware, so it never sees device pointers.
// With one rank NCCL still runs (a communicator of one), so a single GPU exercises the same path.
//
// A failing or stuck peer must end the job, not hang it: the communicator is created
// non-blocking, and every wait polls the operation's completion event and
// ncclCommGetAsyncError under a deadline; an error or a timeout aborts the NCCL communicator
// (ncclCommAbort) and throws, naming the collective, this rank and its host.
// Compiled only with DEEPTRAIN_HAVE_CUDA.
#include <memory>

#include "core/backend/backend.h"
#include "distributed/communicator.h"

namespace deeptrain {

// host: the job's communicator (kept and used for host tensors); backend: a CUDA backend (its
// device is current and its stream is the compute stream). timeout_s bounds every NCCL wait
// (<= 0: no deadline). Collective over host.
std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> host,
                                                     Backend& backend, double timeout_s);

}  // namespace deeptrain
