// Exact mode (docs/exact_mode.md): the model after an epoch is the same to the last bit on any
// number of ranks and threads. ctest runs this binary through mpiexec -n 2, -n 3 and -n 4; every
// rank trains the same model (on the reference kernels, which exact mode uses) three ways — with the job's ranks at 1 and at 2 threads, and alone
// (SingleProcessCommunicator, 1 thread) on the whole global batch — and compares parameters,
// BatchNorm's running statistics, Adam's moments, the checkpoint's tensor file and the trained
// model's evaluation (loss, correct count, every prediction) with ==.
//
// The model has everything whose arithmetic could depend on the batch split: convolutions and
// affine layers (GEMMs over the batch), synchronised BatchNorm (statistics and gradients summed
// over the global batch), dropout (masks keyed by global sample), a residual add, max pooling,
// and augmentation of the inputs. 242 synthetic samples, global batch 30 in micro-shards of 4:
// 8 micro-shards per step (the last of 2 samples), so 2, 3 and 4 ranks split them unevenly, and
// the last step's 2 samples form one micro-shard, leaving every rank but the first empty.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

#include <google/protobuf/text_format.h>

#include "core/backend/backend.h"
#include "core/io/checkpoint.h"
#include "core/net.h"
#include "core/optim/optimizer.h"
#include "core/random.h"
#include "core/threads.h"
#include "core/data/sampler.h"
#include <cmath>
#include <unistd.h>
#include "distributed/mpi_communicator.h"
#include "distributed/ordered_sum.h"
#include "distributed/trainer.h"
#include "synthetic_squares.h"

using namespace deeptrain;

namespace {

const char* kModel = R"(
  layer { name: "conv1" conv { out_channels: 8 kernel: 3 pad: 1 } }
  layer { name: "bn1" batch_norm { sync: true } }
  layer { name: "relu1" relu {} }
  layer { name: "conv2" conv { out_channels: 8 kernel: 3 pad: 1 } }
  layer { name: "bn2" batch_norm { sync: true } }
  layer { name: "res" add {} input: "relu1" input: "bn2" }
  layer { name: "relu2" relu {} }
  layer { name: "pool" max_pool {} }
  layer { name: "fc1" affine { out_features: 32 } }
  layer { name: "relu3" relu {} }
  layer { name: "drop" dropout { ratio: 0.3 } }
  layer { name: "fc2" affine { out_features: 10 } })";

data::Dataset synthetic(int64_t n) {
  return testing_util::synthetic_squares(n, {4242, 0xE4AC, 180, 76, 60});
}

struct Run {
  std::vector<float> params;
  std::vector<double> bn_state;      // every BatchNorm's running mean and variance
  std::vector<float> optim_state;    // Adam's m and v
  std::vector<double> losses;        // per step
  std::string tensors_file;          // the checkpoint's tensors.pb, byte for byte
  double eval_loss = 0;              // evaluation of the trained model (running statistics)
  int64_t eval_correct = 0;
  std::vector<int32_t> predictions;
};

template <class T>
void append(std::vector<T>& out, const Tensor& t) {
  out.insert(out.end(), t.data<T>(), t.data<T>() + t.numel());
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// One epoch in exact mode on comm's ranks with `threads` threads each; the checkpoint goes to
// dir (rank 0 writes it).
Run train_exact(Communicator& comm, int threads, const std::string& backend_name,
                const std::string& dir) {
  set_cpu_threads(threads);
  proto::ModelConfig m;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(kModel, &m));
  Net net(m, Shape{1, 28, 28}, 10, DType::f32);
  net.init_params(11);
  auto backend = make_backend(backend_name);
  proto::OptimizerConfig oc;
  oc.set_type(proto::ADAM);
  oc.set_lr(3e-3f);
  auto opt = make_optimizer(oc, net.num_params());
  TrainerOptions to;
  to.batch_size = 30;
  to.seed = 5;
  to.lr = oc.lr();
  to.micro_batch = 4;
  to.eval_batch_size = 50;
  to.augment.set_enabled(true);
  to.augment.set_rotation_deg(10);
  to.augment.set_shift_px(2);
  Trainer tr(to, net, *backend, *opt, comm);
  Run r;
  const data::Dataset d = synthetic(242);
  tr.train_epoch(d, 0, nullptr, [&](int64_t, int64_t, const StepMetrics& s) {
    r.losses.push_back(s.loss_sum);
  });
  const EvalReport ev = tr.evaluate(d, &r.predictions);
  r.eval_loss = ev.loss;
  r.eval_correct = ev.correct;
  append<float>(r.params, net.params());
  for (auto& [name, t] : net.state()) append<double>(r.bn_state, *t);
  io::TrainingState st = io::capture(net, *opt);
  for (const io::NamedTensor& t : st.tensors)
    if (t.name.rfind("optim/", 0) == 0) append<float>(r.optim_state, t.tensor);
  st.global_step = tr.global_step();
  st.epoch = 1;
  st.steps_per_epoch = tr.global_step();
  st.seed = to.seed;
  if (comm.rank() == 0) {
    const std::string path = io::save_checkpoint(dir, st, 0);
    r.tensors_file = read_file(path + "/tensors.pb");
  }
  comm.barrier("checkpoint saved");
  return r;
}

