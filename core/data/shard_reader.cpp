#include "core/data/shard_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "core/checksum.h"
#include "core/data/image_codec.h"
#include "core/data/image_transform.h"
#include "core/data/shard_format.h"
#include "core/error.h"
#include "core/io/read_file.h"

namespace deeptrain::data {
namespace fs = std::filesystem;
namespace {

struct Shard {
  std::string path;
  int fd = -1;
  int64_t first = 0;
  std::vector<IndexRecord> records;
};

class ShardSource final : public SampleSource {
 public:
  // flip_only (a pack with masks or boxes): the images are taken at the model's size, converted
  // and mirrored as data.transform says but never resized or cropped (the targets could not follow).
  ShardSource(std::string dir, std::vector<Shard> shards, Shape shape, std::string fingerprint,
              const ShardReadOptions& o, std::optional<ImageTransform> transform, bool flip_only)
      : dir_(std::move(dir)), shards_(std::move(shards)), shape_(std::move(shape)),
        fingerprint_(std::move(fingerprint)), depth_(std::max(0, o.prefetch_batches)),
        transform_(std::move(transform)), flip_only_(flip_only && transform_),
        flip_(flip_only_ && o.transform->flip_horizontal()),
        convert_(flip_only_ && o.transform->convert_channels()), seed_(o.seed) {
    for (int i = 0; i < std::max(0, o.threads); ++i) workers_.emplace_back([this] { work(); });
  }
  ~ShardSource() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : workers_) t.join();
    for (Shard& s : shards_) ::close(s.fd);
  }

  Shape sample_shape() const override { return shape_; }
  std::string fingerprint() const override { return fingerprint_; }
  int prefetch_depth() const override { return workers_.empty() ? 0 : depth_; }
  bool mirrored(int64_t id, int64_t epoch) const override {
    return flip_ && epoch >= 0 && random_flip(seed_, epoch, id);
  }

  void prefetch(const int64_t* ids, int64_t n, int64_t epoch) override {
    if (workers_.empty()) return;
    std::lock_guard<std::mutex> lock(mu_);
    // Bounded memory: announced samples beyond depth_ batches of this size are not decoded
    // ahead (read() decodes them when they are due).
    const size_t cap = size_t(std::max(1, depth_)) * size_t(std::max<int64_t>(n, 1));
    for (int64_t i = 0; i < n && slots_.size() < cap; ++i)
      if (slots_.emplace(key(ids[i], epoch), Slot{}).second) queue_.push_back(key(ids[i], epoch));
    cv_.notify_all();
  }

  void read(const int64_t* ids, int64_t n, uint8_t* out, int64_t epoch) override {
    const int64_t sample = shape_.numel();
    if (workers_.empty()) {
      for (int64_t i = 0; i < n; ++i) decode_into(key(ids[i], epoch), out + i * sample);
      return;
    }
    std::unique_lock<std::mutex> lock(mu_);
    // Ahead of anything announced: the batch due now is what the training thread waits for.
    for (int64_t i = n - 1; i >= 0; --i)
      if (slots_.emplace(key(ids[i], epoch), Slot{}).second) queue_.push_front(key(ids[i], epoch));
    cv_.notify_all();
    std::string error;
    for (int64_t i = 0; i < n; ++i) {
      done_.wait(lock, [&] { return slots_.at(key(ids[i], epoch)).ready; });
      const Slot& s = slots_.at(key(ids[i], epoch));
      if (!s.error.empty() && error.empty()) error = s.error;
      if (s.error.empty()) std::memcpy(out + i * sample, s.pixels.data(), size_t(sample));
    }
    for (int64_t i = 0; i < n; ++i) slots_.erase(key(ids[i], epoch));
    if (!error.empty()) throw InputError(error);
  }

