// The detection engine (docs/detection.md), without MNIST:
//  - CenterNet's targets (radius, Gaussians) against hand-computed values, the loss's gradient
//    against central differences in float64 (focal + L1, BCE + smooth L1), and the CPU op (which
//    splats each box's Gaussian) against the cell-by-cell definition the CUDA kernels compute;
//  - decoding (peaks, offsets, sizes, NMS), NMS against torchvision.ops.nms on random boxes,
//    mAP on hand-computed cases and against an independent Python implementation
//    (tests/detection/map_reference.py);
//  - bad configurations and boxes: InputErrors naming the field or the sample;
//  - a detection model trained through the device paths (HostDeviceBackend) equals the host
//    training bit for bit, mAP included.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "cli_util.h"
#include "core/backend/cpu.h"
#include "core/config.h"
#include "core/data/mnist_scenes.h"
#include "core/detect/average_precision.h"
#include "core/detect/decode.h"
#include "core/loss.h"
#include "core/net.h"
#include "core/optim/optimizer.h"
#include "distributed/communicator.h"
#include "distributed/trainer.h"
#include "error_util.h"
#include "gradcheck_util.h"
#include "host_device_backend.h"
#include "synthetic_squares.h"

using namespace deeptrain;
using namespace deeptrain::testing_util;

namespace {

const char* kSource = DEEPTRAIN_SOURCE_DIR;

// Boxes (n, M, 5) from per-sample lists, padded with label -1.
Tensor box_tensor(const std::vector<std::vector<data::Box>>& boxes, int64_t M) {
  Tensor t = Tensor::empty({int64_t(boxes.size()), M, 5}, DType::i32);
  int32_t* p = t.data<int32_t>();
  for (size_t i = 0; i < boxes.size(); ++i)
    for (int64_t j = 0; j < M; ++j) {
      const data::Box b = j < int64_t(boxes[i].size()) ? boxes[i][size_t(j)] : data::Box{-1, 0, 0, 0, 0};
      const int32_t v[5] = {b.label, b.x0, b.y0, b.x1, b.y1};
      std::memcpy(p + (i * M + j) * 5, v, sizeof(v));
    }
  return t;
}

DetectionLossSpec spec3(bool bce, bool smooth) {
  DetectionLossSpec s;
  s.classes = 3;
  s.stride = 4;
  s.max_boxes = 3;
  s.heat_channel = 0, s.size_channel = 3, s.offset_channel = 5;
  s.heat_bce = bce, s.size_smooth = smooth, s.offset_smooth = smooth;
  s.heat_weight = 1, s.size_weight = 0.1, s.offset_weight = 1;
  return s;
}

// Two 24 x 20 images (6 x 5 cells at stride 4): two boxes (one touching the border), one box.
const std::vector<std::vector<data::Box>> kBoxes = {{{2, 1, 2, 13, 15}, {0, 8, 10, 20, 24}},
                                                    {{1, 5, 6, 11, 21}}};

proto::ModelConfig model_config(const std::string& text) {
  return parse_config("model { " + text + " }", "(test)", {}).model();
}

// A small CenterNet: conv, pool x2 (stride 4), three heads concatenated.
const char* kHeads = R"(
  loss { type: DETECTION
         head { name: "heat" target: CENTER_HEATMAP }
         head { name: "wh" target: BOX_SIZE }
         head { name: "off" target: CENTER_OFFSET } }
  layer { name: "c1" conv { out_channels: 8 kernel: 3 pad: 1 } }
  layer { name: "r1" relu {} }
  layer { name: "p1" max_pool { kernel: 2 } }
  layer { name: "c2" conv { out_channels: 8 kernel: 3 pad: 1 } }
  layer { name: "r2" relu {} }
  layer { name: "p2" max_pool { kernel: 2 } }
  layer { name: "heat" input: "p2" conv { out_channels: 10 kernel: 1 bias_init: -2.19 } }
  layer { name: "wh" input: "p2" conv { out_channels: 2 kernel: 1 } }
  layer { name: "off" input: "p2" conv { out_channels: 2 kernel: 1 } }
  layer { name: "heads" input: "heat" input: "wh" input: "off" concat {} }
)";

}  // namespace

