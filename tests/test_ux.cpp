// What an operator sees and keeps of a run: CRC-32C and TFRecord framing (published vectors,
// read-back, corruption), TensorBoard event files (TensorFlow's field numbers on the wire),
// progress on a terminal and in a log, metrics files, PNG/SVG figures, the run directory, and
// through the real binary: a short training run's files, `plot`, `eval --errors`, `doctor`, and
// each documented error message for its bad input.
#include <png.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>

#include <gtest/gtest.h>

#include "cli_util.h"
#include "core/error.h"
#include "report/crc32c.h"
#include "report/event_file.h"
#include "report/learning_curves.h"
#include "report/metrics_file.h"
#include "report/misclassified.h"
#include "report/progress.h"
#include "report/run_dir.h"
#include "report/tfrecord.h"

namespace {

using namespace deeptrain;
using namespace deeptrain::report;
namespace fs = std::filesystem;

const std::string kMnist = std::string(DEEPTRAIN_DATA_DIR) + "/mnist";

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string l; std::getline(ss, l);) out.push_back(l);
  return out;
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + what.size())) ++n;
  return n;
}

// ------------------------------------------------------------------------------ CRC-32C

// Bit at a time, straight from the definition: an independent check of the table version.
uint32_t crc32c_bitwise(const std::string& s) {
  uint32_t crc = 0xffffffffu;
  for (unsigned char b : s) {
    crc ^= b;
    for (int k = 0; k < 8; ++k) crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
  }
  return ~crc;
}

