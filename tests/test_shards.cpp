// Packed data sets (`deeptrain pack`, data { dataset: "shards" }): the codecs round-trip; a
// Fashion-MNIST split exported to PNG files by `deeptrain export-images`, packed from its list
// file and streamed through the data threads gives the IDX files' batches bit for bit (same
// pixels, labels, order and augmentation), so training from either gives the same weights; bad
// images are named by path, skipped or fatal; and every kind of broken pack is refused with an
// error naming the file.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "error_util.h"

#include "cli_util.h"
#include "core/checksum.h"
#include "core/data/augment.h"
#include "core/data/image_codec.h"
#include "core/data/image_transform.h"
#include "core/data/sampler.h"
#include "core/data/shard_reader.h"
#include "core/data/shard_writer.h"
#include "core/error.h"
#include "core/io/read_file.h"
#include "core/io/weights.h"

using namespace deeptrain;
namespace fs = std::filesystem;

namespace {

const std::string kFashion = std::string(DEEPTRAIN_DATA_DIR) + "/fashion_mnist";
bool have_fashion() { return fs::exists(kFashion + "/t10k-labels-idx1-ubyte.gz") || fs::exists(kFashion + "/t10k-labels-idx1-ubyte"); }

std::vector<uint8_t> pattern(int c, int h, int w, int salt) {
  std::vector<uint8_t> v(size_t(c) * h * w);
  for (size_t k = 0; k < v.size(); ++k) v[k] = uint8_t((k * 53 + salt * 17 + k / 5) % 256);
  return v;
}


void write_bytes(const fs::path& p, const std::string& b) { std::ofstream(p, std::ios::binary) << b; }

// A small pack written directly: n samples of c x 8 x 6 PNGs, labels i % classes.
std::string small_pack(const fs::path& dir, int n, int c, int classes, int64_t shard_bytes = 2000) {
  data::ShardWriter w(dir.string(), shard_bytes);
  for (int i = 0; i < n; ++i) {
    const auto px = pattern(c, 8, 6, i);
    w.add(data::encode_png(px.data(), c, 8, 6), data::ImageFormat::png, i % classes, c, 8, 6);
  }
  proto::ShardManifest m;
  for (int k = 0; k < classes; ++k) m.add_class_names(fmt::format("c{}", k));  // (GCC 12 warns falsely on "c" + to_string)
  w.finish(m);
  return dir.string();
}

}  // namespace

TEST(Shards, CodecsRoundTripAndRefuseBadBytes) {
  for (int c : {1, 3}) {
    const auto px = pattern(c, 7, 5, c);
    const std::string png = data::encode_png(px.data(), c, 7, 5);
    const data::DecodedImage d =
        data::decode_image(reinterpret_cast<const uint8_t*>(png.data()), png.size(), "x.png");
    EXPECT_EQ(d.channels, c);
    EXPECT_EQ(d.height, 7);
    EXPECT_EQ(d.width, 5);
    EXPECT_EQ(d.pixels, px);  // PNG is lossless
    // A flat JPEG decodes to its flat value (8x8 blocks of one colour are exact in baseline JPEG).
    std::vector<uint8_t> flat(size_t(c) * 16 * 16, 120);
    const std::string jpg = data::encode_jpeg(flat.data(), c, 16, 16, 95);
    const data::DecodedImage j =
        data::decode_image(reinterpret_cast<const uint8_t*>(jpg.data()), jpg.size(), "x.jpg");
    ASSERT_EQ(j.pixels.size(), flat.size());
    for (uint8_t v : j.pixels) EXPECT_NEAR(int(v), 120, 1);
    const std::string cut = jpg.substr(0, jpg.size() / 2);
    EXPECT_NE(error_of([&] { data::decode_image(reinterpret_cast<const uint8_t*>(cut.data()), cut.size(), "cut.jpg"); })
                  .find("cut.jpg: truncated or corrupt JPEG"), std::string::npos);
    const std::string pcut = png.substr(0, png.size() - 20);
    EXPECT_NE(error_of([&] { data::decode_image(reinterpret_cast<const uint8_t*>(pcut.data()), pcut.size(), "cut.png"); })
                  .find("cut.png: corrupt"), std::string::npos);
  }
  const std::string text = "hello";
  EXPECT_NE(error_of([&] { data::decode_image(reinterpret_cast<const uint8_t*>(text.data()), text.size(), "t.png"); })
                .find("t.png: not a PNG or JPEG"), std::string::npos);
  EXPECT_NE(error_of([&] { data::decode_image(nullptr, 0, "empty.png"); }).find("empty.png: empty file"),
            std::string::npos);
}