TEST(DetectionTargets, RadiusAndGaussiansAsCenterNet) {
  // A 16 x 16 box at stride 4 is 4 x 4 cells: CenterNet's three radii are 7.63, 14.69 and
  // (-11.2 + sqrt(11.2^2 + 4 * 2.8 * 4.8)) / 2 = 1.093 (by hand); the radius is 1, sigma 1/2.
  EXPECT_NEAR(gaussian_radius(4, 4, 0.7), (-11.2 + std::sqrt(11.2 * 11.2 + 4 * 2.8 * 4.8)) / 2, 1e-12);
  const int32_t box[5] = {3, 10, 20, 26, 36};
  const CenterObject o = center_object(box, 4, 16, 16);
  EXPECT_TRUE(o.valid);
  EXPECT_EQ(o.px, 4);  // centre (18, 28) px = (4.5, 7) cells
  EXPECT_EQ(o.py, 7);
  EXPECT_DOUBLE_EQ(o.cx - o.px, 0.5);
  EXPECT_DOUBLE_EQ(o.w, 4.0);
  EXPECT_EQ(o.radius, 1);
  EXPECT_DOUBLE_EQ(heat_target(box, 1, 3, 7, 4, 4, 16, 16), 1.0);
  EXPECT_DOUBLE_EQ(heat_target(box, 1, 3, 7, 5, 4, 16, 16), std::exp(-2.0));  // 1 / (2 * 0.25)
  EXPECT_DOUBLE_EQ(heat_target(box, 1, 3, 8, 5, 4, 16, 16), std::exp(-4.0));
  EXPECT_EQ(heat_target(box, 1, 3, 7, 6, 4, 16, 16), 0.0);  // outside the radius
  EXPECT_EQ(heat_target(box, 1, 2, 7, 4, 4, 16, 16), 0.0);  // another class
  // Focal loss by hand at z = 0 (p = 1/2): a centre -(1/2)^2 log(1/2); a cell of target 1/2
  // -(1/2)^4 (1/2)^2 log(1/2).
  double g;
  EXPECT_NEAR(heat_loss(0, 1, false, 2, 4, &g), 0.25 * std::log(2.0), 1e-15);
  EXPECT_NEAR(heat_loss(0, 0.5, false, 2, 4, &g), std::pow(0.5, 6) * std::log(2.0), 1e-15);
  EXPECT_NEAR(heat_loss(0, 0.5, true, 2, 4, &g), std::log(2.0), 1e-15);
  EXPECT_NEAR(g, 0.0, 1e-15);  // BCE's p - t
  EXPECT_DOUBLE_EQ(box_loss(0.5, true, &g), 0.125);
  EXPECT_DOUBLE_EQ(box_loss(-2.0, true, &g), 1.5);
  EXPECT_DOUBLE_EQ(g, -1.0);
}

TEST(DetectionLoss, MatchesCentralDifferencesInFloat64) {
  auto backend = make_backend("cpu-ref");
  const Tensor boxes = box_tensor(kBoxes, 3);
  for (const bool variant : {false, true}) {
    const DetectionLossSpec s = spec3(variant, variant);
    Tensor z = Tensor::empty({2, 7, 6, 5}, DType::f64), dz = z.clone();
    fill_random(z, variant ? 11 : 12, 1.5);
    auto loss = [&] { return backend->detection_loss(z, boxes, s, 0.0, nullptr); };
    backend->detection_loss(z, boxes, s, 1.0, &dz);
    EXPECT_LE(check(z, dz.clone(), loss), 1e-7) << (variant ? "BCE, smooth L1" : "focal, L1");
    // scale multiplies the gradient.
    Tensor dz3 = z.clone();
    backend->detection_loss(z, boxes, s, 3.0, &dz3);
    for (int64_t i = 0; i < dz.numel(); ++i)
      ASSERT_NEAR(dz3.data<double>()[i], 3.0 * dz.data<double>()[i], 1e-12);
  }
}