TEST(Crc32c, PublishedVectors) {
  // RFC 3720 (iSCSI), appendix B.4.
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(crc32c(std::string(32, '\xff')), 0x62A8AB43u);
  std::string up, down;
  for (int i = 0; i < 32; ++i) up += char(i), down += char(31 - i);
  EXPECT_EQ(crc32c(up), 0x46DD794Eu);
  EXPECT_EQ(crc32c(down), 0x113FDB5Cu);
  const unsigned char read10[48] = {
      0x01, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
      0x14, 0, 0, 0, 0, 0, 0x04, 0, 0, 0, 0, 0x14, 0, 0, 0, 0x18,
      0x28, 0, 0, 0, 0, 0, 0, 0, 0x02, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(crc32c(read10, sizeof(read10)), 0xD9963A56u);
  // The CRC catalogue's check value, and the empty string.
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(crc32c(""), 0u);
}

TEST(Crc32c, MatchesTheBitwiseDefinitionAndContinues) {
  std::mt19937 rng(7);
  for (int len : {1, 3, 17, 255, 4096}) {
    std::string s(len, '\0');
    for (char& c : s) c = char(rng());
    EXPECT_EQ(crc32c(s), crc32c_bitwise(s)) << len;
    const size_t cut = len / 3;
    EXPECT_EQ(crc32c(s.substr(cut), crc32c(s.substr(0, cut))), crc32c(s)) << len;
  }
}

TEST(Crc32c, MaskIsTensorFlowsAndReversible) {
  EXPECT_EQ(mask_crc(0), 0xa282ead8u);
  EXPECT_EQ(mask_crc(0x8000u), 1u + 0xa282ead8u);  // rotate right by 15
  for (uint32_t c : {0u, 1u, 0x8A9136AAu, 0xffffffffu, 0x12345678u}) EXPECT_EQ(unmask_crc(mask_crc(c)), c);
}

// ------------------------------------------------------------------------------ TFRecord

TEST(TfRecord, FrameLayout) {
  const std::string f = tfrecord_frame("abc");
  ASSERT_EQ(f.size(), 3u + 16u);
  EXPECT_EQ(f.substr(0, 8), std::string("\x03\0\0\0\0\0\0\0", 8));  // little-endian length
  auto le32 = [&](size_t at) {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= uint32_t(uint8_t(f[at + i])) << (8 * i);
    return v;
  };
  EXPECT_EQ(le32(8), mask_crc(crc32c_bitwise(f.substr(0, 8))));
  EXPECT_EQ(f.substr(12, 3), "abc");
  EXPECT_EQ(le32(15), mask_crc(crc32c_bitwise("abc")));
}

TEST(TfRecord, WrittenRecordsReadBackAndCorruptionIsNamed) {
  TempDir d;
  const std::string path = (d.path / "r.tfrecord").string();
  const std::vector<std::string> records = {"first", "", std::string(100000, 'x'), std::string("last\n\0x", 7)};
  {
    TfRecordWriter w(path);
    for (const auto& r : records) w.write(r);
  }
  EXPECT_EQ(read_tfrecords(path), records);

  std::string bytes = read_file(path);
  std::string bad = bytes;
  bad[16 + 5 + 12 + 2] ^= 1;  // record 1 is empty; flip a byte of its data CRC
  try {
    parse_tfrecords(bad, "f");
    FAIL() << "corruption not detected";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("f: record 1 at byte 21: data CRC mismatch"), std::string::npos) << e.what();
  }
  bad = bytes;
  bad[0] ^= 1;  // the length
  EXPECT_THROW(parse_tfrecords(bad, "f"), InputError);
  try {
    parse_tfrecords(bytes.substr(0, bytes.size() - 3), "f");
    FAIL() << "truncation not detected";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("record 3"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
}

// ------------------------------------------------------------------------------ event files

TEST(EventFile, FieldNumbersAreTensorFlows) {
  // Event{step=2: 5, summary=5: Summary{value=1: Value{tag=1: "loss", simple_value=2: 1.0f}}}
  // encoded by hand from tensorboard/compat/proto/{event,summary}.proto.
  tensorboard::Event e;
  e.set_step(5);
  auto* v = e.mutable_summary()->add_value();
  v->set_tag("loss");
  v->set_simple_value(1.0f);
  const std::string expected("\x10\x05\x2a\x0d\x0a\x0b\x0a\x04loss\x15\x00\x00\x80\x3f", 17);
  EXPECT_EQ(e.SerializeAsString(), expected);
  tensorboard::Event version;
  version.set_wall_time(1.5);
  version.set_file_version("brain.Event:2");
  EXPECT_EQ(version.SerializeAsString(),
            std::string("\x09\x00\x00\x00\x00\x00\x00\xf8\x3f\x1a\x0d", 11) + "brain.Event:2");
  tensorboard::Event image;
  auto* img = image.mutable_summary()->add_value()->mutable_image();
  img->set_height(2);
  img->set_width(3);
  img->set_colorspace(3);
  img->set_encoded_image_string("P");
  EXPECT_EQ(image.SerializeAsString(),
            std::string("\x2a\x0d\x0a\x0b\x22\x09\x08\x02\x10\x03\x18\x03\x22\x01P", 15));
}

TEST(EventFile, VersionFirstThenScalarsAndImagesReadBack) {
  TempDir d;
  std::string path;
  {
    EventFileWriter w(d.path.string());
    path = w.path();
    w.scalars(1, {{"train/loss", 2.5}, {"train/accuracy", 0.25}});
    w.scalar(2, "train/loss", 1.25);
    w.image(2, "test/misclassified", "\x89PNG fake", 28, 56);
  }
  EXPECT_TRUE(std::regex_match(fs::path(path).filename().string(),
                               std::regex(R"(events\.out\.tfevents\.\d{10}\..+)")))
      << path;
  EXPECT_EQ(fs::path(path).parent_path(), d.path);
  const auto events = read_event_file(path);
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[0].file_version(), "brain.Event:2");
  EXPECT_GT(events[0].wall_time(), 1.6e9);
  ASSERT_EQ(events[1].summary().value_size(), 2);
  EXPECT_EQ(events[1].step(), 1);
  EXPECT_EQ(events[1].summary().value(0).tag(), "train/loss");
  EXPECT_FLOAT_EQ(events[1].summary().value(0).simple_value(), 2.5f);
  EXPECT_FLOAT_EQ(events[1].summary().value(1).simple_value(), 0.25f);
  EXPECT_FLOAT_EQ(events[2].summary().value(0).simple_value(), 1.25f);
  const auto& img = events[3].summary().value(0).image();
  EXPECT_EQ(events[3].summary().value(0).tag(), "test/misclassified");
  EXPECT_EQ(img.height(), 28);
  EXPECT_EQ(img.width(), 56);
  EXPECT_EQ(img.colorspace(), 3);
  EXPECT_EQ(img.encoded_image_string(), "\x89PNG fake");
}

// ------------------------------------------------------------------------------ progress

TEST(Progress, PlainModePrintsATenthOfTheEpochPerLine) {
  std::ostringstream out;
  double t = 0;
  Progress p(out, false, "epoch 3/20", 100, 0, [&] { return t; });
  for (int s = 1; s <= 100; ++s) {
    t = s;  // one second per step of 100 images
    p.update(s, 100 * s, 0.5);
  }
  p.finish();
  const auto lines = lines_of(out.str());
  ASSERT_EQ(lines.size(), 10u) << out.str();
  EXPECT_EQ(out.str().find('\r'), std::string::npos);
  EXPECT_EQ(lines[0], "epoch 3/20  step 10/100  100 img/s  loss 0.5000  ETA 1:30");
  EXPECT_EQ(lines[9], "epoch 3/20  step 100/100  100 img/s  loss 0.5000  ETA 0:00");
}

TEST(Progress, PlainModeAlsoPrintsTheLastStep) {
  std::ostringstream out;
  Progress p(out, false, "e", 25, 0, [] { return 0.0; });
  for (int s = 1; s <= 25; ++s) p.update(s, s, 1);
  const auto lines = lines_of(out.str());
  ASSERT_EQ(lines.size(), 13u);  // every 2 steps, and step 25
  EXPECT_NE(lines.back().find("step 25/25"), std::string::npos);
}

TEST(Progress, TerminalBarRedrawsInPlaceAtMostTenTimesASecondAndErasesItself) {
  std::ostringstream out;
  double t = 0;
  Progress p(out, true, "epoch 1/2", 200, 0, [&] { return t; });
  for (int s = 1; s <= 200; ++s) {
    t = s * 0.01;  // 2 s in all
    p.update(s, 50 * s, 0.25);
  }
  const std::string drawn = out.str();
  EXPECT_EQ(drawn.find('\n'), std::string::npos);
  const size_t redraws = count(drawn, "\r");
  EXPECT_GE(redraws, 19u);
  EXPECT_LE(redraws, 22u);  // 2 s at 10 per second, plus the first and last step
  const std::string last = drawn.substr(drawn.rfind('\r') + 1);
  EXPECT_EQ(last, "epoch 1/2 [####################] 200/200  5000 img/s  loss 0.2500  ETA 0:00");
  EXPECT_TRUE(std::regex_search(drawn, std::regex(R"(\[#{5,15}\.{5,15}\] \d+/200  )"))) << drawn;
  p.finish();
  const std::string erased = out.str().substr(drawn.size());
  EXPECT_EQ(erased, "\r" + std::string(last.size(), ' ') + "\r");
}

TEST(Progress, DurationFormat) {
  EXPECT_EQ(format_duration(0), "0:00");
  EXPECT_EQ(format_duration(65), "1:05");
  EXPECT_EQ(format_duration(3723), "1:02:03");
  EXPECT_EQ(format_duration(-3), "0:00");
}

// ------------------------------------------------------------------------------ metrics files

TEST(MetricsFiles, JsonLinesAndCsvOfTheSameRows) {
  TempDir d;
  const std::string base = (d.path / "m").string();
  {
    MetricsFiles m(base, {"step", "loss", "lr"});
    m.append({1, 0.25, 1e-3});
    m.append({2, NAN, 1e-3});
  }
  EXPECT_EQ(read_file(base + ".jsonl"),
            "{\"step\":1,\"loss\":0.25,\"lr\":0.001}\n{\"step\":2,\"loss\":null,\"lr\":0.001}\n");
  EXPECT_EQ(read_file(base + ".csv"), "step,loss,lr\n1,0.25,0.001\n2,nan,0.001\n");
  const MetricsTable t = read_metrics_csv(base + ".csv");
  EXPECT_EQ(t.columns, (std::vector<std::string>{"step", "loss", "lr"}));
  ASSERT_EQ(t.rows.size(), 2u);
  EXPECT_EQ(t.values("loss")[0], 0.25);
  EXPECT_TRUE(std::isnan(t.values("loss")[1]));
  EXPECT_THROW(t.values("accuracy"), InputError);
  d.file("bad.csv", "a,b\n1,2\n3,x\n");
  try {
    read_metrics_csv((d.path / "bad.csv").string());
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.csv:3: 'x' is not a number"), std::string::npos) << e.what();
  }
}

// ------------------------------------------------------------------------------ figures

struct DecodedPng {
  uint32_t width = 0, height = 0;
  std::vector<uint8_t> rgb;
};

// Checks the signature and IHDR by hand, then decodes with libpng.
DecodedPng decode_png(const std::string& bytes) {
  DecodedPng d;
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_EQ(bytes.substr(12, 4), "IHDR");
  auto be32 = [&](size_t at) {
    return uint32_t(uint8_t(bytes[at])) << 24 | uint32_t(uint8_t(bytes[at + 1])) << 16 |
           uint32_t(uint8_t(bytes[at + 2])) << 8 | uint32_t(uint8_t(bytes[at + 3]));
  };
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, bytes.data(), bytes.size())) {
    ADD_FAILURE() << "libpng: " << image.message;
    return d;
  }
  image.format = PNG_FORMAT_RGB;
  d.rgb.resize(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, d.rgb.data(), 0, nullptr)) {
    ADD_FAILURE() << "libpng: " << image.message;
    return d;
  }
  d.width = image.width;
  d.height = image.height;
  EXPECT_EQ(be32(16), d.width);
  EXPECT_EQ(be32(20), d.height);
  return d;
}

