#pragma once
// The images a user brings, as (path, label) in the order they become global samples: an image
// folder with one subfolder per class (torchvision's ImageFolder: classes and files in sorted
// order), or a list file of `path,label` lines (the order of its lines).
#include <cstdint>
#include <string>
#include <vector>

namespace deeptrain::data {

struct ImageEntry {
  std::string path;
  int32_t label;
};

struct ImageList {
  std::vector<ImageEntry> entries;
  std::vector<std::string> class_names;  // label i is class_names[i]
};

// Every regular file of every subdirectory of `dir` (sorted by name; hidden ones skipped), so
// that a file that is no image is reported by the packer, never silently dropped. Throws
// InputError naming dir when it is missing or has no class subdirectory.
ImageList list_image_folder(const std::string& dir);

// Every regular file of `dir` itself (sorted by name; hidden ones skipped), each with label 0
// and one class, "0": images without labels, e.g. the images of a segmentation set whose
// targets are masks (`pack --images DIR --masks DIR`). Throws InputError naming dir when it is
// missing or empty.
ImageList list_image_files(const std::string& dir);

// `path,label` lines (a leading "path,label" header line, blank lines and #-comments are
// skipped); relative paths are relative to the list file's directory. Labels are all integers
// (classes "0".."max") or all names (classes in sorted order). Throws InputError naming
// FILE:LINE for a malformed line or a negative label.
ImageList read_image_list(const std::string& list_file);

}  // namespace deeptrain::data
