// Detection on your own images: `deeptrain pack --images DIR --boxes FILE` stores the boxes with
// the images (boxes.csv in the pack, its SHA-256 in the manifest), and data { dataset: "shards" }
// delivers them as the detection targets.
//  - the detection example's scenes exported (export-scenes writes boxes.csv in the layout pack
//    reads) and packed give the boxes and pixels of the generated scenes, sample for sample, and
//    the example config trained on the pack ends with the weights and test mAP of the same run
//    on the generated scenes, bit for bit;
//  - bad boxes (an unknown image, a box outside its image, no area, a class beyond
//    --box-classes, a field that is no number, no header) stop the pack naming file, line, image
//    and field, leaving no pack; an image without a line has no box; more boxes than
//    max_boxes, a tampered boxes.csv and a transform that would move images without their boxes
//    (a crop, a resize) are refused at train time; bench --mode augment gathers moved boxes;
//  - data.transform's flip_horizontal on a pack with masks and boxes mirrors them exactly when
//    it mirrors the image (told apart here by the pixels), alone and under data.augment.
// Needs MNIST in data/mnist (scripts/fetch_data.sh).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include "cli_util.h"
#include "core/config.h"
#include "core/data/augment.h"
#include "core/data/image_codec.h"
#include "core/data/mnist_scenes.h"
#include "core/data/shard_reader.h"
#include "core/io/atomic_file.h"
#include "core/io/read_file.h"
#include "error_util.h"

namespace fs = std::filesystem;
using namespace deeptrain;

namespace {

const std::string kMnist = std::string(DEEPTRAIN_DATA_DIR) + "/mnist";
const std::string kExample = std::string(DEEPTRAIN_SOURCE_DIR) + "/examples/centernet_mnist_scenes.prototxt";

std::string last_line_with(const std::string& output, const std::string& part) {
  std::istringstream in(output);
  std::string line, found;
  while (std::getline(in, line))
    if (line.find(part) != std::string::npos) found = line;
  return found;
}

// The example config with its data block replaced by `data`.
std::string with_data(const std::string& data) {
  const std::string text = io::read_file(kExample);
  const size_t at = text.find("\ndata {"), end = text.find("\n}", at);
  EXPECT_NE(at, std::string::npos);
  EXPECT_NE(end, std::string::npos);
  return text.substr(0, at + 1) + data + text.substr(end + 2);
}

bool same_boxes(const std::vector<data::Box>& a, const std::vector<data::Box>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(data::Box)) != 0) return false;
  return true;
}

class BoxPacks : public testing::Test {
 protected:
  void SetUp() override {
    if (!have_mnist()) GTEST_SKIP() << "no MNIST in " << kMnist;
  }
  std::string path(const std::string& p) const { return (dir_.path / p).string(); }
  TempDir dir_;
};

