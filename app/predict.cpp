// `deeptrain predict CONFIG (--weights W | --checkpoint C) IMAGE... --out DIR`: a trained model
// on image files. Every image is brought to the model's input as evaluation sees its data
// (core/data/image_input.h), the model runs in evaluation mode (Trainer::predict, the batches
// evaluate() runs), and what it says goes to stdout and DIR: for a classifier the top K classes
// with their softmax probabilities; for a per-pixel model a colour-coded mask and the mask blended
// on the image, per image, with each class's pixel count; for a detector the decoded boxes (the
// evaluation's decoding and NMS) drawn on the image with class and score, and listed.
// DIR/predictions.json holds it all.
// Every image is read and checked before anything is written; every file is written atomically.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <numeric>

#include "app/commands.h"
#include "app/output.h"
#include "app/session.h"
#include "core/loss.h"
#include "core/data/image_input.h"
#include "core/io/atomic_file.h"
#include "core/io/checkpoint.h"
#include "core/io/weights.h"
#include "distributed/trainer.h"
#include "core/detect/decode.h"
#include "report/detections.h"
#include "report/segmentation_figures.h"

namespace deeptrain::app {
namespace fs = std::filesystem;
namespace {

enum class Task { classify, segment, detect };
const char* task_name(Task t) {
  return t == Task::classify ? "classification" : t == Task::segment ? "segmentation" : "detection";
}

// Boxes are drawn on the model's input enlarged this many times, so captions stay legible on
// small inputs (64x64 scenes).
constexpr int kBoxScale = 4;

// What predict does with a model, from its loss: the one place a new kind of model is added.
Task task_of(const proto::ExperimentConfig& cfg, const std::string& config_path) {
  const auto type = cfg.model().loss().type();
  switch (type) {
    case proto::LossConfig::SOFTMAX_CE: return Task::classify;
    case proto::LossConfig::PIXEL_SOFTMAX_CE: return Task::segment;
    case proto::LossConfig::DETECTION: return Task::detect;
    default: break;
  }
  fail_input("predict: {}: model.loss type {} is not one predict can show (it shows SOFTMAX_CE, "
             "PIXEL_SOFTMAX_CE and DETECTION models)", config_path, proto::LossConfig::Type_Name(type));
}

// The images' names in DIR: their file stems, which must differ.
std::vector<std::string> output_stems(const std::vector<std::string>& images) {
  std::map<std::string, std::string> seen;
  std::vector<std::string> stems;
  for (const std::string& path : images) {
    const std::string stem = fs::path(path).stem().string();
    if (auto [it, fresh] = seen.emplace(stem, path); !fresh)
      fail_input("predict: {} and {} would both write {}_*.png; give images of different names",
                 it->second, path, stem);
    stems.push_back(stem);
  }
  return stems;
}

// The classes in order of probability (ties: the lower class first), the first k.
std::vector<std::pair<int, double>> top_k(const float* logits, int classes, int k) {
  const double top = *std::max_element(logits, logits + classes);
  std::vector<double> p(static_cast<size_t>(classes));
  double sum = 0;
  for (int j = 0; j < classes; ++j) sum += p[size_t(j)] = std::exp(double(logits[j]) - top);
  std::vector<int> order(static_cast<size_t>(classes));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[size_t(a)] > p[size_t(b)]; });
  std::vector<std::pair<int, double>> out;
  for (int j = 0; j < std::min(k, classes); ++j) out.emplace_back(order[size_t(j)], p[size_t(order[size_t(j)])] / sum);
  return out;
}

}  // namespace

