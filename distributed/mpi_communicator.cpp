#include "distributed/mpi_communicator.h"

#include <cstdlib>

#include "core/error.h"
#include "distributed/watchdog.h"

#ifdef DEEPTRAIN_HAVE_MPI
#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "distributed/half.h"
#endif

namespace deeptrain {

bool launched_under_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (std::getenv(v)) return true;
  return false;
}

#ifndef DEEPTRAIN_HAVE_MPI

bool mpi_available() { return false; }
bool mpi_active() { return false; }
int world_rank() { return 0; }
MpiRuntime::MpiRuntime(int*, char***) {
  fail("this deeptrain was built without MPI (install libopenmpi-dev and rebuild) but was "
       "started by an MPI launcher");
}
MpiRuntime::~MpiRuntime() = default;
void abort_job(int code) { std::_Exit(code); }
struct MpiCommunicator::Impl {};
MpiCommunicator::MpiCommunicator() { fail("built without MPI"); }
MpiCommunicator::~MpiCommunicator() = default;
int MpiCommunicator::rank() const { return 0; }
int MpiCommunicator::size() const { return 1; }
std::string MpiCommunicator::host() const { return local_host_name(); }
std::string MpiCommunicator::host_of(int) const { return local_host_name(); }
std::unique_ptr<CommRequest> MpiCommunicator::iallreduce_sum(Tensor&, const char*) { return {}; }
std::unique_ptr<CommRequest> MpiCommunicator::ibroadcast(Tensor&, int, const char*) { return {}; }
std::unique_ptr<CommRequest> MpiCommunicator::iallgather(const Tensor&, Tensor&, const char*) {
  return {};
}
std::unique_ptr<CommRequest> MpiCommunicator::ibarrier(const char*) { return {}; }
void MpiCommunicator::set_watchdog(Watchdog*) {}
Watchdog* MpiCommunicator::watchdog() const { return nullptr; }
std::unique_ptr<Communicator> make_world_communicator() {
  return std::make_unique<SingleProcessCommunicator>();
}

#else  // DEEPTRAIN_HAVE_MPI

bool mpi_available() { return true; }

bool mpi_active() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  return init && !fin;
}

int world_rank() {
  int rank = 0;
  if (mpi_active()) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

namespace {
std::string mpi_error_string(int code) {
  char s[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  MPI_Error_string(code, s, &len);
  return std::string(s, len);
}
}  // namespace

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
  // Gradient allreduces are non-blocking (libnbc) and in place; for those libnbc's default picks
  // a binomial tree (reduce to one rank, then broadcast) on fewer than 4 ranks, which sends the
  // whole buffer through one rank's link: 13.4 ms for DeepConvNet's 0.49 MB on 3 hosts at
  // 1 Gbit/s, against 5.5 ms with the bandwidth-optimal ring (2 (N-1)/N of the buffer per link).
  // Choose the ring unless the user chose (mpirun --mca coll_libnbc_iallreduce_algorithm N).
  setenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "1", /*overwrite=*/0);
  int provided = 0;
  const int rc = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
  if (rc != MPI_SUCCESS) fail("MPI_Init_thread failed: {}", mpi_error_string(rc));
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  if (provided < MPI_THREAD_SERIALIZED)
    fail("rank {} on {}: the MPI library provides thread level {}, deeptrain needs at least "
         "MPI_THREAD_SERIALIZED (its communication thread makes the MPI calls)",
         rank_, local_host_name(), provided);
}

MpiRuntime::~MpiRuntime() {
  if (mpi_active()) MPI_Finalize();
}

