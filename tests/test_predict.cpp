// `deeptrain predict` through the real binary, against the network's own forward pass:
//  - a classifier trained briefly on MNIST: predict on test images exported to PNG gives, for
//    every image, the classes and probabilities of the forward pass on the IDX images, and as
//    many right answers as `deeptrain eval` counts; --checkpoint gives what --weights gives;
//  - a per-pixel model trained briefly on mnist_scenes: predict on the exported test scenes
//    writes masks whose colours are the classes of the forward pass's argmax, with its counts;
//  - a detector trained briefly on mnist_scenes: predict lists, for every exported test scene,
//    the boxes that the evaluation's decoding finds in the forward pass's heads, and draws them;
//  - the segmentation run's predictions.png (and its TensorBoard images, one an epoch) is the grid
//    of the first test scenes as its final model segments them;
//  - bad input (a missing or unreadable image, weights of another model, clashing names, no
//    weights): exit 2, the file named, nothing written.
// Needs MNIST in data/mnist (scripts/fetch_data.sh).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "core/backend/backend.h"
#include "core/config.h"
#include "core/data/dataset.h"
#include "core/data/image_codec.h"
#include "core/data/mnist_scenes.h"
#include "core/detect/decode.h"
#include "core/io/read_file.h"
#include "core/io/weights.h"
#include "core/net.h"
#include "core/threads.h"
#include "core/loss.h"
#include "report/event_file.h"
#include "report/segmentation_figures.h"

namespace fs = std::filesystem;
using namespace deeptrain;

namespace {

const std::string kMnist = std::string(DEEPTRAIN_DATA_DIR) + "/mnist";
constexpr int kImages = 20;  // below run.eval_batch_size: predict and the forward below run one batch

const char* kClassifier = R"(
name: "predict_cls"
model {
  layer { name: "conv1" conv { out_channels: 4 kernel: 5 } }
  layer { name: "relu1" relu {} }
  layer { name: "pool1" max_pool { kernel: 2 } }
  layer { name: "fc" affine { out_features: 10 } }
}
optimizer { type: ADAM lr: 0.003 }
schedule { epochs: 1 batch_size: 50 }
run { seed: 3 threads: 1 }
)";

const char* kSegmenter = R"(
name: "predict_seg"
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

const char* kDetector = R"(
name: "predict_det"
model {
  loss { type: DETECTION
         head { name: "heatmap" target: CENTER_HEATMAP }
         head { name: "size" target: BOX_SIZE }
         head { name: "offset" target: CENTER_OFFSET } }
  layer { name: "conv1" conv { out_channels: 8 kernel: 3 pad: 1 } }
  layer { name: "relu1" relu {} }
  layer { name: "pool1" max_pool { kernel: 2 } }
  layer { name: "conv2" conv { out_channels: 16 kernel: 3 pad: 1 } }
  layer { name: "relu2" relu {} }
  layer { name: "pool2" max_pool { kernel: 2 } }
  layer { name: "heatmap" input: "pool2" conv { out_channels: 10 kernel: 1 bias_init: -2.19 } }
  layer { name: "size" input: "pool2" conv { out_channels: 2 kernel: 1 } }
  layer { name: "offset" input: "pool2" conv { out_channels: 2 kernel: 1 } }
  layer { name: "heads" input: "heatmap" input: "size" input: "offset" concat {} }
}
optimizer { type: ADAM lr: 0.01 }
schedule { epochs: 1 batch_size: 20 }
run { seed: 5 threads: 1 }
)";

nlohmann::json read_json(const fs::path& p) { return nlohmann::json::parse(io::read_file(p.string())); }

