#include "core/config.h"

#include <cmath>
#include <cstring>
#include <regex>
#include <sstream>

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/message_differencer.h>

#include <tuple>

#include "core/data/augment.h"
#include "core/data/mnist_scenes.h"
#include "core/error.h"
#include "core/io/read_file.h"
#include "core/io/transfer.h"
#include "core/optim/schedule.h"

namespace deeptrain {
namespace {

std::string schema1_hint(const std::string& line);

// Formats parse errors as "file:line:col: what", followed by the offending line and a caret,
// so a type error ("Expected integer") shows which field it is about.
class CollectErrors : public google::protobuf::io::ErrorCollector {
 public:
  CollectErrors(std::string origin, const std::string& source) : origin_(std::move(origin)) {
    std::stringstream ss(source);
    for (std::string l; std::getline(ss, l);) lines_.push_back(l);
  }
  void AddError(int line, int column, const std::string& message) override {
    if (!text_.empty()) text_ += "\n";
    text_ += fmt::format("{}:{}:{}: {}", origin_, line + 1, column + 1, message);
    if (line >= 0 && line < int(lines_.size())) {
      text_ += fmt::format("\n  {}\n  {}^", lines_[line], std::string(std::max(column, 0), ' '));
      text_ += schema1_hint(lines_[line]);
    }
  }
  const std::string& text() const { return text_; }