// The CPU op splats each box's Gaussian; the CUDA kernels evaluate heat_target cell by cell:
// the same loss and gradient.
TEST(DetectionLoss, CpuOpEqualsTheCellByCellDefinition) {
  auto backend = make_backend("cpu-ref");
  const Tensor boxes = box_tensor(kBoxes, 3);
  const DetectionLossSpec s = spec3(false, false);
  Tensor z = Tensor::empty({2, 7, 6, 5}, DType::f64), dz = z.clone();
  fill_random(z, 3, 2.0);
  const double got = backend->detection_loss(z, boxes, s, 1.0, &dz);
  double want = 0;
  for (int64_t i = 0; i < 2; ++i) {
    const int32_t* b = boxes.data<int32_t>() + i * 15;
    const double norm = 1.0 / double(kBoxes[size_t(i)].size());
    double heat = 0, box = 0, off = 0;
    for (int k = 0; k < 3; ++k)
      for (int y = 0; y < 6; ++y)
        for (int x = 0; x < 5; ++x) {
          double g;
          const int64_t e = ((i * 7 + k) * 6 + y) * 5 + x;
          heat += heat_loss(z.data<double>()[e], heat_target(b, 3, k, y, x, 4, 6, 5), false, 2, 4, &g);
          ASSERT_NEAR(dz.data<double>()[e], norm * g, 1e-15) << e;
        }
    for (int j = 0; j < 3; ++j) {
      const CenterObject o = center_object(b + j * 5, 4, 6, 5);
      if (!o.valid) continue;
      const int64_t cell = o.py * 5 + o.px;
      double g;
      box += box_loss(z.data<double>()[(i * 7 + 3) * 30 + cell] - o.w, false, &g) +
             box_loss(z.data<double>()[(i * 7 + 4) * 30 + cell] - o.h, false, &g);
      off += box_loss(z.data<double>()[(i * 7 + 5) * 30 + cell] - (o.cx - o.px), false, &g) +
             box_loss(z.data<double>()[(i * 7 + 6) * 30 + cell] - (o.cy - o.py), false, &g);
    }
    want += (heat + 0.1 * box + off) * norm;
  }
  EXPECT_NEAR(got, want, 1e-12 * std::abs(want));
  // A label beyond the classes names the sample.
  Tensor bad = boxes.clone();
  bad.data<int32_t>()[15] = 3;
  EXPECT_CONTAINS(error_of<InputError>([&] { backend->detection_loss(z, bad, s, 0.0, nullptr); }),
                  "sample 1 of the batch has box label 3");
}

