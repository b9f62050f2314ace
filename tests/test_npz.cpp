// .npz import/export: the book's reference archives, a np.savez_compressed fixture, round trips
// (checked by numpy itself when it is installed), every error message, and atomic file writes.
#include <gtest/gtest.h>
#include "reference_data.h"

#include "error_util.h"
#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/io/atomic_file.h"
#include "core/io/npz.h"
#include "hostile_util.h"

namespace fs = std::filesystem;
using namespace deeptrain;
using namespace deeptrain::io;

namespace {

const std::string kReference = DEEPTRAIN_REFERENCE_DIR;
const std::string kPython = "/usr/bin/python3";

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

bool have_numpy() {
  return fs::exists(kPython) &&
         std::system((kPython + " -c 'import numpy' >/dev/null 2>&1").c_str()) == 0;
}

template <class T>
Tensor make(Shape shape, std::vector<T> values) {
  Tensor t = Tensor::empty(std::move(shape), dtype_of<T>());
  EXPECT_EQ(static_cast<size_t>(t.numel()), values.size());
  std::copy(values.begin(), values.end(), t.data<T>());
  return t;
}

template <class T>
std::vector<T> values(const Tensor& t) {
  return std::vector<T>(t.data<T>(), t.data<T>() + t.numel());
}

// A .npy file by hand, for headers numpy would not write.
std::string npy(const std::string& dict, const std::string& data, int major = 1) {
  std::string header = dict + "\n";
  std::string out = std::string("\x93NUMPY", 6) + static_cast<char>(major) + '\0';
  size_t n = header.size();
  for (int i = 0; i < (major == 1 ? 2 : 4); ++i) out += static_cast<char>((n >> (8 * i)) & 0xFF);
  return out + header + data;
}

class NpzTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/test_npz.XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return dir_ + "/" + name; }

  // Runs a Python program with numpy; the archive path is sys.argv[1]. Returns the exit status.
  int python(const std::string& program, const std::string& arg) {
    write_bytes(file("check.py"), "import sys\nimport numpy as np\n" + program);
    return std::system((kPython + " " + file("check.py") + " " + arg).c_str());
  }

  std::string dir_;
};

// ---- the shared reference archives (values from numpy.load) ----

TEST(NpzReference, BookParams) {
  SKIP_WITHOUT_REFERENCE_DATA();
  auto p = read_npz(kReference + "/book_deep_convnet_params.npz");
  ASSERT_EQ(p.size(), 16u);
  for (int i = 1; i <= 8; ++i) {
    EXPECT_TRUE(p.count("W" + std::to_string(i))) << i;
    EXPECT_TRUE(p.count("b" + std::to_string(i))) << i;
  }
  const Tensor& W1 = p.at("W1");
  EXPECT_EQ(W1.dtype(), DType::f64);
  EXPECT_EQ(W1.shape(), Shape({16, 1, 3, 3}));
  EXPECT_EQ(W1.data<double>()[0], -0.040949688106248945);
  EXPECT_EQ(W1.data<double>()[143], -0.3071634959599396);  // W1[15,0,2,2]
  EXPECT_EQ(p.at("W7").shape(), Shape({1024, 50}));
  EXPECT_EQ(p.at("W7").data<double>()[0], 0.0043547201341014394);
  EXPECT_EQ(p.at("W7").data<double>()[1023 * 50 + 49], 0.033872858774606204);
  EXPECT_EQ(p.at("W8").data<double>()[3 * 10 + 7], -0.42382725083699685);
  EXPECT_EQ(p.at("b8").shape(), Shape({10}));
  EXPECT_EQ(p.at("b8").data<double>()[9], 0.5455808824057026);
}