// Well-formed XML, checked simply: tags nest and close, attribute quotes pair, '&' starts an
// entity. Returns the start tags in order.
std::vector<std::string> check_xml(const std::string& xml) {
  std::vector<std::string> open, tags;
  size_t at = 0;
  while ((at = xml.find('<', at)) != std::string::npos) {
    const size_t end = xml.find('>', at);
    if (end == std::string::npos) {
      ADD_FAILURE() << "unterminated tag at " << at;
      break;
    }
    const std::string tag = xml.substr(at + 1, end - at - 1);
    EXPECT_EQ(count(tag, "\"") % 2, 0u) << tag;
    if (tag[0] == '?') {
    } else if (tag[0] == '/') {
      EXPECT_FALSE(open.empty()) << tag;
      if (!open.empty()) {
        EXPECT_EQ(open.back(), tag.substr(1)) << "mismatched close";
        open.pop_back();
      }
    } else {
      const std::string name = tag.substr(0, tag.find_first_of(" /"));
      tags.push_back(tag);
      if (tag.back() != '/') open.push_back(name);
    }
    at = end + 1;
  }
  EXPECT_TRUE(open.empty()) << "unclosed <" << (open.empty() ? "" : open.back()) << ">";
  for (size_t a = xml.find('&'); a != std::string::npos; a = xml.find('&', a + 1))
    EXPECT_TRUE(std::regex_search(xml.substr(a, 6), std::regex("^&(lt|gt|amp|quot|apos);")))
        << xml.substr(a, 10);
  return tags;
}