// The network of `cfg_path` with `weights`, run in evaluation mode on samples 0..n-1 of `test`
// as evaluation gathers them: host logits, plain. One thread, as the config's run.threads.
Tensor forward(const std::string& cfg_path, const std::string& weights, const data::Dataset& test,
               int64_t n, int classes) {
  const proto::ExperimentConfig cfg = load_config(cfg_path);
  set_cpu_threads(cfg.run().threads(), cfg.run().flush_denormals());
  auto backend = make_backend(cfg.run().backend());
  Net net(cfg.model(), test.sample_shape(), classes, DType::f32);
  net.init_params(cfg.run().seed());
  io::load_weights(weights, net);
  const Shape s = test.sample_shape();
  Tensor x = Tensor::empty({n, s[0], s[1], s[2]}, DType::f32);
  const int64_t boxes = cfg.model().loss().detection().max_boxes();
  Tensor t = test.label_maps.raw() ? Tensor::empty({n, s[1], s[2]}, DType::i32)
             : test.boxes.empty()  ? Tensor::empty({n}, DType::i32)
                                   : Tensor::empty({n, boxes, 5}, DType::i32);
  std::vector<int64_t> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), 0);
  data::gather_batch(test, ids.data(), n, x, t);
  StepContext ctx{*backend, false, cfg.run().seed(), 0, ids.data()};
  return backend->to_host(net.forward(ctx, x));
}

class Predict : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!have_mnist()) return;
    dir_ = new TempDir;
    const fs::path d = dir_->path;
    cls_cfg_ = dir_->file("cls.prototxt", std::string(kClassifier) + "data { dir: \"" + kMnist +
                                              "\" train_limit: 600 test_limit: 100 }\n");
    seg_cfg_ = dir_->file("seg.prototxt", std::string(kSegmenter) +
                                              "data { dataset: \"mnist_scenes\" dir: \"" + kMnist +
                                              "\" scenes { canvas: 28 max_digits: 3 min_scale: 0.6 "
                                              "max_scale: 1.0 train_scenes: 200 test_scenes: 20 } }\n");
    setup_ = run_command(deeptrain_cmd("train " + cls_cfg_ + " --run-dir " + (d / "cls").string() +
                                       " --checkpoint-dir " + (d / "cls_ck").string()));
    if (setup_.exit_code != 0) return;
    setup_ = run_command(deeptrain_cmd("train " + seg_cfg_ + " --run-dir " + (d / "seg").string() +
                                       " --checkpoint-dir " + (d / "seg_ck").string()));
    if (setup_.exit_code != 0) return;
    setup_ = run_command(deeptrain_cmd(fmt::format(
        "export-images --builtin mnist --split test --limit {} --data-dir {} --out {}", kImages,
        kMnist, (d / "png").string())));
    if (setup_.exit_code != 0) return;
    setup_ = run_command(deeptrain_cmd("export-scenes " + seg_cfg_ + " --split test --limit 6 --out " +
                                       (d / "scenes").string()));
    if (setup_.exit_code != 0) return;
    det_cfg_ = dir_->file("det.prototxt", std::string(kDetector) +
                                              "data { dataset: \"mnist_scenes\" dir: \"" + kMnist +
                                              "\" scenes { canvas: 32 max_digits: 2 min_scale: 0.7 "
                                              "max_scale: 1.0 train_scenes: 200 test_scenes: 20 } }\n");
    setup_ = run_command(deeptrain_cmd("train " + det_cfg_ + " --run-dir " + (d / "det").string()));
    if (setup_.exit_code != 0) return;
    setup_ = run_command(deeptrain_cmd("export-scenes " + det_cfg_ + " --split test --limit 6 --out " +
                                       (d / "det_scenes").string()));
  }
  static void TearDownTestSuite() { delete dir_; }
  void SetUp() override {
    if (!have_mnist()) GTEST_SKIP() << "no MNIST in " << kMnist;
    ASSERT_EQ(setup_.exit_code, 0) << setup_.output;
  }
  static fs::path path(const std::string& p) { return dir_->path / p; }
  // The exported MNIST test images 0..kImages-1, in order (export-images: <label>/<index>.png).
  static std::vector<std::string> mnist_pngs() {
    std::vector<std::string> files;
    std::istringstream list(io::read_file(path("png/list.csv").string()));
    std::string line;
    std::getline(list, line);  // header
    while (std::getline(list, line)) files.push_back(path("png/" + line.substr(0, line.find(','))).string());
    return files;
  }
  static std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (const std::string& x : v) s += " " + x;
    return s;
  }

  static TempDir* dir_;
  static std::string cls_cfg_, seg_cfg_, det_cfg_;
  static CommandResult setup_;
};
TempDir* Predict::dir_ = nullptr;
std::string Predict::cls_cfg_, Predict::seg_cfg_, Predict::det_cfg_;
CommandResult Predict::setup_{-1, "not run"};