 private:
  std::string origin_, text_;
  std::vector<std::string> lines_;
};

// Schema 1 wrote run.backend and run.math as strings (backend: "cpu-ref"); they are enums now.
// A line of that form gets, after protobuf's own message, what to write instead.
std::string schema1_hint(const std::string& line) {
  static const std::regex old(R"(\b(backend|math)\s*:\s*["']([^"']*)["'])");
  std::smatch m;
  if (!std::regex_search(line, m, old)) return "";
  const bool backend = m[1] == "backend";
  const std::string word = m[2];
  std::string name;
  try {
    name = backend ? proto::Backend_Name(backend_from_word(word, "run.backend"))
                   : proto::MathMode_Name(math_from_word(word, "run.math"));
  } catch (const InputError&) {
    name = backend ? "BACKEND_CPU" : "MATH_FP32";
  }
  return fmt::format("\nrun.{0} is a name, not a string, since config schema 2: write `{0}: {1}` "
                     "instead of `{0}: \"{2}\"` (the --{0} flag still takes {3})",
                     m[1].str(), name, word, backend ? backend_words() : math_words());
}

template <class T>
void require(bool ok, const char* field, const char* rule, T value) {
  if (!ok) fail_input("{}: {}, got {}", field, rule, value);
}

void finalize_scenes(proto::DataConfig& d) {
  namespace D = config_defaults;
  auto& s = *d.mutable_scenes();
  if (!s.canvas()) s.set_canvas(D::kSceneCanvas);
  if (!s.min_digits()) s.set_min_digits(D::kSceneMinDigits);
  if (!s.max_digits()) s.set_max_digits(D::kSceneMaxDigits);
  if (!s.min_scale()) s.set_min_scale(D::kSceneMinScale);
  if (!s.max_scale()) s.set_max_scale(D::kSceneMaxScale);
  if (!s.train_scenes()) s.set_train_scenes(D::kTrainScenes);
  if (!s.test_scenes()) s.set_test_scenes(D::kTestScenes);
  if (!s.seed()) s.set_seed(D::kSceneSeed);
  if (!s.has_max_overlap()) s.set_max_overlap(D::kSceneMaxOverlap);
  require(s.canvas() >= 28 && s.canvas() <= 1024, "data.scenes.canvas", "must be in [28, 1024]",
          s.canvas());
  require(s.min_digits() > 0 && s.min_digits() <= s.max_digits() && s.max_digits() <= data::kMaxSceneDigits,
          "data.scenes.min_digits", "must be in [1, max_digits], max_digits <= 64", s.min_digits());
  require(s.min_scale() > 0 && s.min_scale() <= s.max_scale() &&
              s.max_scale() * 28 <= float(s.canvas()),
          "data.scenes.min_scale", "must be in (0, max_scale], max_scale * 28 <= canvas",
          s.min_scale());
  require(s.train_scenes() > 0 && s.test_scenes() > 0, "data.scenes.train_scenes",
          "and test_scenes must be > 0", s.train_scenes());
  require(s.max_overlap() >= 0 && s.max_overlap() <= 1, "data.scenes.max_overlap",
          "must be in [0, 1]", s.max_overlap());
}

void finalize_detection(proto::LossConfig& l) {
  namespace D = config_defaults;
  using H = proto::HeadConfig;
  if (l.has_ignore_label() || l.class_weights_size())
    fail_input("model.loss: ignore_label and class_weights are for PIXEL_SOFTMAX_CE");
  auto& d = *l.mutable_detection();
  if (!d.output_stride()) d.set_output_stride(D::kOutputStride);
  if (!d.max_boxes()) d.set_max_boxes(D::kMaxBoxes);
  if (!d.has_alpha()) d.set_alpha(D::kFocalAlpha);
  if (!d.has_beta()) d.set_beta(D::kFocalBeta);
  if (!d.top_k()) d.set_top_k(D::kTopK);
  if (!d.has_score_threshold()) d.set_score_threshold(D::kScoreThreshold);
  if (!d.has_nms_iou()) d.set_nms_iou(D::kNmsIou);
  require(d.output_stride() > 0, "model.loss.detection.output_stride", "must be > 0", d.output_stride());
  require(d.max_boxes() > 0 && d.max_boxes() <= 1024, "model.loss.detection.max_boxes",
          "must be in [1, 1024]", d.max_boxes());
  require(d.alpha() >= 0 && d.beta() >= 0, "model.loss.detection.alpha", "and beta must be >= 0", d.alpha());
  require(d.top_k() > 0, "model.loss.detection.top_k", "must be > 0", d.top_k());
  require(d.score_threshold() >= 0 && d.score_threshold() < 1, "model.loss.detection.score_threshold",
          "must be in [0, 1)", d.score_threshold());
  require(d.nms_iou() > 0, "model.loss.detection.nms_iou", "must be > 0", d.nms_iou());
  if (l.head_size() == 0)
    fail_input("model.loss.head: a DETECTION loss needs its heads (at least a CENTER_HEATMAP head)");
  bool seen[3] = {false, false, false};
  for (int i = 0; i < l.head_size(); ++i) {
    H& h = *l.mutable_head(i);
    const std::string field = fmt::format("model.loss.head[{}]", i);
    if (seen[h.target()])
      fail_input("{}: a second {} head", field, H::Target_Name(h.target()));
    seen[h.target()] = true;
    if (h.name().empty()) fail_input("{}: name is empty", field);
    const bool heat = h.target() == H::CENTER_HEATMAP;
    if (h.loss() == H::LOSS_DEFAULT) h.set_loss(heat ? H::FOCAL : H::L1);
    const bool sigmoid = h.loss() == H::FOCAL || h.loss() == H::SIGMOID_BCE;
    if (heat != sigmoid)
      fail_input("{} '{}': loss {} does not fit target {} (the heatmap takes FOCAL or SIGMOID_BCE, "
                 "box size and offset L1 or SMOOTH_L1)", field, h.name(), H::Loss_Name(h.loss()),
                 H::Target_Name(h.target()));
    if (!h.has_weight())
      h.set_weight(heat ? D::kHeatmapWeight
                        : h.target() == H::BOX_SIZE ? D::kBoxSizeWeight : D::kOffsetWeight);
    if (!(h.weight() >= 0) || !std::isfinite(h.weight()))
      fail_input("{} '{}': weight {} is not a finite weight >= 0", field, h.name(), h.weight());
  }
  if (!seen[H::CENTER_HEATMAP])
    fail_input("model.loss.head: a DETECTION loss needs a CENTER_HEATMAP head");
}

void finalize_loss(proto::LossConfig& l) {
  if (l.type() == proto::LossConfig::DETECTION) return finalize_detection(l);
  if (l.head_size() || l.has_detection())
    fail_input("model.loss: head and detection are for type DETECTION");
  if (l.type() == proto::LossConfig::SOFTMAX_CE) {
    if (l.has_ignore_label() || l.class_weights_size())
      fail_input("model.loss: ignore_label and class_weights are for PIXEL_SOFTMAX_CE");
    return;
  }
  if (!l.has_ignore_label()) l.set_ignore_label(config_defaults::kIgnoreLabel);
  require(l.ignore_label() >= 0, "model.loss.ignore_label", "must be >= 0", l.ignore_label());
  for (int i = 0; i < l.class_weights_size(); ++i)
    if (!(l.class_weights(i) >= 0) || !std::isfinite(l.class_weights(i)))
      fail_input("model.loss.class_weights[{}]: {} is not a finite weight >= 0", i,
                 l.class_weights(i));
}

void apply(proto::ExperimentConfig& c, const ConfigOverrides& o) {
  if (o.epochs) c.mutable_schedule()->set_epochs(*o.epochs);
  if (o.batch_size) c.mutable_schedule()->set_batch_size(*o.batch_size);
  if (o.threads) c.mutable_run()->set_threads(*o.threads);
  if (o.lr) c.mutable_optimizer()->set_lr(*o.lr);
  if (o.seed) c.mutable_run()->set_seed(*o.seed);
  if (o.data_dir) c.mutable_data()->set_dir(*o.data_dir);
  if (o.backend) c.mutable_run()->set_backend(backend_from_word(*o.backend, "--backend"));
  if (o.math) c.mutable_run()->set_math(math_from_word(*o.math, "--math"));
  if (o.conv_algorithm)
    c.mutable_run()->set_conv_algorithm(
        conv_algorithm_from_word(*o.conv_algorithm, "--conv-algorithm"));
  if (o.train_limit) c.mutable_data()->set_train_limit(*o.train_limit);
  if (o.test_limit) c.mutable_data()->set_test_limit(*o.test_limit);
  if (o.exact) c.mutable_distributed()->set_exact(*o.exact);
  if (o.device_transport)
    c.mutable_distributed()->set_device_transport(
        device_transport_from_word(*o.device_transport, "--device-transport"));
}

// The word of an enum value: its name without the prefix, lower case, '-' for '_'
// (BACKEND_CPU_REF -> cpu-ref).
std::string word_of(const google::protobuf::EnumValueDescriptor* v, const std::string& prefix) {
  std::string w = v->name().substr(prefix.size());
  for (char& ch : w) ch = ch == '_' ? '-' : char(std::tolower(static_cast<unsigned char>(ch)));
  return w;
}

// The known words of an enum (all values but the UNSET one), comma-separated.
std::string words_of(const google::protobuf::EnumDescriptor* e, const std::string& prefix) {
  std::string out;
  for (int i = 1; i < e->value_count(); ++i)
    out += (out.empty() ? "" : ", ") + word_of(e->value(i), prefix);
  return out;
}

int value_of_word(const google::protobuf::EnumDescriptor* e, const std::string& prefix,
                  const std::string& word, const std::string& what) {
  for (int i = 1; i < e->value_count(); ++i)
    if (word == word_of(e->value(i), prefix) || word == e->value(i)->name())
      return e->value(i)->number();
  fail_input("{}: unknown '{}' (known: {})", what, word, words_of(e, prefix));
}

std::string word_of_value(const google::protobuf::EnumDescriptor* e, const std::string& prefix,
                          int value) {
  const google::protobuf::EnumValueDescriptor* v = e->FindValueByNumber(value);
  DT_CHECK(v && value != 0, "{}: no word for value {}", e->name(), value);
  return word_of(v, prefix);
}

// Each enum of the command line with the prefix its value names carry (BACKEND_CPU_REF).
const char* prefix_of(proto::Backend) { return "BACKEND_"; }
const char* prefix_of(proto::MathMode) { return "MATH_"; }
const char* prefix_of(proto::ConvAlgorithm) { return "CONV_"; }
const char* prefix_of(proto::DeviceTransport) { return "DEVICE_TRANSPORT_"; }

template <class E>
std::string word_of_enum(E value) {
  return word_of_value(google::protobuf::GetEnumDescriptor<E>(), prefix_of(E{}), value);
}
template <class E>
E enum_of_word(const std::string& word, const std::string& what) {
  return E(value_of_word(google::protobuf::GetEnumDescriptor<E>(), prefix_of(E{}), word, what));
}
template <class E>
std::string words_of_enum() {
  return words_of(google::protobuf::GetEnumDescriptor<E>(), prefix_of(E{}));
}

}  // namespace

