// Segmentation on your own images: `deeptrain pack --images DIR --masks DIR` stores a label map
// with each image, and data { dataset: "shards" } delivers it as the per-pixel target.
//  - mnist_scenes exported to PNG (export-scenes) and packed with their masks give the targets
//    and pixels of the generated scenes, sample for sample, and a short training run on the
//    packs ends with the weights and metrics of the same run on the generated scenes, bit for bit
//    (same pixels, targets and order);
//  - bad masks (missing, another size, a class beyond --mask-classes, colour, JPEG) stop the pack
//    naming the mask, leaving no pack; transforms that would move images without their masks
//    (crops, resizing) are refused (flips move both: test_box_packs.cpp).
// Needs MNIST in data/mnist (scripts/fetch_data.sh).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "cli_util.h"
#include "core/config.h"
#include "core/data/image_codec.h"
#include "core/data/mnist_scenes.h"
#include "core/data/shard_reader.h"
#include "core/io/atomic_file.h"
#include "core/io/read_file.h"

namespace fs = std::filesystem;
using namespace deeptrain;

namespace {

const std::string kMnist = std::string(DEEPTRAIN_DATA_DIR) + "/mnist";

const char* kModel = R"(
model {
  loss { type: PIXEL_SOFTMAX_CE }
  layer { name: "conv1" conv { out_channels: 8 kernel: 3 pad: 1 } }
  layer { name: "relu1" relu {} }
  layer { name: "pool1" max_pool { kernel: 2 } }
  layer { name: "conv2" conv { out_channels: 16 kernel: 3 pad: 1 } }
  layer { name: "relu2" relu {} }
  layer { name: "score" conv { out_channels: 11 kernel: 1 } }
  layer { name: "up" deconv { out_channels: 11 kernel: 4 stride: 2 pad: 1 init: BILINEAR } }
}
optimizer { type: ADAM lr: 0.01 }
schedule { epochs: 2 batch_size: 20 }
run { seed: 4 threads: 1 }
)";

const char* kScenes = "scenes { canvas: 28 max_digits: 3 min_scale: 0.6 max_scale: 1.0 "
                      "train_scenes: 200 test_scenes: 40 }";

std::string last_line_with(const std::string& output, const std::string& part) {
  std::istringstream in(output);
  std::string line, found;
  while (std::getline(in, line))
    if (line.find(part) != std::string::npos) found = line;
  return found;
}

class MaskPacks : public testing::Test {
 protected:
  void SetUp() override {
    if (!have_mnist()) GTEST_SKIP() << "no MNIST in " << kMnist;
    generated_ = dir_.file("gen.prototxt", std::string(kModel) + "data { dataset: \"mnist_scenes\" dir: \"" +
                                                kMnist + "\" " + kScenes + " }\n");
    packed_ = dir_.file("packed.prototxt", std::string(kModel) + "data { dataset: \"shards\" dir: \"" +
                                             (dir_.path / "packs").string() + "\" data_threads: 1 }\n");
  }
  CommandResult export_and_pack() {
    CommandResult r = run_command(deeptrain_cmd("export-scenes " + generated_ + " --out " + path("png")));
    for (const char* split : {"train", "test"}) {
      if (r.exit_code != 0) return r;
      r = run_command(deeptrain_cmd(fmt::format("pack --images {0}/{1}/images --masks {0}/{1}/masks "
                                                "--mask-classes 11 --json --out {2}/{1}",
                                                path("png"), split, path("packs"))));
    }
    return r;
  }
  std::string path(const std::string& p) const { return (dir_.path / p).string(); }
  TempDir dir_;
  std::string generated_, packed_;
};