// THE test of the streaming path: the batches of every step of two epochs, augmented, equal
// the IDX files' bit for bit, with the data threads prefetching and without them.
TEST(Shards, PngExportPackedStreamsTheIdxBatchesBitForBit) {
  if (!have_fashion()) GTEST_SKIP() << "Fashion-MNIST not fetched";
  TempDir dir;
  const std::string png = (dir.path / "png").string(), pack = (dir.path / "pack").string();
  const int64_t n = 700;
  CommandResult r = run_command(deeptrain_cmd("export-images --builtin fashion_mnist --data-dir " +
                                              kFashion + " --split test --limit 700 --out " + png));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Small shards: samples span many files, so global indexing crosses shard boundaries.
  r = run_command(deeptrain_cmd("pack --list " + png + "/list.csv --shard-mb 0.1 --out " + pack));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("packed 700 images of 10 classes"), std::string::npos) << r.output;
  const data::Dataset idx = data::load_dataset("fashion_mnist", kFashion, false, 1, n).test;
  const proto::ShardManifest m = data::read_manifest(pack);
  EXPECT_GT(m.shards_size(), 3);
  proto::AugmentConfig aug;
  aug.set_enabled(true);
  aug.set_rotation_deg(10);
  aug.set_shift_px(2);
  aug.set_flip_horizontal(true);
  for (int threads : {0, 2}) {
    data::ShardReadOptions o;
    o.threads = threads;
    const data::Dataset sh = data::open_shards(pack, o);
    ASSERT_EQ(sh.size(), n);
    ASSERT_EQ(sh.sample_shape(), (Shape{1, 28, 28}));
    const GlobalSampler sampler{n, 128, 5};
    for (int epoch = 0; epoch < 2; ++epoch) {
      const auto order = epoch_permutation(5, epoch, n);
      for (int64_t s = 0; s < sampler.steps_per_epoch(); ++s) {
        const int64_t b = sampler.batch_begin(s), e = sampler.batch_end(s);
        if (s + 1 < sampler.steps_per_epoch())  // as the trainer announces the next batch
          sh.source->prefetch(order.data() + e, sampler.batch_end(s + 1) - e, epoch);
        Tensor x0 = Tensor::empty({e - b, 1, 28, 28}, DType::f32), t0 = Tensor::empty({e - b}, DType::i32);
        Tensor x1 = x0.clone(), t1 = t0.clone();
        data::gather_batch_augmented(idx, order.data() + b, e - b, epoch, 5, aug, x0, t0);
        data::gather_batch_augmented(sh, order.data() + b, e - b, epoch, 5, aug, x1, t1);
        ASSERT_EQ(std::memcmp(x0.raw(), x1.raw(), x0.nbytes()), 0) << "epoch " << epoch << " step " << s;
        ASSERT_EQ(std::memcmp(t0.raw(), t1.raw(), t0.nbytes()), 0) << "epoch " << epoch << " step " << s;
      }
    }
  }
}