std::string backend_word(proto::Backend b) { return word_of_enum(b); }
std::string math_word(proto::MathMode m) { return word_of_enum(m); }
std::string conv_algorithm_word(proto::ConvAlgorithm a) { return word_of_enum(a); }
std::string device_transport_word(proto::DeviceTransport t) { return word_of_enum(t); }
proto::Backend backend_from_word(const std::string& word, const std::string& what) {
  return enum_of_word<proto::Backend>(word, what);
}
proto::MathMode math_from_word(const std::string& word, const std::string& what) {
  return enum_of_word<proto::MathMode>(word, what);
}
proto::ConvAlgorithm conv_algorithm_from_word(const std::string& word, const std::string& what) {
  return enum_of_word<proto::ConvAlgorithm>(word, what);
}
proto::DeviceTransport device_transport_from_word(const std::string& word, const std::string& what) {
  return enum_of_word<proto::DeviceTransport>(word, what);
}
std::string backend_words() { return words_of_enum<proto::Backend>(); }
std::string math_words() { return words_of_enum<proto::MathMode>(); }
std::string conv_algorithm_words() { return words_of_enum<proto::ConvAlgorithm>(); }
std::string device_transport_words() { return words_of_enum<proto::DeviceTransport>(); }

void upgrade_config(proto::ExperimentConfig& c) {
  auto& r = *c.mutable_run();
  if (!r.schema1_backend().empty()) {
    if (r.backend() != proto::BACKEND_UNSET)
      fail_input("run: both backend ({}) and schema 1's backend string '{}' are set",
                 proto::Backend_Name(r.backend()), r.schema1_backend());
    r.set_backend(backend_from_word(r.schema1_backend(), "run.backend (schema 1)"));
    r.clear_schema1_backend();
  }
  if (!r.schema1_math().empty()) {
    if (r.math() != proto::MATH_UNSET)
      fail_input("run: both math ({}) and schema 1's math string '{}' are set",
                 proto::MathMode_Name(r.math()), r.schema1_math());
    r.set_math(math_from_word(r.schema1_math(), "run.math (schema 1)"));
    r.clear_schema1_math();
  }
}

