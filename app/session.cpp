#include "app/session.h"

#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "core/data/augment.h"
#include "core/data/cifar.h"
#include "core/data/mnist_scenes.h"
#include "core/data/shard_reader.h"
#include "core/threads.h"
#include "distributed/consistency.h"
#include "distributed/host_staged_communicator.h"
#include "distributed/mpi_communicator.h"
#ifdef DEEPTRAIN_HAVE_CUDA
#include "distributed/nccl_communicator.h"
#endif
#include "distributed/placement.h"

namespace deeptrain::app {
namespace {

GradientSyncOptions gradient_sync_options(const proto::DistributedConfig& d) {
  GradientSyncOptions o;
  o.bucket_bytes = int64_t(double(d.bucket_mb()) * 1024.0 * 1024.0);
  o.compression = d.compression() == proto::COMPRESSION_FP16   ? WireCompression::f16
                  : d.compression() == proto::COMPRESSION_BF16 ? WireCompression::bf16
                                                   : WireCompression::none;
  o.overlap = !d.reduce_after_backward();
  return o;
}

BackendOptions backend_options(const proto::RunConfig& r) {
  BackendOptions o;
  o.math = math_mode(r.math());
  o.conv = r.conv_algorithm() == proto::CONV_WINOGRAD ? ConvAlgo::winograd : ConvAlgo::direct;
  o.device = r.has_gpu() ? r.gpu() : -1;
  return o;
}

// A config that does not fit its data is the user's input error, found before any run
// directory exists, not an op's assertion mid-run.
void check_data_fits_model(const data::DatasetSplit& d, const Shape& input, int classes,
                           int ignore_label) {
  for (const data::Dataset* set : {&d.train, &d.test}) {
    const Shape per_sample = set->sample_shape();
    if (per_sample != input)
      fail_input("model.input: the model takes {} per sample, data set '{}' has {} (set "
                 "model.input to match, or leave it unset)", input.str(), set->name,
                 per_sample.str());
    const int32_t* t = set->labels.data<int32_t>();
    for (int64_t i = 0; i < set->labels.numel(); ++i)
      if (t[i] < 0 || t[i] >= classes)
        fail_input("model.num_classes: {}, but sample {} of data set '{}' has label {} (set "
                   "model.num_classes to the data's class count, or leave it unset)", classes, i,
                   set->name, t[i]);
    if (!set->label_maps.raw()) continue;
    // A label map's values are classes or the loss's ignore label.
    const uint8_t* m = set->label_maps.data<uint8_t>();
    for (int64_t i = 0; i < set->label_maps.numel(); ++i)
      if (m[i] >= classes && m[i] != ignore_label)
        fail_input("model.num_classes: {}, but sample {} of data set '{}' has label {} at pixel "
                   "{} (not a class, nor the ignore label {})", classes,
                   i / (input[1] * input[2]), set->name, int(m[i]), i % (input[1] * input[2]),
                   ignore_label);
  }
}

}  // namespace

Session open_session(const proto::ExperimentConfig& cfg, bool load_data) {
  Session s;
  s.comm = make_world_communicator();
  s.cfg = cfg;
  const auto& dist = cfg.distributed();
  if (s.comm->size() > 1) {
    // The watchdog guards every collective from here on: a rank that stops (SIGSTOP, a cut
    // link) ends the job with a message instead of a hang.
    WatchdogOptions w;
    w.step_timeout_s = std::max(0.0f, dist.step_timeout_s());
    w.collective_timeout_s = std::max(0.0f, dist.collective_timeout_s());
    s.watchdog = std::make_unique<Watchdog>(w, s.comm->where(), [](const std::string& msg) {
      std::fflush(stdout);
      std::fprintf(stderr, "%s\n", msg.c_str());
      abort_job(1);
    });
    static_cast<MpiCommunicator&>(*s.comm).set_watchdog(s.watchdog.get());
  }
  s.comm->set_gradient_sync(gradient_sync_options(dist));
  // run.threads = 0: this rank's share of its host's cores.
  s.threads = set_cpu_threads(cfg.run().threads() > 0 ? cfg.run().threads() : default_threads(*s.comm),
                              cfg.run().flush_denormals());
  // More threads than cores to run on (run.threads beyond the CPU affinity, or mpirun binding a
  // rank to one core) only makes every step slower: say so, with what to do.
  if (const int cores = affinity_cores(); s.threads > cores)
    std::fprintf(stderr,
                 "deeptrain: warning: %s: %d threads on the %d core%s this process may run on (its "
                 "CPU affinity): oversubscribed, every step slower; use run.threads: 0 (the "
                 "affinity's share) or fewer threads%s\n",
                 s.comm->where().c_str(), s.threads, cores, cores == 1 ? "" : "s",
                 s.comm->size() > 1 ? ", or let mpirun bind each rank to more cores (--bind-to "
                                      "none, or --map-by slot:PE=N)"
                                    : "");
  const auto& d = cfg.data();
  const bool cifar = d.dataset() == "cifar10";
  const bool scenes = d.dataset() == "mnist_scenes";
  const auto& in = cfg.model().input();
  if (load_data && d.dataset() == "shards") {
    data::ShardReadOptions o;
    o.threads = d.data_threads();
    o.prefetch_batches = d.prefetch_batches();
    o.verify_checksums = d.verify_checksums();
    // model.input, when set, is the shape every sample must have; else the pack's.
    if (in.channels() && in.height() && in.width()) o.expected = Shape{in.channels(), in.height(), in.width()};
    if (d.has_transform()) o.transform = d.transform();
    o.seed = cfg.run().seed();
    namespace fs = std::filesystem;
    s.data.train = data::open_shards((fs::path(d.dir()) / "train").string(), o, d.train_limit());
    s.data.test = data::open_shards((fs::path(d.dir()) / "test").string(), o, d.test_limit());
  } else if (load_data && scenes) {
    const data::DatasetSplit digits = data::load_dataset("mnist", d.dir(), d.verify_checksums());
    s.data = data::make_mnist_scenes(digits, d.scenes(), d.train_limit(), d.test_limit());
  } else if (load_data && cifar)
    s.data = data::load_cifar10(d.dir(), d.train_limit(), d.test_limit());
  else if (load_data)
    s.data = data::load_dataset(d.dataset(), d.dir(), d.verify_checksums(), d.train_limit(),
                          d.test_limit());
  s.backend = make_backend(cfg.run().backend(), backend_options(cfg.run()));
  // A device's tensors cross between ranks through NCCL, or through host memory and MPI
  // (distributed.device_transport); MPI keeps the host tensors and the bootstrap.
  const bool host_staged = dist.device_transport() == proto::DEVICE_TRANSPORT_HOST_MPI;
  if (s.backend->device() != Device::cpu && host_staged)
    s.comm = make_host_staged_communicator(std::move(s.comm), *s.backend);
#ifdef DEEPTRAIN_HAVE_CUDA
  if (s.backend->device() == Device::cuda && !host_staged)
    s.comm = make_nccl_communicator(std::move(s.comm), *s.backend,
                                    std::max(0.0f, dist.collective_timeout_s()));
#endif
  // MNIST and Fashion-MNIST: 1 x 28 x 28, CIFAR-10: 3 x 32 x 32; 10 classes; unless the
  // config says otherwise.
  // A pack's shape and class count, unless the config says otherwise.
  const bool shards = load_data && d.dataset() == "shards";
  const Shape packed = shards ? s.data.train.sample_shape() : Shape{};
  // Scenes: 1 x canvas x canvas, background + 10 digits.
  const int64_t side = scenes ? d.scenes().canvas() : cifar ? 32 : 28;
  Shape input{in.channels() ? in.channels() : (shards ? packed[0] : cifar ? 3 : 1),
              in.height() ? in.height() : (shards ? packed[1] : side),
              in.width() ? in.width() : (shards ? packed[2] : side)};
  const auto& loss = cfg.model().loss();
  const bool detection = loss.type() == proto::LossConfig::DETECTION;
  const int classes = cfg.model().num_classes() ? cfg.model().num_classes()
                      : shards && detection && s.data.train.box_classes ? s.data.train.box_classes
                      : shards                  ? s.data.train.num_classes
                      : scenes && detection     ? data::kSceneClasses - 1  // the digits
                      : scenes                  ? data::kSceneClasses
                                                : 10;
  const bool dense_loss = loss.type() == proto::LossConfig::PIXEL_SOFTMAX_CE;
  if (load_data && detection) {
    // The boxes are the targets: the label maps go (gather_batch then gathers boxes).
    if (s.data.train.boxes.empty())
      fail_input("model.loss: DETECTION needs boxes (data.dataset: mnist_scenes, or a pack with "
                 "boxes: pack --boxes); data set '{}' has none", s.data.train.name);
    data::check_augment_targets(cfg.data().augment(), "boxes", s.data.train.name);
    for (const data::Dataset* set : {&s.data.train, &s.data.test})
      data::check_boxes(*set, input[1], input[2], classes, loss.detection().max_boxes());
    s.data.train.label_maps = Tensor();
    s.data.test.label_maps = Tensor();
  }
  if (load_data && dense_loss != bool(s.data.train.label_maps.raw()))
    fail_input("model.loss: {} needs {}; data set '{}' has {}", dense_loss ? "PIXEL_SOFTMAX_CE" : "SOFTMAX_CE",
               dense_loss ? "label maps (data.dataset: mnist_scenes, or a pack with masks)" : "a label per sample",
               s.data.train.name, s.data.train.label_maps.raw() ? "label maps (set model.loss.type: PIXEL_SOFTMAX_CE)" : "one label per sample");
  if (load_data && dense_loss) data::check_augment_targets(cfg.data().augment(), "label maps", s.data.train.name);
  if (load_data) check_data_fits_model(s.data, input, classes, dense_loss ? loss.ignore_label() : -1);
  s.net = std::make_unique<Net>(cfg.model(), input, classes, DType::f32);
  s.net->init_params(cfg.run().seed());
  if (s.comm->size() > 1)
    verify_consistency(*s.comm, job_fingerprint(cfg, *s.net, load_data ? &s.data : nullptr));
  return s;
}

TrainerOptions trainer_options(const proto::ExperimentConfig& cfg) {
  TrainerOptions t;
  t.batch_size = cfg.schedule().batch_size();
  t.eval_batch_size = cfg.run().eval_batch_size();
  t.seed = cfg.run().seed();
  t.lr = cfg.optimizer().lr();
  t.loss_scale.enabled = cfg.run().math() == proto::MATH_FP16;  // f16 gradients underflow without it
  t.lr_schedule = cfg.schedule().lr_schedule();
  t.epochs = cfg.schedule().epochs();
  t.augment = cfg.data().augment();
  if (cfg.distributed().exact()) t.micro_batch = cfg.distributed().micro_batch();
  return t;
}

std::string run_name(const proto::ExperimentConfig& cfg, const std::string& config_path) {
  if (!cfg.name().empty()) return cfg.name();
  return std::filesystem::path(config_path).stem().string();
}

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;
}

}  // namespace deeptrain::app
