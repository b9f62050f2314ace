#pragma once
// The rendezvous that a device communicator (NCCL) needs before it exists: rank 0 makes an
// opaque id and every rank receives it over the host communicator (MPI). Kept apart from NCCL so
// that the exchange is tested with real MPI ranks on machines without a GPU.
#include <cstdint>
#include <functional>
#include <vector>

#include "distributed/communicator.h"

namespace deeptrain {

// Collective over `host`. make_id runs on rank 0 only; its bytes (every rank must expect the
// same length, `bytes`) are broadcast and returned on every rank.
std::vector<uint8_t> broadcast_bootstrap_id(Communicator& host, size_t bytes,
                                            const std::function<std::vector<uint8_t>()>& make_id);

}  // namespace deeptrain