LearningCurves sample_curves(int epochs) {
  LearningCurves c;
  for (int e = 1; e <= epochs; ++e) {
    c.epoch.push_back(e);
    c.train_accuracy.push_back(1 - 0.5 / e);
    c.test_accuracy.push_back(1 - 0.6 / e);
    c.train_loss.push_back(1.0 / e);
    c.test_loss.push_back(1.2 / e);
    c.learning_rate.push_back(1e-3);
  }
  return c;
}

TEST(Figures, LearningCurvesPngHasTheRequestedSizeAndTheSeriesColours) {
  const DecodedPng png = decode_png(learning_curves_png(sample_curves(5), 640, 300));
  ASSERT_EQ(png.width, 640u);
  ASSERT_EQ(png.height, 300u);
  auto has = [&](uint8_t r, uint8_t g, uint8_t b) {
    for (size_t i = 0; i + 2 < png.rgb.size(); i += 3)
      if (png.rgb[i] == r && png.rgb[i + 1] == g && png.rgb[i + 2] == b) return true;
    return false;
  };
  EXPECT_TRUE(has(31, 119, 180));   // train
  EXPECT_TRUE(has(255, 127, 14));   // test
  EXPECT_TRUE(has(44, 160, 44));    // learning rate
  EXPECT_TRUE(has(255, 255, 255));  // background
}

TEST(Figures, LearningCurvesSvgIsXmlWithOnePolylinePerSeries) {
  const std::string svg = learning_curves_svg(sample_curves(3), 800, 320);
  const auto tags = check_xml(svg);
  ASSERT_FALSE(tags.empty());
  EXPECT_EQ(tags[0].substr(0, 4), "svg ");
  EXPECT_NE(tags[0].find("width=\"800\""), std::string::npos) << tags[0];
  EXPECT_NE(tags[0].find("height=\"320\""), std::string::npos) << tags[0];
  std::vector<std::string> series;
  for (const auto& t : tags)
    if (t.rfind("polyline ", 0) == 0) {
      std::smatch m;
      ASSERT_TRUE(std::regex_search(t, m, std::regex("data-series=\"([a-z_]+)\""))) << t;
      series.push_back(m[1]);
      std::smatch pts;
      ASSERT_TRUE(std::regex_search(t, pts, std::regex("points=\"([^\"]*)\"")));
      EXPECT_EQ(count(pts[1], ","), 3u) << t;  // one point per epoch
    }
  EXPECT_EQ(series, (std::vector<std::string>{"train_accuracy", "test_accuracy", "train_loss",
                                              "test_loss", "learning_rate"}));
  EXPECT_NE(svg.find(">accuracy</text>"), std::string::npos);
  EXPECT_NE(svg.find(">epoch</text>"), std::string::npos);
}