TEST(NpzReference, Batch100) {
  SKIP_WITHOUT_REFERENCE_DATA();
  auto b = read_npz(kReference + "/deep_convnet_batch100.npz");
  const Tensor& x = b.at("x");
  EXPECT_EQ(x.dtype(), DType::f32);
  EXPECT_EQ(x.shape(), Shape({100, 1, 28, 28}));
  EXPECT_FLOAT_EQ(x.data<float>()[99 * 784 + 14 * 28 + 14], 171.0f / 255.0f);
  double sum = 0;
  for (float v : values<float>(x)) sum += v;
  EXPECT_NEAR(sum, 9398.851065224037, 1e-8);

  const Tensor& t = b.at("t");
  EXPECT_EQ(t.dtype(), DType::i64);
  EXPECT_EQ(t.shape(), Shape({100}));
  std::vector<int64_t> first(t.data<int64_t>(), t.data<int64_t>() + 10);
  EXPECT_EQ(first, (std::vector<int64_t>{7, 2, 1, 0, 4, 1, 4, 9, 5, 9}));

  const Tensor& loss = b.at("loss");
  EXPECT_EQ(loss.shape().rank(), 0);
  EXPECT_EQ(loss.numel(), 1);
  EXPECT_EQ(loss.data<double>()[0], 0.0007895175569785318);
  EXPECT_EQ(b.at("logits").data<double>()[7], 12.219006399991695);
  EXPECT_EQ(b.at("dW7").shape(), Shape({1024, 50}));
}

// ---- np.savez_compressed-style fixture: deflate, zip64 local headers, .npy 2.0 and 3.0 ----
// Made as np.savez_compressed does it, with a chosen .npy version for v2 and v3:
//   with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:  # for each array a:
//     with zf.open(name + ".npy", "w", force_zip64=True) as f:
//       np.lib.format.write_array(f, a, version=version)

TEST(NpzFixture, CompressedMembers) {
  auto a = read_npz(DEEPTRAIN_SOURCE_DIR "/tests/data/small_compressed.npz");
  EXPECT_EQ(a.size(), 11u);
  EXPECT_EQ(a.at("a").shape(), Shape({2, 3}));
  EXPECT_EQ(values<float>(a.at("a")), (std::vector<float>{0, 0.5f, 1, 1.5f, 2, 2.5f}));
  EXPECT_EQ(values<double>(a.at("b")), (std::vector<double>{1.5, -2.25, M_PI, 1e300}));
  EXPECT_EQ(values<int32_t>(a.at("i")), (std::vector<int32_t>{-1, 0, 2147483647}));
  EXPECT_EQ(values<int64_t>(a.at("l")),
            (std::vector<int64_t>{-9000000000000000000, 1, 2, 9000000000000000000}));
  EXPECT_EQ(values<uint8_t>(a.at("u")), (std::vector<uint8_t>{0, 1, 127, 128, 255}));
  EXPECT_EQ(a.at("m").dtype(), DType::u8);  // bool
  EXPECT_EQ(values<uint8_t>(a.at("m")), (std::vector<uint8_t>{1, 0, 0, 1}));
  EXPECT_EQ(a.at("s").shape(), Shape());
  EXPECT_EQ(values<double>(a.at("s")), (std::vector<double>{3.25}));
  EXPECT_EQ(a.at("z").shape(), Shape({0, 3}));
  const Tensor& big = a.at("big");
  ASSERT_EQ(big.numel(), 1000);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(big.data<float>()[i], i);
  EXPECT_EQ(values<float>(a.at("v2")), (std::vector<float>{0.25f, -0.5f}));
  EXPECT_EQ(values<int64_t>(a.at("v3")), (std::vector<int64_t>{7}));
}

// ---- writing ----

std::vector<std::pair<std::string, Tensor>> every_dtype() {
  return {
      {"f32", make<float>({2, 3}, {0.5f, -1, 3.25f, 1e-30f, 1e30f, 0})},
      {"f64", make<double>({3}, {M_PI, -1e300, 5e-324})},
      {"i32", make<int32_t>({1, 2, 2}, {-2147483647 - 1, -1, 0, 2147483647})},
      {"i64", make<int64_t>({2}, {INT64_MIN, INT64_MAX})},
      {"u8", make<uint8_t>({4}, {0, 1, 128, 255})},
      {"scalar", make<double>({}, {2.5})},
      {"empty", Tensor::empty({0, 3}, DType::f32)},
  };
}

