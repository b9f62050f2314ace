// mpi_bench: what gradient synchronisation costs in data-parallel training of the book's
// DeepConvNet, and how much of it hides behind backward.
//
//   mpirun -np 2 build/mpi_bench [--threads 1] [--batch 100] [--steps 30] [--rounds 3]
//                                [--compression none,f16,bf16] [--json]
//
// 1. allreduce: the time of one allreduce of the whole gradient (123,552 floats, 0.49 MB; half
//    that in f16/bf16) through MpiCommunicator, ranks aligned by a barrier before each, median
//    over repetitions of the slowest rank's time.
// 2. train: training steps of the real Trainer on synthetic MNIST-shaped data, global batch
//    --batch, in two modes run alternately in --rounds rounds (so both see the same machine
//    load): "overlap" (100 KiB buckets, each reduced as soon as backward completes it) and
//    "after" (one allreduce after backward). For each: median step time and img/s; per step,
//    the time gradient allreduces were in flight (comm), the time the step waited for them after
//    backward had finished (exposed), and hidden = 1 - exposed / comm, the share of the
//    communication time that ran while backward was still computing.
//    "comm" includes waiting for a slower rank; the allreduce line above is the transfer alone.
//    The saving overlap brings is also visible directly: step(after) - step(overlap).
// One JSON line per measurement with --json (rank 0 prints).
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/backend/backend.h"
#include "core/net.h"
#include "core/optim/optimizer.h"
#include "core/random.h"
#include "core/threads.h"
#include "distributed/mpi_communicator.h"
#include "distributed/placement.h"
#include "distributed/trainer.h"

using namespace deeptrain;

namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at <= s.size()) {
    size_t c = s.find(',', at);
    if (c == std::string::npos) c = s.size();
    if (c > at) out.push_back(s.substr(at, c - at));
    at = c + 1;
  }
  return out;
}

WireCompression parse_wire(const std::string& s) {
  if (s == "f16") return WireCompression::f16;
  if (s == "bf16") return WireCompression::bf16;
  if (s == "none") return WireCompression::none;
  fail_input("--compression: none, f16 or bf16, got '{}'", s);
}

double max_over_ranks(Communicator& c, double v) {
  Tensor mine = Tensor::empty({1}, DType::f64), all = Tensor::empty({c.size()}, DType::f64);
  mine.data<double>()[0] = v;
  c.allgather(mine, all);
  double m = v;
  for (int r = 0; r < c.size(); ++r) m = std::max(m, all.data<double>()[r]);
  return m;
}

struct Mode {
  std::string name;
  GradientSyncOptions sync;
  std::unique_ptr<Net> net;
  std::unique_ptr<Optimizer> opt;
  std::unique_ptr<Trainer> trainer;
  std::vector<double> step_ms;
  double comm_s = 0, exposed_s = 0, backward_s = 0;
  int64_t steps = 0;
};