TEST(DetectionDecode, FindsPlantedBoxesAndSuppressesDuplicates) {
  // 2 classes at stride 4 on 8 x 8 cells (a 32 x 32 image); heads: heat 0-1, size 2-3, offset 4-5.
  DetectionLossSpec s;
  s.classes = 2, s.stride = 4, s.heat_channel = 0, s.size_channel = 2, s.offset_channel = 4;
  const int64_t S = 64;
  std::vector<float> out(6 * S, -8.0f);
  auto plant = [&](int k, int y, int x, float z, float w, float h, float ox, float oy) {
    out[size_t(k * S + y * 8 + x)] = z;
    out[size_t(2 * S + y * 8 + x)] = w, out[size_t(3 * S + y * 8 + x)] = h;
    out[size_t(4 * S + y * 8 + x)] = ox, out[size_t(5 * S + y * 8 + x)] = oy;
  };
  plant(0, 2, 3, 2.0f, 2.0f, 3.0f, 0.5f, 0.25f);   // centre (14, 9) px, 8 x 12 px
  plant(0, 2, 5, 1.0f, 2.0f, 3.0f, -1.0f, 0.25f);  // a separate peak: the same box 2 px right
  plant(1, 6, 6, 0.0f, 1.0f, 1.0f, 0.0f, 0.0f);    // class 1, score 1/2
  out[size_t(1 * S + 6 * 8 + 7)] = -0.5f;          // its neighbour: not a peak
  DecodeOptions o;
  o.nms_iou = 1.0;  // none
  std::vector<Detection> all = decode_detections(out.data(), 8, 8, s, o, 32, 32);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].label, 0);
  EXPECT_NEAR(all[0].score, 1 / (1 + std::exp(-2.0)), 1e-6);
  EXPECT_FLOAT_EQ(all[0].x0, 10);
  EXPECT_FLOAT_EQ(all[0].y0, 3);
  EXPECT_FLOAT_EQ(all[0].x1, 18);
  EXPECT_FLOAT_EQ(all[0].y1, 15);
  EXPECT_EQ(all[2].label, 1);
  EXPECT_FLOAT_EQ(all[2].score, 0.5f);
  // The near-copy (IoU 6 * 12 / (2 * 96 - 6 * 12) = 0.6) goes at NMS 0.5, stays at 0.7.
  const float iou = float(box_iou({all[0].x0, all[0].y0, all[0].x1, all[0].y1},
                                  {all[1].x0, all[1].y0, all[1].x1, all[1].y1}));
  EXPECT_NEAR(iou, 6.0 * 12 / (2 * 96 - 6 * 12), 1e-6);
  o.nms_iou = 0.5;
  EXPECT_EQ(decode_detections(out.data(), 8, 8, s, o, 32, 32).size(), 2u);
  o.nms_iou = 0.7;
  EXPECT_EQ(decode_detections(out.data(), 8, 8, s, o, 32, 32).size(), 3u);
  o.score_threshold = 0.6;  // drops class 1's 1/2
  EXPECT_EQ(decode_detections(out.data(), 8, 8, s, o, 32, 32).size(), 2u);
  o.top_k = 1;
  EXPECT_EQ(decode_detections(out.data(), 8, 8, s, o, 32, 32).size(), 1u);
}

TEST(DetectionDecode, NmsMatchesTorchvision) {
  if (run_command("/usr/bin/python3 -c 'import torchvision' 2>/dev/null").exit_code != 0)
    GTEST_SKIP() << "python3-torchvision not installed (scripts/install_deps.sh --with-torch)";
  TempDir dir;
  const RandomStream rs{5, 17};
  for (int trial = 0; trial < 4; ++trial) {
    std::vector<std::array<float, 4>> boxes;
    std::vector<float> scores;
    std::ostringstream text;
    text.precision(9);
    for (int i = 0; i < 200; ++i) {
      const auto r = rs.block(uint64_t(trial * 1000 + i));
      const float x0 = float(r[0] % 1000) / 10, y0 = float(r[1] % 1000) / 10;
      const float w = 1 + float(r[2] % 300) / 10, h = 1 + float(r[3] % 300) / 10;
      boxes.push_back({x0, y0, x0 + w, y0 + h});
      scores.push_back(u32_to_unit_float(rs.block(uint64_t(trial * 1000 + i), 1)[0]));
      text << x0 << ' ' << y0 << ' ' << x0 + w << ' ' << y0 + h << ' ' << scores.back() << '\n';
    }
    const double iou = 0.3 + 0.15 * trial;
    const std::string file = dir.file("boxes.txt", text.str());
    const CommandResult r = run_command(std::string("/usr/bin/python3 ") + kSource +
                                        "/tests/detection/nms_reference.py " + file + " " +
                                        std::to_string(iou));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    std::string want;
    for (int64_t k : nms(boxes, scores, iou)) want += (want.empty() ? "" : " ") + std::to_string(k);
    EXPECT_EQ(want, r.last_line()) << "IoU " << iou;
  }
}

