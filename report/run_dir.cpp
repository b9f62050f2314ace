#include "report/run_dir.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace deeptrain::report {
namespace fs = std::filesystem;

std::string default_run_dir(const std::string& name, std::time_t when) {
  std::string safe = name.empty() ? "run" : name;
  for (char& c : safe)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') c = '_';
  std::tm local{};
  localtime_r(&when, &local);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &local);
  return "runs/" + safe + "-" + stamp;
}

std::string create_run_dir(const std::string& requested, const std::string& name) {
  std::error_code ec;
  if (requested.empty()) {
    const std::string base = default_run_dir(name, std::time(nullptr));
    fs::create_directories(fs::path(base).parent_path(), ec);
    for (int n = 1; n < 1000; ++n) {
      const std::string dir = n == 1 ? base : base + "-" + std::to_string(n);
      if (::mkdir(dir.c_str(), 0777) == 0) return dir;  // atomic: concurrent runs get different dirs
      if (errno != EEXIST) fail_input("run directory {}: cannot create: {}", dir, std::strerror(errno));
    }
    fail_input("run directory {}: 999 runs with this name started in this second", base);
  }
  if (fs::exists(requested) && !fs::is_directory(requested))
    fail_input("run directory {}: exists and is not a directory", requested);
  for (const char* marker : {"metrics_epochs.csv", "metrics_steps.csv"})
    if (fs::exists(fs::path(requested) / marker))
      fail_input("run directory {}: already holds a run ({}); give a new --run-dir or remove it",
                 requested, marker);
  fs::create_directories(requested, ec);
  if (ec) fail_input("run directory {}: cannot create: {}", requested, ec.message());
  return requested;
}

}  // namespace deeptrain::report