TEST(Figures, OneEpochStillDrawsMarkers) {
  const std::string svg = learning_curves_svg(sample_curves(1), 1200, 480);
  check_xml(svg);
  EXPECT_GE(count(svg, "<circle"), 2u);  // train accuracy and train loss
}

data::Dataset tiny_dataset() {
  data::Dataset d;
  d.num_classes = 3;
  d.images = Tensor::zeros({4, 1, 2, 2}, DType::u8);
  d.labels = Tensor::empty({4}, DType::i32);
  const int32_t labels[] = {0, 1, 2, 2};
  std::copy(labels, labels + 4, d.labels.data<int32_t>());
  d.images.data<uint8_t>()[4] = 255;  // sample 1, top-left pixel white (drawn black)
  return d;
}

TEST(Figures, MisclassifiedGridAndConfusionMatrix) {
  const data::Dataset d = tiny_dataset();
  const std::vector<int32_t> pred = {0, 2, 2, 0};
  const Raster grid = misclassified_grid(d, pred);
  // Two misclassified images (samples 1 and 3): two columns of (2*3 + 8) px plus a margin, or
  // the title's width.
  EXPECT_EQ(grid.width(), std::max(2 * (2 * 3 + 8) + 8, Raster::text_width("true/predicted", 2) + 16));
  const DecodedPng png = decode_png(encode_png(grid));
  EXPECT_EQ(png.width, uint32_t(grid.width()));
  EXPECT_EQ(png.height, uint32_t(grid.height()));
  const ConfusionMatrix m = confusion_matrix(d, pred);
  EXPECT_EQ(m.at(0, 0), 1);
  EXPECT_EQ(m.at(1, 2), 1);
  EXPECT_EQ(m.at(2, 2), 1);
  EXPECT_EQ(m.at(2, 0), 1);
  EXPECT_EQ(confusion_csv(m), "true\\predicted,0,1,2\n0,1,0,0\n1,0,0,1\n2,1,0,1\n");
  EXPECT_NE(confusion_table(m).find("true\\pred"), std::string::npos);
  // Nothing misclassified: a small image that says so.
  const Raster none = misclassified_grid(d, {0, 1, 2, 2});
  EXPECT_LT(none.height(), 40);
}

// ------------------------------------------------------------------------------ run directory

TEST(RunDir, DefaultNameAndNoCollisions) {
  std::tm t{};
  t.tm_year = 124, t.tm_mon = 4, t.tm_mday = 1, t.tm_hour = 12, t.tm_min = 3, t.tm_sec = 4;
  t.tm_isdst = -1;
  EXPECT_EQ(default_run_dir("deep convnet/mnist", std::mktime(&t)),
            "runs/deep_convnet_mnist-20240501-120304");
  EXPECT_EQ(default_run_dir("", std::mktime(&t)), "runs/run-20240501-120304");
  TempDir d;
  const fs::path cwd = fs::current_path();
  fs::current_path(d.path);
  const std::string a = create_run_dir("", "x"), b = create_run_dir("", "x");
  fs::current_path(cwd);
  EXPECT_NE(a, b);
  EXPECT_TRUE(fs::is_directory(d.path / a));
  EXPECT_TRUE(fs::is_directory(d.path / b));
}

TEST(RunDir, RefusesAFileAndAnExistingRun) {
  TempDir d;
  const std::string file = d.file("f", "x");
  try {
    create_run_dir(file, "x");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), "run directory " + file + ": exists and is not a directory");
  }
  const std::string run = (d.path / "r").string();
  EXPECT_EQ(create_run_dir(run, "x"), run);
  EXPECT_EQ(create_run_dir(run, "x"), run);  // an empty directory may be reused
  d.file("r/metrics_epochs.csv", "epoch\n");
  try {
    create_run_dir(run, "x");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("already holds a run (metrics_epochs.csv)"), std::string::npos)
        << e.what();
  }
}

// ------------------------------------------------------------------------------ the CLI