TEST_F(NpzTest, RoundTripEveryDtype) {
  auto arrays = every_dtype();
  write_npz(file("a.npz"), arrays);
  auto back = read_npz(file("a.npz"));
  ASSERT_EQ(back.size(), arrays.size());
  for (const auto& [key, t] : arrays) {
    SCOPED_TRACE(key);
    const Tensor& r = back.at(key);
    EXPECT_EQ(r.dtype(), t.dtype());
    EXPECT_EQ(r.shape(), t.shape());
    ASSERT_EQ(r.nbytes(), t.nbytes());
    if (t.nbytes()) {
      EXPECT_EQ(std::memcmp(r.raw(), t.raw(), t.nbytes()), 0);
    }
  }
  // Same arrays, same bytes: nothing time- or host-dependent goes into the archive.
  write_npz(file("b.npz"), arrays);
  EXPECT_EQ(read_bytes(file("a.npz")), read_bytes(file("b.npz")));
}

TEST_F(NpzTest, NumpyLoadsWhatWeWrite) {
  if (!have_numpy()) GTEST_SKIP() << kPython << " with numpy not found";
  write_npz(file("a.npz"), every_dtype());
  const std::string check = R"(
d = np.load(sys.argv[1])
assert d.files == ['f32', 'f64', 'i32', 'i64', 'u8', 'scalar', 'empty'], d.files
assert d['f32'].dtype == np.float32 and d['f32'].shape == (2, 3)
assert np.array_equal(d['f32'], np.array([[0.5, -1, 3.25], [1e-30, 1e30, 0]], np.float32))
assert d['f64'].dtype == np.float64 and d['f64'].tolist() == [np.pi, -1e300, 5e-324]
assert d['i32'].dtype == np.int32 and d['i32'].shape == (1, 2, 2)
assert d['i32'].ravel().tolist() == [-2**31, -1, 0, 2**31 - 1]
assert d['i64'].dtype == np.int64 and d['i64'].tolist() == [-2**63, 2**63 - 1]
assert d['u8'].dtype == np.uint8 and d['u8'].tolist() == [0, 1, 128, 255]
assert d['scalar'].shape == () and d['scalar'] == 2.5
assert d['empty'].dtype == np.float32 and d['empty'].shape == (0, 3)
import zipfile
assert zipfile.ZipFile(sys.argv[1]).testzip() is None
)";
  EXPECT_EQ(python(check, file("a.npz")), 0);
}

TEST_F(NpzTest, WriteRejectsWhatNpyCannotHold) {
  EXPECT_CONTAINS(error_of<Error>([&] {
                    write_npz(file("a.npz"), {{"h", Tensor::zeros({2}, DType::f16)}});
                  }),
                  "array 'h': dtype f16 cannot be written");
  Tensor t = make<float>({1}, {1});
  EXPECT_CONTAINS(error_of<Error>([&] {
                    write_npz(file("a.npz"), {{"w", t}, {"w", t}});
                  }),
                  "array 'w': the name is used twice");
  EXPECT_CONTAINS(error_of<Error>([&] { write_npz(file("a.npz"), {{"", t}}); }), "empty name");
  EXPECT_FALSE(fs::exists(file("a.npz")));
}

// ---- damaged and wrong files ----

TEST_F(NpzTest, FlippedByteIsACrcErrorNamingTheMember) {
  Tensor pattern = Tensor::empty({64}, DType::u8);
  std::fill_n(pattern.data<uint8_t>(), 64, 0xAB);
  write_npz(file("a.npz"), {{"first", make<float>({2}, {1, 2})}, {"second", pattern}});
  std::string bytes = read_bytes(file("a.npz"));
  size_t at = bytes.find(std::string(64, '\xAB'));
  ASSERT_NE(at, std::string::npos);
  bytes[at + 10] ^= 0x01;
  write_bytes(file("a.npz"), bytes);
  std::string msg = error_of([&] { read_npz(file("a.npz")); });
  EXPECT_CONTAINS(msg, file("a.npz"));
  EXPECT_CONTAINS(msg, "member 'second.npy'");
  EXPECT_CONTAINS(msg, "CRC-32 mismatch");
}

TEST_F(NpzTest, TruncatedFile) {
  write_npz(file("a.npz"), every_dtype());
  std::string bytes = read_bytes(file("a.npz"));
  write_bytes(file("a.npz"), bytes.substr(0, bytes.size() / 2));
  std::string msg = error_of([&] { read_npz(file("a.npz")); });
  EXPECT_CONTAINS(msg, file("a.npz"));
  EXPECT_CONTAINS(msg, "truncated zip archive");
}

