#include "core/config.h"

#include <cmath>
#include <sstream>

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/message_differencer.h>

#include "core/data/augment.h"
#include "core/error.h"
#include "core/io/read_file.h"
#include "core/io/transfer.h"
#include "core/optim/schedule.h"

namespace deeptrain {
namespace {

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
    if (line >= 0 && line < int(lines_.size()))
      text_ += fmt::format("\n  {}\n  {}^", lines_[line], std::string(std::max(column, 0), ' '));
  }
  const std::string& text() const { return text_; }

 private:
  std::string origin_, text_;
  std::vector<std::string> lines_;
};

template <class T>
void require(bool ok, const char* field, const char* rule, T value) {
  if (!ok) fail_input("{}: {}, got {}", field, rule, value);
}

void apply(proto::ExperimentConfig& c, const ConfigOverrides& o) {
  if (o.epochs) c.mutable_schedule()->set_epochs(*o.epochs);
  if (o.batch_size) c.mutable_schedule()->set_batch_size(*o.batch_size);
  if (o.threads) c.mutable_run()->set_threads(*o.threads);
  if (o.lr) c.mutable_optimizer()->set_lr(*o.lr);
  if (o.seed) c.mutable_run()->set_seed(*o.seed);
  if (o.data_dir) c.mutable_data()->set_dir(*o.data_dir);
  if (o.backend) c.mutable_run()->set_backend(*o.backend);
  if (o.math) c.mutable_run()->set_math(*o.math);
  if (o.train_limit) c.mutable_data()->set_train_limit(*o.train_limit);
  if (o.test_limit) c.mutable_data()->set_test_limit(*o.test_limit);
  if (o.exact) c.mutable_distributed()->set_exact(*o.exact);
}

}  // namespace

// Far beyond any network of the book (ResNet-1202 has about 3,600 layers); a graph of a
// million layers would take minutes to build before anything else happened.
constexpr int kMaxLayers = 20000;

void finalize_config(proto::ExperimentConfig& c) {
  auto& m = *c.mutable_model();
  if (m.layer_size() > kMaxLayers)
    fail_input("model: {} layers; deeptrain builds graphs of at most {} layers", m.layer_size(),
               kMaxLayers);
  if (m.preset().empty() && m.layer_size() == 0) m.set_preset("deep_convnet");

  auto& d = *c.mutable_data();
  if (d.dataset().empty()) d.set_dataset("mnist");
  if (d.dataset() != "mnist" && d.dataset() != "fashion_mnist" && d.dataset() != "cifar10")
    fail_input("data.dataset: unknown '{}' (known: mnist, fashion_mnist, cifar10)", d.dataset());
  if (d.dir().empty()) d.set_dir("data/" + d.dataset());
  if (d.dataset() == "cifar10" && d.verify_checksums())
    fail_input("data.verify_checksums: not available for cifar10 (its binary batches have no "
               "published per-file checksums)");
  data::validate_augment(d.augment());
  require(d.train_limit() >= 0, "data.train_limit", "must be >= 0", d.train_limit());
  require(d.test_limit() >= 0, "data.test_limit", "must be >= 0", d.test_limit());

  auto& o = *c.mutable_optimizer();
  if (o.type() == proto::OPTIMIZER_UNSET) o.set_type(proto::ADAM);
  if (!o.has_lr()) o.set_lr(o.type() == proto::SGD ? 0.01f : 1e-3f);
  require(o.lr() > 0, "optimizer.lr", "must be > 0", o.lr());

  auto& s = *c.mutable_schedule();
  if (!s.has_epochs()) s.set_epochs(20);
  if (!s.has_batch_size()) s.set_batch_size(100);
  require(s.epochs() > 0, "schedule.epochs", "must be > 0", s.epochs());
  require(s.batch_size() > 0, "schedule.batch_size", "must be > 0", s.batch_size());
  validate_lr_schedule(s.lr_schedule());
  io::validate_transfer(c.transfer());

  auto& r = *c.mutable_run();
  // Exact mode computes with the reference kernels (docs/exact_mode.md): oneDNN's weight
  // gradients change with the thread count.
  const bool exact = c.distributed().exact();
  if (r.backend().empty()) r.set_backend(exact ? "cpu-ref" : "cpu");
  if (exact && r.backend() != "cpu-ref")
    fail_input("distributed.exact: exact mode computes with the reference kernels, whose results "
               "do not depend on the thread count (oneDNN's weight gradients do); set run.backend: "
               "cpu-ref (or --backend cpu-ref) or leave it unset, not '{}'", r.backend());
  if (r.backend() != "cpu" && r.backend() != "cpu-ref" && r.backend() != "cuda" &&
      r.backend() != "cuda-im2col")
    fail_input("run.backend: unknown '{}' (known: cpu, cpu-ref, cuda, cuda-im2col)", r.backend());
  if (r.math().empty()) r.set_math("fp32");
  if (r.math() != "fp32" && r.math() != "tf32" && r.math() != "bf16" && r.math() != "fp16")
    fail_input("run.math: unknown '{}' (known: fp32, tf32, bf16, fp16)", r.math());
  if (r.math() != "fp32" && r.backend().rfind("cuda", 0) != 0)
    fail_input("run.math: '{}' needs a GPU backend (run.backend: cuda); the CPU backends compute "
               "in fp32", r.math());
  if (r.has_gpu() && r.gpu() < 0) fail_input("run.gpu: must be >= 0, got {}", r.gpu());
  require(r.threads() >= 0, "run.threads", "must be >= 0 (0 = all cores)", r.threads());
  if (!r.has_flush_denormals()) r.set_flush_denormals(true);
  if (!r.has_eval_batch_size()) r.set_eval_batch_size(1000);
  require(r.eval_batch_size() > 0, "run.eval_batch_size", "must be > 0", r.eval_batch_size());

  auto& dist = *c.mutable_distributed();
  if (dist.bucket_mb() == 0) dist.set_bucket_mb(0.1f);
  require(std::isfinite(dist.bucket_mb()) && dist.bucket_mb() > 0 && dist.bucket_mb() <= 1024,
          "distributed.bucket_mb", "must be in (0, 1024] MiB", dist.bucket_mb());
  if (!proto::GradientCompression_IsValid(dist.compression()))
    fail_input("distributed.compression: unknown value {} (known: COMPRESSION_NONE, COMPRESSION_FP16, COMPRESSION_BF16)",
               int(dist.compression()));
  if (!dist.has_micro_batch()) dist.set_micro_batch(10);
  require(dist.micro_batch() > 0, "distributed.micro_batch", "must be > 0 (samples per micro-shard)",
          dist.micro_batch());
  if (dist.exact() && dist.compression() != proto::COMPRESSION_NONE)
    fail_input("distributed.exact: gradients are summed in a fixed order at full precision; "
               "distributed.compression must be COMPRESSION_NONE");
  if (dist.step_timeout_s() == 0) dist.set_step_timeout_s(600);
  if (dist.collective_timeout_s() == 0) dist.set_collective_timeout_s(300);
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