TEST_F(Predict, ClassifierEqualsTheForwardPassOnTheIdxImages) {
  const std::vector<std::string> files = mnist_pngs();
  ASSERT_EQ(files.size(), size_t(kImages));
  const std::string weights = path("cls/weights.bin").string();
  const CommandResult r = run_command(deeptrain_cmd("predict " + cls_cfg_ + " --weights " + weights +
                                                    join(files) + " --top 10 --out " + path("cls_pred").string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json doc = read_json(path("cls_pred/predictions.json"));
  ASSERT_EQ(doc["task"], "classification");
  ASSERT_EQ(doc["images"].size(), size_t(kImages));

  const data::DatasetSplit mnist = data::load_dataset("mnist", kMnist, false, 1, kImages);
  const Tensor z = forward(cls_cfg_, weights, mnist.test, kImages, 10);
  int right = 0;
  for (int i = 0; i < kImages; ++i) {
    const nlohmann::json& img = doc["images"][size_t(i)];
    EXPECT_EQ(img["file"], files[size_t(i)]);
    // The softmax of the forward pass's logits, in double as predict computes it. The PNG
    // holds the IDX pixels losslessly and both run the same kernels on one batch of the same
    // inputs in one thread: the logits are the same floats, so the probabilities agree to the
    // last bit but for the JSON's decimal round trip (17 digits: exact for a double).
    const float* zi = z.data<float>() + i * 10;
    const double top = *std::max_element(zi, zi + 10);
    double sum = 0;
    for (int k = 0; k < 10; ++k) sum += std::exp(double(zi[k]) - top);
    ASSERT_EQ(img["top"].size(), 10u);
    double last = 2;
    for (const nlohmann::json& c : img["top"]) {
      const int k = c["class"];
      const double p = c["probability"];
      EXPECT_DOUBLE_EQ(p, std::exp(double(zi[k]) - top) / sum) << files[size_t(i)] << " class " << k;
      EXPECT_LE(p, last);  // sorted
      last = p;
    }
    const int best = int(std::max_element(zi, zi + 10) - zi);
    EXPECT_EQ(int(img["top"][0]["class"]), best) << files[size_t(i)];
    right += best == mnist.test.labels.data<int32_t>()[i];
  }
  // And `deeptrain eval` counts as many right on the same images.
  const CommandResult e = run_command(deeptrain_cmd(fmt::format("eval {} --weights {} --test-limit {} --json",
                                                                cls_cfg_, weights, kImages)));
  ASSERT_EQ(e.exit_code, 0) << e.output;
  EXPECT_EQ(json_number(e.last_line(), "test_correct"), right) << e.output;

  // --json: one object per image on stdout, then the summary.
  const CommandResult j = run_command(deeptrain_cmd("predict " + cls_cfg_ + " --weights " + weights + " " +
                                                    files[0] + " --json --top 3 --out " + path("cls_json").string()));
  ASSERT_EQ(j.exit_code, 0) << j.output;
  const nlohmann::json first = nlohmann::json::parse(j.output.substr(0, j.output.find('\n')));
  EXPECT_EQ(first["event"], "prediction");
  EXPECT_EQ(first["top"].size(), 3u);
  EXPECT_EQ(first["top"][0], doc["images"][0]["top"][0]);
}

TEST_F(Predict, CheckpointGivesWhatWeightsGive) {
  // The run's last checkpoint and its weights.bin hold the same parameters.
  const std::vector<std::string> files = mnist_pngs();
  const CommandResult a = run_command(deeptrain_cmd("predict " + cls_cfg_ + " --weights " + path("cls/weights.bin").string() +
                                                    join(files) + " --out " + path("via_weights").string()));
  const CommandResult b = run_command(deeptrain_cmd("predict " + cls_cfg_ + " --checkpoint " + path("cls_ck").string() +
                                                    join(files) + " --out " + path("via_ckpt").string()));
  ASSERT_EQ(a.exit_code, 0) << a.output;
  ASSERT_EQ(b.exit_code, 0) << b.output;
  EXPECT_EQ(read_json(path("via_weights/predictions.json"))["images"],
            read_json(path("via_ckpt/predictions.json"))["images"]);
}

TEST_F(Predict, MasksAreTheArgmaxOfTheForwardPassOnTheScenes) {
  std::vector<std::string> files;
  for (int i = 0; i < 6; ++i) files.push_back(path(fmt::format("scenes/test/images/{:06d}.png", i)).string());
  const std::string weights = path("seg/weights.bin").string();
  const CommandResult r = run_command(deeptrain_cmd("predict " + seg_cfg_ + " --weights " + weights +
                                                    join(files) + " --out " + path("seg_pred").string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json doc = read_json(path("seg_pred/predictions.json"));
  ASSERT_EQ(doc["task"], "segmentation");

  const proto::ExperimentConfig cfg = load_config(seg_cfg_);
  const data::DatasetSplit scenes = data::make_mnist_scenes(data::load_dataset("mnist", kMnist, false),
                                                            cfg.data().scenes(), 1, 6);
  const int K = data::kSceneClasses, H = 28, W = 28;
  const Tensor z = forward(seg_cfg_, weights, scenes.test, 6, K);
  for (int i = 0; i < 6; ++i) {
    const nlohmann::json& img = doc["images"][size_t(i)];
    const std::string mask_png = io::read_file(path(fmt::format("seg_pred/{:06d}_mask.png", i)).string());
    const data::DecodedImage mask = data::decode_image(reinterpret_cast<const uint8_t*>(mask_png.data()),
                                                       mask_png.size(), "mask", 3);
    ASSERT_EQ(mask.height, H);
    ASSERT_EQ(mask.width, W);
    std::vector<int64_t> counts(size_t(K), 0);
    int differ = 0;
    for (int p = 0; p < H * W; ++p) {
      int best = 0;  // the first maximum, as the loss and predict take it
      for (int k = 1; k < K; ++k)
        if (z.data<float>()[(int64_t(i) * K + k) * H * W + p] > z.data<float>()[(int64_t(i) * K + best) * H * W + p]) best = k;
      ++counts[size_t(best)];
      const report::Rgb c = report::class_colour(best);
      differ += mask.pixels[size_t(p)] != c.r || mask.pixels[size_t(H * W + p)] != c.g ||
                mask.pixels[size_t(2 * H * W + p)] != c.b;
    }
    EXPECT_EQ(differ, 0) << "scene " << i;
    EXPECT_EQ(img["class_pixels"].get<std::vector<int64_t>>(), counts) << "scene " << i;
    EXPECT_TRUE(fs::exists(path(fmt::format("seg_pred/{:06d}_overlay.png", i))));
  }
}

TEST_F(Predict, BoxesAreTheDecodedHeadsOfTheForwardPassOnTheScenes) {
  std::vector<std::string> files;
  for (int i = 0; i < 6; ++i) files.push_back(path(fmt::format("det_scenes/test/images/{:06d}.png", i)).string());
  const std::string weights = path("det/weights.bin").string();
  const CommandResult r = run_command(deeptrain_cmd("predict " + det_cfg_ + " --weights " + weights +
                                                    join(files) + " --min-score 0.05 --out " + path("det_pred").string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json doc = read_json(path("det_pred/predictions.json"));
  ASSERT_EQ(doc["task"], "detection");

  const proto::ExperimentConfig cfg = load_config(det_cfg_);
  data::DatasetSplit scenes = data::make_mnist_scenes(data::load_dataset("mnist", kMnist, false),
                                                      cfg.data().scenes(), 1, 6);
  scenes.test.label_maps = Tensor();  // a detector's targets are the boxes
  const Tensor z = forward(det_cfg_, weights, scenes.test, 6, 10);
  const int64_t C = z.dim(1), h = z.dim(2), w = z.dim(3);
  int found = 0;
  for (int i = 0; i < 6; ++i) {
    DecodeOptions decode = decode_options(cfg.model().loss());
    decode.score_threshold = 0.05;  // --min-score, above the config's 0.01
    const std::vector<Detection> want = decode_detections(
        z.data<float>() + i * C * h * w, h, w, detection_spec(cfg.model().loss(), 10), decode, 32, 32);
    const nlohmann::json& got = doc["images"][size_t(i)]["detections"];
    ASSERT_EQ(got.size(), want.size()) << "scene " << i;
    for (size_t k = 0; k < want.size(); ++k) {
      EXPECT_EQ(int(got[k]["class"]), want[k].label) << "scene " << i;
      // The JSON's decimals hold a float's value exactly (printed as a double, read back).
      EXPECT_EQ(float(got[k]["score"].get<double>()), want[k].score) << "scene " << i;
      const std::vector<double> box = got[k]["box"];
      EXPECT_EQ(float(box[0]), want[k].x0);
      EXPECT_EQ(float(box[1]), want[k].y0);
      EXPECT_EQ(float(box[2]), want[k].x1);
      EXPECT_EQ(float(box[3]), want[k].y1);
    }
    found += int(want.size());
    const std::string png = io::read_file(path(fmt::format("det_pred/{:06d}_boxes.png", i)).string());
    const data::DecodedImage drawn =
        data::decode_image(reinterpret_cast<const uint8_t*>(png.data()), png.size(), "boxes", 3);
    EXPECT_EQ(drawn.width, 4 * 32);  // the input enlarged 4 times
  }
  EXPECT_GT(found, 0);  // the comparison compared something
}

TEST_F(Predict, SegmentationRunDrawsItsTestPredictionsEveryEpoch) {
  const proto::ExperimentConfig cfg = load_config(seg_cfg_);
  const data::DatasetSplit scenes = data::make_mnist_scenes(data::load_dataset("mnist", kMnist, false),
                                                            cfg.data().scenes(), 1, 20);
  // The last epoch's picture: the first 8 test scenes, segmented by the final weights.
  const Tensor z = forward(seg_cfg_, path("seg/weights.bin").string(), scenes.test, 8, data::kSceneClasses);
  const std::string want = report::encode_png(report::prediction_grid(scenes.test, pixel_classes(z)));
  EXPECT_TRUE(io::read_file(path("seg/predictions.png").string()) == want)
      << "predictions.png is not the grid of the final model's predictions";
  int images = 0;
  for (const auto& entry : fs::directory_iterator(path("seg")))
    if (entry.path().filename().string().starts_with("events.out.tfevents"))
      for (const auto& e : report::read_event_file(entry.path().string()))
        for (const auto& v : e.summary().value())
          if (v.tag() == "test/predictions" && v.has_image()) {
            ++images;
            if (images == 2) {
              EXPECT_TRUE(v.image().encoded_image_string() == want);
            }
          }
  EXPECT_EQ(images, 2);  // one an epoch
}

TEST_F(Predict, BadInputIsNamedAndWritesNothing) {
  const std::string weights = path("cls/weights.bin").string();
  const std::string good = mnist_pngs()[0];
  const std::string not_image = dir_->file("notes.png", "not an image\n");
  const std::string dup = (dir_->path / "dup").string();
  fs::create_directories(dup);
  fs::copy_file(good, dup + "/" + fs::path(good).filename().string(), fs::copy_options::overwrite_existing);
  struct Case {
    std::string args, names;
  };
  const std::vector<Case> cases = {
      {cls_cfg_ + " --weights " + weights + " " + good + " " + path("missing.png").string(), "missing.png"},
      {cls_cfg_ + " --weights " + weights + " " + good + " " + not_image, "notes.png"},
      {cls_cfg_ + " --weights " + path("seg/weights.bin").string() + " " + good, "seg/weights.bin"},
      {cls_cfg_ + " --checkpoint " + path("no_such_ckpt").string() + " " + good, "no_such_ckpt"},
      // A checkpoint of another model: named, with the first tensor that does not fit.
      {cls_cfg_ + " --checkpoint " + path("seg_ck").string() + " " + good, "seg_ck/ckpt-"},
      {cls_cfg_ + " --weights " + weights + " " + good + " " + dup + "/" + fs::path(good).filename().string(),
       fs::path(good).stem().string()},
      {cls_cfg_ + " " + good, "--weights"},
  };
  for (const Case& c : cases) {
    const fs::path out = dir_->path / "bad_out";
    fs::remove_all(out);
    const CommandResult r = run_command(deeptrain_cmd("predict " + c.args + " --out " + out.string()));
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.names), std::string::npos) << r.output;
    EXPECT_FALSE(fs::exists(out / "predictions.json")) << c.args;
  }
}

}  // namespace
