#pragma once
// Hang safety. MPI ends the job when a rank dies, but not when a rank is stopped (SIGSTOP) or a
// link is cut: the other ranks then wait in a collective forever. A Watchdog is a thread per rank
// with two deadlines: a training step must finish within step_timeout_s, and a collective within
// collective_timeout_s of its start. When one passes, it calls on_expiry with a message such as
//   deeptrain: rank 0 on h1: step 17 collective 'gradient bucket 2/4' (#71) exceeded 2s
//   (waiting for rank 1 on h2: last arrived at collective #70, 2.3 s ago)
// and the CLI's on_expiry prints it and aborts the whole job (MPI_Abort). The "waiting for" part
// comes from the communicator, which knows how far every peer got (see MpiCommunicator).
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

namespace deeptrain {

struct WatchdogOptions {
  double step_timeout_s = 0;        // 0: no step deadline
  double collective_timeout_s = 0;  // 0: no collective deadline
};

class Watchdog {
 public:
  // Called once, on the watchdog's thread; it normally does not return (it aborts the job).
  using Expired = std::function<void(const std::string& message)>;
  // Describes what collective `seq` is waiting for ("rank 2 on h3: last arrived at ...").
  using Describe = std::function<std::string(uint64_t seq)>;

  // where: "rank 1 on host-b".
  Watchdog(WatchdogOptions opt, std::string where, Expired on_expiry);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  void set_describer(Describe d);
  void step_begin(int64_t step);
  void step_end();
  void collective_begin(uint64_t seq, const std::string& what);
  void collective_end(uint64_t seq);
  int64_t step() const;         // the current (or last) step, -1 before the first
  bool fired() const;
  const WatchdogOptions& options() const { return opt_; }

 private:
  void run();
  const WatchdogOptions opt_;
  const std::string where_;
  Expired on_expiry_;
  Describe describe_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false, fired_ = false, in_step_ = false;
  int64_t step_ = -1;
  double step_start_ = 0;
  struct Pending { std::string what; double start; };
  std::map<uint64_t, Pending> collectives_;  // in flight, by sequence number
  std::thread thread_;
};

}  // namespace deeptrain
