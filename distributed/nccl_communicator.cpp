#include "distributed/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>
#include <thread>

#include "core/backend/cuda/cuda_backend.h"
#include "core/error.h"
#include "distributed/bootstrap.h"
#include "distributed/consistency.h"
#include "distributed/placement.h"

namespace deeptrain {
namespace {

void check_cuda(cudaError_t e, const char* call, const std::string& where) {
  if (e != cudaSuccess) fail("{}: {} failed: {}", where, call, cudaGetErrorString(e));
}

ncclDataType_t nccl_type(DType t, const char* what) {
  switch (t) {
    case DType::f32: return ncclFloat32;
    case DType::f64: return ncclFloat64;
    case DType::f16: return ncclFloat16;
    case DType::bf16: return ncclBfloat16;
    case DType::i32: return ncclInt32;
    case DType::i64: return ncclInt64;
    case DType::u8: return ncclUint8;
  }
  fail("{}: dtype {} has no NCCL type", what, dtype_name(t));
}

// State shared by the communicator and its requests: a request can outlive neither.
struct NcclState {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;    // NCCL's
  cudaStream_t compute = nullptr;   // the backend's
  double timeout_s = 0;
  std::string where;
  bool aborted = false;

  // Polls until `done` has completed; an asynchronous NCCL error or the deadline aborts.
  void wait_event(cudaEvent_t done, const std::string& what) {
    const double deadline = timeout_s > 0 ? now_seconds() + timeout_s : 0;
    for (int spins = 0;; ++spins) {
      if (aborted) fail("{}: {}: the NCCL communicator was aborted earlier", where, what);
      const cudaError_t q = cudaEventQuery(done);
      if (q == cudaSuccess) return;
      if (q != cudaErrorNotReady) fail("{}: {}: {}", where, what, cudaGetErrorString(q));
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm, &async);
      if (async != ncclSuccess && async != ncclInProgress) {
        abort();
        fail("{}: {}: NCCL reported {} (a peer failed or left; the job ends)", where, what,
             ncclGetErrorString(async));
      }
      if (deadline > 0 && now_seconds() > deadline) {
        abort();
        fail("{}: {}: not complete after {:.0f} s (a peer is stuck or gone); NCCL communicator "
             "aborted", where, what, timeout_s);
      }
      if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  void abort() {
    if (!aborted && comm) ncclCommAbort(comm);
    aborted = true;
  }
  void check(ncclResult_t r, const char* call, const std::string& what) {
    if (r == ncclSuccess || r == ncclInProgress) return;
    abort();
    fail("{}: {}: {} failed: {}", where, what, call, ncclGetErrorString(r));
  }
  // A call on a non-blocking communicator may return ncclInProgress while NCCL is still putting
  // its work on the stream (connections are set up lazily, on first use): until
  // ncclCommGetAsyncError says ncclSuccess, an event recorded on that stream would complete
  // before the collective has even started.
  void settle(ncclResult_t r, const char* call, const std::string& what) {
    check(r, call, what);
    const double deadline = timeout_s > 0 ? now_seconds() + timeout_s : 0;
    while (r == ncclInProgress) {
      ncclCommGetAsyncError(comm, &r);
      check(r, call, what);
      if (r == ncclInProgress && deadline > 0 && now_seconds() > deadline) {
        abort();
        fail("{}: {}: {} still in progress after {:.0f} s (a peer is stuck or gone); NCCL "
             "communicator aborted", where, what, call, timeout_s);
      }
      std::this_thread::yield();
    }
  }
};

class NcclRequest : public CommRequest {
 public:
  NcclRequest(std::shared_ptr<NcclState> s, std::string what, double started)
      : s_(std::move(s)), what_(std::move(what)), started_(started) {
    check_cuda(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming), "cudaEventCreate",
               s_->where);
  }
  ~NcclRequest() override { cudaEventDestroy(done_); }
  cudaEvent_t event() const { return done_; }
  void wait() override {
    if (finished_ == 0) {
      s_->wait_event(done_, what_);
      finished_ = now_seconds();
      // The compute stream must not touch the buffer before NCCL is done with it.
      check_cuda(cudaStreamWaitEvent(s_->compute, done_, 0), "cudaStreamWaitEvent", s_->where);
    }
  }
  bool test() override {
    if (finished_ == 0 && cudaEventQuery(done_) == cudaSuccess) finished_ = now_seconds();
    return finished_ != 0;
  }
  bool order_on_device() override {
    check_cuda(cudaStreamWaitEvent(s_->compute, done_, 0), "cudaStreamWaitEvent", s_->where);
    return true;
  }
  double started_at() const override { return started_; }
  double finished_at() const override { return finished_; }

