// TensorBoard's files as report/ writes them: CRC-32C and TFRecord framing (published vectors,
// read-back, corruption) and event files (TensorFlow's field numbers on the wire).
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
#include "report_test_util.h"

namespace {

using namespace deeptrain;
using namespace deeptrain::report;
using namespace report_test;
namespace fs = std::filesystem;

const std::string kMnist = std::string(DEEPTRAIN_DATA_DIR) + "/mnist";

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


}  // namespace