TEST(AveragePrecision, HandComputedCases) {
  // 3 truth boxes of class 0; detections by score: TP, FP, TP, FP. Recall 1/3, 1/3, 2/3, 2/3,
  // precision 1, 1/2, 2/3, 1/2: AP = 1/3 * 1 + 1/3 * 2/3 = 5/9.
  std::vector<ScoredDetection> d{{0, 0.9f, 1}, {0, 0.8f, 0}, {0, 0.7f, 1}, {0, 0.6f, 0}};
  EXPECT_NEAR(average_precision(d, 0, 3), 5.0 / 9, 1e-12);
  EXPECT_TRUE(std::isnan(average_precision(d, 0, 0)));
  EXPECT_EQ(average_precision({}, 0, 2), 0.0);
  // Class 1 perfect at 0.5 only; class 2 without truth (left out of the means).
  d.push_back({1, 0.5f, 1});
  d.push_back({2, 0.5f, 0});
  const DetectionMetrics m = detection_metrics(d, {3, 1, 0});
  EXPECT_NEAR(m.map50, (5.0 / 9 + 1) / 2, 1e-12);
  EXPECT_NEAR(m.ap[1], 0.1, 1e-12);
  EXPECT_TRUE(std::isnan(m.ap50[2]));
  EXPECT_EQ(m.truth, 4);
  EXPECT_EQ(m.true_positives50, 3);
  // Matching: a duplicate of a found box is a false positive; a looser box matches at 0.5 only.
  const std::vector<data::Box> truth{{0, 0, 0, 10, 10}, {1, 20, 20, 30, 30}};
  const std::vector<Detection> found{{0, 0.9f, 0, 0, 10, 10}, {0, 0.8f, 0, 0, 10, 10},
                                     {1, 0.7f, 20, 20, 30, 36}, {1, 0.6f, 0, 0, 10, 10}};
  const std::vector<uint32_t> bits = match_detections(found, truth);
  EXPECT_EQ(bits[0], 1023u);
  EXPECT_EQ(bits[1], 0u);
  EXPECT_EQ(bits[2], 0x7u);  // IoU 100/160 = 0.625: thresholds 0.5, 0.55 and 0.6
  EXPECT_EQ(bits[3], 0u);    // another class's place
}

TEST(AveragePrecision, MatchesAnIndependentPythonImplementation) {
  TempDir dir;
  const RandomStream rs{8, 3};
  const int classes = 4, images = 40;
  std::ostringstream text;
  text.precision(9);
  std::vector<ScoredDetection> all;
  std::vector<int64_t> truth_per_class(classes, 0);
  for (int i = 0; i < images; ++i) {
    std::vector<data::Box> truth;
    std::vector<Detection> found;
    const int boxes = 1 + int(rs.block(uint64_t(i))[0] % 4);
    for (int j = 0; j < boxes; ++j) {
      const auto r = rs.block(uint64_t(i), uint32_t(j + 1));
      const int32_t x0 = int32_t(r[0] % 40), y0 = int32_t(r[1] % 40), s = 8 + int32_t(r[2] % 16);
      truth.push_back({int32_t(r[3] % classes), x0, y0, x0 + s, y0 + s});
      ++truth_per_class[size_t(truth.back().label)];
      text << "gt " << i << ' ' << truth.back().label << ' ' << x0 << ' ' << y0 << ' ' << x0 + s
           << ' ' << y0 + s << '\n';
      // Detections near it: jittered copies, some with the wrong class.
      for (int c = 0; c < 3; ++c) {
        const auto q = rs.block(uint64_t(i), uint32_t(100 + 10 * j + c));
        const float jx = float(int(q[0] % 9) - 4), jy = float(int(q[1] % 9) - 4);
        const int32_t label = q[2] % 5 == 0 ? int32_t((truth.back().label + 1) % classes) : truth.back().label;
        found.push_back({label, u32_to_unit_float(rs.block(uint64_t(i), uint32_t(200 + 10 * j + c))[0]), float(x0) + jx,
                         float(y0) + jy, float(x0 + s) + jx, float(y0 + s) + jy * 0.5f});
      }
    }
    std::stable_sort(found.begin(), found.end(),
                     [](const Detection& a, const Detection& b) { return a.score > b.score; });
    const std::vector<uint32_t> bits = match_detections(found, truth);
    for (size_t d = 0; d < found.size(); ++d) {
      all.push_back({found[d].label, found[d].score, bits[d]});
      text << "det " << i << ' ' << found[d].label << ' ' << found[d].score << ' ' << found[d].x0
           << ' ' << found[d].y0 << ' ' << found[d].x1 << ' ' << found[d].y1 << '\n';
    }
  }
  const DetectionMetrics m = detection_metrics(all, truth_per_class);
  const CommandResult r = run_command(std::string("/usr/bin/python3 ") + kSource +
                                      "/tests/detection/map_reference.py " +
                                      dir.file("dets.txt", text.str()) + " " + std::to_string(classes));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::istringstream in(r.output);
  double map50 = 0, map = 0;
  in >> map50 >> map;
  EXPECT_NEAR(m.map50, map50, 1e-9);
  EXPECT_NEAR(m.map, map, 1e-9);
  for (int c = 0; c < classes; ++c) {
    double ap50 = 0, ap = 0;
    in >> ap50 >> ap;
    EXPECT_NEAR(m.ap50[size_t(c)], ap50, 1e-9) << c;
    EXPECT_NEAR(m.ap[size_t(c)], ap, 1e-9) << c;
  }
  // Not a degenerate case: the jitter leaves some matches at 0.5 and fewer at 0.95.
  EXPECT_GT(m.map50, 0.2);
  EXPECT_LT(m.map, m.map50);
}