TEST_F(NpzTest, TruncatedCentralDirectory) {
  SKIP_WITHOUT_REFERENCE_DATA();
  // The book's archive has a classic end record; cut 100 bytes out of the central directory.
  std::string bytes = read_bytes(kReference + "/book_deep_convnet_params.npz");
  bytes.erase(bytes.size() - 22 - 100, 100);
  write_bytes(file("p.npz"), bytes);
  std::string msg = error_of([&] { read_npz(file("p.npz")); });
  EXPECT_CONTAINS(msg, file("p.npz"));
  EXPECT_CONTAINS(msg, "truncated central directory");
}

TEST_F(NpzTest, NotAZip) {
  write_bytes(file("text.npz"), "W1 = [1, 2, 3]\n");
  EXPECT_CONTAINS(error_of([&] { read_npz(file("text.npz")); }),
                  file("text.npz") + ": not a zip archive");
  write_bytes(file("empty.npz"), "");
  EXPECT_CONTAINS(error_of([&] { read_npz(file("empty.npz")); }), "not a zip archive");
  write_bytes(file("x.npy"),
              npy("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", std::string(4, '\0')));
  EXPECT_CONTAINS(error_of([&] { read_npz(file("x.npy")); }), "is a single .npy array");
  EXPECT_CONTAINS(error_of([&] { read_npz(file("missing.npz")); }),
                  "cannot open '" + file("missing.npz") + "': No such file or directory");
}

TEST_F(NpzTest, UnsupportedCompressionMethod) {
  write_npz(file("a.npz"), {{"w", make<float>({1}, {1})}});
  std::string bytes = read_bytes(file("a.npz"));
  size_t central = bytes.find("PK\x01\x02");
  ASSERT_NE(central, std::string::npos);
  bytes[central + 10] = 12;  // bzip2
  write_bytes(file("a.npz"), bytes);
  std::string msg = error_of([&] { read_npz(file("a.npz")); });
  EXPECT_CONTAINS(msg, "member 'w.npy': unsupported compression method 12");
}

// Errors numpy can produce for real: Fortran order and big-endian data, end to end.
TEST_F(NpzTest, NumpyWrittenArraysWeRefuse) {
  if (!have_numpy()) GTEST_SKIP() << kPython << " with numpy not found";
  ASSERT_EQ(
      python(
          "np.savez(sys.argv[1] + '/f.npz', ok=np.zeros(2), w=np.asfortranarray(np.ones((3, 4))))\n"
          "np.savez(sys.argv[1] + '/b.npz', w=np.ones(3, dtype='>f8'))\n",
          dir_),
      0);
  std::string msg = error_of([&] { read_npz(file("f.npz")); });
  EXPECT_CONTAINS(msg, file("f.npz") + ": member 'w.npy': fortran_order arrays unsupported");
  msg = error_of([&] { read_npz(file("b.npz")); });
  EXPECT_CONTAINS(msg, file("b.npz") + ": member 'w.npy': big-endian dtype '>f8' unsupported");
}

// ---- hostile archives: bounded memory ----

// A zip of one member by hand (classic records, no zip64), for archives no writer would make:
// `data` as stored, the central directory declaring `crc` and `size`.
std::string zip_one(const std::string& name, uint16_t method, uint32_t crc, uint32_t size,
                    const std::string& data) {
  auto put = [](std::string& o, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) o += static_cast<char>((v >> (8 * i)) & 0xFF);
  };
  std::string z;
  put(z, 0x04034b50, 4), put(z, 20, 2), put(z, 0, 2), put(z, method, 2), put(z, 0, 2);
  put(z, 0x21, 2), put(z, crc, 4), put(z, data.size(), 4), put(z, size, 4);
  put(z, name.size(), 2), put(z, 0, 2);
  z += name + data;
  const size_t cd_at = z.size();
  put(z, 0x02014b50, 4), put(z, 20, 2), put(z, 20, 2), put(z, 0, 2), put(z, method, 2);
  put(z, 0, 2), put(z, 0x21, 2), put(z, crc, 4), put(z, data.size(), 4), put(z, size, 4);
  put(z, name.size(), 2), put(z, 0, 2), put(z, 0, 2), put(z, 0, 2), put(z, 0, 2), put(z, 0, 4);
  put(z, 0, 4);
  z += name;
  const size_t cd_size = z.size() - cd_at;
  put(z, 0x06054b50, 4), put(z, 0, 2), put(z, 0, 2), put(z, 1, 2), put(z, 1, 2);
  put(z, cd_size, 4), put(z, cd_at, 4), put(z, 0, 2);
  return z;
}