TEST_F(BoxPacks, PackedScenesTrainAsTheGeneratedOnes) {
  const std::string limits = " --train-limit 40 --test-limit 20";
  CommandResult r = run_command(deeptrain_cmd("export-scenes " + kExample + " --data-dir " + kMnist +
                                              " --limit 40 --out " + path("png")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* split : {"train", "test"}) {
    r = run_command(deeptrain_cmd(fmt::format("pack --images {0}/{1}/images --boxes {0}/{1}/boxes.csv "
                                              "--box-classes 10 --json --out {2}/{1}",
                                              path("png"), split, path("packs"))));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(json_number(r.last_line(), "box_classes"), 10) << r.output;
  }

  // The boxes and pixels delivered, sample for sample.
  const proto::ExperimentConfig cfg = load_config(kExample);
  const data::DatasetSplit scenes =
      data::make_mnist_scenes(data::load_dataset("mnist", kMnist, false), cfg.data().scenes(), 40, 40);
  int64_t boxes = 0;
  for (const auto& [split, want] : {std::pair<const char*, const data::Dataset*>{"train", &scenes.train}, {"test", &scenes.test}}) {
    data::ShardReadOptions o;
    o.threads = 0;
    const data::Dataset got = data::open_shards(path(std::string("packs/") + split), o);
    ASSERT_EQ(got.size(), want->size());
    EXPECT_EQ(got.num_classes, 10);
    EXPECT_FALSE(got.label_maps.raw());
    ASSERT_EQ(got.boxes.size(), want->boxes.size());
    for (size_t i = 0; i < got.boxes.size(); ++i) {
      EXPECT_TRUE(same_boxes(got.boxes[i], want->boxes[i])) << split << " sample " << i;
      boxes += int64_t(got.boxes[i].size());
    }
    std::vector<int64_t> ids(size_t(got.size()));
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = int64_t(i);
    const data::BatchPixels px(got, ids.data(), got.size());
    const int64_t plane = 64 * 64;
    for (int64_t i = 0; i < got.size(); ++i)
      ASSERT_EQ(std::memcmp(px.at(i), want->images.data<uint8_t>() + i * plane, plane), 0) << split << " " << i;
  }
  EXPECT_GT(boxes, 80);  // 1-5 digits a scene

  // The example trained on each for an epoch of 4 steps: the same weights and mAP, bit for bit.
  const std::string packed = dir_.file("packed.prototxt", with_data("data { dataset: \"shards\" dir: \"" +
                                                                    path("packs") + "\" data_threads: 1 }"));
  const std::string flags = " --epochs 1 --batch-size 10 --threads 1 --json" + limits;
  const CommandResult a = run_command(deeptrain_cmd("train " + kExample + " --data-dir " + kMnist + flags +
                                                    " --run-dir " + path("run_gen")));
  const CommandResult b = run_command(deeptrain_cmd("train " + packed + flags + " --run-dir " + path("run_packed")));
  ASSERT_EQ(a.exit_code, 0) << a.output;
  ASSERT_EQ(b.exit_code, 0) << b.output;
  EXPECT_TRUE(io::read_file(path("run_gen/weights.bin")) == io::read_file(path("run_packed/weights.bin")));
  for (const char* key : {"test_map50", "test_map", "train_loss"})
    EXPECT_EQ(json_number(last_line_with(a.output, "\"summary\""), key),
              json_number(last_line_with(b.output, "\"summary\""), key)) << key << "\n" << b.output;
  EXPECT_EQ(json_number(last_line_with(b.output, "\"epoch\":1,"), "steps"), 4) << b.output;

  // A crop or resize would move the images without their boxes: refused, naming the field.
  for (const std::string& field : {"random_resized_crop: true", "resize: 80"}) {
    const std::string with_transform = dir_.file("transform.prototxt", with_data(
        "data { dataset: \"shards\" dir: \"" + path("packs") + "\" transform { " + field + " } }"));
    const CommandResult t = run_command(deeptrain_cmd("train " + with_transform + " --run-dir " + path("run_t")));
    EXPECT_EQ(t.exit_code, 2) << t.output;
    EXPECT_CONTAINS(t.output, "data.transform." + field.substr(0, field.find(':')) + ": not available");
    EXPECT_CONTAINS(t.output, "a pack with boxes");
  }

  // The augmented batches bench measures hold the boxes moved (a batch of boxes, not of labels).
  std::string bench_cfg = with_data("data { dataset: \"shards\" dir: \"" + path("packs") +
                                    "\" augment { enabled: true flip_horizontal: true shift_px: 4 } }");
  bench_cfg.replace(bench_cfg.find("model {"), 7, "model { input { channels: 1 height: 64 width: 64 }");
  const CommandResult bench = run_command(deeptrain_cmd("bench --config " + dir_.file("bench.prototxt", bench_cfg) +
                                                        " --mode augment --steps 1 --warmup 0 --batch 10 --threads 1"));
  EXPECT_EQ(bench.exit_code, 0) << bench.output;
  EXPECT_CONTAINS(bench.output, "augment_ms_median");

  // A boxes.csv changed after packing no longer matches the manifest's SHA-256.
  std::ofstream(path("packs/test/boxes.csv"), std::ios::app) << "0,1,0,0,2,2\n";
  const CommandResult tampered = run_command(deeptrain_cmd("train " + packed + flags + " --run-dir " + path("run_bad")));
  EXPECT_EQ(tampered.exit_code, 2) << tampered.output;
  EXPECT_CONTAINS(tampered.output, "boxes.csv: SHA-256 differs");
}

TEST_F(BoxPacks, BadBoxesAreNamedAndNothingIsPacked) {
  // Three 24x32 images (height x width) in img/, boxes.csv beside img/.
  const fs::path images = dir_.path / "img";
  fs::create_directories(images);
  std::vector<uint8_t> px(24 * 32, 100);
  for (int i = 0; i < 3; ++i)
    io::write_file_atomic((images / fmt::format("{}.png", i)).string(), data::encode_png(px.data(), 1, 24, 32));
  const std::string csv = path("boxes.csv");
  const std::string header = "image,label,x0,y0,x1,y1\n";
  // Image 1 has no line: no box.
  const std::string good = header + "img/0.png,1,0,0,32,24\nimg/2.png,0,3,4,10,12\nimg/2.png,2,20,1,31,9\n";
  auto pack = [&](const std::string& boxes, const std::string& extra) {
    fs::remove_all(dir_.path / "out");
    io::write_file_atomic(csv, boxes);
    return run_command(deeptrain_cmd("pack --images " + images.string() + " --boxes " + csv + " --out " +
                                     path("out") + " --json " + extra));
  };
  const CommandResult ok = pack(good, "");
  ASSERT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_EQ(json_number(ok.last_line(), "box_classes"), 3) << ok.output;  // the largest label + 1
  {
    data::ShardReadOptions o;
    o.threads = 0;
    const data::Dataset d = data::open_shards(path("out"), o);
    ASSERT_EQ(d.boxes.size(), 3u);
    EXPECT_TRUE(same_boxes(d.boxes[0], {{1, 0, 0, 32, 24}}));
    EXPECT_TRUE(d.boxes[1].empty());
    EXPECT_TRUE(same_boxes(d.boxes[2], {{0, 3, 4, 10, 12}, {2, 20, 1, 31, 9}}));
    EXPECT_EQ(d.num_classes, 3);
  }

  struct Case {
    std::string boxes, extra, says;
  };
  const std::vector<Case> cases = {
      {header + "img/0.png,1,0,0,4,4\nimg/7.png,0,1,1,4,4\n", "", "boxes.csv:3: image img/7.png: not one of the images packed"},
      {header + "img/1.png,0,20,1,33,9\n", "", "boxes.csv:2: image img/1.png: the box (20, 1, 33, 9) is outside the 32 x 24 image"},
      {header + "img/1.png,0,-1,1,3,9\n", "", "is outside the 32 x 24 image"},
      {header + "img/1.png,0,0,1,4,25\n", "", "is outside the 32 x 24 image"},
      {header + "img/1.png,0,5,1,5,9\n", "", "boxes.csv:2: image img/1.png: the box (5, 1, 5, 9) has a non-positive size: field x1"},
      {header + "img/1.png,0,5,9,8,3\n", "", "has a non-positive size: field y1"},
      {header + "img/1.png,3,0,0,4,4\n", "--box-classes 3", "boxes.csv:2: image img/1.png: field label is 3, but --box-classes is 3"},
      {header + "img/1.png,-1,0,0,4,4\n", "", "boxes.csv:2: image img/1.png: field label is -1"},
      {header + "img/1.png,0,0,a,4,4\n", "", "boxes.csv:2: image img/1.png: field y0 is 'a', not an integer"},
      {header + "img/1.png,0,,1,4,4\n", "", "boxes.csv:2: image img/1.png: field x0 is '', not an integer"},
      {header + "img/1.png,0,0,4,4\n", "", "boxes.csv:2: expected `image,label,x0,y0,x1,y1` (six fields)"},
      {"index,label,x0,y0,x1,y1\n0,0,0,0,4,4\n", "", "boxes.csv:1: expected the header `image,label,x0,y0,x1,y1`"},
      {good, "--resize 16", "--resize with --boxes"},
  };
  for (const Case& c : cases) {
    const CommandResult r = pack(c.boxes, c.extra);
    EXPECT_EQ(r.exit_code, 2) << c.says << "\n" << r.output;
    EXPECT_CONTAINS(r.output, c.says);
    EXPECT_FALSE(fs::exists(dir_.path / "out" / "manifest.json")) << c.says;
  }
  const CommandResult no_boxes =
      run_command(deeptrain_cmd("pack --images " + images.string() + " --box-classes 2 --out " + path("out2")));
  EXPECT_EQ(no_boxes.exit_code, 2) << no_boxes.output;
  EXPECT_CONTAINS(no_boxes.output, "--box-classes without --boxes");

  // At train time: more boxes on an image than model.loss.detection.max_boxes.
  const std::string three = header + "img/1.png,0,0,0,4,4\nimg/1.png,0,4,4,8,8\nimg/1.png,1,8,8,12,12\n";
  ASSERT_EQ(pack(three, "").exit_code, 0);
  fs::create_directories(dir_.path / "packs");
  fs::rename(dir_.path / "out", dir_.path / "packs" / "train");
  fs::copy(dir_.path / "packs" / "train", dir_.path / "packs" / "test");
  std::string cfg = with_data("data { dataset: \"shards\" dir: \"" + path("packs") + "\" data_threads: 1 }");
  const size_t at = cfg.find("max_boxes: 8");
  ASSERT_NE(at, std::string::npos);
  cfg.replace(at, 12, "max_boxes: 2");
  const CommandResult t = run_command(deeptrain_cmd("train " + dir_.file("max.prototxt", cfg) + " --run-dir " + path("run")));
  EXPECT_EQ(t.exit_code, 2) << t.output;
  EXPECT_CONTAINS(t.output, "model.loss.detection.max_boxes: 2, but sample 1 of data set 'train' has 3 boxes");
  EXPECT_FALSE(fs::exists(dir_.path / "run")) << t.output;
}

// data.transform { flip_horizontal } on a pack with masks and boxes: in every epoch, a sample
// whose pixels come back mirrored (compared with evaluation's unmirrored read) has its label map
// and boxes mirrored, and the others have them as packed; under data.augment too, the targets
// are the mirrored (or not) ones moved by the sample's augmentation.
TEST_F(BoxPacks, FlipTransformMirrorsMasksAndBoxesWithTheImages) {
  const int h = 6, w = 8, n = 12;
  const fs::path images = dir_.path / "img", masks = dir_.path / "mask";
  fs::create_directories(images);
  fs::create_directories(masks);
  std::string csv = "image,label,x0,y0,x1,y1\n";
  for (int i = 0; i < n; ++i) {
    std::vector<uint8_t> px(size_t(h * w)), ids(size_t(h * w));
    for (int k = 0; k < h * w; ++k) {
      px[size_t(k)] = uint8_t(10 + 3 * k + i);  // no row is its own mirror
      ids[size_t(k)] = uint8_t((k * 7 + i) % 4);
    }
    io::write_file_atomic((images / fmt::format("{:02d}.png", i)).string(), data::encode_png(px.data(), 1, h, w));
    io::write_file_atomic((masks / fmt::format("{:02d}.png", i)).string(), data::encode_png(ids.data(), 1, h, w));
    csv += fmt::format("img/{:02d}.png,{},{},1,{},5\n", i, i % 3, i % 4, i % 4 + 3);
  }
  io::write_file_atomic(path("boxes.csv"), csv);
  const CommandResult p = run_command(deeptrain_cmd("pack --images " + images.string() + " --masks " +
                                                    masks.string() + " --boxes " + path("boxes.csv") + " --out " + path("out")));
  ASSERT_EQ(p.exit_code, 0) << p.output;
  EXPECT_CONTAINS(p.output, "with masks of 4 classes and boxes of 3 classes");
  data::ShardReadOptions o;
  o.threads = 1;
  o.seed = 5;
  o.transform.emplace();
  o.transform->set_flip_horizontal(true);
  data::Dataset maps = data::open_shards(path("out"), o);
  data::Dataset boxes = data::open_shards(path("out"), o);
  boxes.label_maps = Tensor();  // as a DETECTION loss takes the set
  std::vector<int64_t> ids(n);
  for (int i = 0; i < n; ++i) ids[size_t(i)] = (i * 5) % n;
  const data::BatchPixels plain(maps, ids.data(), n);  // evaluation: never mirrored
  proto::AugmentConfig aug;
  aug.set_enabled(true);
  aug.set_shift_px(2.5f);
  aug.set_flip_horizontal(true);
  int mirrored = 0;
  for (int epoch = 0; epoch < 4; ++epoch)
    for (bool augmented : {false, true}) {
      Tensor x = Tensor::empty({n, 1, h, w}, DType::f32), tm = Tensor::empty({n, h, w}, DType::i32);
      Tensor xb = x.clone(), tb = Tensor::empty({n, 2, 5}, DType::i32);
      if (augmented) {
        data::gather_batch_augmented(maps, ids.data(), n, epoch, 9, aug, x, tm);
        data::gather_batch_augmented(boxes, ids.data(), n, epoch, 9, aug, xb, tb);
      } else {
        data::gather_batch(maps, ids.data(), n, x, tm, epoch);
        data::gather_batch(boxes, ids.data(), n, xb, tb, epoch);
      }
      const data::BatchPixels got(maps, ids.data(), n, epoch);
      for (int i = 0; i < n; ++i) {
        const uint8_t *a = plain.at(i), *b = got.at(i);
        bool flip = true, same = true;
        for (int k = 0; k < h * w; ++k) {
          same = same && a[k] == b[k];
          flip = flip && a[k] == b[k - k % w + (w - 1 - k % w)];
        }
        ASSERT_TRUE(same != flip) << "epoch " << epoch << " sample " << ids[size_t(i)];
        mirrored += flip && !augmented;
        // The packed targets, mirrored by hand when the image is.
        const uint8_t* m = maps.label_maps.data<uint8_t>() + ids[size_t(i)] * h * w;
        std::vector<uint8_t> map(size_t(h * w));
        for (int k = 0; k < h * w; ++k) map[size_t(k)] = flip ? m[k - k % w + (w - 1 - k % w)] : m[k];
        std::vector<data::Box> bx;
        for (const data::Box& q : boxes.boxes[size_t(ids[size_t(i)])])
          bx.push_back(flip ? data::Box{q.label, w - q.x1, q.y0, w - q.x0, q.y1} : q);
        data::AugmentParams ap;
        if (augmented) ap = data::draw_augment(aug, 9, epoch, ids[size_t(i)]);
        std::vector<int32_t> want_map(size_t(h * w));
        data::augment_label_map(map.data(), h, w, ap, 255, want_map.data());
        const std::vector<data::Box> want_boxes = data::augment_boxes(bx, h, w, ap);
        EXPECT_EQ(std::memcmp(want_map.data(), tm.data<int32_t>() + i * h * w, want_map.size() * 4), 0)
            << "epoch " << epoch << " sample " << ids[size_t(i)] << " augmented " << augmented;
        for (int j = 0; j < 2; ++j) {
          const int32_t* r = tb.data<int32_t>() + (i * 2 + j) * 5;
          const data::Box e = j < int(want_boxes.size()) ? want_boxes[size_t(j)] : data::Box{-1, 0, 0, 0, 0};
          EXPECT_TRUE(same_boxes({{r[0], r[1], r[2], r[3], r[4]}}, {e}))
              << "epoch " << epoch << " sample " << ids[size_t(i)] << " augmented " << augmented;
        }
      }
    }
  EXPECT_GT(mirrored, 8);  // of 48 draws, about half
  EXPECT_LT(mirrored, 40);
}

}  // namespace
