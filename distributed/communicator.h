#pragma once
// Collectives over the ranks of one job. A single-process run uses SingleProcessCommunicator:
// the same trainer code path, with collectives that are identities.
//
// Every collective must be called by every rank of the job, in the same order, with tensors of
// the same dtype and element count (broadcast and allgather too). Blocking calls are the
// non-blocking ones followed by wait(). Non-blocking calls return at once; the tensor must stay
// alive and untouched until wait() returns. An implementation may progress them on its own
// thread (MpiCommunicator does, so communication overlaps computation), or on a device stream
// (NcclCommunicator, distributed/nccl_communicator.h, enqueues on a communication stream and waits on an event).
//
// Sum reductions accept f32, f64, i32, i64 and the 16-bit wire formats f16 and bf16 (summed
// element by element in f32 and rounded back to nearest even, as NCCL does); broadcast and
// allgather accept any dtype.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/tensor.h"

namespace deeptrain {

class Watchdog;

// A pending non-blocking collective.
class CommRequest {
 public:
  virtual ~CommRequest() = default;
  // Blocks until the collective is complete on this rank (throws if it failed).
  virtual void wait() = 0;
  // True once complete; never blocks.
  virtual bool test() = 0;
  // A transport on the GPU (NCCL) makes the compute stream wait for the collective, so work
  // enqueued after this call reads its result without the host waiting, and returns true; wait()
  // must still come later (it reports failures and timeouts). false: only wait() orders.
  virtual bool order_on_device() { return false; }
  // Steady-clock seconds (now_seconds()) at which the transport started the collective and saw
  // it complete; 0 while unknown. For measuring how much communication hides behind compute.
  virtual double started_at() const { return 0; }
  virtual double finished_at() const { return 0; }
};

// How a job synchronises gradients, as configured (ExperimentConfig.distributed). Whoever builds
// the communicator from the config stores it here, and the Trainer's reducer uses it unless
// TrainerOptions says otherwise.
enum class WireCompression : uint8_t { none, f16, bf16 };
struct GradientSyncOptions {
  // Bucket size cap (reverse layer order); 0 = one bucket. Default: the config's
  // (distributed.bucket_mb's default, core/config.h).
  int64_t bucket_bytes = int64_t(double(config_defaults::kBucketMiB) * 1024.0 * 1024.0);
  WireCompression compression = WireCompression::none;
  bool overlap = true;  // false: one allreduce of the whole buffer after backward (reference)
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string host() const = 0;
  // The host name of another rank (for messages that name the ranks involved).
  virtual std::string host_of(int rank) const { return host(); }

  // `what` names the collective in watchdog messages and errors ("gradient bucket 2/4").
  virtual std::unique_ptr<CommRequest> iallreduce_sum(Tensor& t, const char* what = "allreduce") = 0;
  virtual std::unique_ptr<CommRequest> ibroadcast(Tensor& t, int root,
                                                  const char* what = "broadcast") = 0;
  // out holds size() * in.numel() elements of in's dtype: rank r's block at r * in.numel().
  virtual std::unique_ptr<CommRequest> iallgather(const Tensor& in, Tensor& out,
                                                  const char* what = "allgather") = 0;
  virtual std::unique_ptr<CommRequest> ibarrier(const char* what = "barrier") = 0;

  void allreduce_sum(Tensor& t, const char* what = "allreduce") { iallreduce_sum(t, what)->wait(); }
  void broadcast(Tensor& t, int root, const char* what = "broadcast") {
    ibroadcast(t, root, what)->wait();
  }
  void allgather(const Tensor& in, Tensor& out, const char* what = "allgather") {
    iallgather(in, out, what)->wait();
  }
  void barrier(const char* what = "barrier") { ibarrier(what)->wait(); }

  // Whether gradients go through this communicator's collectives even in a job of one rank
  // (NCCL does, so that a single GPU exercises the path of N). Otherwise a 1-rank reducer skips
  // them: they would be identities.
  virtual bool reduces_alone() const { return false; }
  // The watchdog that guards this communicator's collectives (null: none). The trainer also
  // reports step boundaries to it.
  virtual Watchdog* watchdog() const { return nullptr; }
  const GradientSyncOptions& gradient_sync() const { return sync_; }
  void set_gradient_sync(const GradientSyncOptions& o) { sync_ = o; }

  // "rank 1 on host-b": for messages.
  std::string where() const;

 private:
  GradientSyncOptions sync_;
};

class SingleProcessCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string host() const override;
  std::unique_ptr<CommRequest> iallreduce_sum(Tensor& t, const char* what = "allreduce") override;
  std::unique_ptr<CommRequest> ibroadcast(Tensor& t, int root,
                                          const char* what = "broadcast") override;
  std::unique_ptr<CommRequest> iallgather(const Tensor& in, Tensor& out,
                                          const char* what = "allgather") override;
  std::unique_ptr<CommRequest> ibarrier(const char* what = "barrier") override;
};

// This machine's host name.
std::string local_host_name();
// Steady-clock seconds, the time base of CommRequest::started_at/finished_at.
double now_seconds();

}  // namespace deeptrain
