#include "distributed/bootstrap.h"

#include <cstring>

#include "core/error.h"

namespace deeptrain {

std::vector<uint8_t> broadcast_bootstrap_id(Communicator& host, size_t bytes,
                                            const std::function<std::vector<uint8_t>()>& make_id) {
  Tensor buf = Tensor::zeros({int64_t(bytes)}, DType::u8);
  if (host.rank() == 0) {
    const std::vector<uint8_t> id = make_id();
    DT_CHECK(id.size() == bytes, "bootstrap id of {} bytes, expected {}", id.size(), bytes);
    std::memcpy(buf.raw(), id.data(), bytes);
  }
  host.broadcast(buf, 0, "device communicator bootstrap id");
  const auto* p = static_cast<const uint8_t*>(buf.raw());
  return {p, p + bytes};
}

}  // namespace deeptrain