uint32_t crc_of(const std::string& s) {
  return uint32_t(crc32(0, reinterpret_cast<const Bytef*>(s.data()), uInt(s.size())));
}

// Far below the gigabytes each hostile archive below would cost if read without bounds, and far
// above what reading one costs when bounded (a few MB: the file itself).
constexpr int64_t kBoundedKb = 64 * 1024;

TEST_F(NpzTest, MemberInflatingBeyondItsDeclaredSizeIsStoppedAtOnce) {
  // The central directory and the .npy header agree on 4 floats; the deflate stream goes on
  // with 2 GiB of zeros (a 2 MB file).
  const std::string w =
      npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", std::string(16, '\0'));
  uint32_t stream_crc = 0;
  const std::string stream = hostile::raw_deflate_then_zeros(w, 2048, &stream_crc);
  ASSERT_LT(stream.size(), 4u << 20);
  write_bytes(file("bomb.npz"), zip_one("w.npy", 8, crc_of(w), uint32_t(w.size()), stream));
  std::string msg;
  const int64_t grew_kb = hostile::peak_growth_kb([&] { msg = error_of([&] { read_npz(file("bomb.npz")); }); });
  EXPECT_CONTAINS(msg, file("bomb.npz") + ": member 'w.npy': decompresses to more than the " +
                           std::to_string(w.size()) + " bytes the central directory says");
  EXPECT_LT(grew_kb, kBoundedKb) << "peak memory grew by " << grew_kb << " kB";
  // The same member, ending where it should, reads.
  uint32_t crc = 0;
  write_bytes(file("ok.npz"), zip_one("w.npy", 8, crc_of(w), uint32_t(w.size()),
                                      hostile::raw_deflate_then_zeros(w, 0, &crc)));
  EXPECT_EQ(crc, crc_of(w));
  EXPECT_EQ(read_npz(file("ok.npz")).at("w").shape(), Shape({4}));
}

TEST_F(NpzTest, HugeDeclaredSizesAreRefusedBeforeInflating) {
  SKIP_WITHOUT_REFERENCE_DATA();
  // The issue's archive: 3 GiB of zeros, the directory and the .npy header both honest about
  // it, in 3 MB. Over the 1 GiB limit: refused before anything is inflated.
  const std::string header =
      npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 256, 1024, 1024), }", "");
  uint32_t crc = 0;
  const std::string stream = hostile::raw_deflate_then_zeros(header, 3072, &crc);
  const uint64_t size = header.size() + (uint64_t(3) << 30);
  write_bytes(file("big.npz"), zip_one("x.npy", 8, crc, uint32_t(size), stream));
  std::string msg;
  const int64_t grew_kb = hostile::peak_growth_kb([&] { msg = error_of([&] { read_npz(file("big.npz")); }); });
  EXPECT_CONTAINS(msg, file("big.npz") + ": member 'x.npy' declares " + std::to_string(size) +
                           " bytes uncompressed, which takes the archive over the limit of " +
                           std::to_string(kNpzMaxBytes) + " bytes");
  EXPECT_LT(grew_kb, kBoundedKb) << "peak memory grew by " << grew_kb << " kB";

  // A .npy header that claims a huge shape for a small member: it must agree with the
  // directory's size before anything is allocated for it.
  const std::string lie = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }",
                              std::string(16, '\0'));
  write_bytes(file("lie.npz"), zip_one("w.npy", 0, crc_of(lie), uint32_t(lie.size()), lie));
  EXPECT_CONTAINS(error_of([&] { read_npz(file("lie.npz")); }),
                  file("lie.npz") + ": member 'w.npy': header says shape (1000000, 1000000) '<f4' "
                                    "(4000000000000 bytes) but the central directory gives the "
                                    "member 16 bytes of data");

  // The limit is the caller's: the book's 1 MB archive under a 1000-byte one.
  const std::string book = kReference + "/book_deep_convnet_params.npz";
  EXPECT_CONTAINS(error_of([&] { read_npz(book, 1000); }), ", over the limit of 1000 bytes");
  EXPECT_EQ(read_npz(book, 2 << 20).size(), 16u);
}