 private:
  std::shared_ptr<NcclState> s_;
  std::string what_;
  cudaEvent_t done_ = nullptr;
  double started_ = 0, finished_ = 0;
};

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(std::unique_ptr<Communicator> host, Backend& backend, double timeout_s)
      : host_(std::move(host)), s_(std::make_shared<NcclState>()) {
    set_gradient_sync(host_->gradient_sync());
    s_->where = host_->where();
    s_->timeout_s = timeout_s;
    s_->compute = static_cast<cudaStream_t>(cuda_stream_of(backend));
    DT_CHECK(s_->compute != nullptr, "NCCL needs a CUDA backend, got '{}'", backend.name());
    check_cuda(cudaStreamCreateWithFlags(&s_->stream, cudaStreamNonBlocking), "cudaStreamCreate",
               s_->where);
    check_cuda(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming), "cudaEventCreate",
               s_->where);
    // NCCL refuses ranks that share a GPU ("Duplicate GPU detected"): say so first, by rank
    // and host, with the way out. Every rank sees the same ids, so every rank stops alike.
    int device = 0;
    char bus_id[64] = {};
    check_cuda(cudaGetDevice(&device), "cudaGetDevice", s_->where);
    check_cuda(cudaDeviceGetPCIBusId(bus_id, sizeof bus_id, device), "cudaDeviceGetPCIBusId",
               s_->where);
    if (const std::string shared = shared_device(*host_, bus_id); !shared.empty())
      throw JobWideError(fmt::format(
          "NCCL cannot run two ranks on one GPU: {}. Run one rank per GPU (run.gpu picks it), "
          "or send the gradients through host memory and MPI: distributed.device_transport: "
          "DEVICE_TRANSPORT_HOST_MPI (--device-transport host-mpi)", shared));
    const std::vector<uint8_t> id_bytes =
        broadcast_bootstrap_id(*host_, sizeof(ncclUniqueId), [this] {
          ncclUniqueId id;
          s_->check(ncclGetUniqueId(&id), "ncclGetUniqueId", "bootstrap");
          const auto* p = reinterpret_cast<const uint8_t*>(&id);
          return std::vector<uint8_t>(p, p + sizeof id);
        });
    ncclUniqueId id;
    std::memcpy(&id, id_bytes.data(), sizeof id);
    // Non-blocking creation: a rank that never joins ends in the deadline, not in a hang.
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    s_->check(ncclCommInitRankConfig(&s_->comm, host_->size(), id, host_->rank(), &config),
              "ncclCommInitRankConfig", "communicator creation");
    const double deadline = timeout_s > 0 ? now_seconds() + timeout_s : 0;
    for (;;) {
      ncclResult_t st = ncclInProgress;
      ncclCommGetAsyncError(s_->comm, &st);
      if (st == ncclSuccess) break;
      if (st != ncclInProgress) s_->check(st, "ncclCommInitRankConfig", "communicator creation");
      if (deadline > 0 && now_seconds() > deadline) {
        s_->abort();
        fail("{}: NCCL communicator creation: not complete after {:.0f} s (a rank did not join)",
             s_->where, timeout_s);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    host_->barrier("NCCL communicator ready");
  }
  ~NcclCommunicator() override {
    if (s_->comm && !s_->aborted) {
      cudaStreamSynchronize(s_->stream);
      // Finalizing a non-blocking communicator completes in the background: destroy it once
      // that is done, or abort it if it does not end within the deadline.
      ncclResult_t r = ncclCommFinalize(s_->comm);
      const double deadline = s_->timeout_s > 0 ? now_seconds() + s_->timeout_s : 0;
      while (r == ncclInProgress && (deadline == 0 || now_seconds() < deadline)) {
        std::this_thread::yield();
        ncclCommGetAsyncError(s_->comm, &r);
      }
      if (r == ncclSuccess) ncclCommDestroy(s_->comm);
      else ncclCommAbort(s_->comm);
    }
    cudaEventDestroy(ready_);
    cudaStreamDestroy(s_->stream);
  }

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  std::string host() const override { return host_->host(); }
  std::string host_of(int r) const override { return host_->host_of(r); }
  Watchdog* watchdog() const override { return host_->watchdog(); }
  bool reduces_alone() const override { return true; }

  std::unique_ptr<CommRequest> iallreduce_sum(Tensor& t, const char* what) override {
    if (t.device() == Device::cpu) return host_->iallreduce_sum(t, what);
    return enqueue(what, [&](cudaStream_t st) {
      return ncclAllReduce(t.raw(), t.raw(), size_t(t.numel()), nccl_type(t.dtype(), what),
                           ncclSum, s_->comm, st);
    });
  }
  std::unique_ptr<CommRequest> ibroadcast(Tensor& t, int root, const char* what) override {
    if (t.device() == Device::cpu) return host_->ibroadcast(t, root, what);
    return enqueue(what, [&](cudaStream_t st) {
      return ncclBroadcast(t.raw(), t.raw(), size_t(t.numel()), nccl_type(t.dtype(), what), root,
                           s_->comm, st);
    });
  }
  std::unique_ptr<CommRequest> iallgather(const Tensor& in, Tensor& out, const char* what) override {
    if (in.device() == Device::cpu && out.device() == Device::cpu)
      return host_->iallgather(in, out, what);
    DT_CHECK(in.device() == out.device(), "{}: allgather between host and device memory", what);
    return enqueue(what, [&](cudaStream_t st) {
      return ncclAllGather(in.raw(), out.raw(), size_t(in.numel()), nccl_type(in.dtype(), what),
                           s_->comm, st);
    });
  }
  std::unique_ptr<CommRequest> ibarrier(const char* what) override { return host_->ibarrier(what); }

 private:
  template <class Op>
  std::unique_ptr<CommRequest> enqueue(const char* what, Op&& op) {
    // NCCL's stream waits for everything the compute stream has issued (the bucket's gradients).
    check_cuda(cudaEventRecord(ready_, s_->compute), "cudaEventRecord", s_->where);
    check_cuda(cudaStreamWaitEvent(s_->stream, ready_, 0), "cudaStreamWaitEvent", s_->where);
    auto req = std::make_unique<NcclRequest>(s_, what, now_seconds());
    s_->settle(op(s_->stream), "NCCL collective", what);
    check_cuda(cudaEventRecord(req->event(), s_->stream), "cudaEventRecord", s_->where);
    return req;
  }

  std::unique_ptr<Communicator> host_;
  std::shared_ptr<NcclState> s_;
  cudaEvent_t ready_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> host,
                                                     Backend& backend, double timeout_s) {
  return std::make_unique<NcclCommunicator>(std::move(host), backend, timeout_s);
}

}  // namespace deeptrain
