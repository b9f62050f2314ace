#include "core/data/box_list.h"

#include <charconv>
#include <filesystem>
#include <sstream>

#include "core/error.h"
#include "core/io/read_file.h"

namespace deeptrain::data {
namespace fs = std::filesystem;

std::vector<BoxRow> read_box_list(const std::string& file) {
  static const char* kHeader = "image,label,x0,y0,x1,y1";
  static const char* kField[] = {"image", "label", "x0", "y0", "x1", "y1"};
  const std::string text = io::read_file(file, uint64_t(1) << 32, "a box list");
  const fs::path base = fs::path(file).parent_path();
  std::vector<BoxRow> rows;
  std::istringstream in(text);
  std::string line;
  bool header = false;
  for (int n = 1; std::getline(in, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    if (!header) {
      if (line != kHeader)
        fail_input("{}:{}: expected the header `{}`, got '{}'", file, n, kHeader, line);
      header = true;
      continue;
    }
    // The image's path may hold commas: the five numbers are the last five fields.
    std::vector<std::string> f(6);
    std::string rest = line;
    for (int k = 5; k >= 1; --k) {
      const size_t comma = rest.rfind(',');
      if (comma == std::string::npos)
        fail_input("{}:{}: expected `{}` (six fields), got '{}'", file, n, kHeader, line);
      f[size_t(k)] = rest.substr(comma + 1);
      rest.resize(comma);
    }
    f[0] = rest;
    if (f[0].empty()) fail_input("{}:{}: field image is empty", file, n);
    int32_t v[6] = {};
    for (int k = 1; k < 6; ++k) {
      const std::string& s = f[size_t(k)];
      const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v[k]);
      if (s.empty() || ec != std::errc() || end != s.data() + s.size())
        fail_input("{}:{}: image {}: field {} is '{}', not an integer", file, n, f[0], kField[k], s);
    }
    const Box b{v[1], v[2], v[3], v[4], v[5]};
    if (b.label < 0) fail_input("{}:{}: image {}: field label is {}, a class is 0 or more", file, n, f[0], b.label);
    if (b.x1 <= b.x0 || b.y1 <= b.y0)
      fail_input("{}:{}: image {}: the box ({}, {}, {}, {}) has a non-positive size: field {} must "
                 "exceed {} (boxes are [x0, x1) x [y0, y1))", file, n, f[0], b.x0, b.y0, b.x1, b.y1,
                 b.x1 <= b.x0 ? "x1" : "y1", b.x1 <= b.x0 ? "x0" : "y0");
    const fs::path p = fs::path(f[0]).is_absolute() ? fs::path(f[0]) : base / f[0];
    rows.push_back({p.lexically_normal().string(), f[0], n, b});
  }
  if (!header) fail_input("{}: empty: a box list starts with the header `{}`", file, kHeader);
  return rows;
}

}  // namespace deeptrain::data