std::string temp_dir(const std::string& tag) {
  const auto p = std::filesystem::temp_directory_path() /
                 ("deeptrain_exact_" + tag + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  return p.string();
}

void expect_identical(const Run& a, const Run& b, const std::string& what) {
  EXPECT_EQ(a.losses, b.losses) << what;
  ASSERT_EQ(a.params.size(), b.params.size());
  EXPECT_EQ(0, std::memcmp(a.params.data(), b.params.data(), a.params.size() * sizeof(float)))
      << what << ": parameters";
  EXPECT_EQ(a.bn_state, b.bn_state) << what << ": running statistics";
  ASSERT_EQ(a.optim_state.size(), b.optim_state.size());
  EXPECT_EQ(0, std::memcmp(a.optim_state.data(), b.optim_state.data(),
                           a.optim_state.size() * sizeof(float)))
      << what << ": optimizer state";
  EXPECT_EQ(a.eval_loss, b.eval_loss) << what << ": evaluation loss";
  EXPECT_EQ(a.eval_correct, b.eval_correct) << what << ": evaluation";
  EXPECT_EQ(a.predictions, b.predictions) << what << ": predictions";
}

void expect_exact_on_every_rank_count(const std::string& backend) {
  MpiCommunicator c;
  SingleProcessCommunicator one;
  const Run ref = train_exact(one, 1, backend, temp_dir("one_" + std::to_string(c.rank())));
  ASSERT_EQ(ref.losses.size(), 9u);
  // It trains: the last steps' loss is below the first's.
  EXPECT_LT(ref.losses.back() / 2, ref.losses.front() / 30);
  for (int threads : {1, 2}) {
    const std::string dir = temp_dir(fmt::format("np{}_t{}", c.size(), threads));
    const Run many = train_exact(c, threads, backend, dir);
    const std::string what =
        fmt::format("{}: {} ranks x {} threads vs 1 rank x 1 thread", backend, c.size(), threads);
    expect_identical(many, ref, what);
    if (c.rank() == 0) {
      ASSERT_FALSE(many.tensors_file.empty());
      EXPECT_TRUE(many.tensors_file == ref.tensors_file) << what << ": checkpoint tensors.pb";
      if (!::testing::Test::HasFailure())
        std::printf("[figures] exact mode, %s: %d ranks x %d threads: parameters, optimizer state, "
                  "running statistics and tensors.pb (%zu bytes) identical to 1 rank x 1 thread\n",
                  backend.c_str(), c.size(), threads, many.tensors_file.size());
      std::filesystem::remove_all(dir);
    }
  }
}

}  // namespace

TEST(MpiExact, ReferenceBackendIsBitIdenticalOnAnyRankAndThreadCount) {
  expect_exact_on_every_rank_count("cpu-ref");
}


// The ordered sum itself: rows held by different ranks, summed in global order, equal one
// process's sequential sum bit for bit, for f32 and f64, with ranks holding no row.
TEST(MpiExact, OrderedSumEqualsTheSequentialSum) {
  MpiCommunicator c;
  for (int64_t total : {0, 1, 3, 7}) {
    const int64_t L = 5;
    const RandomStream rs{99, uint64_t(total)};
    std::vector<double> all(size_t(total * L));
    for (size_t i = 0; i < all.size(); ++i)  // mixed magnitudes: the order matters
      all[i] = (double(rs.block(i)[0]) / 4294967296.0 - 0.5) * std::pow(10.0, double(i % 7));
    const ShardRange mine = shard_of_batch(total, c.rank(), c.size());
    Tensor parts = Tensor::empty({mine.end - mine.begin, L}, DType::f64);
    std::copy(all.begin() + mine.begin * L, all.begin() + mine.end * L, parts.data<double>());
    Tensor out = Tensor::empty({L}, DType::f64);
    ordered_sum(c, total, parts, out);
    Tensor parts32 = parts.to(DType::f32), out32 = Tensor::empty({L}, DType::f32);
    ordered_sum(c, total, parts32, out32);
    for (int64_t l = 0; l < L; ++l) {
      double s = 0;
      float s32 = 0;
      for (int64_t k = 0; k < total; ++k) {
        s += all[size_t(k * L + l)];
        s32 += float(all[size_t(k * L + l)]);
      }
      EXPECT_EQ(out.data<double>()[l], s) << "total " << total << ", element " << l;
      EXPECT_EQ(out32.data<float>()[l], s32) << "total " << total << ", element " << l;
    }
  }
}
