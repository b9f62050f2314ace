#pragma once
// The boxes a user brings for their images (`deeptrain pack --boxes FILE`): a CSV file with the
// header `image,label,x0,y0,x1,y1` and a line per box: the image's path (relative to the file's
// directory, as a list file's paths are), the object's class (0-based) and its pixel box
// [x0, x1) x [y0, y1). An image may have any number of lines, none included (no object). The
// layout `deeptrain export-scenes` writes (DIR/<split>/boxes.csv beside DIR/<split>/images).
#include <string>
#include <vector>

#include "core/data/dataset.h"

namespace deeptrain::data {

struct BoxRow {
  std::string image;  // resolved: the file's directory / the image column, lexically normal
  std::string written;  // the image column as written (what errors name)
  int line;           // 1-based, for errors
  Box box;
};

// Throws InputError naming FILE:LINE and the field for a missing header, a line without six
// fields, a field that is no integer, a negative class, or a box without area (x1 <= x0, y1 <= y0).
std::vector<BoxRow> read_box_list(const std::string& file);

}  // namespace deeptrain::data