// ---- .npy headers ----

Tensor parse(const std::string& bytes) {
  return parse_npy(bytes.data(), bytes.size(), "x.npz: member 'w.npy'");
}

TEST(Npy, HeaderVariants) {
  std::string four_floats(16, '\0');
  EXPECT_EQ(parse(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", four_floats))
                .shape(),
            Shape({2, 2}));
  EXPECT_EQ(parse(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", four_floats, 2))
                .shape(),
            Shape({4}));
  EXPECT_EQ(
      parse(npy("{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (4,)}", four_floats, 3))
          .shape(),
      Shape({4}));
  // Fortran order is row-major order when at most one dimension exceeds 1.
  EXPECT_EQ(
      parse(npy("{'descr': '<f4', 'fortran_order': True, 'shape': (1, 4), }", four_floats)).shape(),
      Shape({1, 4}));
  // Python 2 wrote long integers with an L.
  EXPECT_EQ(
      parse(npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2L,), }", four_floats)).shape(),
      Shape({2}));
}

TEST(Npy, HeaderErrorsSayWhatIsWrong) {
  auto err = [](const std::string& dict, const std::string& data, int major = 1) {
    return error_of([&] { parse(npy(dict, data, major)); });
  };
  const std::string twelve_doubles(96, '\0');
  EXPECT_CONTAINS(err("{'descr': '<f8', 'fortran_order': True, 'shape': (3, 4), }", twelve_doubles),
                  "x.npz: member 'w.npy': fortran_order arrays unsupported");
  EXPECT_CONTAINS(
      err("{'descr': '>f8', 'fortran_order': False, 'shape': (3, 4), }", twelve_doubles),
      "big-endian dtype '>f8' unsupported");
  EXPECT_CONTAINS(err("{'descr': '<c16', 'fortran_order': False, 'shape': (3,), }", twelve_doubles),
                  "dtype '<c16' unsupported");
  EXPECT_CONTAINS(
      err("{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }", std::string(90, '\0')),
      "header says shape (3, 4) '<f8' (96 bytes) but the data has 90 bytes");
  EXPECT_CONTAINS(err("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", "1234"),
                  "structured (record) dtypes unsupported");
  EXPECT_CONTAINS(err("{'descr': '<f4', 'shape': (1,), }", "1234"), "no 'fortran_order' key");
  EXPECT_CONTAINS(err("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", "1234"),
                  "unexpected key 'x'");
  EXPECT_CONTAINS(err("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", "1234"),
                  "malformed .npy header");
  EXPECT_CONTAINS(err("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", "1234", 4),
                  ".npy format version 4.0 unsupported");
  EXPECT_CONTAINS(error_of([&] { parse("PK\x03\x04 not npy"); }), "not a .npy array");
}

// ---- atomic writes ----

TEST_F(NpzTest, AtomicWriteReplacesAnExistingFile) {
  write_bytes(file("w.bin"), "old contents, longer than the new ones");
  write_file_atomic(file("w.bin"), std::string("new"));
  EXPECT_EQ(read_bytes(file("w.bin")), "new");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
}

TEST_F(NpzTest, AtomicWriteIntoMissingDirectoryThrowsAndLeavesNothing) {
  const std::string path = file("no/such/dir/w.bin");
  std::string msg = error_of<Error>([&] { write_file_atomic(path, std::string("x")); });
  EXPECT_CONTAINS(msg, path);
  EXPECT_CONTAINS(msg, "No such file or directory");
  EXPECT_TRUE(fs::is_empty(dir_));
}

TEST_F(NpzTest, AtomicWriteFailingRenameRemovesTheTemporaryFile) {
  fs::create_directories(file("a_directory/inside"));  // renaming a file over it fails
  std::string msg =
      error_of<Error>([&] { write_file_atomic(file("a_directory"), std::string("x")); });
  EXPECT_CONTAINS(msg, file("a_directory"));
  EXPECT_CONTAINS(msg, "rename");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
  EXPECT_TRUE(fs::is_directory(file("a_directory/inside")));
}

}  // namespace