// Far beyond any network of the book (ResNet-1202 has about 3,600 layers); a graph of a
// million layers would take minutes to build before anything else happened.
constexpr int kMaxLayers = 20000;

void finalize_config(proto::ExperimentConfig& c) {
  auto& m = *c.mutable_model();
  if (m.layer_size() > kMaxLayers)
    fail_input("model: {} layers; deeptrain builds graphs of at most {} layers", m.layer_size(),
               kMaxLayers);
  if (m.preset().empty() && m.layer_size() == 0) m.set_preset(config_defaults::kPreset);

  auto& d = *c.mutable_data();
  if (d.dataset().empty()) d.set_dataset(config_defaults::kDataset);
  if (d.dataset() != "mnist" && d.dataset() != "fashion_mnist" && d.dataset() != "cifar10" &&
      d.dataset() != "shards" && d.dataset() != "mnist_scenes")
    fail_input("data.dataset: unknown '{}' (known: mnist, fashion_mnist, cifar10, shards, "
               "mnist_scenes)", d.dataset());
  if (d.dataset() == "mnist_scenes") finalize_scenes(d);
  else if (d.has_scenes())
    fail_input("data.scenes: only for dataset \"mnist_scenes\", not \"{}\"", d.dataset());
  // Absent means per-sample softmax-CE; an explicit SOFTMAX_CE is made absent too, so that
  // configs and weights files of classification models compare equal to those written before
  // model.loss existed.
  if (c.model().has_loss()) {
    finalize_loss(*c.mutable_model()->mutable_loss());
    if (c.model().loss().type() == proto::LossConfig::SOFTMAX_CE) c.mutable_model()->clear_loss();
  }
  if (!d.has_data_threads()) d.set_data_threads(config_defaults::kDataThreads);
  if (!d.has_prefetch_batches()) d.set_prefetch_batches(config_defaults::kPrefetchBatches);
  require(d.data_threads() >= 0 && d.data_threads() <= 256, "data.data_threads",
          "must be in [0, 256]", d.data_threads());
  require(d.prefetch_batches() >= 0 && d.prefetch_batches() <= 64, "data.prefetch_batches",
          "must be in [0, 64]", d.prefetch_batches());
  // Scenes are drawn from the MNIST files.
  if (d.dir().empty()) d.set_dir(d.dataset() == "mnist_scenes" ? "data/mnist" : "data/" + d.dataset());
  if (d.dataset() == "cifar10" && d.verify_checksums())
    fail_input("data.verify_checksums: not available for cifar10 (its binary batches have no "
               "published per-file checksums)");
  data::validate_augment(d.augment());
  if (d.has_transform() && d.dataset() != "shards")
    fail_input("data.transform: only for dataset: shards (the built-in sets have one image size; "
               "data.augment transforms them)");
  require(d.train_limit() >= 0, "data.train_limit", "must be >= 0", d.train_limit());
  require(d.test_limit() >= 0, "data.test_limit", "must be >= 0", d.test_limit());

  auto& o = *c.mutable_optimizer();
  if (o.type() == proto::OPTIMIZER_UNSET) o.set_type(config_defaults::kOptimizer);
  if (!o.has_lr()) o.set_lr(o.type() == proto::SGD ? config_defaults::kLrSgd : config_defaults::kLr);
  require(o.lr() > 0, "optimizer.lr", "must be > 0", o.lr());

  auto& s = *c.mutable_schedule();
  if (!s.has_epochs()) s.set_epochs(config_defaults::kEpochs);
  if (!s.has_batch_size()) s.set_batch_size(config_defaults::kBatchSize);
  require(s.epochs() > 0, "schedule.epochs", "must be > 0", s.epochs());
  require(s.batch_size() > 0, "schedule.batch_size", "must be > 0", s.batch_size());
  validate_lr_schedule(s.lr_schedule());
  io::validate_transfer(c.transfer());

  auto& r = *c.mutable_run();
  // Exact mode computes with the reference kernels (docs/exact_mode.md): oneDNN's weight
  // gradients change with the thread count.
  const bool exact = c.distributed().exact();
  if (r.backend() == proto::BACKEND_UNSET)
    r.set_backend(exact ? config_defaults::kExactBackend : config_defaults::kBackend);
  if (!proto::Backend_IsValid(r.backend()))
    fail_input("run.backend: unknown value {} (known: {})", int(r.backend()), backend_words());
  if (exact && r.backend() != config_defaults::kExactBackend)
    fail_input("distributed.exact: exact mode computes with the reference kernels, whose results "
               "do not depend on the thread count (oneDNN's weight gradients do); set run.backend: "
               "{} (or --backend {}) or leave it unset, not {}",
               proto::Backend_Name(config_defaults::kExactBackend),
               backend_word(config_defaults::kExactBackend), proto::Backend_Name(r.backend()));
  if (r.math() == proto::MATH_UNSET) r.set_math(config_defaults::kMath);
  if (!proto::MathMode_IsValid(r.math()))
    fail_input("run.math: unknown value {} (known: {})", int(r.math()), math_words());
  const bool gpu = r.backend() == proto::BACKEND_CUDA || r.backend() == proto::BACKEND_CUDA_IM2COL;
  // bf16 on the CPU: BACKEND_CPU checks the processor when it starts (cpu_dnnl.h).
  const bool cpu_bf16 = r.math() == proto::MATH_BF16 && r.backend() == proto::BACKEND_CPU;
  if (r.math() != proto::MATH_FP32 && !gpu && !cpu_bf16)
    fail_input("run.math: {} needs a GPU backend (run.backend: BACKEND_CUDA){}; {} computes in "
               "fp32", proto::MathMode_Name(r.math()),
               r.math() == proto::MATH_BF16 ? " or BACKEND_CPU on a processor with AVX512-BF16" : "",
               proto::Backend_Name(r.backend()));
  if (r.has_gpu() && r.gpu() < 0) fail_input("run.gpu: must be >= 0, got {}", r.gpu());
  require(r.threads() >= 0, "run.threads", "must be >= 0 (0 = all cores)", r.threads());
  if (!r.has_flush_denormals()) r.set_flush_denormals(config_defaults::kFlushDenormals);
  require(!r.has_eval_batch_size() || r.eval_batch_size() > 0, "run.eval_batch_size", "must be > 0", r.eval_batch_size());

  auto& dist = *c.mutable_distributed();
  if (dist.bucket_mb() == 0) dist.set_bucket_mb(config_defaults::kBucketMiB);
  require(std::isfinite(dist.bucket_mb()) && dist.bucket_mb() > 0 && dist.bucket_mb() <= 1024,
          "distributed.bucket_mb", "must be in (0, 1024] MiB", dist.bucket_mb());
  if (!proto::GradientCompression_IsValid(dist.compression()))
    fail_input("distributed.compression: unknown value {} (known: COMPRESSION_NONE, COMPRESSION_FP16, COMPRESSION_BF16)",
               int(dist.compression()));
  if (dist.device_transport() == proto::DEVICE_TRANSPORT_UNSET)
    dist.set_device_transport(proto::DEVICE_TRANSPORT_NCCL);
  if (!proto::DeviceTransport_IsValid(dist.device_transport()))
    fail_input("distributed.device_transport: unknown value {} (known: {})",
               int(dist.device_transport()), device_transport_words());
  if (!dist.has_micro_batch()) dist.set_micro_batch(config_defaults::kMicroBatch);
  require(dist.micro_batch() > 0, "distributed.micro_batch", "must be > 0 (samples per micro-shard)",
          dist.micro_batch());
  if (dist.exact() && dist.compression() != proto::COMPRESSION_NONE)
    fail_input("distributed.exact: gradients are summed in a fixed order at full precision; "
               "distributed.compression must be COMPRESSION_NONE");
  if (dist.step_timeout_s() == 0) dist.set_step_timeout_s(config_defaults::kStepTimeoutS);
  if (dist.collective_timeout_s() == 0)
    dist.set_collective_timeout_s(config_defaults::kCollectiveTimeoutS);
  require(!std::isnan(dist.step_timeout_s()), "distributed.step_timeout_s",
          "must be a number of seconds (negative: no deadline)", dist.step_timeout_s());
  require(!std::isnan(dist.collective_timeout_s()), "distributed.collective_timeout_s",
          "must be a number of seconds (negative: no deadline)", dist.collective_timeout_s());
}