int run(int argc, char** argv) {
  int threads = 0, batch = 100, steps = 30, rounds = 3, warmup = 3, reps = 200;
  std::string compression = "none";
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) fail_input("{} needs a value", a);
      return argv[++i];
    };
    if (a == "--threads") threads = std::stoi(next());
    else if (a == "--batch") batch = std::stoi(next());
    else if (a == "--steps") steps = std::stoi(next());
    else if (a == "--rounds") rounds = std::stoi(next());
    else if (a == "--warmup") warmup = std::stoi(next());
    else if (a == "--reps") reps = std::stoi(next());
    else if (a == "--compression") compression = next();
    else if (a == "--json") json = true;
    else fail_input("unknown option {} (see the comment at the top of bench/mpi_bench.cpp)", a);
  }
  auto comm = make_world_communicator();
  Communicator& c = *comm;
  const int nthreads = set_cpu_threads(threads > 0 ? threads : default_threads(c));
  const bool speak = c.rank() == 0;
  proto::ModelConfig mc;
  mc.set_preset("deep_convnet");
  auto backend = make_backend("cpu");

  // ---- 1. allreduce of the whole gradient
  {
    Net net(mc, Shape{1, 28, 28}, 10, DType::f32);
    for (const std::string& w : split(compression)) {
      const WireCompression wc = parse_wire(w);
      const DType t = wc == WireCompression::f16 ? DType::f16
                      : wc == WireCompression::bf16 ? DType::bf16 : DType::f32;
      Tensor g = Tensor::zeros({net.num_params()}, t);
      std::vector<double> ms;
      for (int i = 0; i < reps + 10; ++i) {
        c.barrier();
        const double t0 = now_seconds();
        c.allreduce_sum(g, "bench allreduce");
        const double dt = (now_seconds() - t0) * 1e3;
        if (i >= 10) ms.push_back(max_over_ranks(c, dt));
      }
      if (speak) {
        if (json)
          std::printf("{\"bench\":\"allreduce\",\"ranks\":%d,\"wire\":\"%s\",\"bytes\":%zu,"
                      "\"ms_median\":%.4f}\n", c.size(), w.c_str(), g.nbytes(), median(ms));
        else
          std::printf("allreduce of the DeepConvNet gradient, %d ranks, %s: %zu bytes, median "
                      "%.3f ms\n", c.size(), w.c_str(), g.nbytes(), median(ms));
      }
    }
  }

  // ---- 2. training steps, overlap vs after backward, alternating
  const int64_t pool = 10 * batch;
  data::Dataset d;
  d.name = "synthetic";
  d.num_classes = 10;
  d.images = Tensor::empty({pool, 1, 28, 28}, DType::u8);
  d.labels = Tensor::empty({pool}, DType::i32);
  const RandomStream rs{1, 0xBE};
  for (int64_t i = 0; i < d.images.numel(); ++i) d.images.data<uint8_t>()[i] = uint8_t(rs.block(i)[0]);
  for (int64_t i = 0; i < pool; ++i) d.labels.data<int32_t>()[i] = int32_t(rs.block(i, 1)[0] % 10);
  std::vector<Mode> modes;
  for (const std::string& w : split(compression))
    for (bool overlap : {true, false}) {
      Mode m;
      m.name = std::string(overlap ? "overlap" : "after") + (w == "none" ? "" : "+" + w);
      m.sync.overlap = overlap;
      m.sync.compression = parse_wire(w);
      m.net = std::make_unique<Net>(mc, Shape{1, 28, 28}, 10, DType::f32);
      m.net->init_params(1);
      proto::OptimizerConfig oc;
      oc.set_type(proto::ADAM);
      oc.set_lr(1e-3f);
      m.opt = make_optimizer(oc, m.net->num_params());
      TrainerOptions to;
      to.batch_size = batch;
      to.seed = 1;
      to.sync = m.sync;
      m.trainer = std::make_unique<Trainer>(to, *m.net, *backend, *m.opt, c);
      modes.push_back(std::move(m));
    }
  std::vector<int64_t> ids(batch);
  int64_t next_batch = 0;
  for (int r = 0; r < rounds; ++r)
    for (Mode& m : modes) {
      for (int i = 0; i < warmup + steps; ++i) {
        for (int64_t j = 0; j < batch; ++j) ids[j] = (next_batch * batch + j) % pool;
        ++next_batch;
        if (i == warmup) m.trainer->reducer().reset_stats();
        const double t0 = now_seconds();
        m.trainer->train_step(d, ids.data(), batch);
        if (i >= warmup) m.step_ms.push_back((now_seconds() - t0) * 1e3);
      }
      const ReducerStats& s = m.trainer->reducer().stats();
      m.comm_s += s.comm_seconds;
      m.exposed_s += s.exposed_seconds;
      m.backward_s += s.backward_seconds;
      m.steps += s.steps;
    }
  for (Mode& m : modes) {
    const double step = median(m.step_ms);
    const double n = double(std::max<int64_t>(1, m.steps));
    const double comm_ms = m.comm_s / n * 1e3, exposed_ms = m.exposed_s / n * 1e3;
    const double hidden = m.comm_s > 0 ? std::max(0.0, 1.0 - m.exposed_s / m.comm_s) : 0.0;
    if (!speak) continue;
    if (json)
      std::printf("{\"bench\":\"train\",\"ranks\":%d,\"threads\":%d,\"batch\":%d,\"mode\":\"%s\","
                  "\"buckets\":%zu,\"step_ms_median\":%.3f,\"images_per_sec\":%.1f,"
                  "\"comm_ms_per_step\":%.3f,\"exposed_ms_per_step\":%.3f,\"backward_ms_per_step\":%.3f,"
                  "\"hidden_fraction\":%.3f,\"steps\":%ld}\n",
                  c.size(), nthreads, batch, m.name.c_str(), m.trainer->reducer().buckets().size(),
                  step, batch * 1000.0 / step, comm_ms, exposed_ms, m.backward_s / n * 1e3, hidden,
                  long(m.steps));
    else
      std::printf("train %-13s %d ranks x %d threads, batch %d, %zu bucket(s): step %.2f ms "
                  "(%.0f img/s); gradient allreduce in flight %.3f ms/step, exposed after "
                  "backward %.3f ms/step, hidden %.0f%%\n",
                  m.name.c_str(), c.size(), nthreads, batch, m.trainer->reducer().buckets().size(),
                  step, batch * 1000.0 / step, comm_ms, exposed_ms, 100 * hidden);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::unique_ptr<MpiRuntime> mpi;
  if (launched_under_mpi()) mpi = std::make_unique<MpiRuntime>(&argc, &argv);
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpi_bench: error: %s\n", e.what());
    if (mpi && mpi->world_size() > 1) abort_job(1);
    return 1;
  }
}