 private:
  struct Slot {
    bool ready = false;
    std::vector<uint8_t> pixels;
    std::string error;
  };
  // A decoded sample is (global index, epoch); the epoch matters only to a random transform, so
  // otherwise every read of a sample shares one key whatever epoch it names.
  using Key = std::pair<int64_t, int64_t>;
  Key key(int64_t id, int64_t epoch) const {
    return {id, transform_ && transform_->random() ? std::max(epoch, kEvalEpoch) : kEvalEpoch};
  }

  void work() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      const Key id = queue_.front();
      queue_.pop_front();
      lock.unlock();
      std::vector<uint8_t> pixels(size_t(shape_.numel()));
      std::string error;
      try {
        decode_into(id, pixels.data());
      } catch (const std::exception& e) {
        error = e.what();
      }
      lock.lock();
      auto it = slots_.find(id);
      if (it == slots_.end()) continue;
      it->second.pixels = std::move(pixels);
      it->second.error = std::move(error);
      it->second.ready = true;
      done_.notify_all();
    }
  }

  // Reads, checks, decodes and transforms global sample k.first for epoch k.second (any thread).
  void decode_into(const Key& k, uint8_t* out) const {
    const int64_t id = k.first;
    auto it = std::upper_bound(shards_.begin(), shards_.end(), id,
                               [](int64_t v, const Shard& s) { return v < s.first; });
    const Shard& s = *(it - 1);
    const IndexRecord& r = s.records[size_t(id - s.first)];
    const std::string what = fmt::format("{}: sample {} at offset {}", s.path, id, r.offset);
    std::vector<uint8_t> bytes(r.size);
    const ssize_t got = ::pread(s.fd, bytes.data(), r.size, off_t(r.offset));
    if (got != ssize_t(r.size))
      fail_input("{}: read {} of {} bytes{}{}", what, std::max<ssize_t>(got, 0), r.size,
                 got < 0 ? ": " : " (the shard is shorter than its index says)",
                 got < 0 ? std::strerror(errno) : "");
    if (crc32_of(bytes.data(), bytes.size()) != r.crc32)
      fail_input("{}: CRC-32 mismatch with the index: the shard is corrupt", what);
    DecodedImage img = decode_image(bytes.data(), bytes.size(), what);
    if (transform_ && !flip_only_) return transform_->apply(std::move(img), id, k.second, what, out);
    if (convert_ && img.channels != shape_[0]) convert_image_channels(img, int(shape_[0]));
    if (img.channels != shape_[0] || img.height != shape_[1] || img.width != shape_[2])
      fail_input("{}: a {}-channel {}x{} image, the model takes {} (channels, height, width)",
                 what, img.channels, img.height, img.width, shape_.str());
    std::memcpy(out, img.pixels.data(), img.pixels.size());
    if (mirrored(id, k.second))
      for (int64_t r = 0; r < shape_[0] * shape_[1]; ++r) std::reverse(out + r * shape_[2], out + (r + 1) * shape_[2]);
  }

  std::string dir_;
  std::vector<Shard> shards_;
  Shape shape_;
  std::string fingerprint_;
  int depth_;
  std::mutex mu_;
  std::condition_variable cv_, done_;
  std::optional<ImageTransform> transform_;
  bool flip_only_, flip_, convert_;
  uint64_t seed_;
  std::deque<Key> queue_;
  std::map<Key, Slot> slots_;
  bool stop_ = false;
  std::vector<std::thread> workers_;  // last: they start once everything above exists
};

std::string file_sha256(const std::string& path, int fd) {
  Sha256 sha;
  std::vector<char> buf(1 << 20);
  for (off_t at = 0;;) {
    const ssize_t got = ::pread(fd, buf.data(), buf.size(), at);
    if (got < 0) fail_input("{}: read error: {}", path, std::strerror(errno));
    if (got == 0) break;
    sha.update(buf.data(), size_t(got));
    at += got;
  }
  return sha.hex();
}

