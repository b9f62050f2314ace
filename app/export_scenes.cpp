// `deeptrain export-scenes CONFIG --out DIR`: the mnist_scenes of a config as files, for a peer
// framework (bench/pytorch_fcn.py) or a look: DIR/<split>/images/<i>.png (the canvas),
// DIR/<split>/masks/<i>.png (the label map: 0 background, digit + 1, 255 ignored),
// DIR/<split>/boxes.csv (`image,label,x0,y0,x1,y1`, pixel boxes [x0, x1) x [y0, y1): the layout
// `pack --boxes` reads, core/data/box_list.h) and
// DIR/<split>/list.csv (`image,mask`), written last so that a list means a whole export.
#include <filesystem>
#include <memory>

#include "app/commands.h"
#include "core/config.h"
#include "core/data/image_codec.h"
#include "core/data/mnist_scenes.h"
#include "core/error.h"
#include "core/io/atomic_file.h"

namespace deeptrain::app {
namespace {
namespace fs = std::filesystem;

struct ExportScenesOptions {
  std::string config, out, split = "both", data_dir;
  int64_t limit = 0;
};

void export_split(const data::Dataset& d, const fs::path& dir) {
  fs::create_directories(dir / "images");
  fs::create_directories(dir / "masks");
  const Shape s = d.sample_shape();
  const int64_t plane = s[1] * s[2];
  std::string list = "image,mask\n", boxes = "image,label,x0,y0,x1,y1\n";
  for (int64_t i = 0; i < d.size(); ++i) {
    const std::string name = fmt::format("{:06d}.png", i);
    io::write_file_atomic((dir / "images" / name).string(),
                          data::encode_png(d.images.data<uint8_t>() + i * plane, 1, int(s[1]), int(s[2])));
    io::write_file_atomic((dir / "masks" / name).string(),
                          data::encode_png(d.label_maps.data<uint8_t>() + i * plane, 1, int(s[1]), int(s[2])));
    list += fmt::format("images/{},masks/{}\n", name, name);
    for (const data::Box& b : d.boxes[size_t(i)])
      boxes += fmt::format("images/{},{},{},{},{},{}\n", name, b.label, b.x0, b.y0, b.x1, b.y1);
  }
  io::write_file_atomic((dir / "boxes.csv").string(), boxes);
  io::write_file_atomic((dir / "list.csv").string(), list);
}

void run_export_scenes(const ExportScenesOptions& o) {
  ConfigOverrides ov;
  if (!o.data_dir.empty()) ov.data_dir = o.data_dir;
  const proto::ExperimentConfig cfg = load_config(o.config, ov);
  const proto::DataConfig& d = cfg.data();
  if (d.dataset() != "mnist_scenes")
    fail_input("export-scenes: {} has data.dataset \"{}\", not \"mnist_scenes\"", o.config, d.dataset());
  for (const char* split : {"train", "test"})
    if (std::error_code ec; fs::exists(fs::path(o.out) / split / "list.csv", ec))
      fail_input("{}: already holds an export ({}/list.csv); export into another directory", o.out, split);
  const int64_t train_limit = o.limit ? o.limit : d.train_limit(), test_limit = o.limit ? o.limit : d.test_limit();
  const data::DatasetSplit scenes = data::make_mnist_scenes(
      data::load_dataset("mnist", d.dir(), d.verify_checksums()), d.scenes(), train_limit, test_limit);
  for (const auto& [name, set] : {std::pair<const char*, const data::Dataset*>{"train", &scenes.train},
                                  {"test", &scenes.test}}) {
    if (o.split != "both" && o.split != name) continue;
    export_split(*set, fs::path(o.out) / name);
    std::printf("exported %lld %s scenes (%lldx%lld) to %s\n", static_cast<long long>(set->size()),
                name, static_cast<long long>(set->sample_shape()[1]),
                static_cast<long long>(set->sample_shape()[2]), (fs::path(o.out) / name).string().c_str());
  }
}

}  // namespace

void add_export_scenes_command(CLI::App& cli) {
  auto o = std::make_shared<ExportScenesOptions>();
  CLI::App* sub = cli.add_subcommand(
      "export-scenes", "write a config's mnist_scenes as PNG images, PNG label maps and boxes");
  sub->add_option("config", o->config, "a config with data { dataset: \"mnist_scenes\" }")->required();
  sub->add_option("--out", o->out, "the output directory (DIR/train, DIR/test)")->required();
  sub->add_option("--split", o->split, "which split")
      ->check(CLI::IsMember({"train", "test", "both"}))->capture_default_str();
  sub->add_option("--data-dir", o->data_dir, "override data.dir (the MNIST files)");
  sub->add_option("--limit", o->limit, "only the first N scenes of each split")
      ->check(nonnegative_integer());
  sub->footer("Example:\n  deeptrain export-scenes examples/fcn_mnist_scenes.prototxt --out scenes_png");
  sub->callback([o] { run_export_scenes(*o); });
}

}  // namespace deeptrain::app
