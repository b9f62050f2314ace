#pragma once
// Starting an MPI job (mpiexec + the real deeptrain binary) from a test, watching its output,
// finding the process of one rank, and cleaning up whatever is left.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace mpitest {

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The processes whose environment has NAME=VALUE for every pair given.
inline std::vector<pid_t> pids_with_env(const std::vector<std::string>& entries) {
  std::vector<pid_t> out;
  for (const auto& d : std::filesystem::directory_iterator("/proc")) {
    const std::string name = d.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string env = read_file(d.path().string() + "/environ");
    if (env.empty()) continue;
    bool all = true;
    for (const std::string& e : entries) {
      const std::string needle = e + '\0';
      if (env.rfind(needle, 0) != 0 && env.find('\0' + needle) == std::string::npos) {
        all = false;
        break;
      }
    }
    if (all) out.push_back(pid_t(std::stol(name)));
  }
  return out;
}

// A job: argv run in its own process group, stdout and stderr into `log`.
class Job {
 public:
  // tag_env ("NAME=VALUE", exported to the ranks with mpiexec -x NAME) marks the job's processes
  // so that a rank can be found (rank_pid) and leftovers killed.
  Job(const std::vector<std::string>& argv, const std::string& log, std::string tag_env)
      : log_(log), tag_(std::move(tag_env)) {
    pid_ = fork();
    if (pid_ == 0) {
      setpgid(0, 0);
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      std::vector<char*> a;
      for (const std::string& s : argv) a.push_back(const_cast<char*>(s.c_str()));
      a.push_back(nullptr);
      execvp(a[0], a.data());
      _exit(127);
    }
    setpgid(pid_, pid_);
    started_ = now_s();
  }
  ~Job() { kill_all(); }

  // The process of rank `rank` (waits up to `seconds` for it to appear); -1 if none.
  pid_t rank_pid(int rank, double seconds = 20) const {
    const double until = now_s() + seconds;
    do {
      auto p = pids_with_env({tag_, "OMPI_COMM_WORLD_RANK=" + std::to_string(rank)});
      // mpiexec itself has the tag but not OMPI_COMM_WORLD_RANK; a rank has both.
      if (!p.empty()) return p.front();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    } while (now_s() < until);
    return -1;
  }

  // The exit status once it has exited within `seconds`, else nullopt.
  std::optional<int> wait_exit(double seconds) {
    if (status_) return status_;
    const double until = now_s() + seconds;
    for (;;) {
      int st = 0;
      const pid_t r = waitpid(pid_, &st, WNOHANG);
      if (r == pid_) {
        status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        ended_ = now_s();
        return status_;
      }
      if (now_s() > until) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  // Waits until the output contains `text` (false: the job ended or `seconds` passed first).
  bool wait_output(const std::string& text, double seconds) {
    const double until = now_s() + seconds;
    while (now_s() < until) {
      if (output().find(text) != std::string::npos) return true;
      if (wait_exit(0)) return output().find(text) != std::string::npos;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }
  std::string output() const { return read_file(log_); }
  double ended_at() const { return ended_; }
  pid_t pid() const { return pid_; }

  // SIGCONT + SIGKILL to the process group and to any leftover tagged processes.
  void kill_all() {
    if (!status_) {
      ::kill(-pid_, SIGCONT);
      ::kill(-pid_, SIGKILL);
      wait_exit(10);
    }
    if (!tag_.empty())
      for (pid_t p : pids_with_env({tag_})) {
        ::kill(p, SIGCONT);
        ::kill(p, SIGKILL);
      }
  }

 private:
  std::string log_, tag_;
  pid_t pid_ = -1;
  double started_ = 0, ended_ = 0;
  std::optional<int> status_;
};

}  // namespace mpitest
