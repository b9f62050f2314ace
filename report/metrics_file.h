#pragma once
// Tables of numbers with one row per training step or per epoch, appended as they happen, in
// two formats: JSON Lines (one object per row, for programs) and CSV (for spreadsheets, pandas
// and `deeptrain plot`).
#include <fstream>
#include <string>
#include <vector>

namespace deeptrain::report {

// A CSV cell: the shortest text that reads back as the same double ("3", "0.25", "1e-07"),
// "nan", "inf" or "-inf". (The .jsonl rows are written by nlohmann::json: NaN and infinities
// there are null, JSON having neither.)
std::string format_number(double v);

class MetricsFiles {
 public:
  // Creates <base>.jsonl and <base>.csv (the CSV starts with the header row).
  MetricsFiles(const std::string& base, std::vector<std::string> columns);
  // One value per column, in order. Rows are flushed at once, so `tail -f` follows a run.
  void append(const std::vector<double>& row);

 private:
  std::vector<std::string> columns_;
  std::string base_;
  std::ofstream jsonl_, csv_;
};

struct MetricsTable {
  std::vector<std::string> columns;
  std::vector<std::vector<double>> rows;
  bool has(const std::string& column) const;
  // The column's values, one per row; InputError naming `origin` when there is no such column.
  std::vector<double> values(const std::string& column) const;
  std::string origin;  // the file it came from, for error messages
};

// Reads a CSV written by MetricsFiles. Errors (InputError) name the file and line.
MetricsTable read_metrics_csv(const std::string& path);

}  // namespace deeptrain::report