// The label maps of shard s's samples below n into maps (n, H, W): each read from the tar
// through the shard's mask index, its CRC-32 checked, decoded, and checked to be one gray
// channel of the maps' size holding classes below `classes` or 255.
void read_masks(const std::string& dir, const std::string& manifest_path, const proto::ShardFile& f,
                const Shard& s, int classes, int64_t n, Tensor& maps) {
  const std::string index_path = (fs::path(dir) / f.mask_index()).string();
  if (f.mask_index().empty()) fail_input("{}: a pack with masks, but {} has no mask index", manifest_path, f.tar());
  const std::string index = io::read_file(index_path, uint64_t(1) << 32, "a mask index");
  if (sha256_hex(index.data(), index.size()) != f.mask_index_sha256())
    fail_input("{}: SHA-256 differs from {}'s: the mask index does not belong to this pack (or is "
               "corrupt)", index_path, manifest_path);
  uint64_t tar_bytes = 0;
  const std::vector<IndexRecord> records = decode_index(index_path, index, &tar_bytes);
  if (int64_t(records.size()) != f.num_samples() || int64_t(tar_bytes) != f.tar_bytes())
    fail_input("{}: {} records for a tar of {} bytes; {} says {} samples in {} bytes", index_path,
               records.size(), tar_bytes, manifest_path, f.num_samples(), f.tar_bytes());
  const int64_t h = maps.dim(1), w = maps.dim(2);
  std::vector<uint8_t> bytes;
  for (size_t i = 0; i < records.size() && s.first + int64_t(i) < n; ++i) {
    const IndexRecord& r = records[i];
    const int64_t g = s.first + int64_t(i);
    const std::string what = fmt::format("{}: mask of sample {} at offset {}", s.path, g, r.offset);
    bytes.resize(r.size);
    if (::pread(s.fd, bytes.data(), r.size, off_t(r.offset)) != ssize_t(r.size))
      fail_input("{}: cannot read {} bytes", what, r.size);
    if (crc32_of(bytes.data(), bytes.size()) != r.crc32)
      fail_input("{}: CRC-32 mismatch with the mask index: the shard is corrupt", what);
    const DecodedImage mask = decode_image(bytes.data(), bytes.size(), what);
    if (mask.channels != 1 || mask.height != h || mask.width != w)
      fail_input("{}: a {}-channel {}x{} mask, the model takes {}x{} label maps (one channel)", what,
                 mask.channels, mask.height, mask.width, h, w);
    for (uint8_t v : mask.pixels)
      if (v >= classes && v != 255)
        fail_input("{}: class {}, but the pack's masks have {} classes (and 255, ignored)", what, int(v), classes);
    std::memcpy(maps.data<uint8_t>() + g * h * w, mask.pixels.data(), size_t(h * w));
  }
}