void abort_job(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  if (mpi_active()) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

namespace {

constexpr int kArriveTag = 7301;
constexpr double kHeartbeat = 0.2;     // seconds between heartbeats while collectives are in flight
constexpr double kSilentAfter = 1.0;   // a peer not heard from for this long is called silent

void sum_f16(void* in, void* inout, int* len, MPI_Datatype*) {
  f16_sum_array(static_cast<const uint16_t*>(in), static_cast<uint16_t*>(inout), *len);
}
void sum_bf16(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const uint16_t*>(in);
  auto* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = f32_to_bf16(bf16_to_f32(a[i]) + bf16_to_f32(b[i]));
}

// Shared by a queued collective and the CommRequest its caller holds.
struct OpState {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::string error;
  double t_start = 0, t_end = 0;
};

struct Op {
  enum Kind { allreduce, bcast, allgather, barrier } kind;
  void* buf = nullptr;
  const void* sendbuf = nullptr;
  int count = 0;
  MPI_Datatype type = MPI_BYTE;
  MPI_Op op = MPI_SUM;
  int root = 0;
  std::string what;
  uint64_t seq = 0;
  std::shared_ptr<OpState> state;
  MPI_Request req = MPI_REQUEST_NULL;
};

const char* kind_name(Op::Kind k) {
  switch (k) {
    case Op::allreduce: return "MPI_Iallreduce";
    case Op::bcast: return "MPI_Ibcast";
    case Op::allgather: return "MPI_Iallgather";
    case Op::barrier: return "MPI_Ibarrier";
  }
  return "?";
}

class MpiRequest : public CommRequest {
 public:
  MpiRequest(std::shared_ptr<OpState> s, std::string where, std::shared_ptr<std::atomic<int>> waiters)
      : s_(std::move(s)), where_(std::move(where)), waiters_(std::move(waiters)) {}
  void wait() override {
    std::unique_lock lk(s_->mu);
    if (!s_->done) {
      // While a caller is blocked on a result, the communication thread polls without sleeping.
      waiters_->fetch_add(1);
      s_->cv.wait(lk, [&] { return s_->done; });
      waiters_->fetch_sub(1);
    }
    if (!s_->error.empty()) throw Error(fmt::format("{}: {}", where_, s_->error));
  }
  bool test() override {
    std::lock_guard lk(s_->mu);
    return s_->done;
  }
  double started_at() const override {
    std::lock_guard lk(s_->mu);
    return s_->t_start;
  }
  double finished_at() const override {
    std::lock_guard lk(s_->mu);
    return s_->t_end;
  }

 private:
  std::shared_ptr<OpState> s_;
  std::string where_;
  std::shared_ptr<std::atomic<int>> waiters_;
};

void finish_op(Op& op, std::string error) {
  {
    std::lock_guard lk(op.state->mu);
    op.state->done = true;
    op.state->t_end = now_seconds();
    op.state->error = std::move(error);
  }
  op.state->cv.notify_all();
}

}  // namespace

struct MpiCommunicator::Impl {
  MPI_Comm comm = MPI_COMM_NULL;  // the collectives
  MPI_Comm hb = MPI_COMM_NULL;    // "arrived at collective k" messages
  MPI_Op op_f16 = MPI_OP_NULL, op_bf16 = MPI_OP_NULL;
  int rank = 0, size = 1;
  std::vector<std::string> hosts;

  std::mutex mu;  // guards queue, stop, watchdog
  std::condition_variable cv;
  std::deque<Op> queue;
  bool stop = false;
  Watchdog* watchdog = nullptr;
  uint64_t next_seq = 1;  // assigned in submission order

  // What each peer last told this rank: the highest collective it has started, and when it was
  // last heard from at all (written by the thread, read by the watchdog).
  std::mutex peers_mu;
  std::vector<uint64_t> last_seq;
  std::vector<double> last_heard;
  uint64_t started_seq = 0;  // the highest collective this rank has started (thread only)
  double start_time = 0;

  std::thread thread;
  bool abandoned = false;  // the thread left collectives unfinished (shutdown after an error)
  // Callers blocked in CommRequest::wait(): then nothing computes on this rank's behalf, and the
  // thread polls back-to-back instead of sleeping between polls.
  std::shared_ptr<std::atomic<int>> waiters = std::make_shared<std::atomic<int>>(0);

  std::string where() const { return fmt::format("rank {} on {}", rank, hosts[rank]); }

  std::unique_ptr<CommRequest> submit(Op op) {
    op.state = std::make_shared<OpState>();
    auto req = std::make_unique<MpiRequest>(op.state, where(), waiters);
    {
      std::lock_guard lk(mu);
      DT_CHECK(!stop, "collective '{}' on a communicator that is shutting down", op.what);
      op.seq = next_seq++;
      queue.push_back(std::move(op));
    }
    cv.notify_one();
    return req;
  }

  // For the watchdog: the peers collective `seq` is waiting for. A peer that has not started it
  // is computing, slow or stuck before it; a peer that has started it but has been silent for
  // longer than a few heartbeat periods is stopped, dead or cut off.
  std::string describe_waiting(uint64_t seq) {
    std::lock_guard lk(peers_mu);
    const double now = now_seconds();
    std::string s;
    int named = 0;
    for (int r = 0; r < size; ++r) {
      if (r == rank) continue;
      const double heard = last_heard[r] > 0 ? last_heard[r] : start_time;
      const double silent = now - heard;
      const bool arrived = last_seq[r] >= seq, quiet = silent > kSilentAfter;
      if (arrived && !quiet) continue;
      if (named++) s += "; ";
      s += fmt::format("rank {} on {}: ", r, hosts[r]);
      if (!arrived)
        s += fmt::format("has not reached it (last at #{}, heard from {:.1f} s ago)", last_seq[r],
                         silent);
      else
        s += fmt::format("reached it, then silent for {:.1f} s (stopped, dead or cut off?)", silent);
    }
    if (named == 0)
      s = "nobody: every rank has reached this collective and is alive, but it does not complete "
          "(a cut link between them?)";
    return s;
  }

  // ---- the communication thread
  void run() {
    uint64_t in_seq[2] = {0, 0};
    MPI_Request hb_recv = MPI_REQUEST_NULL;
    if (size > 1) MPI_Irecv(in_seq, 2, MPI_UINT64_T, MPI_ANY_SOURCE, kArriveTag, hb, &hb_recv);
    struct Send { std::unique_ptr<uint64_t[]> buf; MPI_Request req; };
    std::deque<Send> sends;
    std::deque<Op> in_flight;
    std::vector<MPI_Request> reqs;
    std::vector<int> idx;
    std::vector<MPI_Status> st;
    int idle_polls = 0;
    double last_announce = 0;
    for (;;) {
      std::deque<Op> fresh;
      {
        std::unique_lock lk(mu);
        if (in_flight.empty())
          cv.wait(lk, [&] { return stop || !queue.empty(); });
        if (stop) break;
        fresh.swap(queue);
      }
      if (!fresh.empty()) last_announce = now_seconds();
      for (Op& op : fresh) {
        start(op, sends);
        if (op.req == MPI_REQUEST_NULL) continue;  // failed to start: already finished
        in_flight.push_back(std::move(op));
      }
      if (in_flight.empty()) continue;
      // One MPI_Testsome over the collectives in flight (it progresses everything), then the
      // peers' arrival messages, all that have come.
      reqs.clear();
      for (Op& op : in_flight) reqs.push_back(op.req);
      idx.resize(reqs.size());
      st.resize(reqs.size());
      int outcount = 0;
      const int rc = MPI_Testsome(int(reqs.size()), reqs.data(), &outcount, idx.data(), st.data());
      if (rc != MPI_SUCCESS && rc != MPI_ERR_IN_STATUS) {
        const std::string e = fmt::format("MPI_Testsome failed: {}", mpi_error_string(rc));
        for (Op& op : in_flight) {
          if (Watchdog* w = current_watchdog()) w->collective_end(op.seq);
          finish_op(op, e);
        }
        in_flight.clear();
        continue;
      }
      const bool progressed = outcount > 0 && outcount != MPI_UNDEFINED;
      for (int k = 0; progressed && k < outcount; ++k) {
        Op& op = in_flight[idx[k]];
        op.req = MPI_REQUEST_NULL;
        std::string err;
        if (rc == MPI_ERR_IN_STATUS && st[k].MPI_ERROR != MPI_SUCCESS)
          err = fmt::format("{} '{}' (#{}) failed: {}", kind_name(op.kind), op.what, op.seq,
                            mpi_error_string(st[k].MPI_ERROR));
        if (Watchdog* w = current_watchdog()) w->collective_end(op.seq);
        finish_op(op, std::move(err));
      }
      while (hb_recv != MPI_REQUEST_NULL) {
        int flag = 0;
        MPI_Status s;
        if (MPI_Test(&hb_recv, &flag, &s) != MPI_SUCCESS || !flag) break;
        note_heard(s.MPI_SOURCE, in_seq[0]);
        MPI_Irecv(in_seq, 2, MPI_UINT64_T, MPI_ANY_SOURCE, kArriveTag, hb, &hb_recv);
      }
      std::erase_if(in_flight, [](const Op& op) { return op.req == MPI_REQUEST_NULL; });
      if (!in_flight.empty() && now_seconds() - last_announce > kHeartbeat) {
        announce(sends);
        last_announce = now_seconds();
      }
      // Drop completed arrival sends (eager: they complete at once).
      while (!sends.empty()) {
        int flag = 0;
        MPI_Test(&sends.front().req, &flag, MPI_STATUS_IGNORE);
        if (!flag) break;
        sends.pop_front();
      }
      if (progressed || in_flight.empty()) {
        idle_polls = 0;
        continue;
      }
      // Nothing finished. If a caller is blocked waiting, nothing of this rank computes: poll
      // again at once, yielding the core between polls. Otherwise (backward is running) poll at
      // once for a few rounds, then sleep between polls (up to 100 us) so that this thread does
      // not take a core from the computation it overlaps; a newly queued collective wakes it.
      if (waiters->load(std::memory_order_relaxed) > 0) {
        std::this_thread::yield();
        continue;
      }
      if (++idle_polls > 16) {
        const int us = std::min(100, 5 * (idle_polls - 16));
        std::unique_lock lk(mu);
        cv.wait_for(lk, std::chrono::microseconds(us), [&] { return stop || !queue.empty(); });
      }
    }
    // Shut down. Collectives still in flight can never finish on this side: leave them (the job
    // is ending in an error) and tell any waiter.
    for (Op& op : in_flight) finish_op(op, "communicator shut down with the collective in flight");
    {
      std::lock_guard lk(mu);
      for (Op& op : queue) finish_op(op, "communicator shut down before the collective started");
      queue.clear();
    }
    abandoned = !in_flight.empty();
    if (hb_recv != MPI_REQUEST_NULL) {
      MPI_Cancel(&hb_recv);
      MPI_Wait(&hb_recv, MPI_STATUS_IGNORE);
    }
    for (Send& s : sends) {
      int flag = 0;
      MPI_Test(&s.req, &flag, MPI_STATUS_IGNORE);
      if (!flag) abandoned = true;
    }
  }

  Watchdog* current_watchdog() {
    std::lock_guard lk(mu);
    return watchdog;
  }

  void note_heard(int source, uint64_t seq) {
    std::lock_guard lk(peers_mu);
    if (source < 0 || source >= size) return;
    last_heard[source] = now_seconds();
    last_seq[source] = std::max(last_seq[source], seq);
  }

  // Tells every peer the highest collective this rank has started (at each start, and as a
  // heartbeat every kHeartbeat seconds while collectives are in flight).
  template <class SendList>
  void announce(SendList& sends) {
    for (int r = 0; r < size; ++r) {
      if (r == rank) continue;
      auto buf = std::make_unique<uint64_t[]>(2);
      buf[0] = started_seq;
      buf[1] = 0;
      MPI_Request q;
      if (MPI_Isend(buf.get(), 2, MPI_UINT64_T, r, kArriveTag, hb, &q) == MPI_SUCCESS)
        sends.push_back({std::move(buf), q});
    }
  }

  template <class SendList>
  void start(Op& op, SendList& sends) {
    started_seq = op.seq;
    announce(sends);
    if (Watchdog* w = current_watchdog()) w->collective_begin(op.seq, op.what);
    {
      std::lock_guard lk(op.state->mu);
      op.state->t_start = now_seconds();
    }
    int rc = MPI_SUCCESS;
    switch (op.kind) {
      case Op::allreduce:
        rc = MPI_Iallreduce(MPI_IN_PLACE, op.buf, op.count, op.type, op.op, comm, &op.req);
        break;
      case Op::bcast:
        rc = MPI_Ibcast(op.buf, op.count, MPI_BYTE, op.root, comm, &op.req);
        break;
      case Op::allgather:
        rc = MPI_Iallgather(op.sendbuf, op.count, MPI_BYTE, op.buf, op.count, MPI_BYTE, comm,
                            &op.req);
        break;
      case Op::barrier:
        rc = MPI_Ibarrier(comm, &op.req);
        break;
    }
    if (rc != MPI_SUCCESS) {
      op.req = MPI_REQUEST_NULL;
      if (Watchdog* w = current_watchdog()) w->collective_end(op.seq);
      finish_op(op, fmt::format("{} '{}' (#{}) failed to start: {}", kind_name(op.kind), op.what,
                                op.seq, mpi_error_string(rc)));
    }
  }
};

MpiCommunicator::MpiCommunicator() : impl_(std::make_unique<Impl>()) {
  DT_CHECK(mpi_active(), "MpiCommunicator needs MPI to be initialised (MpiRuntime)");
  Impl& m = *impl_;
  MPI_Comm_dup(MPI_COMM_WORLD, &m.comm);
  MPI_Comm_dup(MPI_COMM_WORLD, &m.hb);
  MPI_Comm_set_errhandler(m.comm, MPI_ERRORS_RETURN);
  MPI_Comm_set_errhandler(m.hb, MPI_ERRORS_RETURN);
  MPI_Comm_rank(m.comm, &m.rank);
  MPI_Comm_size(m.comm, &m.size);
  MPI_Op_create(&sum_f16, 1, &m.op_f16);
  MPI_Op_create(&sum_bf16, 1, &m.op_bf16);
  // Host names of all ranks, for messages and for counting the ranks that share a host.
  constexpr int kName = 256;
  std::vector<char> mine(kName, 0), all(size_t(kName) * m.size, 0);
  const std::string h = local_host_name();
  std::memcpy(mine.data(), h.data(), std::min<size_t>(h.size(), kName - 1));
  const int rc = MPI_Allgather(mine.data(), kName, MPI_CHAR, all.data(), kName, MPI_CHAR, m.comm);
  if (rc != MPI_SUCCESS) fail("rank {} on {}: exchanging host names: {}", m.rank, h, mpi_error_string(rc));
  for (int r = 0; r < m.size; ++r) m.hosts.emplace_back(all.data() + size_t(r) * kName);
  m.last_seq.assign(m.size, 0);
  m.last_heard.assign(m.size, 0);
  m.start_time = now_seconds();
  m.thread = std::thread([&m] { m.run(); });
}

MpiCommunicator::~MpiCommunicator() {
  Impl& m = *impl_;
  {
    std::lock_guard lk(m.mu);
    m.stop = true;
    // The watchdog may outlive this communicator: it must not ask it about peers any more.
    if (m.watchdog) m.watchdog->set_describer({});
  }
  m.cv.notify_all();
  if (m.thread.joinable()) m.thread.join();
  if (!mpi_active() || m.abandoned) return;  // leave MPI objects to MPI_Abort / MPI_Finalize
  MPI_Op_free(&m.op_f16);
  MPI_Op_free(&m.op_bf16);
  MPI_Comm_free(&m.hb);
  MPI_Comm_free(&m.comm);
}

int MpiCommunicator::rank() const { return impl_->rank; }
int MpiCommunicator::size() const { return impl_->size; }
std::string MpiCommunicator::host() const { return impl_->hosts[impl_->rank]; }
std::string MpiCommunicator::host_of(int r) const {
  DT_CHECK(r >= 0 && r < impl_->size, "rank {} of {}", r, impl_->size);
  return impl_->hosts[r];
}

namespace {
int checked_count(int64_t n, const char* what) {
  DT_CHECK(n >= 0 && n <= INT_MAX, "collective '{}' of {} elements: more than INT_MAX", what, n);
  return int(n);
}
}  // namespace

std::unique_ptr<CommRequest> MpiCommunicator::iallreduce_sum(Tensor& t, const char* what) {
  Op op;
  op.kind = Op::allreduce;
  op.buf = t.raw();
  op.count = checked_count(t.numel(), what);
  op.what = what;
  switch (t.dtype()) {
    case DType::f32: op.type = MPI_FLOAT; break;
    case DType::f64: op.type = MPI_DOUBLE; break;
    case DType::i32: op.type = MPI_INT32_T; break;
    case DType::i64: op.type = MPI_INT64_T; break;
    case DType::f16: op.type = MPI_UINT16_T; op.op = impl_->op_f16; break;
    case DType::bf16: op.type = MPI_UINT16_T; op.op = impl_->op_bf16; break;
    default: fail("allreduce_sum '{}': unsupported dtype {}", what, dtype_name(t.dtype()));
  }
  DT_CHECK(t.device() == Device::cpu, "MPI collectives take host tensors");
  return impl_->submit(std::move(op));
}

std::unique_ptr<CommRequest> MpiCommunicator::ibroadcast(Tensor& t, int root, const char* what) {
  DT_CHECK(root >= 0 && root < impl_->size, "broadcast root {} of {}", root, impl_->size);
  Op op;
  op.kind = Op::bcast;
  op.buf = t.raw();
  op.count = checked_count(int64_t(t.nbytes()), what);
  op.root = root;
  op.what = what;
  return impl_->submit(std::move(op));
}

std::unique_ptr<CommRequest> MpiCommunicator::iallgather(const Tensor& in, Tensor& out,
                                                         const char* what) {
  DT_CHECK(in.dtype() == out.dtype() && out.numel() == in.numel() * impl_->size,
           "allgather '{}': {} {} from each of {} ranks into {} {}", what, in.numel(),
           dtype_name(in.dtype()), impl_->size, out.numel(), dtype_name(out.dtype()));
  Op op;
  op.kind = Op::allgather;
  op.sendbuf = in.raw();
  op.buf = out.raw();
  op.count = checked_count(int64_t(in.nbytes()), what);
  op.what = what;
  return impl_->submit(std::move(op));
}

std::unique_ptr<CommRequest> MpiCommunicator::ibarrier(const char* what) {
  Op op;
  op.kind = Op::barrier;
  op.what = what;
  return impl_->submit(std::move(op));
}

void MpiCommunicator::set_watchdog(Watchdog* w) {
  {
    std::lock_guard lk(impl_->mu);
    impl_->watchdog = w;
  }
  if (w) w->set_describer([m = impl_.get()](uint64_t seq) { return m->describe_waiting(seq); });
}

Watchdog* MpiCommunicator::watchdog() const {
  std::lock_guard lk(impl_->mu);
  return impl_->watchdog;
}

std::unique_ptr<Communicator> make_world_communicator() {
  if (mpi_active()) return std::make_unique<MpiCommunicator>();
  return std::make_unique<SingleProcessCommunicator>();
}

#endif  // DEEPTRAIN_HAVE_MPI

}  // namespace deeptrain