// One short training run (300 images, 2 epochs) whose run directory several tests inspect.
class ShortRun : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!have_mnist()) return;
    dir_ = new TempDir;
    const std::string cfg = dir_->file("tiny.prototxt", "name: 'tiny'\ndata { dir: '" + kMnist + "' }\n");
    run_dir_ = (dir_->path / "run").string();
    result_ = new CommandResult(run_command(deeptrain_cmd(
        "train " + cfg + " --train-limit 300 --test-limit 200 --epochs 2 --json --run-dir " + run_dir_)));
  }
  static void TearDownTestSuite() {
    delete result_;
    delete dir_;
  }
  void SetUp() override {
    if (!have_mnist()) GTEST_SKIP() << "MNIST not in " << kMnist << " (scripts/fetch_data.sh)";
    ASSERT_EQ(result_->exit_code, 0) << result_->output;
  }
  static fs::path file(const std::string& name) { return fs::path(run_dir_) / name; }
  static TempDir* dir_;
  static std::string run_dir_;
  static CommandResult* result_;
};
TempDir* ShortRun::dir_ = nullptr;
std::string ShortRun::run_dir_;
CommandResult* ShortRun::result_ = nullptr;

TEST_F(ShortRun, JsonOutputIsOnlyTheJsonLines) {
  const auto lines = lines_of(result_->output);
  ASSERT_EQ(lines.size(), 3u) << result_->output;
  EXPECT_EQ(lines[0].rfind("{\"event\":\"epoch\",\"epoch\":1,\"steps\":3,\"train_loss\":", 0), 0u);
  EXPECT_EQ(lines[1].rfind("{\"event\":\"epoch\",\"epoch\":2,", 0), 0u);
  EXPECT_EQ(lines[2].rfind("{\"event\":\"summary\",\"epochs\":2,\"test_correct\":", 0), 0u);
  // log.txt has what was printed, and the plain progress lines.
  const std::string log = read_file(file("log.txt"));
  for (const auto& l : lines) EXPECT_NE(log.find(l), std::string::npos) << l;
  EXPECT_NE(log.find("epoch 2/2  step 3/3"), std::string::npos) << log;
}

TEST_F(ShortRun, MetricsFilesHoldEveryStepAndEpoch) {
  const auto steps_csv = lines_of(read_file(file("metrics_steps.csv")));
  ASSERT_EQ(steps_csv.size(), 1u + 6u);  // header, 3 steps x 2 epochs
  EXPECT_EQ(steps_csv[0], "step,epoch,epoch_step,loss,accuracy,learning_rate,images_per_sec,"
                          "loss_scale,seconds,wall_time");
  EXPECT_EQ(steps_csv[4].rfind("4,2,1,", 0), 0u) << steps_csv[4];
  const auto steps_jsonl = lines_of(read_file(file("metrics_steps.jsonl")));
  ASSERT_EQ(steps_jsonl.size(), 6u);
  EXPECT_EQ(json_number(steps_jsonl[5], "step"), 6);
  EXPECT_EQ(json_number(steps_jsonl[5], "learning_rate"), 0.001);
  EXPECT_GT(json_number(steps_jsonl[5], "images_per_sec"), 0);

  const MetricsTable epochs = read_metrics_csv(file("metrics_epochs.csv").string());
  ASSERT_EQ(epochs.rows.size(), 2u);
  const auto epochs_jsonl = lines_of(read_file(file("metrics_epochs.jsonl")));
  ASSERT_EQ(epochs_jsonl.size(), 2u);
  const auto out = lines_of(result_->output);
  for (int e = 0; e < 2; ++e) {
    EXPECT_EQ(epochs.values("epoch")[e], e + 1);
    EXPECT_EQ(epochs.values("step")[e], 3 * (e + 1));
    EXPECT_EQ(epochs.values("test_total")[e], 200);
    EXPECT_EQ(json_number(epochs_jsonl[e], "test_correct"), json_number(out[e], "test_correct"));
    EXPECT_NEAR(json_number(epochs_jsonl[e], "train_loss"), json_number(out[e], "train_loss"), 1e-6);
    EXPECT_EQ(epochs.values("test_correct")[e], json_number(out[e], "test_correct"));
  }
}