// A pack's boxes.csv into d.boxes (one list a sample, of the first n samples): its SHA-256
// checked against the manifest's, every line checked (fields, sample order, class below
// m.box_classes(), positive size, inside the height x width image) with FILE:LINE in the error.
void read_boxes(const std::string& dir, const std::string& manifest_path, const proto::ShardManifest& m,
                int64_t height, int64_t width, int64_t n, Dataset& d) {
  const std::string path = (fs::path(dir) / m.boxes()).string();
  if (m.boxes().empty()) fail_input("{}: box_classes {} but no boxes file", manifest_path, m.box_classes());
  const std::string text = io::read_file(path, uint64_t(1) << 32, "a pack's boxes");
  if (sha256_hex(text.data(), text.size()) != m.boxes_sha256())
    fail_input("{}: SHA-256 differs from {}'s: the boxes do not belong to this pack (or are "
               "corrupt)", path, manifest_path);
  d.boxes.assign(size_t(n), {});
  std::istringstream in(text);
  std::string line;
  int64_t previous = 0;
  for (int number = 1; std::getline(in, line); ++number) {
    if (number == 1) continue;  // the header
    int64_t v[6];
    size_t at = 0;
    for (int k = 0; k < 6; ++k) {
      const size_t end = k == 5 ? line.size() : line.find(',', at);
      const char* first = line.data() + at;
      const char* last = line.data() + (end == std::string::npos ? line.size() : end);
      const auto [ptr, ec] = std::from_chars(first, last, v[k]);
      if (end == std::string::npos || ec != std::errc() || ptr != last)
        fail_input("{}:{}: not `sample,label,x0,y0,x1,y1` integers: \"{}\"", path, number, line);
      at = end + 1;
    }
    const Box b{int32_t(v[1]), int32_t(v[2]), int32_t(v[3]), int32_t(v[4]), int32_t(v[5])};
    if (v[0] < previous || v[0] >= m.num_samples())
      fail_input("{}:{}: sample {}: not in ascending order within the pack's {} samples", path, number,
                 v[0], m.num_samples());
    previous = v[0];
    if (b.label < 0 || b.label >= m.box_classes() || b.x1 <= b.x0 || b.y1 <= b.y0 || b.x0 < 0 ||
        b.y0 < 0 || b.x1 > width || b.y1 > height)
      fail_input("{}:{}: sample {}: the box ({}, {}, {}, {}) of class {} is not a box of a class "
                 "below {} inside the {} x {} image", path, number, v[0], b.x0, b.y0, b.x1, b.y1,
                 b.label, m.box_classes(), width, height);
    if (v[0] < n) d.boxes[size_t(v[0])].push_back(b);
  }
  d.box_classes = m.box_classes();
}

}  // namespace

