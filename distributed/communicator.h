#pragma once
// Collectives over the ranks of one job. A single-process run uses SingleProcessCommunicator:
// the same trainer code path, with collectives that are identities.
#include <memory>
#include <string>

#include "core/tensor.h"

namespace deeptrain {

// A pending non-blocking collective.
class CommRequest {
 public:
  virtual ~CommRequest() = default;
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string host() const = 0;
  // In-place sum over ranks (f32, f64, i64).
  virtual void allreduce_sum(Tensor& t) = 0;
  virtual std::unique_ptr<CommRequest> iallreduce_sum(Tensor& t) = 0;
  virtual void broadcast(Tensor& t, int root) = 0;
  virtual void barrier() = 0;
};

class SingleProcessCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string host() const override;
  void allreduce_sum(Tensor&) override {}
  std::unique_ptr<CommRequest> iallreduce_sum(Tensor&) override;
  void broadcast(Tensor&, int) override {}
  void barrier() override {}
};

}  // namespace deeptrain
