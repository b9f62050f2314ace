#include "distributed/communicator.h"

#include <unistd.h>

namespace deeptrain {

namespace {
struct DoneRequest : CommRequest {
  void wait() override {}
};
}  // namespace

std::string SingleProcessCommunicator::host() const {
  char name[256] = {0};
  gethostname(name, sizeof(name) - 1);
  return name;
}

std::unique_ptr<CommRequest> SingleProcessCommunicator::iallreduce_sum(Tensor&) {
  return std::make_unique<DoneRequest>();
}

}  // namespace deeptrain