TEST_F(ShortRun, EventFileHasScalarsForEveryStepAndTheMisclassifiedImage) {
  std::vector<fs::path> event_files;
  for (const auto& f : fs::directory_iterator(run_dir_))
    if (f.path().filename().string().rfind("events.out.tfevents.", 0) == 0) event_files.push_back(f.path());
  ASSERT_EQ(event_files.size(), 1u);
  const auto events = read_event_file(event_files[0].string());
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events[0].file_version(), "brain.Event:2");
  std::map<std::string, std::vector<int64_t>> steps_of;
  const tensorboard::Summary::Image* image = nullptr;
  for (const auto& e : events)
    for (const auto& v : e.summary().value()) {
      steps_of[v.tag()].push_back(e.step());
      if (v.has_image()) image = &v.image();
    }
  for (const char* tag : {"train/loss", "train/accuracy", "train/learning_rate",
                          "train/images_per_sec", "train/loss_scale"})
    EXPECT_EQ(steps_of[tag], (std::vector<int64_t>{1, 2, 3, 4, 5, 6})) << tag;
  for (const char* tag : {"epoch/train_loss", "epoch/train_accuracy", "epoch/test_loss",
                          "epoch/test_accuracy", "epoch/images_per_sec"})
    EXPECT_EQ(steps_of[tag], (std::vector<int64_t>{3, 6})) << tag;
  ASSERT_NE(image, nullptr);
  const DecodedPng png = decode_png(image->encoded_image_string());
  EXPECT_EQ(png.width, uint32_t(image->width()));
  EXPECT_EQ(png.height, uint32_t(image->height()));
  EXPECT_EQ(read_file(file("misclassified.png")), image->encoded_image_string());
}

TEST_F(ShortRun, FiguresConfusionConfigAndWeights) {
  const DecodedPng curves = decode_png(read_file(file("curves.png")));
  EXPECT_EQ(curves.width, uint32_t(kCurvesWidth));
  EXPECT_EQ(curves.height, uint32_t(kCurvesHeight));
  const std::string svg = read_file(file("curves.svg"));
  check_xml(svg);
  EXPECT_EQ(count(svg, "<polyline"), 5u);

  const auto confusion = lines_of(read_file(file("confusion.csv")));
  ASSERT_EQ(confusion.size(), 11u);
  int64_t total = 0, diagonal = 0;
  for (int t = 0; t < 10; ++t) {
    std::stringstream ss(confusion[t + 1]);
    std::string cell;
    std::getline(ss, cell, ',');
    EXPECT_EQ(cell, std::to_string(t));
    for (int p = 0; std::getline(ss, cell, ','); ++p) {
      total += std::stoll(cell);
      if (p == t) diagonal += std::stoll(cell);
    }
  }
  EXPECT_EQ(total, 200);
  EXPECT_EQ(diagonal, json_number(lines_of(result_->output).back(), "test_correct"));

  const std::string cfg = read_file(file("config.prototxt"));  // the effective config
  EXPECT_NE(cfg.find("train_limit: 300"), std::string::npos) << cfg;
  EXPECT_NE(cfg.find("epochs: 2"), std::string::npos) << cfg;
  EXPECT_NE(cfg.find("name: \"tiny\""), std::string::npos) << cfg;
  EXPECT_TRUE(fs::exists(file("weights.bin")));
}

