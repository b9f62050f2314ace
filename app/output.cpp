#include "app/output.h"

#include <cmath>
#include <cstdio>
#include <iostream>

namespace deeptrain::app {

double rounded(double v, int decimals) {
  if (!std::isfinite(v)) return v;
  const double scale = std::pow(10.0, decimals);
  const double r = std::round(v * scale) / scale;
  return std::isfinite(r) ? r : v;  // |v| near the largest double: v itself
}

Output::Output(bool json) : Output(json, std::cout) {}
Output::Output(bool json, std::ostream& out) : json_(json), out_(out) {}

void Output::print(const std::string& line) {
  out_ << line << "\n" << std::flush;
  log(line);
}

void Output::event(const Json& object, const std::string& text, bool on_screen) {
  if (json_) {
    // error_handler replace: a byte sequence that is not UTF-8 (a path) becomes U+FFFD
    // instead of an exception in the middle of a run.
    print(object.dump(-1, ' ', false, Json::error_handler_t::replace));
    return;
  }
  if (text.empty()) return;
  on_screen ? print(text) : log(text);
}

void Output::text(const std::string& line) {
  if (!json_) print(line);
  else log(line);
}

void Output::log(const std::string& line) {
  if (log_) *log_ << line << "\n" << std::flush;
}

void Output::note(const std::string& line) {
  out_ << std::flush;
  std::fflush(stdout);
  std::cerr << "deeptrain: " << line << "\n" << std::flush;
  log(line);
}

}  // namespace deeptrain::app