TEST(DetectionConfig, BadHeadsStridesAndBoxesAreInputErrors) {
  const Shape in{1, 32, 32};
  // conv's bias_init starts the heatmap's biases at the prior (the other biases at 0).
  Net net(model_config(kHeads), in, 10, DType::f32);
  net.init_params(1);
  int biases = 0;
  for (const ParamEntry& e : net.param_entries())
    if (e.name == "heat.b" || e.name == "wh.b")
      for (int64_t i = 0; i < e.shape.numel(); ++i, ++biases) {
        ASSERT_EQ(net.params().data<float>()[e.offset + i], e.name == "heat.b" ? -2.19f : 0.0f) << e.name;
      }
  EXPECT_EQ(biases, 12);
  // A concat input without a head: a head without a loss.
  std::string text = kHeads;
  text.replace(text.find("head { name: \"off\" target: CENTER_OFFSET }"),
               std::string("head { name: \"off\" target: CENTER_OFFSET }").size(), "");
  EXPECT_CONTAINS(error_of<InputError>([&] { Net(model_config(text), in, 10, DType::f32); }),
                  "layer 'off' feeds the heads' concat 'heads' but no head names it");
  // A head whose layer has the wrong channel count.
  EXPECT_CONTAINS(error_of<InputError>([&] { Net(model_config(kHeads), in, 11, DType::f32); }),
                  "model.loss.head[0] 'heat'");
  // An output stride that does not divide the input.
  EXPECT_CONTAINS(error_of<InputError>([&] { Net(model_config(kHeads), Shape{1, 30, 32}, 10, DType::f32); }),
                  "model.loss.detection.output_stride: 4 does not divide the input's 30 x 32");
  // Config checks: two heatmaps, a loss that does not fit its target, no heads.
  EXPECT_CONTAINS(error_of<InputError>([] {
                    model_config("loss { type: DETECTION head { name: 'a' } head { name: 'b' } }");
                  }), "model.loss.head[1]: a second CENTER_HEATMAP head");
  EXPECT_CONTAINS(error_of<InputError>([] {
                    model_config("loss { type: DETECTION head { name: 'a' } "
                                 "head { name: 'b' target: BOX_SIZE loss: FOCAL } }");
                  }), "model.loss.head[1] 'b': loss FOCAL does not fit target BOX_SIZE");
  EXPECT_CONTAINS(error_of<InputError>([] { model_config("loss { type: DETECTION }"); }),
                  "model.loss.head: a DETECTION loss needs its heads");
  EXPECT_CONTAINS(error_of<InputError>([] { model_config("loss { head { name: 'a' } }"); }),
                  "model.loss: head and detection are for type DETECTION");
  // Boxes: outside the image, no area, a class beyond the model's, too many.
  data::Dataset d;
  d.name = "boxes";
  d.boxes = {{{1, 0, 0, 8, 8}}, {{2, 4, 4, 12, 40}}};
  EXPECT_CONTAINS(error_of<InputError>([&] { data::check_boxes(d, 32, 32, 10, 4); }),
                  "sample 1 of data set 'boxes', box 0 (4, 4, 12, 40): the box is not inside the 32 x 32 image");
  d.boxes[1][0] = {2, 4, 4, 3, 9};
  EXPECT_CONTAINS(error_of<InputError>([&] { data::check_boxes(d, 32, 32, 10, 4); }), "has no area");
  d.boxes[1][0] = {10, 4, 4, 8, 9};
  EXPECT_CONTAINS(error_of<InputError>([&] { data::check_boxes(d, 32, 32, 10, 4); }),
                  "model.num_classes: 10, but sample 1 of data set 'boxes', box 0 (4, 4, 8, 9) has label 10");
  d.boxes[1] = std::vector<data::Box>(5, data::Box{1, 0, 0, 4, 4});
  EXPECT_CONTAINS(error_of<InputError>([&] { data::check_boxes(d, 32, 32, 10, 4); }),
                  "model.loss.detection.max_boxes: 4, but sample 1 of data set 'boxes' has 5 boxes");
}