TEST_F(ShortRun, PlotRedrawsAtAnotherSize) {
  CommandResult r = run_command(deeptrain_cmd("plot " + run_dir_ + " --width 800 --height 320"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("curves.png"), std::string::npos);
  const DecodedPng png = decode_png(read_file(file("curves.png")));
  EXPECT_EQ(png.width, 800u);
  EXPECT_EQ(png.height, 320u);
  EXPECT_NE(read_file(file("curves.svg")).find("width=\"800\" height=\"320\""), std::string::npos);
}

TEST_F(ShortRun, EvalErrorsWritesTheGridAndMatrixOfSavedWeights) {
  const std::string out = (dir_->path / "eval").string();
  const std::string cfg = (dir_->path / "tiny.prototxt").string();
  CommandResult r = run_command(deeptrain_cmd("eval " + cfg + " --test-limit 200 --weights " +
                                              file("weights.bin").string() + " --errors --run-dir " + out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("true\\pred"), std::string::npos) << r.output;
  EXPECT_EQ(read_file(fs::path(out) / "confusion.csv"), read_file(file("confusion.csv")));
  EXPECT_EQ(read_file(fs::path(out) / "misclassified.png"), read_file(file("misclassified.png")));
}

TEST(Cli, PlainProgressLinesWhenNotATerminal) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not in " << kMnist;
  TempDir d;
  const std::string cfg = d.file("c.prototxt", "data { dir: '" + kMnist + "' }\n");
  CommandResult r = run_command(deeptrain_cmd("train " + cfg + " --train-limit 200 --test-limit 100 "
                                              "--epochs 1 --run-dir " + (d.path / "run").string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find('\r'), std::string::npos);
  EXPECT_NE(r.output.find("epoch 1/1  step 1/2  "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("epoch 1/1  step 2/2  "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("run directory " + (d.path / "run").string()), std::string::npos);
  EXPECT_NE(r.output.find("true\\pred"), std::string::npos);
  EXPECT_EQ(read_file(d.path / "run" / "log.txt"), r.output);
}

TEST(Cli, DoctorPrintsEverySection) {
  CommandResult r = run_command(deeptrain_cmd("doctor"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* s : {"MPI\n  ranks: 1", "GPUs\n", "cuDNN: ", "NCCL: ", "CPU\n  threads: ",
                        "BLAS: OpenBLAS", "oneDNN: ", "data\n  mnist in data/mnist",
                        "fashion_mnist in data/fashion_mnist"})
    EXPECT_NE(r.output.find(s), std::string::npos) << s << "\n" << r.output;
  // Under a launcher the job comes from its environment (SLURM here: the MPI launchers'
  // variables would make deeptrain initialise MPI).
  r = run_command("env SLURM_NTASKS=4 SLURM_PROCID=0 SLURM_JOB_NODELIST='n[1-2]' SLURM_NNODES=2 " +
                  deeptrain_cmd("doctor --threads 1 --data-dir " + kMnist));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("ranks: 4 (SLURM_NTASKS=4); this is rank 0"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("hosts: n[1-2] (2 nodes)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("threads: 1 "), std::string::npos) << r.output;
  if (have_mnist()) {
    EXPECT_NE(r.output.find("sha256 ok"), std::string::npos) << r.output;
  }
}

TEST(Cli, HelpOfNewCommandsHasExamples) {
  for (const char* cmd : {"plot", "doctor"}) {
    CommandResult r = run_command(deeptrain_cmd(std::string(cmd) + " --help"));
    EXPECT_EQ(r.exit_code, 0) << cmd;
    EXPECT_NE(r.output.find("Examples:"), std::string::npos) << cmd << r.output;
  }
  CommandResult r = run_command(deeptrain_cmd("train --help"));
  EXPECT_NE(r.output.find("--run-dir"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("tensorboard --logdir runs"), std::string::npos) << r.output;
}

// Each error message docs/runs.md and docs/configs.md document, for its bad input (exit code 2).
TEST(Cli, DocumentedErrors) {
  TempDir d;
  fs::create_directories(d.path / "empty");
  fs::create_directories(d.path / "started");
  d.file("started/metrics_epochs.csv",
         "epoch,step,train_loss,train_accuracy,test_loss,test_accuracy,test_correct,test_total,"
         "learning_rate,images_per_sec,train_seconds,wall_time\n");
  fs::create_directories(d.path / "broken");
  d.file("broken/metrics_epochs.csv", "epoch,train_loss\n1,0.5\n2,oops\n");
  const std::string p = d.path.string();
  const std::pair<std::string, std::string> cases[] = {
      {"plot " + p + "/nowhere", p + "/nowhere: no such run directory"},
      {"plot " + p + "/empty", p + "/empty: no metrics_epochs.csv, so not a run directory"},
      {"plot " + p + "/started", "metrics_epochs.csv: no epoch has finished yet"},
      {"plot " + p + "/broken", "broken/metrics_epochs.csv:3: 'oops' is not a number"},
      {"plot " + p + "/started --width 10", "plot size 10x480: must be at least 200x120"},
  };
  for (const auto& [args, expected] : cases) {
    CommandResult r = run_command(deeptrain_cmd(args));
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find("deeptrain: error: "), std::string::npos) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(expected), std::string::npos) << args << "\n" << r.output;
  }
  if (!have_mnist()) return;
  const std::string cfg = d.file("c.prototxt", "data { dir: '" + kMnist + "' train_limit: 100 test_limit: 100 }\n");
  const std::string file = d.file("a_file", "x");
  const std::pair<std::string, std::string> run_cases[] = {
      {"train " + cfg + " --run-dir " + file, "run directory " + file + ": exists and is not a directory"},
      {"train " + cfg + " --run-dir " + p + "/started",
       "run directory " + p + "/started: already holds a run (metrics_epochs.csv); give a new "
       "--run-dir or remove it"},
      {"eval " + cfg + " --weights " + file + " --run-dir " + p + "/e",
       "eval: --run-dir is where --errors writes its figures; add --errors"},
  };
  for (const auto& [args, expected] : run_cases) {
    CommandResult r = run_command(deeptrain_cmd(args));
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(expected), std::string::npos) << args << "\n" << r.output;
  }
}

}  // namespace
