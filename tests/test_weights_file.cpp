// The one reader of weights files (io::read_weights_file, core/io/weights.h), behind both
// load_weights and read_weight_tensors (transfer.init_from): what save_weights wrote comes back
// checked, and a file either reader must refuse is refused by both, naming the file.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include "core/io/read_file.h"
#include "core/io/transfer.h"
#include "core/io/weights.h"
#include "error_util.h"
#include "proto/deeptrain.pb.h"

using namespace deeptrain;
namespace fs = std::filesystem;

namespace {

Net make_net(uint64_t seed) {
  proto::ModelConfig mc;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(R"(
    layer { name: "conv1" conv { out_channels: 4 kernel: 3 pad: 1 } }
    layer { name: "bn1" batch_norm {} }
    layer { name: "relu1" relu {} }
    layer { name: "fc" affine { out_features: 10 } })", &mc));
  Net net(mc, {1, 6, 6}, 10, DType::f32);
  net.init_params(seed);
  return net;
}

struct Saved {
  fs::path dir = fs::temp_directory_path() / ("deeptrain_weights_file_" + std::to_string(getpid()));
  std::string path = (dir / "w.dtw").string();
  Net net = make_net(3);
  Saved() {
    fs::create_directories(dir);
    io::save_weights(path, net);
  }
  ~Saved() { fs::remove_all(dir); }
  // Rewrites the file after `edit` changed its message.
  void rewrite(const std::function<void(proto::WeightsFile&)>& edit) const {
    proto::WeightsFile f;
    ASSERT_TRUE(f.ParseFromString(io::read_file(path)));
    edit(f);
    std::ofstream(path, std::ios::binary | std::ios::trunc) << f.SerializeAsString();
  }
};

// Both readers' messages for the file.
std::vector<std::string> errors_of_both(const std::string& path) {
  Net target = make_net(4);
  return {error_of([&] { io::load_weights(path, target); }),
          error_of([&] { io::read_weight_tensors(path); })};
}

}  // namespace

TEST(WeightsFile, ReadsWhatSaveWeightsWrote) {
  Saved s;
  const io::WeightsFileContents c = io::read_weights_file(s.path);
  ASSERT_TRUE(c.model.has_value());
  EXPECT_EQ(c.model->SerializeAsString(), s.net.config().SerializeAsString());
  // Every parameter and BatchNorm's two running statistics.
  EXPECT_EQ(c.tensors.size(), s.net.param_entries().size() + 2);
  const Tensor w = s.net.param_view(s.net.param("conv1.W"));
  const Tensor& r = c.tensors.at("conv1.W");
  ASSERT_EQ(r.shape(), w.shape());
  EXPECT_EQ(std::memcmp(r.raw(), w.raw(), w.nbytes()), 0);
  EXPECT_EQ(c.tensors.at("bn1.running_var").dtype(), DType::f64);
  Net target = make_net(4);
  io::load_weights(s.path, target);
  const Tensor t = target.param_view(target.param("conv1.W"));
  EXPECT_EQ(std::memcmp(t.raw(), w.raw(), w.nbytes()), 0);
}

// read_weight_tensors once read any format version; load_weights refused other versions.
TEST(WeightsFile, AnUnsupportedFormatVersionIsRefusedByBothReaders) {
  Saved s;
  s.rewrite([](proto::WeightsFile& f) { f.set_format_version(2); });
  for (const std::string& e : errors_of_both(s.path))
    EXPECT_CONTAINS(e, s.path + ": format_version 2 is not supported (this build reads 1)");
}

// load_weights once took any dtype but f64 for f32; read_weight_tensors refused it.
TEST(WeightsFile, ATensorNeitherF32NorF64IsRefusedByBothReaders) {
  Saved s;
  s.rewrite([](proto::WeightsFile& f) {
    for (proto::TensorProto& t : *f.mutable_tensor())
      if (t.name() == "conv1.W") t.set_dtype(proto::U8);
  });
  for (const std::string& e : errors_of_both(s.path))
    EXPECT_CONTAINS(e, s.path + ": tensor 'conv1.W' is not f32 or f64");
}

TEST(WeightsFile, ACorruptTensorOrAMissingFileIsNamed) {
  Saved s;
  s.rewrite([](proto::WeightsFile& f) {
    std::string* d = f.mutable_tensor(0)->mutable_data();
    (*d)[0] ^= 1;
  });
  for (const std::string& e : errors_of_both(s.path)) EXPECT_CONTAINS(e, "fails its CRC-32 check");
  const std::string missing = (s.dir / "none.dtw").string();
  for (const std::string& e : errors_of_both(missing)) EXPECT_CONTAINS(e, missing + ": cannot open");
}