namespace {

struct DetectRun {
  std::vector<double> losses;
  Tensor params;
  EvalReport eval;
};

DetectRun train_detector(Backend& be, const data::DatasetSplit& d) {
  const proto::ModelConfig model = model_config(kHeads);
  Net net(model, {1, 32, 32}, 10, DType::f32);
  net.init_params(3);
  proto::OptimizerConfig oc;
  oc.set_type(proto::ADAM);
  oc.set_lr(0.01f);
  auto opt = make_optimizer(oc, net.num_params(), nullptr);
  TrainerOptions to;
  to.batch_size = 8;
  to.eval_batch_size = 7;
  to.seed = 3;
  to.epochs = 2;
  SingleProcessCommunicator one;
  Trainer trainer(to, net, be, *opt, one);
  DetectRun r;
  for (int epoch = 0; epoch < 2; ++epoch)
    trainer.train_epoch(d.train, epoch, nullptr, [&](int64_t, int64_t, const StepMetrics& m) {
      r.losses.push_back(m.loss_sum);
    });
  r.eval = trainer.evaluate(d.test);
  r.params = net.params().clone();
  return r;
}

}  // namespace

TEST(DetectionTrain, TheDevicePathsTrainTheHostModelBitForBit) {
  data::DatasetSplit digits;
  digits.train = synthetic_squares(40, {5, 1, 200, 56, 1});
  digits.test = synthetic_squares(20, {5, 2, 200, 56, 1});
  proto::MnistScenesConfig o;
  o.set_canvas(32), o.set_min_digits(1), o.set_max_digits(2), o.set_min_scale(0.6f);
  o.set_max_scale(1.0f), o.set_train_scenes(40), o.set_test_scenes(14), o.set_seed(2);
  data::DatasetSplit scenes = data::make_mnist_scenes(digits, o);
  for (data::Dataset* s : {&scenes.train, &scenes.test}) {
    s->label_maps = Tensor();  // boxes are the targets
    data::check_boxes(*s, 32, 32, 10, 16);
  }
  CpuBackend host;
  HostDeviceBackend dev;
  const DetectRun want = train_detector(host, scenes), got = train_detector(dev, scenes);
  ASSERT_EQ(want.losses.size(), 10u);
  EXPECT_LT(want.losses.back(), want.losses.front());
  EXPECT_EQ(got.losses, want.losses);
  ASSERT_EQ(got.params.nbytes(), want.params.nbytes());
  EXPECT_EQ(0, std::memcmp(got.params.raw(), want.params.raw(), want.params.nbytes()));
  ASSERT_TRUE(want.eval.detection && got.eval.detection);
  EXPECT_EQ(got.eval.detection->map50, want.eval.detection->map50);
  EXPECT_EQ(got.eval.detection->map, want.eval.detection->map);
  EXPECT_EQ(want.eval.total, want.eval.detection->truth);  // out of the truth boxes
  EXPECT_GT(want.eval.detection->truth, 14);
}
