#pragma once
// Runs the real deeptrain binary (or any command) and captures its output and exit code.
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

struct CommandResult {
  int exit_code;
  std::string output;  // stdout and stderr together
  std::string last_line() const {
    std::string s = output;
    while (!s.empty() && s.back() == '\n') s.pop_back();
    return s.substr(s.find_last_of('\n') + 1);
  }
};

inline CommandResult run_command(const std::string& cmd) {
  CommandResult r{-1, ""};
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.output.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

inline std::string deeptrain_cmd(const std::string& args) {
  return std::string(DEEPTRAIN_BINARY) + " " + args;
}

// A fresh directory under the system temp dir, removed with the object.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() /
           ("deeptrain_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++));
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string file(const std::string& name, const std::string& contents) const {
    std::ofstream(path / name) << contents;
    return (path / name).string();
  }
  static int& counter() { static int c = 0; return c; }
};

// A JSON number field of a one-line object, e.g. json_number(line, "test_accuracy").
inline double json_number(const std::string& line, const std::string& key) {
  const std::string k = "\"" + key + "\":";
  const size_t at = line.find(k);
  if (at == std::string::npos) return -1;
  return std::stod(line.substr(at + k.size()));
}

inline bool have_mnist() {
  return std::filesystem::exists(std::string(DEEPTRAIN_DATA_DIR) + "/mnist/t10k-labels-idx1-ubyte") ||
         std::filesystem::exists(std::string(DEEPTRAIN_DATA_DIR) + "/mnist/t10k-labels-idx1-ubyte.gz");
}
