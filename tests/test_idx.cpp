// IDX reading and the MNIST / Fashion-MNIST loaders: good files, every kind of bad file, and the
// book's pixel normalisation. Small files are generated into a temp dir per test.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/data/dataset.h"
#include "core/data/idx.h"
#include "core/checksum.h"
#include "hostile_util.h"

#ifndef DEEPTRAIN_DATA_DIR
#define DEEPTRAIN_DATA_DIR "data"
#endif

namespace fs = std::filesystem;
using namespace deeptrain;
using namespace deeptrain::data;

namespace {

std::vector<uint8_t> idx_bytes(uint8_t type, std::vector<uint32_t> dims,
                               const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> b = {0, 0, type, uint8_t(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(d >> s));
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

void write_plain(const fs::path& p, const std::vector<uint8_t>& b) {
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), b.size());
}

void write_gz(const fs::path& p, const std::vector<uint8_t>& b) {
  gzFile f = gzopen(p.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, b.data(), unsigned(b.size())), int(b.size()));
  gzclose(f);
}

std::vector<uint8_t> slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

// The InputError message of `f`, or "" when it does not throw one.
template <class F> std::string input_error(F&& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

class IdxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = fs::temp_directory_path() /
          ("deeptrain_test_idx_" + std::to_string(getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  void TearDown() override { fs::remove_all(dir); }

  // A tiny 28x28 data set; pixel k of sample i is (i + k) % 256, label i % 10.
  void write_dataset(int64_t n_train, int64_t n_test, int64_t n_train_labels = -1,
                     uint8_t bad_label = 0, bool gz = false) {
    auto images = [](int64_t n) {
      std::vector<uint8_t> px(n * 28 * 28);
      for (int64_t i = 0; i < n; ++i)
        for (int k = 0; k < 28 * 28; ++k) px[i * 784 + k] = uint8_t((i + k) % 256);
      return idx_bytes(0x08, {uint32_t(n), 28, 28}, px);
    };
    auto labels = [&](int64_t n) {
      std::vector<uint8_t> l(n);
      for (int64_t i = 0; i < n; ++i) l[i] = uint8_t(i % 10);
      if (bad_label && n > 1) l[1] = bad_label;
      return idx_bytes(0x08, {uint32_t(n)}, l);
    };
    auto put = [&](const char* name, const std::vector<uint8_t>& b) {
      if (gz) write_gz(dir / (std::string(name) + ".gz"), b);
      else write_plain(dir / name, b);
    };
    put("train-images-idx3-ubyte", images(n_train));
    put("train-labels-idx1-ubyte", labels(n_train_labels < 0 ? n_train : n_train_labels));
    put("t10k-images-idx3-ubyte", images(n_test));
    put("t10k-labels-idx1-ubyte", labels(n_test));
  }

  fs::path dir;
};

// core/checksum.h, the project's one CRC-32 and one SHA-256: known answers, and the streaming
// SHA-256 equal to the one-shot one across update boundaries.
TEST(Checksums, KnownVectorsAndStreamingEqualsOneShot) {
  const char* abc = "abc";
  EXPECT_EQ(deeptrain::sha256_hex(abc, 3),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(deeptrain::crc32_of("123456789", 9), 0xCBF43926u);  // the CRC-32 check value
  std::string text(100000, '\0');
  for (size_t i = 0; i < text.size(); ++i) text[i] = char(i * 131 % 251);
  deeptrain::Sha256 streamed;
  for (size_t at = 0; at < text.size(); at += 777) streamed.update(text.data() + at, std::min<size_t>(777, text.size() - at));
  EXPECT_EQ(streamed.hex(), deeptrain::sha256_hex(text.data(), text.size()));
}

TEST_F(IdxTest, ReadsPlainFile) {
  write_plain(dir / "labels", idx_bytes(0x08, {5}, {0, 1, 2, 3, 9}));
  IdxArray a = read_idx((dir / "labels").string());
  EXPECT_EQ(a.dims, (std::vector<int64_t>{5}));
  EXPECT_EQ(a.bytes, (std::vector<uint8_t>{0, 1, 2, 3, 9}));
}

TEST_F(IdxTest, ReadsGzipByMagicNotExtension) {
  std::vector<uint8_t> px(2 * 3 * 4);
  for (size_t i = 0; i < px.size(); ++i) px[i] = uint8_t(i * 10);
  write_gz(dir / "images.idx", idx_bytes(0x08, {2, 3, 4}, px));  // no .gz in the name
  IdxArray a = read_idx((dir / "images.idx").string());
  EXPECT_EQ(a.dims, (std::vector<int64_t>{2, 3, 4}));
  EXPECT_EQ(a.bytes, px);
}

TEST_F(IdxTest, TruncatedFile) {
  std::string path = (dir / "train-labels-idx1-ubyte").string();
  write_plain(path, idx_bytes(0x08, {10}, {1, 2, 3, 4, 5}));
  std::string msg = input_error([&] { read_idx(path); });
  EXPECT_NE(msg.find(path + ": truncated: header says 10 items (18 bytes), file has 13 bytes"),
            std::string::npos) << msg;
  write_plain(path, {0, 0, 8, 3, 0, 0});  // cut inside the dims
  msg = input_error([&] { read_idx(path); });
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
}

TEST_F(IdxTest, TrailingBytes) {
  std::string path = (dir / "labels").string();
  write_plain(path, idx_bytes(0x08, {3}, {1, 2, 3, 4}));
  std::string msg = input_error([&] { read_idx(path); });
  EXPECT_NE(msg.find(path + ": trailing data: header says 3 items (11 bytes), file has 12 bytes"),
            std::string::npos) << msg;
}

TEST_F(IdxTest, WrongMagicAndUnsupportedType) {
  std::string path = (dir / "notidx").string();
  write_plain(path, {0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0});
  std::string msg = input_error([&] { read_idx(path); });
  EXPECT_NE(msg.find(path + ": not an IDX file: magic number 0x12345678"), std::string::npos)
      << msg;
  write_plain(path, idx_bytes(0x0D, {1}, {0, 0, 0, 0}));
  msg = input_error([&] { read_idx(path); });
  EXPECT_NE(msg.find("0x0D (float) is not supported"), std::string::npos) << msg;
}

TEST_F(IdxTest, CorruptAndTruncatedGzip) {
  std::vector<uint8_t> px(5000);
  for (size_t i = 0; i < px.size(); ++i) px[i] = uint8_t(i * 7 % 251);
  write_gz(dir / "good.gz", idx_bytes(0x08, {5000}, px));
  std::vector<uint8_t> gz = slurp(dir / "good.gz");

  std::string cut = (dir / "cut.gz").string();
  write_plain(cut, std::vector<uint8_t>(gz.begin(), gz.begin() + gz.size() / 2));
  std::string msg = input_error([&] { read_idx(cut); });
  EXPECT_NE(msg.find(cut + ": truncated gzip file"), std::string::npos) << msg;

  std::string bad = (dir / "bad.gz").string();
  std::vector<uint8_t> flipped = gz;
  flipped[gz.size() - 6] ^= 0xFF;  // inside the CRC-32 trailer
  write_plain(bad, flipped);
  msg = input_error([&] { read_idx(bad); });
  EXPECT_NE(msg.find(bad + ": corrupted gzip file"), std::string::npos) << msg;
}

// A gzip'ed label file whose header promises 10 labels and whose stream then yields 2 GiB of
// zeros (a 2 MB, well-formed .gz): inflation stops right after the promised bytes.
TEST_F(IdxTest, GzipStreamLongerThanItsHeaderIsStoppedAtOnce) {
  const std::vector<uint8_t> head = idx_bytes(0x08, {10}, std::vector<uint8_t>(10, 1));
  const std::string gz = hostile::gzip_then_zeros(std::string(head.begin(), head.end()), 2048);
  ASSERT_LT(gz.size(), 4u << 20);
  write_plain(dir / "t10k-labels-idx1-ubyte.gz", std::vector<uint8_t>(gz.begin(), gz.end()));
  const std::string path = (dir / "t10k-labels-idx1-ubyte.gz").string();
  std::string msg;
  const int64_t grew_kb = hostile::peak_growth_kb([&] { msg = input_error([&] { read_idx(path); }); });
  EXPECT_NE(msg.find(path + ": trailing data: header says 10 items (18 bytes), the decompressed "
                            "stream holds more"), std::string::npos) << msg;
  // Far below the 2 GiB an unbounded inflation reaches, far above the few MB a bounded one
  // costs (the file itself).
  EXPECT_LT(grew_kb, 64 * 1024) << "peak memory grew by " << grew_kb << " kB";

  // The same through the data set loader: the file is named, and nothing blows up either.
  write_dataset(4, 10);
  fs::remove(dir / "t10k-labels-idx1-ubyte");
  msg = input_error([&] { load_dataset("mnist", dir.string(), false); });
  EXPECT_NE(msg.find(path + ": trailing data"), std::string::npos) << msg;
}

TEST_F(IdxTest, AbsurdDimsAreRefusedBeforeReading) {
  const std::string limit = std::to_string(kMaxIdxBytes);
  std::string path = (dir / "huge").string();
  write_plain(path, idx_bytes(0x08, {0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF}, {}));  // overflows
  std::string msg = input_error([&] { read_idx(path); });
  EXPECT_NE(msg.find(path + ": header dims 4294967295 x ... claim more than " + limit +
                     " bytes"), std::string::npos) << msg;
  // No overflow, just over 4 GiB; gzip'ed, so the streaming reader refuses it from the header.
  path = (dir / "big.gz").string();
  write_gz(path, idx_bytes(0x08, {100000, 28, 2000}, {1, 2, 3}));
  msg = input_error([&] { read_idx(path); });
  EXPECT_NE(msg.find(path + ": header dims 100000 x 28 x 2000 claim more than " + limit + " bytes"),
            std::string::npos) << msg;
}

TEST_F(IdxTest, EmptySetIsAnInputError) {
  write_dataset(4, 0);  // a test set of 0 images and 0 labels
  std::string msg = input_error([&] { load_dataset("mnist", dir.string(), false); });
  EXPECT_NE(msg.find((dir / "t10k-images-idx3-ubyte").string() + ": holds no images"),
            std::string::npos) << msg;
}

TEST_F(IdxTest, LoadsTinyDatasetPlainAndGzip) {
  for (bool gz : {false, true}) {
    fs::remove_all(dir);
    fs::create_directories(dir);
    write_dataset(7, 3, -1, 0, gz);
    DatasetSplit s = load_dataset("mnist", dir.string(), false);
    EXPECT_EQ(s.train.images.shape(), (Shape{7, 1, 28, 28}));
    EXPECT_EQ(s.test.labels.shape(), (Shape{3}));
    EXPECT_EQ(s.train.labels.data<int32_t>()[6], 6);
    EXPECT_EQ(s.train.num_classes, 10);
    EXPECT_EQ(s.train.name, "mnist");
    DatasetSplit lim = load_dataset("fashion_mnist", dir.string(), false, 4, 2);
    EXPECT_EQ(lim.train.images.dim(0), 4);
    EXPECT_EQ(lim.test.labels.dim(0), 2);
  }
}

TEST_F(IdxTest, LabelOutOfRange) {
  write_dataset(4, 2, -1, /*bad_label=*/10);
  std::string msg = input_error([&] { load_dataset("mnist", dir.string(), false); });
  EXPECT_NE(msg.find("train-labels-idx1-ubyte: label 10 at index 1 is out of range [0, 10)"),
            std::string::npos) << msg;
}

TEST_F(IdxTest, MissingFileNamesFileDirAndFetchCommand) {
  write_dataset(2, 2);
  fs::remove(dir / "t10k-images-idx3-ubyte");
  std::string msg = input_error([&] { load_dataset("mnist", dir.string(), false); });
  EXPECT_NE(msg.find("t10k-images-idx3-ubyte"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("train-images-idx3-ubyte"), std::string::npos) << msg;
  EXPECT_NE(msg.find(dir.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("scripts/fetch_data.sh"), std::string::npos) << msg;
  EXPECT_NE(describe_files("mnist", dir.string()).find("missing"), std::string::npos);
  EXPECT_NE(input_error([&] { load_dataset("cifar", dir.string(), false); }).find("unknown"),
            std::string::npos);
}

TEST_F(IdxTest, ImageLabelCountMismatch) {
  write_dataset(3, 2, /*n_train_labels=*/2);
  std::string msg = input_error([&] { load_dataset("mnist", dir.string(), false); });
  EXPECT_NE(msg.find("has 3 images but"), std::string::npos) << msg;
  EXPECT_NE(msg.find("has 2 labels"), std::string::npos) << msg;
}

TEST_F(IdxTest, GatherBatchNormalisesLikeNumpy) {
  write_dataset(300, 1);  // pixel k of sample i is (i + k) % 256
  DatasetSplit s = load_dataset("mnist", dir.string(), false);
  int64_t ids[3] = {255, 128, 7};
  Tensor x = Tensor::empty({3, 1, 28, 28}, DType::f32);
  Tensor t = Tensor::empty({3}, DType::i32);
  gather_batch(s.train, ids, 3, x, t);
  const float* xd = x.data<float>();
  EXPECT_EQ(xd[0], 1.0f);             // sample 255, pixel 0 = 255
  EXPECT_EQ(xd[1], 0.0f);             // pixel 1 = 0
  EXPECT_EQ(xd[784], 128 / 255.0f);   // sample 128, pixel 0 = 128: bit-exact float division
  EXPECT_EQ(xd[784 * 2 + 3], 10 / 255.0f);
  EXPECT_EQ(t.data<int32_t>()[0], 5);
  EXPECT_EQ(t.data<int32_t>()[1], 8);
  EXPECT_EQ(t.data<int32_t>()[2], 7);
}

TEST_F(IdxTest, ChecksumMismatchDetected) {
  write_dataset(2, 2);
  std::vector<uint8_t> content = slurp(dir / "train-images-idx3-ubyte");
  std::string actual = deeptrain::sha256_hex(content.data(), content.size());
  std::string msg = input_error([&] { load_dataset("mnist", dir.string(), true); });
  EXPECT_NE(msg.find("train-images-idx3-ubyte: SHA-256 mismatch"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
            std::string::npos) << msg;
  EXPECT_NE(msg.find(actual), std::string::npos) << msg;
  EXPECT_NE(describe_files("mnist", dir.string()).find("MISMATCH"), std::string::npos);
}

bool has_all_files(const fs::path& d) {
  for (const char* f : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"})
    if (!fs::exists(d / f) && !fs::exists(d / (std::string(f) + ".gz"))) return false;
  return true;
}

void check_real(const char* name, int first_label) {
  fs::path d = fs::path(DEEPTRAIN_DATA_DIR) / name;
  if (!has_all_files(d)) GTEST_SKIP() << name << " not in " << d << "; run scripts/fetch_data.sh";
  DatasetSplit s = load_dataset(name, d.string(), /*verify_checksums=*/true);
  EXPECT_EQ(s.train.images.shape(), (Shape{60000, 1, 28, 28}));
  EXPECT_EQ(s.train.labels.dim(0), 60000);
  EXPECT_EQ(s.test.images.shape(), (Shape{10000, 1, 28, 28}));
  EXPECT_EQ(s.test.labels.dim(0), 10000);
  EXPECT_EQ(s.train.labels.data<int32_t>()[0], first_label);
  EXPECT_NE(describe_files(name, d.string()).find("sha256 ok"), std::string::npos);
}

TEST(RealData, Mnist) { check_real("mnist", 5); }
TEST(RealData, FashionMnist) { check_real("fashion_mnist", 9); }  // 9 = ankle boot

}  // namespace