proto::ExperimentConfig parse_config(const std::string& text, const std::string& origin,
                                     const ConfigOverrides& o) {
  proto::ExperimentConfig c;
  google::protobuf::TextFormat::Parser parser;
  CollectErrors errors(origin, text);
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &c)) fail_input("{}", errors.text());
  // Schema 1's string fields exist for the checkpoints that carry them (upgrade_config), not
  // for new text.
  for (const auto& [set, field, now] :
       {std::tuple{!c.run().schema1_backend().empty(), "schema1_backend", "backend: BACKEND_CPU"},
        std::tuple{!c.run().schema1_math().empty(), "schema1_math", "math: MATH_FP32"}})
    if (set)
      fail_input("{}: run.{}: the field of old checkpoints' configs; write e.g. `{}`", origin,
                 field, now);
  apply(c, o);
  try {
    finalize_config(c);
  } catch (const InputError& e) {
    throw InputError(fmt::format("{}: {}", origin, e.what()));
  }
  return c;
}

proto::ExperimentConfig load_config(const std::string& path, const ConfigOverrides& o) {
  std::string text;
  try {
    text = io::read_file(path);
  } catch (const InputError& e) {
    fail_input("cannot read the config file: {}", e.what());
  }
  return parse_config(text, path, o);
}

std::string to_text(const google::protobuf::Message& m) {
  std::string s;
  google::protobuf::TextFormat::PrintToString(m, &s);
  return s;
}