TEST_F(MaskPacks, PackedScenesTrainAsTheGeneratedOnes) {
  const CommandResult p = export_and_pack();
  ASSERT_EQ(p.exit_code, 0) << p.output;
  EXPECT_EQ(json_number(p.last_line(), "mask_classes"), 11) << p.output;
  // The tar holds each label map as an ordinary member beside its image.
  const CommandResult tar = run_command("tar tf " + path("packs/test/shard-00000.tar") + " | head -3");
  EXPECT_NE(tar.output.find("000000000.mask.png"), std::string::npos) << tar.output;

  // The targets and pixels delivered, sample for sample.
  const proto::ExperimentConfig cfg = load_config(generated_);
  const data::DatasetSplit scenes = data::make_mnist_scenes(data::load_dataset("mnist", kMnist, false), cfg.data().scenes());
  for (const auto& [split, want] : {std::pair<const char*, const data::Dataset*>{"train", &scenes.train}, {"test", &scenes.test}}) {
    data::ShardReadOptions o;
    o.threads = 0;
    const data::Dataset got = data::open_shards(path(std::string("packs/") + split), o);
    ASSERT_EQ(got.size(), want->size());
    EXPECT_EQ(got.num_classes, 11);
    ASSERT_EQ(got.label_maps.shape(), want->label_maps.shape()) << split;
    EXPECT_EQ(std::memcmp(got.label_maps.raw(), want->label_maps.raw(), want->label_maps.nbytes()), 0) << split;
    std::vector<int64_t> ids(size_t(got.size()));
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = int64_t(i);
    const data::BatchPixels px(got, ids.data(), got.size());
    for (int64_t i = 0; i < got.size(); ++i)
      ASSERT_EQ(std::memcmp(px.at(i), want->images.data<uint8_t>() + i * 28 * 28, 28 * 28), 0) << split << " " << i;
  }

  // Two epochs on each: the same weights and test metrics, to the last bit.
  const CommandResult a = run_command(deeptrain_cmd("train " + generated_ + " --json --run-dir " + path("run_gen")));
  const CommandResult b = run_command(deeptrain_cmd("train " + packed_ + " --json --run-dir " + path("run_packed")));
  ASSERT_EQ(a.exit_code, 0) << a.output;
  ASSERT_EQ(b.exit_code, 0) << b.output;
  EXPECT_TRUE(io::read_file(path("run_gen/weights.bin")) == io::read_file(path("run_packed/weights.bin")));
  for (const char* key : {"test_pixel_accuracy", "test_mean_iou", "test_mean_iou_fg"})
    EXPECT_EQ(json_number(last_line_with(a.output, "\"summary\""), key),
              json_number(last_line_with(b.output, "\"summary\""), key)) << key;
  EXPECT_GT(json_number(last_line_with(b.output, "\"summary\""), "test_pixel_accuracy"), 0) << b.output;
  // Each epoch's loss too.
  for (int epoch = 1; epoch <= 2; ++epoch) {
    const std::string e = "\"epoch\":" + std::to_string(epoch) + ",";
    for (const char* key : {"train_loss", "train_accuracy", "test_accuracy"})
      EXPECT_EQ(json_number(last_line_with(a.output, e), key), json_number(last_line_with(b.output, e), key))
          << "epoch " << epoch << " " << key;
  }

  // A crop would move the images without their masks: refused, naming the field.
  const std::string with_transform = dir_.file(
      "transform.prototxt", std::string(kModel) + "data { dataset: \"shards\" dir: \"" + path("packs") +
                                "\" transform { random_resized_crop: true flip_horizontal: true } }\n");
  const CommandResult t = run_command(deeptrain_cmd("train " + with_transform + " --run-dir " + path("run_t")));
  EXPECT_EQ(t.exit_code, 2) << t.output;
  EXPECT_NE(t.output.find("data.transform.random_resized_crop: not available"), std::string::npos) << t.output;
}

TEST_F(MaskPacks, BadMasksAreNamedAndNothingIsPacked) {
  // Three images and their masks, then one fault at a time.
  const fs::path images = dir_.path / "img", masks = dir_.path / "mask";
  fs::create_directories(images);
  fs::create_directories(masks);
  std::vector<uint8_t> px(8 * 10, 100), ids(8 * 10, 0);
  for (int i = 0; i < 3; ++i) {
    io::write_file_atomic((images / fmt::format("{}.png", i)).string(), data::encode_png(px.data(), 1, 8, 10));
    io::write_file_atomic((masks / fmt::format("{}.png", i)).string(), data::encode_png(ids.data(), 1, 8, 10));
  }
  auto pack = [&](const std::string& extra) {
    fs::remove_all(dir_.path / "out");
    return run_command(deeptrain_cmd("pack --images " + images.string() + " --masks " + masks.string() +
                                     " --out " + path("out") + " " + extra));
  };
  const CommandResult good = pack("--mask-classes 3");
  ASSERT_EQ(good.exit_code, 0) << good.output;

  const std::string m1 = (masks / "1.png").string();
  struct Case {
    std::function<void()> fault;
    std::string extra, says;
  };
  std::vector<uint8_t> big(9 * 10, 0), high(8 * 10, 0), rgb(3 * 8 * 10, 0);
  high[17] = 3;
  const std::vector<Case> cases = {
      {[&] { fs::remove(m1); }, "", "1.png: no mask for"},
      {[&] { io::write_file_atomic(m1, data::encode_png(big.data(), 1, 9, 10)); }, "", "a 9x10 mask for the 8x10 image"},
      {[&] { io::write_file_atomic(m1, data::encode_png(high.data(), 1, 8, 10)); }, "--mask-classes 3", "class 3 at pixel (7, 1)"},
      {[&] { io::write_file_atomic(m1, data::encode_png(rgb.data(), 3, 8, 10)); }, "", "a 3-channel mask"},
      {[&] { io::write_file_atomic(m1, data::encode_jpeg(ids.data(), 1, 8, 10, 90)); }, "", "a mask must be a PNG"},
      {[] {}, "--resize 4", "--resize with --masks"},
  };
  for (const Case& c : cases) {
    io::write_file_atomic(m1, data::encode_png(ids.data(), 1, 8, 10));
    c.fault();
    const CommandResult r = pack(c.extra);
    EXPECT_EQ(r.exit_code, 2) << c.says << "\n" << r.output;
    EXPECT_NE(r.output.find(c.says), std::string::npos) << r.output;
    if (c.says.find("resize") == std::string::npos) {
      EXPECT_NE(r.output.find(m1), std::string::npos) << r.output;
    }
    EXPECT_FALSE(fs::exists(dir_.path / "out" / "manifest.json")) << c.says;
  }
  // 255 is the ignore label, allowed whatever the classes; a larger id without --mask-classes
  // sets the count.
  high[17] = 255;
  high[18] = 7;
  io::write_file_atomic(m1, data::encode_png(high.data(), 1, 8, 10));
  const CommandResult r = pack("--json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(json_number(r.last_line(), "mask_classes"), 8) << r.output;
}

}  // namespace