void add_predict_command(CLI::App& cli, PredictOptionsCli& o) {
  CLI::App* sub = cli.add_subcommand("predict", "run a trained model on PNG/JPEG images");
  sub->add_option("config", o.config, "the model's experiment config")->required()->check(CLI::ExistingFile);
  sub->add_option("images", o.images, "PNG or JPEG files")->required();
  auto* w = sub->add_option("--weights", o.weights, "a weights file (train's weights.bin)");
  auto* c = sub->add_option("--checkpoint", o.checkpoint,
                            "a checkpoint (a ckpt-* directory, or a checkpoint directory: its newest)");
  w->excludes(c);
  sub->add_option("--out", o.out, "where the predictions go (created)")->required();
  sub->add_flag("--json", o.json, "one JSON object per image on stdout, then a summary");
  sub->add_option("--top", o.top, "classifiers: how many classes to list")
      ->check(positive_integer())->capture_default_str();
  sub->add_option("--min-score", o.min_score,
                  "detectors: list and draw the boxes scoring at least this (the evaluation's "
                  "mAP ranks every box down to model.loss.detection.score_threshold)")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  sub->add_option("--threads", o.threads, "override run.threads (0 = all cores)");
  sub->add_option("--backend", o.backend, fmt::format("override run.backend: {}", backend_words()));
  sub->footer(
      "Writes DIR/predictions.json; a per-pixel model also DIR/<image>_mask.png and\n"
      "DIR/<image>_overlay.png, a detector DIR/<image>_boxes.png (docs/predict.md: how images\n"
      "are prepared, the colours, the boxes).\n\n"
      "Examples:\n"
      "  deeptrain predict examples/deep_convnet_mnist.prototxt --weights runs/dcn/weights.bin "
      "digit.png --out pred\n"
      "  deeptrain predict examples/fcn_mnist_scenes.prototxt --checkpoint ckpt scene.png --out pred");
}