std::vector<std::string> message_differences(const google::protobuf::Message& before,
                                             const google::protobuf::Message& after,
                                             const std::vector<std::string>& ignore) {
  using google::protobuf::FieldDescriptor;
  google::protobuf::util::MessageDifferencer d;
  for (const std::string& path : ignore) {
    // Walk "a.b.c" from the message type down to the field.
    const google::protobuf::Descriptor* type = before.GetDescriptor();
    const FieldDescriptor* field = nullptr;
    size_t at = 0;
    while (type) {
      const size_t dot = path.find('.', at);
      field = type->FindFieldByName(path.substr(at, dot == std::string::npos ? dot : dot - at));
      DT_CHECK(field, "message_differences: no field '{}'", path);
      if (dot == std::string::npos) break;
      type = field->message_type();
      at = dot + 1;
    }
    d.IgnoreField(field);
  }
  std::string report;
  bool equal;
  {
    google::protobuf::io::StringOutputStream out(&report);
    google::protobuf::util::MessageDifferencer::StreamReporter reporter(&out);
    d.ReportDifferencesTo(&reporter);
    equal = d.Compare(before, after);
  }
  std::vector<std::string> lines;
  if (equal) return lines;
  size_t b = 0;
  for (size_t e; (e = report.find('\n', b)) != std::string::npos; b = e + 1)
    if (e > b && report.compare(b, 8, "ignored:") != 0) lines.push_back(report.substr(b, e - b));
  return lines;
}

}  // namespace deeptrain
