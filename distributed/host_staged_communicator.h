#pragma once
// Collectives of a device backend through host memory (distributed.device_transport:
// DEVICE_TRANSPORT_HOST_MPI): each collective copies its tensor from the backend's memory into a
// page-locked host buffer, runs the host communicator's collective (MPI) on that, and copies the
// result back when it is waited for. For where NCCL cannot run: two ranks on one GPU (NCCL refuses
// a GPU shared by ranks), a machine whose GPUs have no transport NCCL can use, or to tell a NCCL
// fault from one of the trainer's. Slower than NCCL: a bucket's allreduce starts only once the
// device has computed everything issued before it (the host waits for the copy), so it overlaps
// less with backward, and every byte crosses the bus twice.
//
// The results are the host communicator's, bit for bit: the copies are exact, and the sums are
// MPI's (tests/test_mpi_train.cpp checks training through it against the plain MPI path).
#include <memory>

#include "core/backend/backend.h"
#include "distributed/communicator.h"

namespace deeptrain {

// host: the job's communicator (MPI, or the single-process one), kept; backend: the device
// backend whose tensors the collectives take (host tensors pass through the same copies).
std::unique_ptr<Communicator> make_host_staged_communicator(std::unique_ptr<Communicator> host,
                                                            Backend& backend);

}  // namespace deeptrain
