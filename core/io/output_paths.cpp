#include "core/io/output_paths.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "core/error.h"

namespace deeptrain::io {
namespace fs = std::filesystem;

namespace {

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == 0) return "unknown-host";
  return buf;
}

// Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot. With the pid
// it names one process for the life of the system: a recycled pid has another start time.
long long start_ticks(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t paren = stat.rfind(')');  // the command name may hold spaces and parentheses
  if (paren == std::string::npos) return 0;
  std::istringstream rest(stat.substr(paren + 1));
  std::string field;
  for (int i = 3; i <= 22 && rest >> field; ++i)
    if (i == 22) return std::atoll(field.c_str());
  return 0;
}

// Whether the process that wrote a lock record (same host) still runs.
bool still_running(pid_t pid, long long ticks) {
  if (pid <= 0) return false;
  if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
  const long long now = start_ticks(pid);
  return ticks == 0 || now == 0 || now == ticks;  // unknown: assume it is the same process
}

// Creates, writes and fsyncs a small file in `dir`, then removes it.
void probe(const std::string& dir, const std::string& what, const std::string& named) {
  const std::string p = dir + "/.deeptrain-probe-" + std::to_string(::getpid());
  ::unlink(p.c_str());  // left by a killed process that had our pid
  const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    fail_input("{} {}: not writable: cannot create a file in {}: {}", what, named, dir,
               std::strerror(errno));
  const char byte = '\n';
  int err = ::write(fd, &byte, 1) == 1 ? 0 : errno;
  if (err == 0 && ::fsync(fd) != 0 && errno != EINVAL) err = errno;
  ::close(fd);
  ::unlink(p.c_str());
  if (err != 0)
    fail_input("{} {}: not writable: writing a file in {} failed: {}", what, named, dir,
               std::strerror(err));
}

struct Holder {
  std::string host, started;
  pid_t pid = 0;
  long long ticks = 0;
  bool valid() const { return pid > 0 && !host.empty(); }
  std::string describe() const {
    return fmt::format("pid {} on host {} (started {})", pid, host, started.empty() ? "?" : started);
  }
};

Holder read_holder(int fd) {
  std::string text(4096, '\0');
  const ssize_t n = ::pread(fd, text.data(), text.size(), 0);
  text.resize(n > 0 ? size_t(n) : 0);
  std::map<std::string, std::string> kv;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);)
    if (const size_t eq = line.find('='); eq != std::string::npos)
      kv[line.substr(0, eq)] = line.substr(eq + 1);
  Holder h;
  h.host = kv["host"];
  h.started = kv["started"];
  h.pid = pid_t(std::atol(kv["pid"].c_str()));
  h.ticks = std::atoll(kv["start_ticks"].c_str());
  return h;
}

std::string now_text() {
  const std::time_t t = std::time(nullptr);
  std::tm local{};
  localtime_r(&t, &local);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S %z", &local);
  return buf;
}

}  // namespace

void check_writable_dir(const std::string& dir, const std::string& what) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
    fail_input("{} {}: exists and is not a directory", what, dir);
  fs::create_directories(dir, ec);
  if (ec) fail_input("{} {}: cannot create: {}", what, dir, ec.message());
  probe(dir, what, dir);
}

void check_writable_file(const std::string& path, const std::string& what) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) fail_input("{} {}: is a directory (give a file name)", what, path);
  const fs::path parent = fs::path(path).parent_path();
  const std::string dir = parent.empty() ? "." : parent.string();
  if (!fs::exists(dir, ec)) fail_input("{} {}: directory {} does not exist", what, path, dir);
  if (!fs::is_directory(dir, ec)) fail_input("{} {}: {} is not a directory", what, path, dir);
  probe(dir, what, path);
}

DirLock::DirLock(const std::string& dir, const std::string& what) : path_(dir + "/" + kLockFile) {
  const std::string me = host_name();
  // A holder that releases removes the file; whoever locked the removed file retries on the new
  // one (a lock on a file no longer in the directory protects nothing).
  for (int attempt = 0; attempt < 10; ++attempt) {
    const int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) fail_input("{} {}: cannot create its lock file {}: {}", what, dir, path_, std::strerror(errno));
    bool kernel_lock = true;
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      if (err == EWOULDBLOCK) {
        const Holder h = read_holder(fd);
        ::close(fd);
        fail_input("{} {} is in use by {} ({}): two runs must not share it; wait for that run to "
                   "end or give another directory",
                   what, dir, h.valid() ? h.describe() : std::string("another process"), path_);
      }
      // Some network file systems have no flock: the recorded pid and host still guard it.
      if (err != ENOLCK && err != EOPNOTSUPP && err != ENOSYS) {
        ::close(fd);
        fail_input("{} {}: cannot lock {}: {}", what, dir, path_, std::strerror(err));
      }
      kernel_lock = false;
    }
    struct stat locked {}, named {};
    if (::fstat(fd, &locked) != 0 || ::stat(path_.c_str(), &named) != 0 ||
        locked.st_ino != named.st_ino || locked.st_dev != named.st_dev) {
      ::close(fd);
      continue;
    }
    // Locked. A record left in the file belongs to a process that held the lock and died
    // without releasing it (else flock would have failed) unless flock is not effective here.
    const Holder h = read_holder(fd);
    if (h.valid() && !(h.host == me && h.pid == ::getpid())) {
      if (h.host != me) {
        ::close(fd);
        fail_input("{} {} is locked by {} ({}): this host cannot tell whether that run still "
                   "runs; if it has ended, remove {}",
                   what, dir, h.describe(), path_, path_);
      }
      if (still_running(h.pid, h.ticks)) {
        ::close(fd);
        fail_input("{} {} is in use by {} ({}){}: two runs must not share it; wait for that run to "
                   "end or give another directory",
                   what, dir, h.describe(), path_, kernel_lock ? "" : " (this file system has no flock)");
      }
      note_ = fmt::format("took over the stale lock {} of {}: that process no longer runs", path_,
                          h.describe());
    }
    const std::string record = fmt::format("host={}\npid={}\nstarted={}\nstart_ticks={}\n", me,
                                           ::getpid(), now_text(), start_ticks(::getpid()));
    if (::ftruncate(fd, 0) != 0 ||
        ::pwrite(fd, record.data(), record.size(), 0) != ssize_t(record.size())) {
      const int err = errno;
      ::close(fd);
      fail_input("{} {}: cannot write its lock file {}: {}", what, dir, path_, std::strerror(err));
    }
    ::fsync(fd);  // best effort: the flock, not the record, is what excludes on this host
    fd_ = fd;
    return;
  }
  fail_input("{} {}: cannot lock {}: the file keeps being replaced by other processes", what, dir,
             path_);
}

void DirLock::release() {
  if (fd_ < 0) return;
  // Removed while still locked: a process waiting for it finds the file gone and retries.
  ::unlink(path_.c_str());
  ::close(fd_);  // releases the flock
  fd_ = -1;
}

DirLock::~DirLock() { release(); }

DirLock::DirLock(DirLock&& o) noexcept
    : fd_(o.fd_), path_(std::move(o.path_)), note_(std::move(o.note_)) {
  o.fd_ = -1;
}

DirLock& DirLock::operator=(DirLock&& o) noexcept {
  if (this != &o) {
    release();
    fd_ = o.fd_;
    path_ = std::move(o.path_);
    note_ = std::move(o.note_);
    o.fd_ = -1;
  }
  return *this;
}

}  // namespace deeptrain::io