// Training from the packs and from the IDX files gives the same weights to the last bit.
TEST(Shards, TrainingFromShardsEqualsTrainingFromIdx) {
  if (!have_fashion()) GTEST_SKIP() << "Fashion-MNIST not fetched";
  TempDir dir;
  for (const char* split : {"train", "test"}) {
    const std::string png = (dir.path / ("png_" + std::string(split))).string();
    CommandResult r = run_command(deeptrain_cmd(fmt::format(
        "export-images --builtin fashion_mnist --data-dir {} --split {} --limit 300 --out {}",
        kFashion, split, png)));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    r = run_command(deeptrain_cmd("pack --list " + png + "/list.csv --out " +
                                  (dir.path / "packs" / split).string()));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  const std::string body = R"(
model {
  layer { name: "conv1" conv { out_channels: 4 kernel: 3 pad: 1 } }
  layer { name: "relu1" relu {} }
  layer { name: "pool1" max_pool {} }
  layer { name: "fc" affine { out_features: 10 } }
}
optimizer { type: ADAM lr: 0.003 }
schedule { epochs: 2 batch_size: 64 }
run { seed: 3 threads: 1 backend: BACKEND_CPU_REF }
)";
  const std::string aug = " augment { enabled: true rotation_deg: 8 shift_px: 1.5 } ";
  const std::string idx_cfg = dir.file("idx.prototxt", body + "data { dataset: \"fashion_mnist\" dir: \"" + kFashion +
                                                           "\" train_limit: 300 test_limit: 300" + aug + "}\n");
  const std::string sh_cfg = dir.file("sh.prototxt", body + "data { dataset: \"shards\" dir: \"" +
                                                         (dir.path / "packs").string() + "\"" + aug + "}\n");
  for (const auto& [cfg, out] : {std::pair{idx_cfg, "idx"}, std::pair{sh_cfg, "sh"}}) {
    const CommandResult r = run_command(deeptrain_cmd(fmt::format(
        "train {} --run-dir {} --save-weights {}", cfg, (dir.path / ("run_" + std::string(out))).string(),
        (dir.path / (std::string(out) + ".weights")).string())));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  // The shards run again, stopped after step 3 (mid-epoch 1 of 5 steps: its augmented samples
  // and the data threads' prefetched batches are cut off) and resumed in a fresh process.
  const std::string ckpt = (dir.path / "ckpt").string();
  CommandResult r = run_command(deeptrain_cmd(fmt::format(
      "train {} --run-dir {} --checkpoint-dir {} --max-steps 3", sh_cfg,
      (dir.path / "run_stop").string(), ckpt)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_command(deeptrain_cmd(fmt::format(
      "train {} --json --run-dir {} --checkpoint-dir {} --resume auto --save-weights {}", sh_cfg,
      (dir.path / "run_resumed").string(), ckpt, (dir.path / "resumed.weights").string())));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("\"event\":\"resumed\",\"step\":3,"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("epoch 1, 3 of its 5 steps done"), std::string::npos) << r.output;
  const auto a = io::read_weight_tensors((dir.path / "idx.weights").string());
  for (const char* other : {"sh.weights", "resumed.weights"}) {
    const auto b = io::read_weight_tensors((dir.path / other).string());
    ASSERT_EQ(a.size(), b.size()) << other;
    for (const auto& [name, t] : a) {
      ASSERT_TRUE(b.count(name)) << other << ": " << name;
      ASSERT_EQ(t.nbytes(), b.at(name).nbytes()) << other << ": " << name;
      EXPECT_EQ(std::memcmp(t.raw(), b.at(name).raw(), t.nbytes()), 0) << other << ": " << name;
    }
  }
}

TEST(Shards, BadImagesAreNamedAndSkippedOrFatal) {
  TempDir dir;
  const fs::path f = dir.path / "photos";
  fs::create_directories(f / "cat");
  fs::create_directories(f / "dog");
  const auto px = pattern(3, 8, 8, 1);
  const std::string png = data::encode_png(px.data(), 3, 8, 8);
  const std::string jpg = data::encode_jpeg(px.data(), 3, 8, 8, 90);
  write_bytes(f / "cat" / "a.png", png);
  write_bytes(f / "cat" / "b.jpg", jpg);
  write_bytes(f / "cat" / "empty.png", "");
  write_bytes(f / "dog" / "cut.jpg", jpg.substr(0, jpg.size() / 2));
  write_bytes(f / "dog" / "notes.jpg", "not an image");
  write_bytes(f / "dog" / "misnamed.jpg", png);
  write_bytes(f / "dog" / "c.jpeg", jpg);
  const std::string out = (dir.path / "pack").string();
  CommandResult r = run_command(deeptrain_cmd("pack --folder " + f.string() + " --out " + out));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find((f / "cat" / "empty.png").string() + ": empty file"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(fs::path(out) / "manifest.json"));
  EXPECT_FALSE(fs::exists(fs::path(out) / "shard-00000.tar"));
  EXPECT_FALSE(fs::exists(fs::path(out) / "shard-00000.tar.tmp"));  // removed on the way out
  r = run_command(deeptrain_cmd("pack --folder " + f.string() + " --on-bad skip --out " + out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* bad : {"cat/empty.png: empty file", "dog/cut.jpg: truncated or corrupt JPEG",
                          "dog/notes.jpg: not a PNG or JPEG", "dog/misnamed.jpg: wrong extension"})
    EXPECT_NE(r.output.find(bad), std::string::npos) << bad << "\n" << r.output;
  EXPECT_NE(r.output.find("packed 3 images of 2 classes into 1 shard"), std::string::npos) << r.output;
  const proto::ShardManifest m = data::read_manifest(out);
  EXPECT_EQ(m.options().skipped(), 4);
  EXPECT_EQ(m.class_counts(0), 2);
  EXPECT_EQ(m.class_counts(1), 1);
  // A finished pack is never written over.
  r = run_command(deeptrain_cmd("pack --folder " + f.string() + " --on-bad skip --out " + out));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("already a packed data set"), std::string::npos) << r.output;
  // The tar is an ordinary one: WebDataset's member names.
  r = run_command("tar tf " + out + "/shard-00000.tar");
  EXPECT_EQ(r.output, "000000000.png\n000000000.cls\n000000001.jpg\n000000001.cls\n000000002.jpg\n000000002.cls\n");
}

TEST(Shards, UnfinishedPackLeavesNothingThatLooksComplete) {
  TempDir dir;
  {
    data::ShardWriter w((dir.path / "p").string(), 1000);
    for (int i = 0; i < 20; ++i) {
      const auto px = pattern(1, 8, 8, i);
      w.add(data::encode_png(px.data(), 1, 8, 8), data::ImageFormat::png, 0, 1, 8, 8);
    }
    for (const auto& e : fs::directory_iterator(dir.path / "p"))
      EXPECT_EQ(e.path().extension(), ".tmp") << e.path();  // nothing final before finish()
  }  // destroyed unfinished (an exception during a pack)
  EXPECT_TRUE(fs::is_empty(dir.path / "p"));
  EXPECT_NE(error_of([&] { data::open_shards((dir.path / "p").string(), {}); })
                .find("manifest.json: missing"), std::string::npos);
}

TEST(Shards, BrokenPacksAreRefusedNamingTheFile) {
  TempDir dir;
  const fs::path p = small_pack(dir.path / "p", 30, 1, 10);
  const fs::path q = small_pack(dir.path / "q", 30, 1, 10, 4000);
  const proto::ShardManifest m = data::read_manifest(p.string());
  ASSERT_GE(m.shards_size(), 2);
  auto open_err = [](const fs::path& d, data::ShardReadOptions o = {}) {
    return error_of([&] { data::open_shards(d.string(), o); });
  };
  auto copy = [&](const char* name) {
    fs::copy(p, dir.path / name, fs::copy_options::recursive);
    return dir.path / name;
  };
  {  // missing shard
    const fs::path d = copy("missing");
    fs::remove(d / "shard-00001.tar");
    EXPECT_NE(open_err(d).find((d / "shard-00001.tar").string() + ": cannot open"), std::string::npos) << open_err(d);
  }
  {  // truncated shard
    const fs::path d = copy("truncated");
    fs::resize_file(d / "shard-00000.tar", fs::file_size(d / "shard-00000.tar") - 700);
    EXPECT_NE(open_err(d).find((d / "shard-00000.tar").string() + ":"), std::string::npos);
    EXPECT_NE(open_err(d).find("truncated or replaced"), std::string::npos) << open_err(d);
  }
  {  // an index from another pack
    const fs::path d = copy("mismatch");
    fs::copy_file(q / "shard-00000.idx", d / "shard-00000.idx", fs::copy_options::overwrite_existing);
    EXPECT_NE(open_err(d).find((d / "shard-00000.idx").string() + ": SHA-256 differs"), std::string::npos) << open_err(d);
  }
  {  // another format version
    const fs::path d = copy("version");
    std::string j = io::read_file((d / "manifest.json").string());
    j.replace(j.find("\"format_version\": 1"), 19, "\"format_version\": 7");
    write_bytes(d / "manifest.json", j);
    EXPECT_NE(open_err(d).find((d / "manifest.json").string() + ": packing format version 7"), std::string::npos)
        << open_err(d);
  }
  {  // labels out of range: the manifest names fewer classes than the indexes use
    const fs::path d = copy("labels");
    proto::ShardManifest bad = m;
    bad.clear_class_names();
    bad.clear_class_counts();
    bad.add_class_names("only");
    bad.add_class_counts(30);
    write_bytes(d / "manifest.json", data::manifest_to_json(bad));
    EXPECT_NE(open_err(d).find("shard-00001.idx: sample 1 has label 1, out of range [0, 1)"), std::string::npos)
        << open_err(d);
  }
  {  // a corrupt sample is named with its shard and offset when read; the SHA-256 finds it on open
    const fs::path d = copy("corrupt");
    {
      std::fstream t(d / "shard-00000.tar", std::ios::in | std::ios::out | std::ios::binary);
      t.seekp(512 + 40);
      t.put('\x55');
    }
    data::ShardReadOptions o;
    o.threads = 1;
    data::Dataset ds = data::open_shards(d.string(), o);
    std::vector<uint8_t> buf(48);
    const int64_t id = 0;
    const std::string e = error_of([&] { ds.source->read(&id, 1, buf.data(), data::kEvalEpoch); });
    EXPECT_NE(e.find((d / "shard-00000.tar").string() + ": sample 0 at offset 512: CRC-32 mismatch"), std::string::npos) << e;
    o.verify_checksums = true;
    EXPECT_NE(open_err(d, o).find((d / "shard-00000.tar").string() + ": SHA-256 mismatch"), std::string::npos);
  }
  {  // doctor describes a config's packs, and names what is wrong with a broken one
    fs::create_directories(dir.path / "doc");
    fs::copy(p, dir.path / "doc" / "train", fs::copy_options::recursive);
    fs::copy(dir.path / "version", dir.path / "doc" / "test", fs::copy_options::recursive);
    const std::string cfg = (dir.path / "doc.prototxt").string();
    write_bytes(cfg, "data { dataset: \"shards\" dir: \"" + (dir.path / "doc").string() + "\" }\n");
    const CommandResult r = run_command(deeptrain_cmd("doctor " + cfg));
    EXPECT_NE(r.output.find("train: 30 samples of 10 classes in " + std::to_string(m.shards_size()) +
                            " shards, 1x8x6"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("test: unusable: "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("packing format version 7"), std::string::npos) << r.output;
  }
  {  // images of another channel count than the model takes
    const fs::path rgb = small_pack(dir.path / "rgb", 4, 3, 2);
    data::ShardReadOptions o;
    o.expected = Shape{1, 8, 6};
    data::Dataset ds = data::open_shards(rgb.string(), o);
    std::vector<uint8_t> buf(48);
    const int64_t id = 2;
    const std::string e = error_of([&] { ds.source->read(&id, 1, buf.data(), data::kEvalEpoch); });
    EXPECT_NE(e.find("shard-00002.tar: sample 2 at offset"), std::string::npos) << e;
    EXPECT_NE(e.find("a 3-channel 8x6 image, the model takes (1, 8, 6)"), std::string::npos) << e;
  }
}

// Rank-count invariance over a pack: exact mode on 1 and 2 ranks (each rank reading and
// prefetching only its own micro-shards' samples) gives the same weights to the last bit.
TEST(Shards, TwoRanksReadTheirOwnSamplesAndTrainAsOne) {
#ifndef DEEPTRAIN_MPIEXEC
  GTEST_SKIP() << "no MPI launcher";
#else
  if (!have_mnist()) GTEST_SKIP() << "MNIST not fetched";
  TempDir dir;
  for (const char* split : {"train", "test"}) {
    const auto r = run_command(deeptrain_cmd(fmt::format(
        "pack --builtin mnist --data-dir {}/mnist --split {} --limit 200 --out {}",
        DEEPTRAIN_DATA_DIR, split, (dir.path / "packs" / split).string())));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  const std::string cfg = dir.file("x.prototxt", R"(
model {
  layer { name: "conv1" conv { out_channels: 4 kernel: 3 pad: 1 } }
  layer { name: "relu1" relu {} }
  layer { name: "pool1" max_pool {} }
  layer { name: "fc" affine { out_features: 10 } }
}
data { dataset: "shards" dir: ")" + (dir.path / "packs").string() + R"(" data_threads: 1
       augment { enabled: true rotation_deg: 5 } }
optimizer { type: ADAM lr: 0.003 }
schedule { epochs: 1 batch_size: 50 }
run { seed: 4 threads: 1 backend: BACKEND_CPU_REF }
distributed { exact: true micro_batch: 10 }
)");
  for (int np : {1, 2}) {
    const auto r = run_command(fmt::format(
        "{} -n {} {}", DEEPTRAIN_MPIEXEC, np,
        deeptrain_cmd(fmt::format("train {} --run-dir {}/run{} --save-weights {}/w{}", cfg,
                                  dir.path.string(), np, dir.path.string(), np))));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  const auto a = io::read_weight_tensors((dir.path / "w1").string());
  const auto b = io::read_weight_tensors((dir.path / "w2").string());
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a)
    EXPECT_EQ(std::memcmp(t.raw(), b.at(name).raw(), t.nbytes()), 0) << name;
#endif
}

// data.transform on a folder of images of many sizes, gray and RGB: the random crops and flips
// are drawn from (seed, epoch, sample), so 2 ranks train the 1-rank model bit for bit, and a run
// stopped mid-epoch (prefetched transformed batches cut off) resumes to the same weights.
TEST(Shards, TransformedImagesTrainAlikeOnTwoRanksAndWhenResumed) {
  TempDir dir;
  for (const char* split : {"train", "test"})
    for (int i = 0; i < 36; ++i) {
      const int c = i % 4 == 0 ? 1 : 3, h = 12 + (i * 7) % 29, w = 10 + (i * 11) % 37;
      const auto px = pattern(c, h, w, i + (split[1] == 'e' ? 100 : 0));
      const fs::path f = dir.path / "img" / split / fmt::format("class{}", i % 3) / fmt::format("{}.png", i);
      fs::create_directories(f.parent_path());
      write_bytes(f, data::encode_png(px.data(), c, h, w));
    }
  for (const char* split : {"train", "test"}) {
    const auto r = run_command(deeptrain_cmd(fmt::format("pack --folder {} --out {}", (dir.path / "img" / split).string(),
                                                         (dir.path / "packs" / split).string())));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  const std::string cfg = dir.file("x.prototxt", R"(
model {
  input { channels: 3 height: 16 width: 16 }
  layer { name: "conv1" conv { out_channels: 4 kernel: 3 pad: 1 } }
  layer { name: "relu1" relu {} }
  layer { name: "pool1" max_pool {} }
  layer { name: "fc" affine { out_features: 3 } }
}
data { dataset: "shards" dir: ")" + (dir.path / "packs").string() + R"(" data_threads: 1
       transform { random_resized_crop: true flip_horizontal: true convert_channels: true
                   mean: 0.5 std: 0.25 } }
optimizer { type: ADAM lr: 0.003 }
schedule { epochs: 2 batch_size: 12 }
run { seed: 4 threads: 1 backend: BACKEND_CPU_REF }
distributed { exact: true micro_batch: 3 }
)");
  auto train = [&](const std::string& launcher, const std::string& name, const std::string& extra) {
    const auto r = run_command(launcher + deeptrain_cmd(fmt::format("train {} --run-dir {}/run_{} {}", cfg,
                                                                    dir.path.string(), name, extra)));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return r.output;
  };
  const std::string w = dir.path.string();
  train("", "one", "--save-weights " + w + "/one.w");
  // 3 steps an epoch: stopped after step 4, in epoch 2.
  train("", "stop", "--checkpoint-dir " + w + "/ckpt --max-steps 4");
  const std::string resumed = train("", "resumed", "--json --checkpoint-dir " + w + "/ckpt --resume auto --save-weights " + w + "/resumed.w");
  EXPECT_NE(resumed.find("\"event\":\"resumed\",\"step\":4,"), std::string::npos) << resumed;
  std::vector<std::string> others = {"resumed.w"};
#ifdef DEEPTRAIN_MPIEXEC
  train(fmt::format("{} -n 2 ", DEEPTRAIN_MPIEXEC), "two", "--save-weights " + w + "/two.w");
  others.push_back("two.w");
#endif
  const auto a = io::read_weight_tensors(w + "/one.w");
  for (const std::string& other : others) {
    const auto b = io::read_weight_tensors(w + "/" + other);
    ASSERT_EQ(a.size(), b.size()) << other;
    for (const auto& [name, t] : a)
      EXPECT_EQ(std::memcmp(t.raw(), b.at(name).raw(), t.nbytes()), 0) << other << ": " << name;
  }
}

// The encoded bytes of every sample of a pack, in global order.
static std::vector<std::string> packed_images(const std::string& pack) {
  std::vector<std::string> out;
  const proto::ShardManifest m = data::read_manifest(pack);
  for (const proto::ShardFile& f : m.shards()) {
    const std::string tar = io::read_file(pack + "/" + f.tar(), uint64_t(1) << 30, "a shard");
    uint64_t tar_bytes = 0;
    const std::string idx_path = pack + "/" + f.index();
    for (const data::IndexRecord& r :
         data::decode_index(idx_path, io::read_file(idx_path, uint64_t(1) << 30, "an index"), &tar_bytes))
      out.push_back(tar.substr(r.offset, r.size));
  }
  return out;
}

// --resize N: the shorter side becomes N by PIL's bilinear (data.transform's Resize, so packing
// small and training with resize: N see the same pixels); --reencode png|jpeg --quality Q; the
// options recorded in the manifest; progress as plain lines off a terminal, none with --json.
TEST(Shards, PackResizesAndReencodes) {
  TempDir dir;
  const int sizes[][3] = {{3, 40, 30}, {1, 25, 60}, {3, 20, 20}, {3, 12, 16}};
  std::vector<std::vector<uint8_t>> pixels;
  for (int i = 0; i < 4; ++i) {
    const auto& s = sizes[i];
    pixels.push_back(pattern(s[0], s[1], s[2], i));
    const fs::path f = dir.path / "img" / fmt::format("c{}", i % 2) / fmt::format("{}.png", i);
    fs::create_directories(f.parent_path());
    write_bytes(f, data::encode_png(pixels.back().data(), s[0], s[1], s[2]));
  }
  const std::string img = (dir.path / "img").string();
  // Folder order: c0/0, c0/2, c1/1, c1/3.
  const int order[] = {0, 2, 1, 3};
  CommandResult r = run_command(deeptrain_cmd("pack --folder " + img + " --resize 20 --out " + (dir.path / "png20").string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto png20 = packed_images((dir.path / "png20").string());
  ASSERT_EQ(png20.size(), 4u);
  for (size_t k = 0; k < 4; ++k) {
    const auto& s = sizes[order[k]];
    const auto [rw, rh] = data::resize_shorter_size(s[2], s[1], 20);
    std::vector<uint8_t> want(size_t(s[0]) * rh * rw);
    data::crop_resize_bilinear(pixels[size_t(order[k])].data(), s[0], s[1], s[2], {0, 0, s[1], s[2]}, rh, rw, want.data());
    const data::DecodedImage got = data::decode_image(reinterpret_cast<const uint8_t*>(png20[k].data()), png20[k].size(), "x");
    EXPECT_EQ(std::min(got.height, got.width), 20);
    EXPECT_EQ(got.pixels, want) << "sample " << k;  // PNG: lossless, PIL's resize exactly
  }
  const proto::ShardManifest m20 = data::read_manifest((dir.path / "png20").string());
  EXPECT_EQ(m20.options().resize(), 20);
  EXPECT_EQ(m20.channels(), 0);  // 20x26, 48x20, 20x20, 26x20: they vary

  r = run_command(deeptrain_cmd("pack --folder " + img + " --reencode jpeg --quality 80 --json --out " + (dir.path / "jpg").string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("pack: "), std::string::npos) << r.output;  // --json: JSON only
  const auto jpg = packed_images((dir.path / "jpg").string());
  for (size_t k = 0; k < 4; ++k) {
    EXPECT_EQ(data::sniff_image_format(reinterpret_cast<const uint8_t*>(jpg[k].data()), jpg[k].size()),
              data::ImageFormat::jpeg);
    const data::DecodedImage got = data::decode_image(reinterpret_cast<const uint8_t*>(jpg[k].data()), jpg[k].size(), "x");
    EXPECT_EQ(got.height, sizes[order[k]][1]);
    EXPECT_EQ(got.width, sizes[order[k]][2]);
  }
  const proto::ShardManifest mj = data::read_manifest((dir.path / "jpg").string());
  EXPECT_EQ(mj.options().reencode(), "jpeg");
  EXPECT_EQ(mj.options().quality(), 80);
  EXPECT_NE(io::read_file((dir.path / "jpg" / mj.shards(0).tar()).string(), 1 << 20, "tar").find("000000000.jpg"),
            std::string::npos);

  // Off a terminal: a plain line every 10% on stderr.
  r = run_command(deeptrain_cmd(fmt::format("pack --builtin mnist --data-dir {}/mnist --split test --limit 20 "
                                            "--reencode png --out {}", DEEPTRAIN_DATA_DIR, (dir.path / "m").string())));
  if (have_mnist()) {
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("deeptrain: pack: 10/20 images"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("deeptrain: pack: 20/20 images"), std::string::npos) << r.output;
  }
  // Bad settings: named, nothing written.
  for (const auto& [args, says] :
       {std::pair{"--reencode png --quality 50", "--quality 50 has no image to apply to"},
        std::pair{"--quality 50", "--quality 50 has no image to apply to"},
        std::pair{"--reencode gif", "--reencode"}, std::pair{"--resize 0", "--resize"},
        std::pair{"--reencode jpeg --quality 101", "--quality"}}) {
    const fs::path out = dir.path / "bad";
    r = run_command(deeptrain_cmd(fmt::format("pack --folder {} {} --out {}", img, args, out.string())));
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_NE(r.output.find(says), std::string::npos) << args << ": " << r.output;
    EXPECT_FALSE(fs::exists(out / "manifest.json")) << args;
  }
}
