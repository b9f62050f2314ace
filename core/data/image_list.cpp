#include "core/data/image_list.h"

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <map>
#include <sstream>

#include "core/error.h"
#include "core/io/read_file.h"

namespace deeptrain::data {
namespace fs = std::filesystem;

ImageList list_image_folder(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    fail_input("{}: not a directory (an image folder has one subdirectory per class)", dir);
  ImageList list;
  std::vector<fs::path> classes;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && e.path().filename().string()[0] != '.') classes.push_back(e.path());
  std::sort(classes.begin(), classes.end());
  if (classes.empty())
    fail_input("{}: no class subdirectories (an image folder has one per class: {}/cat/1.jpg, "
               "{}/dog/2.jpg, ...)", dir, dir, dir);
  for (const fs::path& c : classes) {
    std::vector<fs::path> files;
    for (const auto& e : fs::recursive_directory_iterator(c))
      if (!e.is_directory() && e.path().filename().string()[0] != '.') files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const fs::path& f : files)
      list.entries.push_back({f.string(), int32_t(list.class_names.size())});
    list.class_names.push_back(c.filename().string());
  }
  return list;
}

ImageList list_image_files(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail_input("{}: not a directory of images", dir);
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (!e.is_directory() && e.path().filename().string()[0] != '.') files.push_back(e.path());
  std::sort(files.begin(), files.end());
  if (files.empty()) fail_input("{}: holds no files", dir);
  ImageList list;
  for (const fs::path& f : files) list.entries.push_back({f.string(), 0});
  list.class_names.push_back("0");
  return list;
}

ImageList read_image_list(const std::string& list_file) {
  const std::string text = io::read_file(list_file, uint64_t(1) << 32, "an image list");
  const fs::path base = fs::path(list_file).parent_path();
  std::vector<std::pair<std::string, std::string>> rows;
  std::vector<int> line_of;
  std::istringstream in(text);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#' || (n == 1 && line == "path,label")) continue;
    const size_t comma = line.rfind(',');
    if (comma == std::string::npos || comma == 0 || comma + 1 == line.size())
      fail_input("{}:{}: expected `path,label`, got '{}'", list_file, n, line);
    const std::string p = line.substr(0, comma);
    rows.emplace_back(fs::path(p).is_absolute() ? p : (base / p).string(), line.substr(comma + 1));
    line_of.push_back(n);
  }
  auto as_int = [](const std::string& s, long* v) {
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *v);
    return ec == std::errc() && end == s.data() + s.size();
  };
  bool all_ints = !rows.empty();
  long v = 0, max_label = -1;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (!as_int(rows[i].second, &v)) {
      all_ints = false;
      break;
    }
    if (v < 0 || v > 1000000)
      fail_input("{}:{}: label {} out of range [0, 1000000]", list_file, line_of[i], v);
    max_label = std::max(max_label, v);
  }
  ImageList list;
  if (all_ints) {
    for (long c = 0; c <= max_label; ++c) list.class_names.push_back(std::to_string(c));
    for (auto& [p, l] : rows) list.entries.push_back({p, int32_t(std::stol(l))});
    return list;
  }
  std::map<std::string, int32_t> ids;
  for (auto& row : rows) ids.emplace(row.second, 0);
  for (auto& [name, id] : ids) {
    id = int32_t(list.class_names.size());
    list.class_names.push_back(name);
  }
  for (auto& [p, l] : rows) list.entries.push_back({p, ids.at(l)});
  return list;
}

}  // namespace deeptrain::data
