#include "distributed/trainer.h"

#include <algorithm>
#include <cmath>

#include "core/checksum.h"
#include "core/detect/average_precision.h"
#include "core/data/augment.h"
#include "core/optim/schedule.h"
#include "distributed/ordered_sum.h"
#include "distributed/watchdog.h"

namespace deeptrain {
namespace {
Shape batch_shape(int64_t n, const Shape& per_sample) {
  std::vector<int64_t> d{n};
  d.insert(d.end(), per_sample.dims().begin(), per_sample.dims().end());
  return Shape(d);
}
}  // namespace

void check_finite_params(const Net& net, int64_t global_step, const std::string& what) {
  const Tensor& p = net.params();
  DT_CHECK(p.dtype() == DType::f32, "parameters are {}", dtype_name(p.dtype()));
  const float* v = p.data<float>();
  int64_t bad = 0;
  for (int64_t i = 0; i < p.numel(); ++i) bad += !std::isfinite(v[i]);
  if (bad)
    fail("training diverged: {} of {} parameters are not finite after global step {}; {} not "
         "written", bad, p.numel(), global_step, what);
}

Trainer::Trainer(TrainerOptions opt, Net& net, Backend& backend, Optimizer& optimizer,
                 Communicator& comm)
    : Trainer(std::move(opt), net, backend, comm) {
  optimizer_ = &optimizer;
}

Trainer::Trainer(TrainerOptions opt, Net& net, Backend& backend, Communicator& comm)
    : opt_(opt),
      net_(net),
      loss_fn_(net.config().loss(), net.input_shape(), net.num_classes()),
      backend_(backend),
      optimizer_(nullptr),
      comm_(comm) {
  DT_CHECK(net.dtype() == DType::f32, "training runs in f32");
  DT_CHECK(!opt_.lr_scale.raw() || (opt_.lr_scale.numel() == net.num_params() &&
                                     opt_.lr_scale.dtype() == DType::f32),
           "lr_scale has {} elements, the net {} parameters", opt_.lr_scale.numel(),
           net.num_params());
  DT_CHECK(opt_.epochs > 0, "epochs {}", opt_.epochs);
  last_lr_ = opt_.lr;
  // Every rank starts from rank 0's parameters (host memory: MPI never sees device pointers).
  comm_.broadcast(net_.mutable_params(), 0, "initial parameters");
  net_.place_on(backend_);
  if (opt_.lr_scale.raw() && net_.on_device()) {
    lr_scale_device_ = backend_.empty(opt_.lr_scale.shape(), DType::f32);
    backend_.copy(opt_.lr_scale, lr_scale_device_);
  }
  reducer_ = std::make_unique<Reducer>(comm_, net_, opt_.sync ? *opt_.sync : comm_.gradient_sync());
  metrics_ = Tensor::zeros({4}, DType::f64);
  if (opt_.loss_scale.enabled) loss_scale_ = opt_.loss_scale.initial;
  for (const auto& l : net_.config().layer())
    if (l.has_batch_norm() && l.batch_norm().sync()) sync_batch_norm_ = true;
  if (opt_.micro_batch > 0) {
    if (net_.on_device() || !backend_.exact_capable())
      fail_input("distributed.exact: exact mode runs on the reference CPU backend (cpu-ref), whose "
                 "results do not depend on the thread count; not on '{}'", backend_.name());
    for (const auto& l : net_.config().layer())
      if (l.has_batch_norm() && !l.batch_norm().sync())
        fail_input("distributed.exact: layer '{}' needs batch_norm.sync: true (statistics over a "
                   "rank's shard would change with the rank count)", l.name());
  }
}

void Trainer::check_replicas(const std::string& when) {
  if (comm_.size() == 1) return;
  const Tensor& p = net_.params();
  const uint32_t crc = crc32_of(p.raw(), p.nbytes());
  Tensor mine = Tensor::empty({1}, DType::i64), all = Tensor::empty({comm_.size()}, DType::i64);
  mine.data<int64_t>()[0] = int64_t(crc);
  comm_.allgather(mine, all, "replica check");
  std::string differ;
  for (int r = 1; r < comm_.size(); ++r)
    if (all.data<int64_t>()[r] != all.data<int64_t>()[0])
      differ += fmt::format("{}rank {} on {}", differ.empty() ? "" : ", ", r, comm_.host_of(r));
  if (!differ.empty())
    fail("{}: replicas diverged {}: the parameters of {} differ from rank 0's on {}",
         comm_.where(), when, differ, comm_.host_of(0));
}

void Trainer::ensure_batch(int64_t n, const Dataset& data) {
  const Shape xs = batch_shape(n, net_.input_shape());
  if (x_.shape() == xs) return;
  // The batch is gathered on the host; a device backend gets it through page-locked staging
  // buffers and an asynchronous copy.
  x_host_ = backend_.empty_host(xs, DType::f32);
  const Shape ts = batch_shape(n, loss_fn_.target_shape());
  t_host_ = backend_.empty_host(ts, DType::i32);
  const bool device = net_.on_device();
  x_ = device ? backend_.empty(xs, DType::f32) : x_host_;
  t_ = device ? backend_.empty(ts, DType::i32) : t_host_;
  probs_ = backend_.empty(batch_shape(n, loss_fn_.output_shape()), DType::f32);
  dlogits_ = backend_.empty(batch_shape(n, loss_fn_.output_shape()), DType::f32);
}

void Trainer::load_batch(const Dataset& data, const int64_t* ids, int64_t n, bool augment,
                         int epoch) {
  ensure_batch(n, data);
  const bool classify = loss_fn_.kind() == LossFn::Kind::classify;
  DT_CHECK(bool(data.label_maps.raw()) == loss_fn_.dense() &&
               (!loss_fn_.detection() || !data.boxes.empty()),
           "data set '{}' ({}) does not fit the model's loss ({})", data.name,
           data.label_maps.raw() ? "label maps" : data.boxes.empty() ? "labels" : "boxes",
           loss_fn_.dense() ? "dense" : loss_fn_.detection() ? "boxes" : "per sample");
  const bool augmented = augment && opt_.augment.enabled();
  // Label maps and boxes are gathered on the host (gather_samples copies one label a sample),
  // and so are normalised inputs (gather_samples computes p / 255 alone).
  if (net_.on_device() && opt_.device_data && !augmented && !data.source && classify &&
      data.mean.empty()) {
    const DeviceData& d = device_copy(data);
    backend_.gather_samples(d.images, d.labels, ids, n, x_, t_);
    return;
  }
  if (augmented)
    data::gather_batch_augmented(data, ids, n, epoch, opt_.seed, opt_.augment, x_host_, t_host_,
                                 loss_fn_.ignore_label());
  else
    data::gather_batch(data, ids, n, x_host_, t_host_, augment ? epoch : data::kEvalEpoch);
  if (x_.raw() != x_host_.raw()) {
    backend_.copy(x_host_, x_);
    backend_.copy(t_host_, t_);
  }
}

const Trainer::DeviceData& Trainer::device_copy(const Dataset& data) {
  for (const DeviceData& d : device_data_)
    if (d.host_images.raw() == data.images.raw() && d.host_images.numel() == data.images.numel() &&
        d.host_labels.raw() == data.labels.raw() && d.host_labels.numel() == data.labels.numel())
      return d;
  // Training and test sets, and a few more (bench's slices): older copies go first.
  if (device_data_.size() >= 4) device_data_.erase(device_data_.begin());
  DeviceData d{data.images, data.labels, backend_.empty(data.images.shape(), data.images.dtype()),
               backend_.empty(data.labels.shape(), data.labels.dtype())};
  backend_.copy(data.images, d.images);
  backend_.copy(data.labels, d.labels);
  device_data_.push_back(std::move(d));
  return device_data_.back();
}

ShardRange Trainer::rows_of_batch(int64_t n) const {
  if (opt_.micro_batch > 0) {
    const MicroShardRange r = micro_shards_of_batch(n, opt_.micro_batch, comm_.rank(), comm_.size());
    return {r.rows_begin, r.rows_end};
  }
  return shard_of_batch(n, comm_.rank(), comm_.size());
}

double Trainer::lr_at_step(int64_t step, int64_t num_train_samples) const {
  const int64_t steps_per_epoch =
      GlobalSampler{num_train_samples, opt_.batch_size, opt_.seed}.steps_per_epoch();
  return lr_at(opt_.lr_schedule, opt_.lr, step, steps_per_epoch,
               int64_t(opt_.epochs) * steps_per_epoch);
}

StepMetrics Trainer::train_step(const Dataset& data, const int64_t* ids, int64_t n,
                                int64_t epoch) {
  DT_CHECK(optimizer_, "train_step on an evaluation-only Trainer (built without an optimizer)");
  Watchdog* watchdog = comm_.watchdog();
  if (watchdog) watchdog->step_begin(step_);
  // Exact mode: this rank's run of whole micro-shards (core/micro_shards.h).
  const bool exact = opt_.micro_batch > 0;
  ShardRange mine = rows_of_batch(n);
  if (exact) {
    const MicroShardRange r = micro_shards_of_batch(n, opt_.micro_batch, comm_.rank(), comm_.size());
    micro_.begin_step(n, opt_.micro_batch, r, net_.compute_grads(),
                      ordered_sum_over(comm_, micro_shard_count(n, opt_.micro_batch),
                                       "exact-mode micro-shard sum"));
  }
  const int64_t local = mine.end - mine.begin;
  StepMetrics m;
  backend_.fill_zero(net_.compute_grads());
  std::optional<StepContext> ctx;
  std::unique_ptr<PendingLoss> loss;
  std::optional<LossSums> exact_sums;
  // Synchronised batch norm sums its statistics over the ranks inside forward and backward, so
  // then every rank runs both on every step, on an empty shard if it has no samples.
  const bool all_compute = sync_batch_norm_ && comm_.size() > 1;
  const Tensor* logits = nullptr;
  if (local > 0 || all_compute) {
    load_batch(data, ids + mine.begin, local, /*augment=*/true, epoch);
    mark("batch");
    ctx.emplace(StepContext{backend_, true, opt_.seed, step_, ids + mine.begin});
    ctx->profile = opt_.profile;
    if (exact) ctx->micro = &micro_;
    if (all_compute) {
      ctx->allreduce_sum = [this](Tensor& t) { comm_.allreduce_sum(t, "batch-norm statistics"); };
      ctx->global_batch = n;
    }
    logits = &net_.forward(*ctx, x_);
  }
  if (exact) exact_sums = exact_loss(logits, local);  // collective: every rank
  if (local > 0) {  // (an empty shard has no loss and an empty dlogits)
    if (!exact) loss = loss_fn_.forward_async(backend_, *logits, t_, opt_.log_eps, probs_);
    // The loss is the mean over the *global* batch, so summing rank gradients averages them.
    // With loss scaling (fp16 math) the gradients carry the factor loss_scale_ until the
    // optimizer step divides it out again.
    loss_fn_.backward(backend_, probs_, t_, loss_scale_ / double(n), dlogits_);
    mark("loss");
  }
  // On a host backend the step's metrics are known before backward: their allreduce runs
  // alongside it. A device's are still on their way back: waiting for them here would leave the
  // GPU idle while the host enqueues backward, so they go once the optimizer step is enqueued.
  std::unique_ptr<CommRequest> metrics;
  if (backend_.device() == Device::cpu) metrics = start_metrics(loss.get(), m);
  // Buckets of gradients start their allreduce as backward completes them (a rank without
  // samples contributes zeros, all at once in finish()). Exact mode sums the micro-shards'
  // gradients in their global order after backward instead.
  reducer_->begin_step(n);
  if (ctx) net_.backward(*ctx, dlogits_, exact ? Net::GradsReady{} : reducer_->callback());
  if (exact) reducer_->finish_exact(micro_);
  else reducer_->finish();
  // A profiled step waits after every phase anyway: here through the reducer, which watches
  // NCCL for errors and the deadline while it waits (a plain device wait would not).
  if (opt_.profile) reducer_->settle();
  mark("gradient reduction");
  last_lr_ = lr_at_step(step_, data.labels.numel());
  if (apply_loss_scale()) {  // false: an overflow, the step is skipped on every rank alike
    const Tensor* lr_scale = !opt_.lr_scale.raw()       ? nullptr
                             : lr_scale_device_.raw() ? &lr_scale_device_
                                                      : &opt_.lr_scale;
    optimizer_->step(net_.mutable_compute_params(), net_.compute_grads(), float(last_lr_), lr_scale);
  }
  mark("optimizer");
  reducer_->settle();  // the host waits for the gradients only now, with the step enqueued
  if (!metrics) metrics = start_metrics(loss.get(), m);
  metrics->wait();
  m.loss_sum = exact_sums ? exact_sums->loss : metrics_.data<double>()[0];
  m.correct = exact_sums ? exact_sums->correct : int64_t(metrics_.data<double>()[1]);
  m.counted = exact_sums ? exact_sums->counted : int64_t(metrics_.data<double>()[3]);
  m.stop = metrics_.data<double>()[2] > 0;
  m.samples = n;
  ++step_;
  if (watchdog) watchdog->step_end();
  // Loss scaling guards the scaled gradients; the loss itself is unscaled, so a non-finite one
  // means the parameters this step started from already give nan or inf: every later step
  // would too. The sum is the same on every rank, so all stop here together.
  if (!std::isfinite(m.loss_sum))
    throw TrainingDiverged(fmt::format("training diverged: the loss of global step {} (epoch {}) "
                                       "is {}", step_, epoch + 1,
                                       std::isnan(m.loss_sum) ? "nan" : fmt::format("{}", m.loss_sum)),
                           step_, int(epoch + 1), m.loss_sum);
  return m;
}

std::unique_ptr<CommRequest> Trainer::start_metrics(PendingLoss* loss, StepMetrics& m) {
  if (loss) {
    const LossSums s = loss->get();
    m.loss_sum = s.loss;
    m.correct = s.correct;
    m.counted = s.counted;
  }
  metrics_.data<double>()[0] = m.loss_sum;
  metrics_.data<double>()[1] = double(m.correct);
  metrics_.data<double>()[3] = double(m.counted);
  // A stop request rides along with the metrics: no extra collective, and every rank learns
  // of it after the same step.
  metrics_.data<double>()[2] = opt_.stop_requested && opt_.stop_requested() ? 1.0 : 0.0;
  return comm_.iallreduce_sum(metrics_, "step metrics");
}

LossSums Trainer::exact_loss(const Tensor* logits, int64_t local) {
  Tensor parts = Tensor::zeros({micro_.count(), 3}, DType::f64), sums = Tensor::empty({3}, DType::f64);
  if (local > 0)
    for_each_piece(&micro_, local, [&](int64_t b, int64_t e, int64_t j) {
      Tensor p = batch_rows(probs_, b, e);
      const LossSums s = loss_fn_.forward(backend_, batch_rows(*logits, b, e), batch_rows(t_, b, e),
                                          opt_.log_eps, p);
      parts.data<double>()[3 * j] = s.loss;
      parts.data<double>()[3 * j + 1] = double(s.correct);
      parts.data<double>()[3 * j + 2] = double(s.counted);
    });
  micro_.ordered_sum(parts, sums);
  return {sums.data<double>()[0], int64_t(sums.data<double>()[1]), int64_t(sums.data<double>()[2])};
}

bool Trainer::apply_loss_scale() {
  if (!opt_.loss_scale.enabled) return true;
  reducer_->settle();  // the finite check reads the summed gradients
  // The summed gradients are the same on every rank, so every rank decides alike.
  const bool finite = backend_.scale_and_check_finite(net_.compute_grads(), 1.0 / loss_scale_);
  const LossScaleOptions& o = opt_.loss_scale;
  if (!finite) {
    loss_scale_ = std::max(o.min_scale, loss_scale_ * o.backoff);
    good_steps_ = 0;
    ++skipped_steps_;
    return false;
  }
  if (++good_steps_ >= o.growth_interval) {
    loss_scale_ = std::min(o.max_scale, loss_scale_ * o.growth);
    good_steps_ = 0;
  }
  return true;
}

EpochReport Trainer::train_epoch(
    const Dataset& data, int epoch, const Dataset* test,
    const std::function<void(int64_t, int64_t, const StepMetrics&)>& on_step,
    EpochProgress* progress) {
  const int64_t n = data.labels.numel();
  const GlobalSampler sampler{n, opt_.batch_size, opt_.seed};
  const std::vector<int64_t> order = epoch_permutation(opt_.seed, epoch, n);
  EpochReport r{};
  r.epoch = epoch + 1;
  r.steps = sampler.steps_per_epoch();
  EpochProgress local;
  EpochProgress& p = progress ? *progress : local;
  DT_CHECK(p.steps_done >= 0 && p.steps_done <= r.steps, "epoch {}: starts after step {} of {}",
           epoch + 1, p.steps_done, r.steps);
  const double t0 = now_seconds(), seconds_before = p.train_seconds;
  // A streamed data set decodes this rank's samples of the next steps in its data threads
  // while the current step computes; the ids are known from the epoch's order.
  const int depth = data.source ? data.source->prefetch_depth() : 0;
  int64_t announced = p.steps_done;  // steps before this one were announced
  while (p.steps_done < r.steps && !r.stop) {
    const int64_t s = p.steps_done;
    for (; announced < std::min(r.steps, s + 1 + depth) && depth > 0; ++announced) {
      if (announced == s) continue;  // read now anyway
      const int64_t ab = sampler.batch_begin(announced), ae = sampler.batch_end(announced);
      const ShardRange mine = rows_of_batch(ae - ab);
      data.source->prefetch(order.data() + ab + mine.begin, mine.end - mine.begin, epoch);
    }
    const int64_t b = sampler.batch_begin(s), e = sampler.batch_end(s);
    StepMetrics m = train_step(data, order.data() + b, e - b, epoch);
    p.loss_sum += m.loss_sum;
    p.correct += m.correct;
    p.counted += m.counted;
    p.samples += m.samples;
    p.steps_done = s + 1;
    p.train_seconds = seconds_before + (now_seconds() - t0);
    r.stop = m.stop;
    if (on_step) on_step(s, r.steps, m);
  }
  r.train_seconds = p.train_seconds;
  const bool complete = p.steps_done == r.steps;
  check_replicas(complete ? fmt::format("after epoch {}", epoch + 1)
                          : fmt::format("at the stop after step {} of epoch {}", p.steps_done, epoch + 1));
  // Over the whole epoch (n samples) once it is complete, as before resuming existed.
  const double samples = complete ? double(n) : double(std::max<int64_t>(p.samples, 1));
  r.train_loss = p.loss_sum / samples;
  // A dense loss's is the pixel accuracy; a checkpoint from before `counted` lacks it.
  r.train_accuracy = !classify_loss() ? double(p.correct) / double(std::max<int64_t>(p.counted, 1))
                                      : double(p.correct) / samples;
  r.images_per_sec = samples / r.train_seconds;
  if (test && complete) {
    EvalReport ev = evaluate(*test);
    r.test_correct = ev.correct;
    r.test_total = ev.total;
    r.test_accuracy = ev.accuracy;
    r.test_segmentation = ev.segmentation;
    r.test_detection = ev.detection;
  }
  return r;
}

int64_t default_eval_batch(const Net& net) {
  const int64_t fit = config_defaults::kEvalActivationBytes / std::max<int64_t>(1, net.activation_bytes_per_sample());
  return std::clamp<int64_t>(fit, 1, config_defaults::kEvalBatchSize);
}

Tensor Trainer::predict(const Dataset& data, const int64_t* ids, int64_t n) {
  const Shape per_sample = loss_fn_.output_shape();
  std::vector<int64_t> dims{n};
  for (int64_t d : per_sample.dims()) dims.push_back(d);
  Tensor out = Tensor::zeros(Shape(dims), DType::f32);
  const int64_t per = per_sample.numel();
  const int64_t batch = opt_.eval_batch_size > 0 ? opt_.eval_batch_size : default_eval_batch(net_);
  for (int64_t b = 0; b < n; b += batch) {
    const int64_t m = std::min(n, b + batch) - b;
    load_batch(data, ids + b, m);
    StepContext ctx{backend_, false, opt_.seed, step_, ids + b};
    ctx.forward_only = true;
    const Tensor host = backend_.to_host(net_.forward(ctx, x_));
    std::copy_n(host.data<float>(), m * per, out.data<float>() + b * per);
  }
  return out;
}

EvalReport Trainer::evaluate(const Dataset& data, std::vector<int32_t>* predictions,
                             Tensor* probabilities) {
  const int64_t n = data.labels.numel();
  const int64_t classes = net_.num_classes();
  EvalReport r;
  // Each rank predicts its shard into its slots; a sum over ranks fills them all.
  DT_CHECK(classify_loss() || (!predictions && !probabilities),
           "evaluate: per-sample predictions of a dense or detection model");
  // Detection: each image's decoded boxes (score, label + 1, match_detections' bits), in
  // slots of top_k per image that a sum over ranks fills.
  const bool detect = loss_fn_.detection();
  const DecodeOptions decode = detect ? decode_options(net_.config().loss()) : DecodeOptions{};
  Tensor found = detect ? Tensor::zeros({n, decode.top_k, 3}, DType::f64) : Tensor();
  Tensor predicted = predictions ? Tensor::zeros({n}, DType::i64) : Tensor();
  std::vector<int64_t> confusion(loss_fn_.dense() ? size_t(classes * classes) : 0, 0);
  if (probabilities) *probabilities = Tensor::zeros({n, classes}, DType::f32);
  const double t0 = now_seconds();
  std::vector<int64_t> ids;
  const bool exact = opt_.micro_batch > 0;
  const int64_t batch = opt_.eval_batch_size > 0 ? opt_.eval_batch_size : default_eval_batch(net_);
  for (int64_t b = 0; b < n; b += batch) {
    const int64_t e = std::min(n, b + batch);
    // Exact mode: micro-shards, and the batch's loss summed in their order (collective).
    ShardRange mine = shard_of_batch(e - b, comm_.rank(), comm_.size());
    if (exact) {
      const MicroShardRange m = micro_shards_of_batch(e - b, opt_.micro_batch, comm_.rank(), comm_.size());
      mine = {m.rows_begin, m.rows_end};
      micro_.begin_step(e - b, opt_.micro_batch, m, net_.compute_grads(),
                        ordered_sum_over(comm_, micro_shard_count(e - b, opt_.micro_batch),
                                         "exact-mode evaluation sum"),
                        /*with_grads=*/false);
    }
    const int64_t local = mine.end - mine.begin;
    if (local == 0) {
      if (exact) exact_loss(nullptr, 0);
      continue;
    }
    ids.resize(local);
    for (int64_t i = 0; i < local; ++i) ids[i] = b + mine.begin + i;
    load_batch(data, ids.data(), local);
    mark("batch");
    StepContext ctx{backend_, false, opt_.seed, step_, ids.data()};
    ctx.profile = opt_.profile;
    ctx.forward_only = true;
    if (exact) ctx.micro = &micro_;
    const Tensor& logits = net_.forward(ctx, x_);
    if (exact) {
      // Every rank adds the same global batch sums: counted once, on rank 0.
      const LossSums sums = exact_loss(&logits, local);
      if (comm_.rank() == 0) {
        r.loss += sums.loss;
        r.correct += sums.correct;
        r.total += sums.counted;
      }
    } else {
      const LossSums sums = loss_fn_.forward(backend_, logits, t_, opt_.log_eps, probs_);
      r.loss += sums.loss;
      r.correct += sums.correct;
      r.total += sums.counted;
    }
    if (loss_fn_.dense()) loss_fn_.add_confusion(backend_.to_host(logits), t_host_, confusion);
    if (detect) decode_batch(data, backend_.to_host(logits), ids, decode, found);
    mark("loss");
    if (probabilities) {
      const Tensor host_probs = backend_.to_host(probs_);
      for (int64_t i = 0; i < local; ++i)
        std::copy_n(host_probs.data<float>() + i * classes, classes,
                    probabilities->data<float>() + ids[i] * classes);
    }
    if (predictions) {
      const Tensor host_logits = backend_.to_host(logits);
      const float* z = host_logits.data<float>();
      for (int64_t i = 0; i < local; ++i) {  // argmax, first maximum: as softmax_ce counts
        int64_t best = 0;
        for (int64_t j = 1; j < classes; ++j)
          if (z[i * classes + j] > z[i * classes + best]) best = j;
        predicted.data<int64_t>()[ids[i]] = best;
      }
    }
  }
  if (predictions) {
    comm_.allreduce_sum(predicted);
    predictions->assign(predicted.data<int64_t>(), predicted.data<int64_t>() + n);
  }
  if (probabilities) comm_.allreduce_sum(*probabilities, "evaluation probabilities");
  // Counts travel as f64: exact below 2^53.
  Tensor stats = Tensor::empty({3 + int64_t(confusion.size())}, DType::f64);
  stats.data<double>()[0] = r.loss;
  stats.data<double>()[1] = double(r.correct);
  stats.data<double>()[2] = double(r.total);
  for (size_t i = 0; i < confusion.size(); ++i) stats.data<double>()[3 + i] = double(confusion[i]);
  comm_.allreduce_sum(stats, "evaluation metrics");
  r.loss = stats.data<double>()[0] / double(n);
  r.correct = int64_t(stats.data<double>()[1]);
  // What `correct` is out of: the losses' counts, the samples (n) or a dense loss's pixels.
  r.total = int64_t(stats.data<double>()[2]);
  r.accuracy = double(r.correct) / double(std::max<int64_t>(r.total, 1));
  if (loss_fn_.dense()) {
    for (size_t i = 0; i < confusion.size(); ++i) confusion[i] = int64_t(stats.data<double>()[3 + i]);
    r.segmentation = segmentation_metrics(confusion, int(classes));
  }
  if (detect) {
    comm_.allreduce_sum(found, "evaluation detections");
    r.detection = detection_metrics_of(data, found);
    r.correct = r.detection->true_positives50;  // out of the truth boxes
    r.total = r.detection->truth;
    r.accuracy = r.detection->map50;
  }
  r.seconds = now_seconds() - t0;
  r.images_per_sec = double(n) / r.seconds;
  return r;
}

void Trainer::decode_batch(const Dataset& data, const Tensor& out, const std::vector<int64_t>& ids,
                           const DecodeOptions& decode, Tensor& found) const {
  const Shape o = loss_fn_.output_shape(), in = net_.input_shape();
  const int64_t top_k = found.dim(1);
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::vector<Detection> dets =
        decode_detections(out.data<float>() + int64_t(i) * o.numel(), o[1], o[2],
                          loss_fn_.detection_spec(), decode, in[1], in[2]);
    const std::vector<uint32_t> bits = match_detections(dets, data.boxes[size_t(ids[i])]);
    double* row = found.data<double>() + ids[i] * top_k * 3;
    for (size_t j = 0; j < dets.size() && int64_t(j) < top_k; ++j) {
      row[3 * j] = dets[j].score;
      row[3 * j + 1] = dets[j].label + 1;
      row[3 * j + 2] = bits[j];
    }
  }
}

DetectionMetrics Trainer::detection_metrics_of(const Dataset& data, const Tensor& found) const {
  std::vector<int64_t> truth(size_t(net_.num_classes()), 0);
  for (const auto& boxes : data.boxes)
    for (const data::Box& b : boxes) ++truth[size_t(b.label)];
  std::vector<ScoredDetection> all;
  const double* f = found.data<double>();
  for (int64_t k = 0; k < found.numel() / 3; ++k)
    if (f[3 * k + 1] > 0)
      all.push_back({int32_t(f[3 * k + 1]) - 1, float(f[3 * k]), uint32_t(f[3 * k + 2])});
  return detection_metrics(all, truth);
}

}  // namespace deeptrain