int run_predict(const PredictOptionsCli& o) {
  if (o.weights.empty() == o.checkpoint.empty())
    fail_input("predict: give the model's weights: --weights FILE or --checkpoint DIR");
  ConfigOverrides ov;
  if (o.threads) ov.threads = *o.threads;
  if (!o.backend.empty()) ov.backend = o.backend;
  const proto::ExperimentConfig cfg = load_config(o.config, ov);
  const Task task = task_of(cfg, o.config);
  const std::vector<std::string> stems = output_stems(o.images);
  // A pack's config takes its input shape and class count from the pack unless it names them.
  const auto& in = cfg.model().input();
  const bool needs_pack = cfg.data().dataset() == "shards" &&
                          !(in.channels() && in.height() && in.width() && cfg.model().num_classes());
  Session s = open_session(cfg, needs_pack);
  if (!o.weights.empty()) io::load_weights(o.weights, *s.net);
  else io::load_checkpoint_weights(o.checkpoint, *s.net);
  const Shape input = s.net->input_shape();
  const int classes = s.net->num_classes();
  if (task == Task::segment && classes > 256)
    fail_input("predict: {} classes: a mask holds class ids 0..255", classes);
  const int64_t n = int64_t(o.images.size()), sample = input.numel(), plane = input[1] * input[2];

  // The images as a data set of this model's input, read and checked before anything is written.
  const data::ModelImageInput prepare(cfg.data(), input, cfg.run().seed());
  data::Dataset d;
  d.name = "predict";
  d.num_classes = classes;
  d.images = Tensor::empty({n, input[0], input[1], input[2]}, DType::u8);
  d.labels = Tensor::zeros({n}, DType::i32);
  if (task == Task::segment) d.label_maps = Tensor::zeros({n, input[1], input[2]}, DType::u8);
  if (task == Task::detect) d.boxes.assign(size_t(n), {});  // no truth: targets stay empty
  d.mean = prepare.mean();
  d.std = prepare.std();
  for (int64_t i = 0; i < n; ++i) prepare.prepare(o.images[size_t(i)], d.images.data<uint8_t>() + i * sample);

  Trainer predictor(trainer_options(cfg), *s.net, *s.backend, *s.comm);  // no optimizer
  std::vector<int64_t> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), 0);
  const Tensor logits = predictor.predict(d, ids.data(), n);
  const std::vector<uint8_t> masks = task == Task::segment ? pixel_classes(logits) : std::vector<uint8_t>();
  if (!s.speaks()) return 0;

  std::error_code ec;
  fs::create_directories(o.out, ec);
  if (ec) fail_input("predict: --out {}: cannot create it: {}", o.out, ec.message());
  Output out(o.json);
  Json doc{{"config", o.config},
           {o.weights.empty() ? "checkpoint" : "weights", o.weights.empty() ? o.checkpoint : o.weights},
           {"task", task_name(task)},
           {"input", {input[0], input[1], input[2]}},
           {"images", Json::array()}};
  for (int64_t i = 0; i < n; ++i) {
    const std::string& file = o.images[size_t(i)];
    Json e{{"event", "prediction"}, {"file", file}};
    std::string text = file + ":";
    if (task == Task::classify) {
      Json top = Json::array();
      for (const auto& [k, p] : top_k(logits.data<float>() + i * classes, classes, o.top)) {
        top.push_back({{"class", k}, {"probability", p}});
        text += fmt::format(" {} ({:.4f})", k, p);
      }
      e["top"] = top;
    } else if (task == Task::detect) {
      const Shape head = s.net->output_shape();  // (C, h, w)
      DecodeOptions decode = decode_options(cfg.model().loss());
      decode.score_threshold = std::max(decode.score_threshold, o.min_score);
      const std::vector<Detection> found = decode_detections(
          logits.data<float>() + i * head.numel(), head[1], head[2],
          detection_spec(cfg.model().loss(), classes), decode, input[1], input[2]);
      report::Raster picture = report::image_raster(d.images.data<uint8_t>() + i * sample,
                                                    int(input[0]), int(input[1]), int(input[2]), kBoxScale);
      report::draw_detections(picture, found, {}, kBoxScale, 2);
      const fs::path boxes_path = fs::path(o.out) / (stems[size_t(i)] + "_boxes.png");
      io::write_file_atomic(boxes_path.string(), report::encode_png(picture));
      Json list = Json::array();
      for (const Detection& f : found)
        list.push_back({{"class", f.label}, {"score", f.score}, {"box", {f.x0, f.y0, f.x1, f.y1}}});
      e["boxes_image"] = boxes_path.string();
      e["detections"] = list;
      text += fmt::format(" {} detection{}", found.size(), found.size() == 1 ? "" : "s");
      for (size_t k = 0; k < std::min<size_t>(found.size(), 5); ++k)
        text += fmt::format("; class {} ({:.2f}) at [{:.1f}, {:.1f}, {:.1f}, {:.1f}]", found[k].label,
                            found[k].score, found[k].x0, found[k].y0, found[k].x1, found[k].y1);
    } else {
      const uint8_t* mask = masks.data() + i * plane;
      std::vector<int64_t> counts(size_t(classes), 0);
      for (int64_t p = 0; p < plane; ++p) ++counts[mask[p]];
      const int h = int(input[1]), w = int(input[2]);
      const fs::path mask_path = fs::path(o.out) / (stems[size_t(i)] + "_mask.png");
      const fs::path overlay_path = fs::path(o.out) / (stems[size_t(i)] + "_overlay.png");
      io::write_file_atomic(mask_path.string(), report::encode_png(report::mask_raster(mask, h, w)));
      io::write_file_atomic(overlay_path.string(),
                            report::encode_png(report::overlay_raster(d.images.data<uint8_t>() + i * sample,
                                                                      int(input[0]), h, w, mask)));
      e["mask"] = mask_path.string();
      e["overlay"] = overlay_path.string();
      e["class_pixels"] = counts;
      for (int k = 0; k < classes; ++k)
        if (counts[size_t(k)]) text += fmt::format(" class {}: {} px", k, counts[size_t(k)]);
    }
    out.event(e, text);
    Json entry = e;
    entry.erase("event");
    doc["images"].push_back(entry);
  }
  const std::string json_path = (fs::path(o.out) / "predictions.json").string();
  io::write_file_atomic(json_path, doc.dump(2, ' ', false, Json::error_handler_t::replace) + "\n");
  out.event({{"event", "summary"}, {"images", n}, {"out", o.out}, {"predictions", json_path}},
            fmt::format("{} image{} predicted; {} written", n, n == 1 ? "" : "s", json_path));
  return 0;
}

}  // namespace deeptrain::app
