// `deeptrain pack`: a data set (an image folder, a `path,label` list, or a built-in set) into
// indexed shards (core/data/shard_format.h) that `data { dataset: "shards" }` trains from; and
// `deeptrain export-images`: a built-in set as a folder of PNG files with a list file, the
// start of docs/own_data.md's example (and of the test that shards give the IDX batches).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>

#include "app/commands.h"
#include "app/output.h"
#include "core/data/box_list.h"
#include "core/data/cifar.h"
#include "core/data/image_codec.h"
#include "core/data/image_transform.h"
#include "core/data/image_list.h"
#include "core/data/shard_writer.h"
#include "core/error.h"
#include "core/io/atomic_file.h"
#include "core/io/read_file.h"

namespace deeptrain::app {
namespace {
namespace fs = std::filesystem;

struct PackOptions {
  std::string out, folder, list, images, builtin, data_dir, split = "train", on_bad = "fail", reencode;
  std::string masks;     // --masks DIR: a label map per image, DIR/<image's stem>.png
  int mask_classes = 0;  // --mask-classes N (0: the largest class id in the masks + 1)
  std::string boxes;     // --boxes FILE: `image,label,x0,y0,x1,y1` lines (core/data/box_list.h)
  int box_classes = 0;   // --box-classes N (0: the largest label in the file + 1)
  double shard_mb = 64;
  int64_t limit = 0;
  int resize = 0, quality = 0;  // quality 0: 90
  bool json = false;
};

// --resize and --reencode: an image as stored in the pack. Unchanged bytes when neither applies
// (the default: images are stored as given); else decoded pixels, resized so the shorter side is
// `resize` (PIL's bilinear, as data.transform's Resize), encoded as --reencode says or in the
// image's own format.
struct Stored {
  std::string bytes;
  data::ImageFormat format;
  int height, width;
};

Stored store_image(const PackOptions& o, std::string bytes, data::ImageFormat format,
                   const data::DecodedImage& img) {
  const auto [rw, rh] = o.resize ? data::resize_shorter_size(img.width, img.height, o.resize)
                                 : std::pair{img.width, img.height};
  const bool resized = rw != img.width || rh != img.height;
  const data::ImageFormat want = o.reencode == "png"    ? data::ImageFormat::png
                                 : o.reencode == "jpeg" ? data::ImageFormat::jpeg
                                                        : format;
  if (!resized && o.reencode.empty()) return {std::move(bytes), format, img.height, img.width};
  std::vector<uint8_t> px;
  const uint8_t* p = img.pixels.data();
  if (resized) {
    px.resize(size_t(img.channels) * rh * rw);
    data::crop_resize_bilinear(p, img.channels, img.height, img.width,
                               {0, 0, img.height, img.width}, rh, rw, px.data());
    p = px.data();
  }
  return {want == data::ImageFormat::png ? data::encode_png(p, img.channels, rh, rw)
                                         : data::encode_jpeg(p, img.channels, rh, rw, o.quality ? o.quality : 90),
          want, rh, rw};
}

// Where the pack is: a bar redrawn in place on a terminal (stderr), a line every 10% elsewhere,
// nothing with --json (stdout is then JSON only, and stderr stays for errors).
class Progress {
 public:
  Progress(bool json, Output& out) : quiet_(json), tty_(isatty(fileno(stderr))), out_(out) {}
  void set_total(int64_t total) { total_ = total; }
  void update(int64_t done) {
    if (quiet_ || total_ <= 0) return;
    if (!tty_) {
      if (total_ >= 10 && done % ((total_ + 9) / 10) == 0)
        out_.note(fmt::format("pack: {}/{} images", done, total_));
      return;
    }
    const auto now = std::chrono::steady_clock::now();
    if (done != total_ && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    const int width = 30, filled = int(width * done / total_);
    std::fprintf(stderr, "\rpack [%s%s] %lld/%lld images %3d%%", std::string(size_t(filled), '#').c_str(),
                 std::string(size_t(width - filled), '.').c_str(), static_cast<long long>(done),
                 static_cast<long long>(total_), int(100 * done / total_));
    if (done == total_) std::fputc('\n', stderr);
    std::fflush(stderr);
  }

 private:
  bool quiet_, tty_;
  Output& out_;
  int64_t total_ = 0;
  std::chrono::steady_clock::time_point last_{};
};

data::Dataset load_builtin(const std::string& name, const std::string& dir,
                           const std::string& split, int64_t limit) {
  const std::string d = dir.empty() ? "data/" + name : dir;
  const bool train = split == "train";
  data::DatasetSplit s = name == "cifar10"
                             ? data::load_cifar10(d, train ? limit : 1, train ? 1 : limit)
                             : data::load_dataset(name, d, false, train ? limit : 1, train ? 1 : limit);
  return train ? std::move(s.train) : std::move(s.test);
}

// Why an image file cannot be packed, or "" when it can (its shape then in *img).
std::string check_image(const std::string& path, std::string* bytes, data::DecodedImage* img,
                        data::ImageFormat* format) {
  try {
    *bytes = io::read_file(path, uint64_t(1) << 30, "an image");
    *img = data::decode_image(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size(), path);
  } catch (const InputError& e) {
    return e.what();
  }
  *format = data::sniff_image_format(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size());
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  const bool png = *format == data::ImageFormat::png;
  if ((png && ext != ".png") || (!png && ext != ".jpg" && ext != ".jpeg"))
    return fmt::format("{}: wrong extension: the file holds a {} image", path, png ? "PNG" : "JPEG");
  return "";
}

// --masks: the label map of the image at image_path (decoded as img), DIR/<stem>.png: an 8-bit
// gray PNG (lossless, so the ids stay ids) of the image's size whose values are class ids, below
// --mask-classes when given, or 255 (ignored). Returns its bytes; raises *max_class to its
// largest id. Any fault is an InputError naming the mask (a bad mask is never skipped: the image
// would lose its targets silently).
std::string read_mask(const PackOptions& o, const std::string& image_path,
                      const data::DecodedImage& img, int* max_class) {
  const std::string path = (fs::path(o.masks) / (fs::path(image_path).stem().string() + ".png")).string();
  std::error_code ec;
  if (!fs::exists(path, ec))
    fail_input("pack: {}: no mask for {} (--masks {} holds a PNG per image, of the same base name)",
               path, image_path, o.masks);
  std::string bytes = io::read_file(path, uint64_t(1) << 30, "a mask");
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  if (data::sniff_image_format(p, bytes.size()) != data::ImageFormat::png)
    fail_input("pack: {}: a mask must be a PNG (a lossy format would change the class ids)", path);
  const data::DecodedImage mask = data::decode_image(p, bytes.size(), path);
  if (mask.channels != 1)
    fail_input("pack: {}: a {}-channel mask; a mask is one gray channel of class ids", path, mask.channels);
  if (mask.height != img.height || mask.width != img.width)
    fail_input("pack: {}: a {}x{} mask for the {}x{} image {} (height x width)", path, mask.height,
               mask.width, img.height, img.width, image_path);
  for (size_t i = 0; i < mask.pixels.size(); ++i) {
    const int v = mask.pixels[i];
    if (v == 255) continue;
    if (o.mask_classes && v >= o.mask_classes)
      fail_input("pack: {}: class {} at pixel ({}, {}), but --mask-classes is {} (ids 0..{}, and 255 "
                 "ignored)", path, v, i % size_t(mask.width), i / size_t(mask.width), o.mask_classes,
                 o.mask_classes - 1);
    *max_class = std::max(*max_class, v);
  }
  return bytes;
}

// --boxes: the file's boxes of each listed image (entries' order; an image without a line has
// none), every line's image among the listed ones and its class below the box classes (set
// here when --box-classes is not given). The boxes' fit in their image is checked as each
// image is read (check_box_fit).
struct ImageBoxes {
  std::vector<std::vector<data::BoxRow>> of;  // per entry
  int classes = 0;
};

ImageBoxes read_boxes(const PackOptions& o, const data::ImageList& list) {
  const std::vector<data::BoxRow> rows = data::read_box_list(o.boxes);
  std::map<std::string, size_t> entry;
  for (size_t i = 0; i < list.entries.size(); ++i)
    entry.emplace(fs::weakly_canonical(list.entries[i].path).string(), i);
  ImageBoxes b;
  b.of.resize(list.entries.size());
  for (const data::BoxRow& r : rows) {
    const auto it = entry.find(fs::weakly_canonical(r.image).string());
    if (it == entry.end())
      fail_input("pack: {}:{}: image {}: not one of the images packed (no image {}; the image "
                 "column is a path relative to the box file's directory)", o.boxes, r.line,
                 r.written, r.image);
    if (o.box_classes && r.box.label >= o.box_classes)
      fail_input("pack: {}:{}: image {}: field label is {}, but --box-classes is {} (classes 0..{})",
                 o.boxes, r.line, r.written, r.box.label, o.box_classes, o.box_classes - 1);
    b.classes = std::max(b.classes, r.box.label + 1);
    b.of[it->second].push_back(r);
  }
  if (o.box_classes) b.classes = o.box_classes;
  return b;
}

std::vector<data::Box> check_box_fit(const PackOptions& o, const std::vector<data::BoxRow>& rows,
                                     const data::DecodedImage& img) {
  std::vector<data::Box> boxes;
  for (const data::BoxRow& r : rows) {
    const data::Box& b = r.box;
    if (b.x0 < 0 || b.y0 < 0 || b.x1 > img.width || b.y1 > img.height)
      fail_input("pack: {}:{}: image {}: the box ({}, {}, {}, {}) is outside the {} x {} image "
                 "(width x height; fields x0, y0 >= 0, x1 <= width, y1 <= height)", o.boxes, r.line,
                 r.written, b.x0, b.y0, b.x1, b.y1, img.width, img.height);
    boxes.push_back(b);
  }
  return boxes;
}

void run_pack(const PackOptions& o) {
  Output out(o.json);
  const int sources = !o.folder.empty() + !o.list.empty() + !o.images.empty() + !o.builtin.empty();
  if (sources != 1) fail_input("pack: give exactly one of --folder, --list, --images, --builtin");
  if (!o.masks.empty() && !o.builtin.empty())
    fail_input("pack: --masks is for your own images (--folder, --list, --images), not --builtin");
  if (!o.masks.empty() && o.resize)
    fail_input("pack: --resize with --masks: the masks would have to be resized too; resize "
               "images and masks (nearest neighbour) before packing");
  if (o.mask_classes && o.masks.empty()) fail_input("pack: --mask-classes without --masks");
  if (!o.boxes.empty() && !o.builtin.empty())
    fail_input("pack: --boxes is for your own images (--folder, --list, --images), not --builtin");
  if (!o.boxes.empty() && o.resize)
    fail_input("pack: --resize with --boxes: the boxes would have to be scaled too; resize images "
               "and boxes before packing");
  if (o.box_classes && o.boxes.empty()) fail_input("pack: --box-classes without --boxes");
  data::ShardWriter writer(o.out, std::max<int64_t>(1, int64_t(o.shard_mb * 1024 * 1024)));
  proto::ShardManifest m;
  m.mutable_options()->set_shard_bytes(int64_t(o.shard_mb * 1024 * 1024));
  m.mutable_options()->set_skip_bad(o.on_bad == "skip");
  m.mutable_options()->set_resize(o.resize);
  m.mutable_options()->set_reencode(o.reencode);
  if (o.quality && (o.reencode == "png" || (o.reencode.empty() && !o.resize)))
    fail_input("pack: --quality {} has no image to apply to: it sets the quality of JPEG images "
               "written (--reencode jpeg, or JPEG images that --resize re-encodes)", o.quality);
  if (o.reencode == "jpeg" || o.resize) m.mutable_options()->set_quality(o.quality ? o.quality : 90);
  std::vector<std::string> skipped;
  int64_t total = 0;
  Progress bar(o.json, out);
  auto progress = [&](int64_t done) { bar.update(done); };
  if (!o.builtin.empty()) {
    const data::Dataset d = load_builtin(o.builtin, o.data_dir, o.split, o.limit);
    m.set_source(fmt::format("{} {} ({})", o.builtin, o.split, o.data_dir.empty() ? "data/" + o.builtin : o.data_dir));
    for (int c = 0; c < d.num_classes; ++c) m.add_class_names(std::to_string(c));
    const Shape s = d.sample_shape();
    total = d.size();
    bar.set_total(total);
    for (int64_t i = 0; i < total; ++i) {
      const uint8_t* px = d.images.data<uint8_t>() + i * s.numel();
      data::DecodedImage img{int(s[0]), int(s[1]), int(s[2]), std::vector<uint8_t>(px, px + s.numel())};
      // The built-in sets are stored as PNG unless --reencode says otherwise.
      const Stored st = store_image(o, data::encode_png(px, img.channels, img.height, img.width),
                                    data::ImageFormat::png, img);
      writer.add(st.bytes, st.format, d.labels.data<int32_t>()[i], img.channels, st.height, st.width);
      progress(i + 1);
    }
  } else {
    const data::ImageList list = !o.folder.empty() ? data::list_image_folder(o.folder)
                                 : !o.list.empty() ? data::read_image_list(o.list)
                                                   : data::list_image_files(o.images);
    m.set_source(!o.folder.empty() ? o.folder : !o.list.empty() ? o.list : o.images);
    int max_class = 0;
    const ImageBoxes boxes = o.boxes.empty() ? ImageBoxes{} : read_boxes(o, list);
    for (const std::string& c : list.class_names) m.add_class_names(c);
    total = o.limit > 0 ? std::min<int64_t>(o.limit, int64_t(list.entries.size()))
                        : int64_t(list.entries.size());
    bar.set_total(total);
    std::string bytes;
    data::DecodedImage img;
    data::ImageFormat format{};
    for (int64_t i = 0; i < total; ++i) {
      const data::ImageEntry& e = list.entries[size_t(i)];
      const std::string why = check_image(e.path, &bytes, &img, &format);
      if (!why.empty()) {
        if (o.on_bad != "skip")
          fail_input("pack: bad image {} (nothing packed; --on-bad skip packs the rest)", why);
        skipped.push_back(why);
        out.note("pack: skipped " + why);
      } else {
        const std::string mask = o.masks.empty() ? "" : read_mask(o, e.path, img, &max_class);
        const Stored st = store_image(o, std::move(bytes), format, img);
        const std::vector<data::Box> b =
            o.boxes.empty() ? std::vector<data::Box>{} : check_box_fit(o, boxes.of[size_t(i)], img);
        writer.add(st.bytes, st.format, e.label, img.channels, st.height, st.width,
                   o.masks.empty() ? nullptr : &mask, o.boxes.empty() ? nullptr : &b);
      }
      progress(i + 1);
    }
    if (!o.masks.empty()) m.set_mask_classes(o.mask_classes ? o.mask_classes : max_class + 1);
    if (!o.boxes.empty()) m.set_box_classes(std::max(boxes.classes, 1));
  }
  m.mutable_options()->set_skipped(int64_t(skipped.size()));
  const proto::ShardManifest done = writer.finish(m);
  Json skipped_json = Json::array();
  for (const std::string& s : skipped) skipped_json.push_back(s);
  // "with masks of M classes", "with boxes of B classes", both joined by "and", or "of N classes".
  std::string contents = done.mask_classes() ? fmt::format("with masks of {} classes", done.mask_classes()) : "";
  if (done.box_classes())
    contents += fmt::format("{} boxes of {} classes", contents.empty() ? "with" : " and", done.box_classes());
  if (contents.empty()) contents = fmt::format("of {} classes", done.class_names_size());
  out.event(Json{{"event", "packed"}, {"dir", o.out}, {"samples", done.num_samples()},
                 {"shards", done.shards_size()}, {"classes", done.class_names_size()},
                 {"mask_classes", done.mask_classes()}, {"box_classes", done.box_classes()},
                 {"skipped", skipped_json}},
            fmt::format("packed {} images {} into {} shard{} in {}{}", done.num_samples(), contents,
                        done.shards_size(),
                        done.shards_size() == 1 ? "" : "s", o.out,
                        skipped.empty() ? "" : fmt::format(" ({} bad images skipped)", skipped.size())));
}

struct ExportOptions {
  std::string builtin, data_dir, split = "test", out;
  int64_t limit = 0;
};

// DIR/<label>/<index>.png for every sample, and DIR/list.csv (`path,label` in the set's order,
// so that packing the list keeps every sample's global index).
void run_export(const ExportOptions& o) {
  const data::Dataset d = load_builtin(o.builtin, o.data_dir, o.split, o.limit);
  const Shape s = d.sample_shape();
  std::error_code ec;
  if (fs::exists(fs::path(o.out) / "list.csv", ec))
    fail_input("{}: already holds an export (list.csv); export into another directory", o.out);
  std::string list = "path,label\n";
  for (int64_t i = 0; i < d.size(); ++i) {
    const int32_t label = d.labels.data<int32_t>()[i];
    const std::string rel = fmt::format("{}/{:05d}.png", label, i);
    fs::create_directories(fs::path(o.out) / std::to_string(label));
    const std::string png = data::encode_png(d.images.data<uint8_t>() + i * s.numel(), int(s[0]),
                                             int(s[1]), int(s[2]));
    io::write_file_atomic((fs::path(o.out) / rel).string(), png);
    list += fmt::format("{},{}\n", rel, label);
  }
  io::write_file_atomic((fs::path(o.out) / "list.csv").string(), list);  // last: the export is whole
  std::printf("exported %lld %s %s images to %s (list: %s)\n", static_cast<long long>(d.size()),
              o.builtin.c_str(), o.split.c_str(), o.out.c_str(),
              (fs::path(o.out) / "list.csv").string().c_str());
}

}  // namespace

void add_data_commands(CLI::App& cli) {
  auto p = std::make_shared<PackOptions>();
  CLI::App* sub = cli.add_subcommand("pack", "pack images into indexed shards for training "
                                             "(data { dataset: \"shards\" })");
  sub->add_option("--out", p->out, "the output directory (a new pack)")->required();
  sub->add_option("--folder", p->folder, "an image folder: one subdirectory per class");
  sub->add_option("--list", p->list, "a list file of `path,label` lines");
  sub->add_option("--images", p->images, "a directory of images without labels (e.g. with --masks)");
  sub->add_option("--masks", p->masks, "a label map per image: DIR/<image's base name>.png, 8-bit "
                  "gray, values class ids (255: ignored)");
  sub->add_option("--mask-classes", p->mask_classes, "the masks' class count (default: the "
                  "largest id + 1); a larger id is an error")->check(positive_integer());
  sub->add_option("--boxes", p->boxes, "a CSV of boxes, `image,label,x0,y0,x1,y1` (header, then "
                  "a line per box: the image's path relative to the file, its class, the pixel box "
                  "[x0, x1) x [y0, y1)); an image without a line has no box");
  sub->add_option("--box-classes", p->box_classes, "the boxes' class count (default: the largest "
                  "label + 1); a larger label is an error")->check(positive_integer());
  sub->add_option("--builtin", p->builtin, "a built-in set")
      ->check(CLI::IsMember({"mnist", "fashion_mnist", "cifar10"}));
  sub->add_option("--data-dir", p->data_dir, "--builtin's files (default data/<set>)");
  sub->add_option("--split", p->split, "--builtin's split")->check(CLI::IsMember({"train", "test"}))
      ->capture_default_str();
  sub->add_option("--shard-mb", p->shard_mb, "close a shard once it holds this many MiB")
      ->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--on-bad", p->on_bad, "a bad image (unreadable, empty, truncated, wrong "
                  "extension): fail, or skip it and name it")
      ->check(CLI::IsMember({"fail", "skip"}))->capture_default_str();
  sub->add_option("--limit", p->limit, "pack only the first N images")->check(nonnegative_integer());
  sub->add_option("--resize", p->resize, "resize each image so its shorter side is N pixels "
                  "(PIL's bilinear, as data.transform's Resize); re-encoded in its own format "
                  "unless --reencode says otherwise")->check(CLI::Range(1, 65535));
  sub->add_option("--reencode", p->reencode, "store every image as PNG (lossless) or JPEG "
                  "(--quality)")->check(CLI::IsMember({"png", "jpeg"}));
  sub->add_option("--quality", p->quality, "the quality (1-100, default 90) of JPEG images "
                  "written (--reencode jpeg, or JPEG images resized)")->check(CLI::Range(1, 100));
  sub->add_flag("--json", p->json, "one JSON object per line on stdout");
  sub->footer("Examples:\n"
              "  deeptrain pack --folder photos/train --out packs/photos/train\n"
              "  deeptrain pack --list fmnist_png/list.csv --out packs/fmnist/test\n"
              "  deeptrain pack --builtin mnist --split train --out packs/mnist/train\n"
              "  deeptrain pack --images scenes/train/images --masks scenes/train/masks --out packs/scenes/train\n"
              "  deeptrain pack --images scenes/train/images --boxes scenes/train/boxes.csv --out packs/boxes/train\n"
              "  deeptrain pack --folder photos/train --resize 80 --reencode jpeg --quality 90 --out packs/p80/train");
  sub->callback([p] { run_pack(*p); });

  auto e = std::make_shared<ExportOptions>();
  CLI::App* ex = cli.add_subcommand("export-images", "write a built-in set as PNG files "
                                                     "(DIR/<label>/<index>.png) and DIR/list.csv");
  ex->add_option("--builtin", e->builtin, "the set")
      ->check(CLI::IsMember({"mnist", "fashion_mnist", "cifar10"}))->required();
  ex->add_option("--data-dir", e->data_dir, "its files (default data/<set>)");
  ex->add_option("--split", e->split, "which split")->check(CLI::IsMember({"train", "test"}))
      ->capture_default_str();
  ex->add_option("--out", e->out, "the output directory")->required();
  ex->add_option("--limit", e->limit, "only the first N images")->check(nonnegative_integer());
  ex->footer("Example:\n  deeptrain export-images --builtin fashion_mnist --split test --out fmnist_png");
  ex->callback([e] { run_export(*e); });
}

}  // namespace deeptrain::app
