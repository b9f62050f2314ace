#pragma once
// Where a command's output goes: text lines for a person, or with --json one JSON object per
// line for a program. Every line a command prints on stdout goes through an Output, and every
// JSON object is written by nlohmann::json (never assembled by hand), so a NaN or an infinity
// becomes null (JSON has no such tokens) and strings are escaped.
#include <iosfwd>
#include <string>

#include <nlohmann/json.hpp>

namespace deeptrain::app {

// Keys stay in the order they were added ("event" first).
using Json = nlohmann::ordered_json;

// v with `decimals` digits after the point, for a JSON number that reads as the text does
// (0.9871, not 0.98710000514984131); NaN and infinities pass through (written as null).
double rounded(double v, int decimals);

class Output {
 public:
  // json: stdout carries only JSON lines. out: stdout (tests pass a string stream).
  explicit Output(bool json);
  Output(bool json, std::ostream& out);
  bool json() const { return json_; }
  // Every line written to stdout also goes to `log` (a run's log.txt); nullptr: none.
  void set_log(std::ostream* log) { log_ = log; }

  // An event: with --json, `object` as one line; otherwise `text` (one or more lines; nothing
  // when empty). on_screen = false: the text goes to the log only (a line that would break a
  // progress bar); the JSON line is printed either way.
  void event(const Json& object, const std::string& text, bool on_screen = true);
  // A line for a person: printed without --json; logged either way.
  void text(const std::string& line);
  // A line to the log only.
  void log(const std::string& line);
  // "deeptrain: <line>" to stderr (so that --json's stdout stays JSON), and to the log.
  void note(const std::string& line);

 private:
  void print(const std::string& line);
  bool json_;
  std::ostream& out_;
  std::ostream* log_ = nullptr;
};

}  // namespace deeptrain::app