Dataset open_shards(const std::string& dir, const ShardReadOptions& o, int64_t limit) {
  const proto::ShardManifest m = read_manifest(dir);
  const std::string manifest_path = (fs::path(dir) / kManifestName).string();
  Shape shape = o.expected;
  if (shape.rank() == 0) {
    if (m.channels() == 0)
      fail_input("{}: the packed images differ in size; set model.input to the shape to train "
                 "on, and data.transform to bring every image to it", manifest_path);
    shape = Shape{m.channels(), m.height(), m.width()};
  }
  const bool masks = m.mask_classes() > 0, boxes = m.box_classes() > 0;
  // A pack with masks or boxes: its images at the model's size, mirrored by flip_horizontal
  // with their targets (gather_batch asks mirrored()); a crop or resize is refused.
  const char* targets = masks ? "masks" : "boxes";
  if ((masks || boxes) && o.transform && o.transform->random_resized_crop())
    fail_input("data.transform.random_resized_crop: not available for {}, a pack with {}: the crops "
               "would have to move the {} too (flip_horizontal moves them; pack the images at the "
               "model's input size)", dir, targets, targets);
  if ((masks || boxes) && o.transform && o.transform->resize())
    fail_input("data.transform.resize: not available for {}, a pack with {}: its images are taken "
               "at the model's input size (flip_horizontal moves the {} with them)", dir, targets, targets);
  std::optional<ImageTransform> transform;
  if (o.transform)
    transform.emplace(*o.transform, int(shape[0]), int(shape[1]), int(shape[2]), o.seed);
  Dataset d;
  d.name = fs::path(dir).lexically_normal().filename().string();
  if (d.name.empty()) d.name = fs::path(dir).lexically_normal().parent_path().filename().string();
  d.num_classes = m.class_names_size();
  const int64_t n = limit > 0 ? std::min<int64_t>(limit, m.num_samples()) : m.num_samples();
  d.labels = Tensor::empty({n}, DType::i32);
  if (masks) d.label_maps = Tensor::empty({n, shape[1], shape[2]}, DType::u8);
  std::vector<Shard> shards;
  // Closes what was opened when a later shard is refused.
  struct Closer {
    std::vector<Shard>* s;
    bool armed = true;
    ~Closer() {
      if (armed)
        for (Shard& x : *s) ::close(x.fd);
    }
  } closer{&shards};
  std::string fingerprint = fmt::format("{} samples", m.num_samples());
  for (const proto::ShardFile& f : m.shards()) {
    if (f.first_sample() >= n) break;
    Shard s;
    s.path = (fs::path(dir) / f.tar()).string();
    s.first = f.first_sample();
    const std::string index_path = (fs::path(dir) / f.index()).string();
    const std::string index = io::read_file(index_path, uint64_t(1) << 32, "a shard index");
    if (sha256_hex(index.data(), index.size()) != f.index_sha256())
      fail_input("{}: SHA-256 differs from {}'s: the index does not belong to this pack (or is "
                 "corrupt)", index_path, manifest_path);
    uint64_t tar_bytes = 0;
    s.records = decode_index(index_path, index, &tar_bytes);
    if (int64_t(s.records.size()) != f.num_samples() || int64_t(tar_bytes) != f.tar_bytes())
      fail_input("{}: {} records for a tar of {} bytes; {} says {} samples in {} bytes", index_path,
                 s.records.size(), tar_bytes, manifest_path, f.num_samples(), f.tar_bytes());
    s.fd = ::open(s.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (s.fd < 0) fail_input("{}: cannot open: {} (a shard of {})", s.path, std::strerror(errno), dir);
    shards.push_back(s);
    struct stat st{};
    if (::fstat(s.fd, &st) != 0 || st.st_size != f.tar_bytes())
      fail_input("{}: {} bytes, its index and {} say {}: truncated or replaced", s.path,
                 int64_t(st.st_size), manifest_path, f.tar_bytes());
    if (o.verify_checksums && file_sha256(s.path, s.fd) != f.tar_sha256())
      fail_input("{}: SHA-256 mismatch with {}: the shard is corrupt", s.path, manifest_path);
    for (size_t i = 0; i < s.records.size(); ++i) {
      const int64_t g = s.first + int64_t(i);
      if (s.records[i].label < 0 || s.records[i].label >= d.num_classes)
        fail_input("{}: sample {} has label {}, out of range [0, {}) (the classes {} names)",
                   index_path, g, s.records[i].label, d.num_classes, manifest_path);
      if (g < n) d.labels.data<int32_t>()[g] = s.records[i].label;
    }
    if (masks) read_masks(dir, manifest_path, f, s, m.mask_classes(), n, d.label_maps);
    fingerprint += " " + f.tar_sha256();
  }
  closer.armed = false;
  if (boxes) read_boxes(dir, manifest_path, m, shape[1], shape[2], n, d);
  if (boxes) d.num_classes = m.box_classes();  // the classes of the objects
  if (masks) d.num_classes = m.mask_classes();  // the classes of the pixels
  if (o.transform && o.transform->mean_size() > 0) {
    const bool one = o.transform->mean_size() == 1;
    for (int c = 0; c < shape[0]; ++c) {
      d.mean.push_back(o.transform->mean(one ? 0 : c));
      d.std.push_back(o.transform->std(one ? 0 : c));
    }
  }
  d.source = std::make_shared<ShardSource>(dir, std::move(shards), shape, fingerprint, o,
                                           std::move(transform), masks || boxes);
  return d;
}

std::string describe_pack(const std::string& dir) {
  try {
    const proto::ShardManifest m = read_manifest(dir);
    ShardReadOptions index_only;  // the indexes and shard sizes, no data threads
    index_only.threads = index_only.prefetch_batches = 0;
    open_shards(dir, index_only);
    return fmt::format("{}: {} samples of {} classes in {} shard{}, {}x{}x{}{}{} (format {})\n", dir,
                       m.num_samples(), m.class_names_size(), m.shards_size(),
                       m.shards_size() == 1 ? "" : "s", m.channels(), m.height(), m.width(),
                       m.mask_classes() ? fmt::format(", masks of {} classes", m.mask_classes()) : "",
                       m.box_classes() ? fmt::format(", boxes of {} classes", m.box_classes()) : "",
                       m.format_version());
  } catch (const InputError& e) {
    return fmt::format("{}: unusable: {}\n", dir, e.what());
  }
}

}  // namespace deeptrain::data
