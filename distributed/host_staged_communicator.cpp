#include "distributed/host_staged_communicator.h"

#include <vector>

#include "core/error.h"

namespace deeptrain {
namespace {

// Page-locked host buffers, reused: allocating them costs far more than a bucket's copy.
// Reuse is safe without waiting for the device: every copy into or out of a buffer is ordered on
// the backend's one stream, and the host touches a buffer (MPI) only after synchronize().
struct BufferPool {
  Backend* backend = nullptr;
  std::vector<Tensor> buffers;  // u8, each of its own size
  std::vector<bool> in_use;

  size_t take(size_t bytes) {
    for (size_t i = 0; i < buffers.size(); ++i)
      if (!in_use[i] && buffers[i].nbytes() >= bytes) {
        in_use[i] = true;
        return i;
      }
    buffers.push_back(backend->empty_host(Shape{int64_t(bytes)}, DType::u8));
    in_use.push_back(true);
    return buffers.size() - 1;
  }
  // A host tensor of `like`'s dtype and element count in buffer i.
  Tensor view(size_t i, const Tensor& like) const {
    return Tensor::view(buffers[i].raw(), Shape{like.numel()}, like.dtype(), Device::cpu);
  }
};

// One staged collective: the host collective on `staged`, then `staged` copied into `target`.
class StagedRequest : public CommRequest {
 public:
  StagedRequest(std::shared_ptr<BufferPool> pool, std::vector<size_t> slots,
                std::unique_ptr<CommRequest> inner, Tensor staged, Tensor target)
      : pool_(std::move(pool)), slots_(std::move(slots)), inner_(std::move(inner)),
        staged_(std::move(staged)), target_(std::move(target)) {}
  ~StagedRequest() override {
    for (size_t s : slots_) pool_->in_use[s] = false;
  }
  void wait() override {
    inner_->wait();
    // Ordered on the backend's stream before any later op that reads the target.
    if (!copied_ && target_.numel() > 0) pool_->backend->copy(staged_, target_);
    copied_ = true;
  }
  bool test() override { return inner_->test(); }
  double started_at() const override { return inner_->started_at(); }
  double finished_at() const override { return inner_->finished_at(); }

 private:
  std::shared_ptr<BufferPool> pool_;
  std::vector<size_t> slots_;
  std::unique_ptr<CommRequest> inner_;
  Tensor staged_, target_;
  bool copied_ = false;
};

class HostStagedCommunicator : public Communicator {
 public:
  HostStagedCommunicator(std::unique_ptr<Communicator> host, Backend& backend)
      : host_(std::move(host)), pool_(std::make_shared<BufferPool>()) {
    set_gradient_sync(host_->gradient_sync());
    pool_->backend = &backend;
  }
  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  std::string host() const override { return host_->host(); }
  std::string host_of(int r) const override { return host_->host_of(r); }
  Watchdog* watchdog() const override { return host_->watchdog(); }

  std::unique_ptr<CommRequest> iallreduce_sum(Tensor& t, const char* what) override {
    auto [slot, staged] = stage(t);
    auto inner = host_->iallreduce_sum(staged, what);
    return std::make_unique<StagedRequest>(pool_, std::vector<size_t>{slot}, std::move(inner),
                                           staged, t);
  }
  std::unique_ptr<CommRequest> ibroadcast(Tensor& t, int root, const char* what) override {
    auto [slot, staged] = stage(t);
    auto inner = host_->ibroadcast(staged, root, what);
    return std::make_unique<StagedRequest>(pool_, std::vector<size_t>{slot}, std::move(inner),
                                           staged, t);
  }
  std::unique_ptr<CommRequest> iallgather(const Tensor& in, Tensor& out, const char* what) override {
    DT_CHECK(out.dtype() == in.dtype() && out.numel() == in.numel() * size(),
             "{}: allgather's output must hold {} x {} elements of {}", what, size(), in.numel(),
             dtype_name(in.dtype()));
    auto [in_slot, staged_in] = stage(in);
    const size_t out_slot = pool_->take(out.nbytes());
    Tensor staged_out = pool_->view(out_slot, out);
    auto inner = host_->iallgather(staged_in, staged_out, what);
    return std::make_unique<StagedRequest>(pool_, std::vector<size_t>{in_slot, out_slot},
                                           std::move(inner), staged_out, out);
  }
  std::unique_ptr<CommRequest> ibarrier(const char* what) override { return host_->ibarrier(what); }

 private:
  // t copied into a pooled host buffer; the host waits for the device to finish the copy (and
  // everything issued before it: the bucket's gradients).
  std::pair<size_t, Tensor> stage(const Tensor& t) {
    const size_t slot = pool_->take(t.nbytes());
    Tensor staged = pool_->view(slot, t);
    if (t.numel() > 0) {
      pool_->backend->copy(t, staged);
      pool_->backend->synchronize();
    }
    return {slot, staged};
  }

  std::unique_ptr<Communicator> host_;
  std::shared_ptr<BufferPool> pool_;
};

}  // namespace

std::unique_ptr<Communicator> make_host_staged_communicator(std::unique_ptr<Communicator> host,
                                                            Backend& backend) {
  return std::make_unique<HostStagedCommunicator>(std::move(host), backend);
}

}  // namespace deeptrain
