// `deeptrain bench`: median step time of training or inference, one JSON line, for the
// side-by-side comparison in bench/train_throughput.sh.
#include <algorithm>

#include "app/commands.h"
#include "app/output.h"
#include "app/session.h"
#include "core/data/augment.h"
#include "core/data/sampler.h"
#include "core/optim/optimizer.h"
#include "core/random.h"
#include "core/step_profile.h"
#include "distributed/trainer.h"

using deeptrain::data::Dataset;

namespace deeptrain::app {

void add_bench_command(CLI::App& cli, BenchOptionsCli& o) {
  CLI::App* sub = cli.add_subcommand("bench", "measure training or inference throughput");
  sub->add_option("--config", o.config, "experiment config (default: the book's DeepConvNet)")
      ->check(CLI::ExistingFile);
  sub->add_option("--mode", o.mode,
                  "train, infer, augment (a batch gathered with the config's data.augment "
                  "vs without, alternating), or data (a packed set's training batches read, "
                  "decoded and transformed by its data threads, as training prefetches them)")
      ->check(CLI::IsMember({"train", "infer", "augment", "data"}));
  sub->add_option("--backend", o.backend,
                  fmt::format("{} (default: the config's)", backend_words()));
  sub->add_flag("--exact", o.exact,
                "exact mode (distributed.exact; docs/exact_mode.md), on the reference kernels");
  sub->add_option("--math", o.math, fmt::format("math: {} (default: the config's; the CPU takes fp32 and bf16)", math_words()));
  sub->add_option("--conv-algorithm", o.conv_algorithm,
                  fmt::format("{} (default: the config's)", conv_algorithm_words()));
  sub->add_option("--device-transport", o.device_transport,
                  fmt::format("{} (default: the config's)", device_transport_words()));
  sub->add_option("--threads", o.threads, "threads (0 = all cores; default: the config's)")
      ->each([&o](const std::string&) { o.threads_given = true; });
  sub->add_option("--steps", o.steps, "timed steps")->check(positive_integer());
  sub->add_option("--warmup", o.warmup, "untimed steps first")->check(nonnegative_integer());
  sub->add_option("--batch", o.batch, "batch size (default: the config's)")->check(positive_integer());
  sub->add_flag("--json", o.json, "print one JSON line");
  sub->add_flag("--no-augment", o.no_augment,
                "train without the config's data.augment (a comparison with a peer that does "
                "not augment)");
  sub->add_option("--clock", o.clock,
                  "wall (default), or cpu: the process's CPU time, all threads together; on a "
                  "machine shared with other work, --threads 1 --clock cpu measures what a step "
                  "costs rather than how long it waited for a core")
      ->check(CLI::IsMember({"wall", "cpu"}));
  sub->add_flag("--profile", o.profile,
                "where a step's time goes: median ms of each phase (the batch, every layer's "
                "forward and backward, the loss, the reduction, the optimizer); each phase waits "
                "for the device, so the step is slower than without");
}

namespace {

// A batch's targets as training gathers them: a label, a label map, or max_boxes boxes a sample.
Tensor batch_targets(const proto::ExperimentConfig& cfg, const Dataset& d, int64_t batch, const Shape& in) {
  if (d.label_maps.raw()) return Tensor::empty({batch, in[1], in[2]}, DType::i32);
  if (!d.boxes.empty()) return Tensor::empty({batch, cfg.model().loss().detection().max_boxes(), 5}, DType::i32);
  return Tensor::empty({batch}, DType::i32);
}

// The cost augmentation adds to a training step: one global batch gathered with and without
// the config's transforms, alternately (so both see the same load), o.steps times each.
int bench_augment(const BenchOptionsCli& o, const proto::ExperimentConfig& cfg, Session& s,
                  const Dataset& d) {
  if (!cfg.data().augment().enabled())
    fail_input("bench --mode augment: the config has no data.augment {{ enabled: true }}");
  const int64_t batch = cfg.schedule().batch_size(), pool = d.labels.numel();
  const Shape in = s.net->input_shape();
  Tensor x = Tensor::empty({batch, in[0], in[1], in[2]}, DType::f32);
  Tensor t = batch_targets(cfg, d, batch, in);
  std::vector<int64_t> ids(batch);
  std::vector<double> plain, augmented;
  proto::AugmentConfig off;
  for (int i = 0; i < o.warmup + o.steps; ++i) {
    for (int64_t j = 0; j < batch; ++j) ids[j] = (i * batch + j) % pool;
    for (const bool aug : {false, true}) {
      const auto t0 = std::chrono::steady_clock::now();
      data::gather_batch_augmented(d, ids.data(), batch, i, cfg.run().seed(),
                                   aug ? cfg.data().augment() : off, x, t);
      const double dt =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (i >= o.warmup) (aug ? augmented : plain).push_back(dt);
    }
  }
  std::sort(plain.begin(), plain.end());
  std::sort(augmented.begin(), augmented.end());
  if (!s.speaks()) return 0;
  // Always JSON (bench/train_throughput.sh reads it).
  Output(true).event({{"impl", "deeptrain"},
                      {"mode", "augment"},
                      {"threads", s.threads},
                      {"batch", batch},
                      {"steps", o.steps},
                      {"plain_ms_median", rounded(plain[plain.size() / 2], 4)},
                      {"augment_ms_median", rounded(augmented[augmented.size() / 2], 4)},
                      {"plain_ms_min", rounded(plain.front(), 4)},
                      {"augment_ms_min", rounded(augmented.front(), 4)}},
                     "");
  return 0;
}

// Decode + transform throughput of the config's packed data set (data.dataset: "shards"): the
// training batches of epoch 0 in the sampler's order, each announced data.prefetch_batches
// ahead as the trainer does, gathered as training gathers them (data.transform, data.augment,
// normalisation). Images per second over the timed batches, and per data thread.
int bench_data(const BenchOptionsCli& o, const proto::ExperimentConfig& cfg) {
  if (cfg.data().dataset() != "shards")
    fail_input("bench --mode data: the config's data.dataset is '{}'; it measures a pack "
               "(data.dataset: \"shards\")", cfg.data().dataset());
  Session s = open_session(cfg, true);
  const Dataset& d = s.data.train;
  const int64_t batch = cfg.schedule().batch_size(), n = d.size();
  const int64_t steps = std::min<int64_t>(o.warmup + o.steps, n / batch);
  if (steps <= o.warmup)
    fail_input("bench --mode data: {} samples make {} batches of {}: fewer than --warmup {} + 1",
               n, n / batch, batch, o.warmup);
  const std::vector<int64_t> order = epoch_permutation(cfg.run().seed(), 0, n);
  const Shape in = s.net->input_shape();
  Tensor x = Tensor::empty({batch, in[0], in[1], in[2]}, DType::f32);
  Tensor t = batch_targets(cfg, d, batch, in);
  const int depth = d.source->prefetch_depth();
  std::chrono::steady_clock::time_point t0;
  for (int64_t i = 0; i < steps; ++i) {
    if (i == o.warmup) t0 = std::chrono::steady_clock::now();
    for (int64_t a = i + 1; a <= std::min(steps - 1, i + depth) && (i == 0 || a == i + depth); ++a)
      d.source->prefetch(order.data() + a * batch, batch, 0);
    data::gather_batch_augmented(d, order.data() + i * batch, batch, 0, cfg.run().seed(),
                                 cfg.data().augment(), x, t);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double ips = double((steps - o.warmup) * batch) / seconds;
  const int threads = std::max(1, cfg.data().data_threads());
  if (!s.speaks()) return 0;
  Output(o.json).event({{"impl", "deeptrain"},
                        {"mode", "data"},
                        {"data_threads", cfg.data().data_threads()},
                        {"batch", batch},
                        {"steps", steps - o.warmup},
                        {"input", in.str()},
                        {"images_per_sec", rounded(ips, 1)},
                        {"images_per_sec_per_thread", rounded(ips / threads, 1)},
                        {"peak_rss_mb", rounded(peak_rss_mb(), 1)}},
                       fmt::format("{} data thread{}, batch {}, {} batches to {}: {:.1f} img/s "
                                   "({:.1f} per data thread)", cfg.data().data_threads(),
                                   threads == 1 ? "" : "s", batch, steps - o.warmup, in.str(),
                                   ips, ips / threads));
  return 0;
}

// The phases' medians, largest first, with their share of the phases' total.
int print_profile(const BenchOptionsCli& o, const Session& s, const StepProfile& p, int64_t batch,
                  double step_median) {
  std::vector<StepProfile::Row> rows = p.table();
  double total = 0;
  for (const auto& r : rows) total += r.median_ms;
  if (o.json) {
    Json phases = Json::array();
    for (const auto& r : rows) phases.push_back({{"phase", r.phase}, {"ms", rounded(r.median_ms, 4)}});
    Output(true).event({{"impl", "deeptrain"},
                        {"backend", s.backend->name()},
                        {"mode", o.mode},
                        {"batch", batch},
                        {"steps", p.steps()},
                        {"profile", true},
                        {"clock", o.clock},
                        {"step_ms_median", rounded(step_median, 3)},
                        {"phases_ms_total", rounded(total, 3)},
                        {"phases", phases}},
                       "");
    return 0;
  }
  std::stable_sort(rows.begin(), rows.end(),
                   [](const auto& a, const auto& b) { return a.median_ms > b.median_ms; });
  Output out(false);
  out.text(fmt::format("{} {}, batch {}, {} steps, each phase waited for: median step {:.3f} ms{}",
                       s.backend->name(), o.mode, batch, p.steps(), step_median,
                       o.clock == "cpu" ? " of CPU time" : ""));
  out.text(fmt::format("{:<28} {:>10} {:>7}", "phase", "median ms", "share"));
  for (const auto& r : rows)
    out.text(fmt::format("{:<28} {:10.4f} {:6.1f}%", r.phase, r.median_ms,
                         total > 0 ? 100.0 * r.median_ms / total : 0.0));
  return 0;
}

}  // namespace

int run_bench(const BenchOptionsCli& o) {
  proto::ExperimentConfig cfg;
  ConfigOverrides ov;
  if (o.threads_given) ov.threads = o.threads;
  if (!o.backend.empty()) ov.backend = o.backend;
  if (o.exact) ov.exact = true;
  if (!o.math.empty()) ov.math = o.math;
  if (!o.conv_algorithm.empty()) ov.conv_algorithm = o.conv_algorithm;
  if (!o.device_transport.empty()) ov.device_transport = o.device_transport;
  if (o.batch > 0) ov.batch_size = o.batch;
  cfg = o.config.empty() ? parse_config("", "(built-in deep_convnet)", ov)
                         : load_config(o.config, ov);
  if (o.mode == "data") return bench_data(o, cfg);
  Session s = open_session(cfg, false);
  // Throughput does not depend on pixel values: synthetic MNIST-shaped samples.
  const int64_t batch = cfg.schedule().batch_size(), pool = 10 * batch;
  Dataset d;
  d.name = "synthetic";
  d.num_classes = s.net->num_classes();
  Shape in = s.net->input_shape();
  d.images = Tensor::empty({pool, in[0], in[1], in[2]}, DType::u8);
  d.labels = Tensor::empty({pool}, DType::i32);
  const RandomStream rs{cfg.run().seed(), 0xBE};
  for (int64_t i = 0; i < d.images.numel(); ++i) d.images.data<uint8_t>()[i] = uint8_t(rs.block(i)[0]);
  for (int64_t i = 0; i < pool; ++i) d.labels.data<int32_t>()[i] = int32_t(rs.block(i, 1)[0] % 10);
  if (s.net->config().loss().type() == proto::LossConfig::PIXEL_SOFTMAX_CE) {  // label maps
    d.label_maps = Tensor::empty({pool, in[1], in[2]}, DType::u8);
    for (int64_t i = 0; i < d.label_maps.numel(); ++i)
      d.label_maps.data<uint8_t>()[i] = uint8_t(rs.block(i, 2)[0] % uint32_t(d.num_classes));
  }
  if (s.net->config().loss().type() == proto::LossConfig::DETECTION) {  // a box a sample
    d.boxes.resize(size_t(pool));
    for (int64_t i = 0; i < pool; ++i) {
      const auto r = rs.block(i, 3);
      const int32_t x0 = int32_t(r[1] % uint32_t(in[2] / 2)), y0 = int32_t(r[2] % uint32_t(in[1] / 2));
      d.boxes[size_t(i)] = {{int32_t(r[0] % uint32_t(d.num_classes)), x0, y0,
                             x0 + int32_t(in[2] / 2), y0 + int32_t(in[1] / 2)}};
    }
  }

  if (o.mode == "augment") return bench_augment(o, cfg, s, d);
  auto optimizer = make_optimizer(cfg.optimizer(), s.net->num_params(), s.backend.get());
  TrainerOptions to = trainer_options(cfg);  // augmentation included: its cost is part of a step
  if (o.no_augment) to.augment.set_enabled(false);
  to.eval_batch_size = batch;
  const ProfileClock clock = o.clock == "cpu" ? ProfileClock::cpu : ProfileClock::wall;
  StepProfile profile(clock);
  if (o.profile) to.profile = &profile;
  Trainer trainer(to, *s.net, *s.backend, *optimizer, *s.comm);
  Dataset slice = d;  // inference evaluates one batch-sized slice per step
  slice.images = d.images.slice_flat(0, {batch, in[0], in[1], in[2]});
  slice.labels = d.labels.slice_flat(0, {batch});
  std::vector<int64_t> ids(batch);
  std::vector<double> ms;
  for (int i = 0; i < o.warmup + o.steps; ++i) {
    for (int64_t j = 0; j < batch; ++j) ids[j] = (i * batch + j) % pool;
    if (o.profile) profile.begin_step(*s.backend);
    const double t0 = clock_ms(clock);
    if (o.mode == "train") trainer.train_step(d, ids.data(), batch);
    else trainer.evaluate(slice);
    s.backend->synchronize();  // a GPU's queued work belongs to this step
    const double dt = clock_ms(clock) - t0;
    if (i >= o.warmup) {
      ms.push_back(dt);
      if (o.profile) profile.end_step();
    }
  }
  std::sort(ms.begin(), ms.end());
  // Also reported: ms.front(), the fastest step, the one least disturbed by other processes
  // on a shared machine.
  const double median = ms[ms.size() / 2];
  const double ips = double(batch) * 1000.0 / median;
  if (!s.speaks()) return 0;  // under mpirun, rank 0 reports
  if (o.profile) return print_profile(o, s, profile, batch, median);
  Output(o.json).event(
      {{"impl", "deeptrain"},
       {"backend", s.backend->name()},
       {"math", math_word(cfg.run().math())},
       {"clock", o.clock},
       {"threads", s.threads},
       {"params", s.net->num_params()},
       {"mode", o.mode},
       {"batch", batch},
       {"steps", o.steps},
       {"images_per_sec", rounded(ips, 1)},
       {"step_ms_median", rounded(median, 3)},
       {"step_ms_min", rounded(ms.front(), 3)},
       {"peak_rss_mb", rounded(peak_rss_mb(), 1)},
       {"augment", to.augment.enabled()}},
      fmt::format("{} {}{}, batch {}, {} threads, {}: {:.1f} img/s (median step {:.2f} ms{}), "
                  "peak RSS {:.0f} MB",
                  s.backend->name(), o.mode,
                  to.augment.enabled() && o.mode == "train" ? " with augmentation" : "", batch,
                  s.threads, math_word(cfg.run().math()), ips, median, o.clock == "cpu" ? " of CPU time" : "", peak_rss_mb()));
  return 0;
}

}  // namespace deeptrain::app
