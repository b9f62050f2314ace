#pragma once
// Where a run writes, checked and claimed when it starts rather than discovered at the end: a
// typo in --save-weights or a read-only --checkpoint-dir must not cost a whole training run,
// and two trainers must not share one checkpoint directory (each would resume from the other's
// checkpoints).
//
// Library code: errors are thrown (InputError naming the path and what is wrong), nothing is
// printed; notes for the user (a stale lock taken over) are returned.
#include <string>

namespace deeptrain::io {

// Creates `dir` (and its parents) if needed, then creates, writes, fsyncs and removes a probe
// file in it: permissions, a read-only mount (which stops root too) and a full disk all show
// here. InputError "<what> <dir>: ...".
void check_writable_dir(const std::string& dir, const std::string& what);

// `path` is a file to be written later (atomically, in its directory): its directory must exist
// already (it is not created: a mistyped directory should be reported, not made) and be
// writable, and `path` must not be a directory. InputError "<what> <path>: ...".
void check_writable_file(const std::string& path, const std::string& what);

// An advisory lock on a directory: DIR/.lock holds "host pid start-time starttime-ticks" and is
// flock()ed for as long as the object lives; the destructor removes the file and releases it.
// flock is released by the kernel when its holder dies, so a lock file that is not flocked was
// left by a killed process; the recorded pid and host say whether that is certain (this host,
// the pid gone or reused), in which case the lock is taken over and `note()` says so. A lock
// held by a live process, or recorded by another host (whose processes this one cannot see),
// is refused.
class DirLock {
 public:
  DirLock() = default;
  // Locks `dir` (which must exist). InputError "<what> <dir> is in use by pid P on host H since
  // T (DIR/.lock) ..." when it is held.
  DirLock(const std::string& dir, const std::string& what);
  ~DirLock();
  DirLock(DirLock&& o) noexcept;
  DirLock& operator=(DirLock&& o) noexcept;
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

  bool held() const { return fd_ >= 0; }
  const std::string& path() const { return path_; }
  // "" or what happened to a stale lock ("took over the stale lock ... of pid P (no longer
  // running)").
  const std::string& note() const { return note_; }
  void release();

 private:
  int fd_ = -1;
  std::string path_, note_;
};

// The lock file's name inside a locked directory.
inline constexpr const char* kLockFile = ".lock";

}  // namespace deeptrain::io
