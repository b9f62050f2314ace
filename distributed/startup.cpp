#include "distributed/startup.h"

#ifdef DEEPTRAIN_HAVE_MPI
#include <mpi.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "distributed/communicator.h"
#include "distributed/mpi_communicator.h"

namespace deeptrain {

double startup_timeout_s() {
  if (const char* v = std::getenv("DEEPTRAIN_STARTUP_TIMEOUT_S")) {
    char* end = nullptr;
    const double s = std::strtod(v, &end);
    if (end != v && s > 0) return s;
  }
  return 120;
}

#ifndef DEEPTRAIN_HAVE_MPI

// Built without MPI: every job is one process, so its own outcome is the verdict.
StartupVerdict agree_on_startup(bool ok, int exit_code, const std::string& message, double) {
  StartupVerdict v;
  v.proceed = ok;
  if (!ok) {
    v.exit_code = exit_code;
    v.failed_rank = 0;
    v.message = fmt::format("rank 0 on {}: {}", local_host_name(), message);
  }
  return v;
}

#else  // DEEPTRAIN_HAVE_MPI

namespace {

constexpr int kTag = 0x5747;  // the agreement's messages, before any communicator exists

// One rank's outcome, as bytes on the wire (fixed size: no second message for lengths).
struct Outcome {
  int32_t ok = 1, exit_code = 0, rank = 0;
  char host[128] = {};
  char message[1536] = {};
};

void copy_text(char* dst, size_t cap, const std::string& s) {
  const size_t n = std::min(cap - 1, s.size());
  std::memcpy(dst, s.data(), n);
  dst[n] = '\0';
}

// Polls req until done or the deadline; false on timeout.
bool wait_until(MPI_Request& req, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    int done = 0;
    MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    if (done) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

[[noreturn]] void give_up(const std::string& what) {
  std::fflush(stdout);
  std::fprintf(stderr, "deeptrain: error: %s\n", what.c_str());
  std::fflush(stderr);
  abort_job(1);
}

}  // namespace

StartupVerdict agree_on_startup(bool ok, int exit_code, const std::string& message,
                                double timeout_s) {
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const std::string host = local_host_name();
  Outcome mine;
  mine.ok = ok ? 1 : 0;
  mine.exit_code = exit_code;
  mine.rank = rank;
  copy_text(mine.host, sizeof(mine.host), host);
  copy_text(mine.message, sizeof(mine.message), message);
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(int64_t(timeout_s * 1000));
  Outcome verdict = mine;  // rank 0: the first failure (or its own success)
  if (rank == 0) {
    std::vector<Outcome> all(static_cast<size_t>(size));
    std::vector<MPI_Request> reqs(static_cast<size_t>(size), MPI_REQUEST_NULL);
    all[0] = mine;
    for (int r = 1; r < size; ++r)
      MPI_Irecv(&all[size_t(r)], int(sizeof(Outcome)), MPI_BYTE, r, kTag, MPI_COMM_WORLD, &reqs[size_t(r)]);
    std::string missing;
    for (int r = 1; r < size; ++r)
      if (!wait_until(reqs[size_t(r)], deadline))
        missing += fmt::format("{}{}", missing.empty() ? "" : ", ", r);
    if (!missing.empty())
      give_up(fmt::format("rank 0 on {}: ranks {} did not finish starting within {:g} s (a "
                          "command line or config that failed there without reaching the "
                          "start-up agreement, a crash, or a hang; DEEPTRAIN_STARTUP_TIMEOUT_S "
                          "sets the limit)", host, missing, timeout_s));
    for (const Outcome& o : all)
      if (!o.ok) {
        verdict = o;
        break;
      }
    if (verdict.ok) verdict = Outcome{};
  } else {
    MPI_Request req;
    MPI_Isend(&mine, int(sizeof(Outcome)), MPI_BYTE, 0, kTag, MPI_COMM_WORLD, &req);
    if (!wait_until(req, deadline))
      give_up(fmt::format("rank {} on {}: rank 0 did not take this rank's start-up outcome within "
                          "{:g} s", rank, host, timeout_s));
  }
  MPI_Request bcast;
  MPI_Ibcast(&verdict, int(sizeof(Outcome)), MPI_BYTE, 0, MPI_COMM_WORLD, &bcast);
  if (!wait_until(bcast, deadline))
    give_up(fmt::format("rank {} on {}: no start-up verdict from rank 0 within {:g} s", rank, host,
                        timeout_s));
  StartupVerdict v;
  v.proceed = verdict.ok != 0;
  if (!v.proceed) {
    v.exit_code = verdict.exit_code;
    v.failed_rank = verdict.rank;
    v.message = fmt::format("rank {} on {}: {}", verdict.rank, verdict.host, verdict.message);
  }
  return v;
}

#endif  // DEEPTRAIN_HAVE_MPI

}  // namespace deeptrain
