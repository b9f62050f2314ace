#include "core/io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/error.h"

namespace deeptrain::io {

namespace {

std::string parent_directory(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Writes all n bytes, retrying short writes and interrupted calls. Returns errno, or 0.
int write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t done = ::write(fd, p, n);
    if (done < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    p += done;
    n -= static_cast<size_t>(done);
  }
  return 0;
}

// Makes the rename itself durable. Some file systems cannot fsync a directory (EINVAL);
// there the rename is as durable as that file system allows, which is not an error of ours.
void sync_directory(const std::string& dir, const std::string& path) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail("writing '{}': cannot open directory '{}': {}", path, dir, std::strerror(errno));
  int err = ::fsync(fd) == 0 ? 0 : errno;
  ::close(fd);
  if (err != 0 && err != EINVAL)
    fail("writing '{}': fsync of directory '{}' failed: {}", path, dir, std::strerror(err));
}

[[noreturn]] void remove_and_fail(const std::string& tmp, const std::string& path, const char* step,
                                  int err) {
  ::unlink(tmp.c_str());
  fail("cannot write '{}': {} of '{}' failed: {}", path, step, tmp, std::strerror(err));
}

}  // namespace

void write_file_atomic(const std::string& path, const void* data, size_t n) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot write '{}': creating '{}' failed: {}", path, tmp, std::strerror(errno));

  if (int err = write_all(fd, static_cast<const char*>(data), n)) {
    ::close(fd);
    remove_and_fail(tmp, path, "write", err);
  }
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    remove_and_fail(tmp, path, "fsync", err);
  }
  if (::close(fd) != 0) remove_and_fail(tmp, path, "close", errno);
  if (::rename(tmp.c_str(), path.c_str()) != 0) remove_and_fail(tmp, path, "rename", errno);
  sync_directory(parent_directory(path), path);
}

void write_file_atomic(const std::string& path, const std::string& contents) {
  write_file_atomic(path, contents.data(), contents.size());
}

}  // namespace deeptrain::io
