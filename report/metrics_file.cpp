#include "report/metrics_file.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace deeptrain::report {

std::string format_number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return fmt::format("{}", v);
}

MetricsFiles::MetricsFiles(const std::string& base, std::vector<std::string> columns)
    : columns_(std::move(columns)), base_(base) {
  jsonl_.open(base + ".jsonl", std::ios::trunc);
  csv_.open(base + ".csv", std::ios::trunc);
  if (!jsonl_ || !csv_) fail("{}.jsonl/.csv: cannot create: {}", base, std::strerror(errno));
  for (size_t i = 0; i < columns_.size(); ++i) csv_ << (i ? "," : "") << columns_[i];
  csv_ << "\n" << std::flush;
}

void MetricsFiles::append(const std::vector<double>& row) {
  DT_CHECK(row.size() == columns_.size(), "{} values for {} columns", row.size(), columns_.size());
  nlohmann::ordered_json json = nlohmann::ordered_json::object();
  std::string csv;
  for (size_t i = 0; i < row.size(); ++i) {
    // A whole number (a step, a count) as an integer ("step":6, not 6.0); NaN and infinities
    // are written as null (JSON has neither).
    const double v = row[i];
    if (std::isfinite(v) && v == std::trunc(v) && std::fabs(v) < 9007199254740992.0)
      json[columns_[i]] = int64_t(v);
    else
      json[columns_[i]] = v;
    csv += fmt::format("{}{}", i ? "," : "", format_number(v));
  }
  jsonl_ << json.dump() << "\n" << std::flush;
  csv_ << csv << "\n" << std::flush;
  if (!jsonl_ || !csv_) fail("{}.jsonl/.csv: write failed: {}", base_, std::strerror(errno));
}

bool MetricsTable::has(const std::string& column) const {
  return std::find(columns.begin(), columns.end(), column) != columns.end();
}

std::vector<double> MetricsTable::values(const std::string& column) const {
  const auto it = std::find(columns.begin(), columns.end(), column);
  if (it == columns.end()) fail_input("{}: no column '{}'", origin, column);
  std::vector<double> v;
  for (const auto& r : rows) v.push_back(r[it - columns.begin()]);
  return v;
}

MetricsTable read_metrics_csv(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail_input("{}: cannot open: {}", path, std::strerror(errno));
  MetricsTable t;
  t.origin = path;
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty()) continue;
    std::stringstream ss(line);
    std::vector<std::string> cells;
    for (std::string c; std::getline(ss, c, ',');) cells.push_back(c);
    if (t.columns.empty()) {
      t.columns = cells;
      continue;
    }
    if (cells.size() != t.columns.size())
      fail_input("{}:{}: {} values, the header has {} columns", path, line_no, cells.size(),
                 t.columns.size());
    std::vector<double> row;
    for (const std::string& c : cells) {
      char* end = nullptr;
      const double v = std::strtod(c.c_str(), &end);
      if (c.empty() || *end != 0) fail_input("{}:{}: '{}' is not a number", path, line_no, c);
      row.push_back(v);
    }
    t.rows.push_back(std::move(row));
  }
  if (t.columns.empty()) fail_input("{}: empty file (no header row)", path);
  return t;
}

}  // namespace deeptrain::report
