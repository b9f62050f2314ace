#pragma once
// Library code throws; main decides. Every error carries the context that lets a user act on it
// (a file, a config field, a layer, a rank).
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace deeptrain {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An error in user input: a config, a data file, a weights file. The CLI exits with code 2.
class InputError : public Error {
 public:
  using Error::Error;
};

template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

template <class... Args>
[[noreturn]] void fail_input(fmt::format_string<Args...> f, Args&&... args) {
  throw InputError(fmt::format(f, std::forward<Args>(args)...));
}

#define DT_CHECK(cond, ...)                                                        \
  do {                                                                             \
    if (!(cond)) ::deeptrain::fail("{}:{}: check failed: {}: {}", __FILE__, __LINE__, \
                                   #cond, fmt::format(__VA_ARGS__));              \
  } while (0)

}  // namespace deeptrain
