// `deeptrain export CONFIG --weights W --onnx OUT.onnx` and `deeptrain import-onnx MODEL.onnx
// --out CONFIG --weights W`: models in and out as ONNX (core/io/onnx.h, docs/onnx.md).
#include "app/onnx_cmds.h"

#include <memory>

#include "app/output.h"
#include "app/session.h"
#include "core/error.h"
#include "core/io/atomic_file.h"
#include "core/io/checkpoint.h"
#include "core/io/onnx.h"
#include "core/io/weights.h"

namespace deeptrain::app {
namespace {

// A checkpoint's parameters ("param/conv1.W") and layer state ("state/bn1.running_mean") into
// net, every one checked (present, shape, dtype) before any is copied: a checkpoint of another
// model is refused naming the tensor.
void load_checkpoint_tensors(const io::TrainingState& st, const std::string& path, Net& net) {
  std::map<std::string, const Tensor*> saved;
  for (const io::NamedTensor& t : st.tensors) saved.emplace(t.name, &t.tensor);
  auto find = [&](const std::string& name, const Shape& shape, DType dtype) {
    auto it = saved.find(name);
    if (it == saved.end()) fail_input("{}: no tensor '{}' (the model needs it)", path, name);
    if (it->second->shape() != shape || it->second->dtype() != dtype)
      fail_input("{}: tensor '{}' is {}, the model's is {}", path, name, it->second->shape().str(),
                 shape.str());
    return it->second;
  };
  std::vector<std::pair<Tensor, const Tensor*>> copies;
  for (const ParamEntry& e : net.param_entries())
    copies.emplace_back(net.mutable_param_view(e), find("param/" + e.name, e.shape, DType::f32));
  for (auto& [name, t] : net.mutable_state())
    copies.emplace_back(*t, find("state/" + name, t->shape(), t->dtype()));
  for (auto& [dst, src] : copies) dst.copy_from(*src);
}

}  // namespace

void run_export_onnx(const OnnxExportCli& o) {
  const bool from_checkpoint = !o.checkpoint.empty();
  io::TrainingState st;
  if (from_checkpoint) st = io::load_checkpoint(o.checkpoint);
  // A checkpoint carries the config of its run, so that it alone describes the model.
  proto::ExperimentConfig cfg = from_checkpoint ? st.config : load_config(o.config);
  Session s = open_session(cfg, /*load_data=*/false);
  if (from_checkpoint) load_checkpoint_tensors(st, o.checkpoint, *s.net);
  else io::load_weights(o.weights, *s.net);
  io::OnnxExportOptions eo;
  eo.softmax = o.softmax;
  eo.fp16 = o.fp16;
  const std::string& ds = cfg.data().dataset();
  if (ds == "fashion_mnist") {
    eo.class_names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
  } else if (ds == "mnist" || ds.empty()) {
    for (int c = 0; c < 10; ++c) eo.class_names.push_back(std::to_string(c));
  }
  // What the data sets feed the model (core/data/dataset.cpp: byte / 255, nothing subtracted).
  eo.normalization = "float32 pixel / 255 in [0, 1], (batch, C, H, W), no mean or std applied";
  eo.config_text = to_text(cfg);
  const std::string bytes = io::export_onnx(*s.net, eo);
  io::write_file_atomic(o.onnx, bytes);
  Output out(o.json);
  out.event({{"event", "onnx_export"}, {"path", o.onnx}, {"opset", io::kOnnxOpset},
             {"bytes", bytes.size()}, {"output", o.softmax ? "probabilities" : "logits"},
             {"precision", o.fp16 ? "float16" : "float32"}},
            fmt::format("wrote {}: ONNX opset {}{}, input 'input' (batch, {}, {}, {}), output '{}', "
                        "{} bytes", o.onnx, io::kOnnxOpset,
                        o.fp16 ? " (float16 weights and computation)" : "", s.net->input_shape()[0],
                        s.net->input_shape()[1], s.net->input_shape()[2],
                        o.softmax ? "probabilities" : "logits", bytes.size()));
}

void run_import_onnx(const OnnxImportCli& o) {
  io::OnnxImport im = io::import_onnx(o.model);
  // Build the net the config describes and load the tensors through it: shapes are checked
  // against the layers before anything is written.
  const Shape input{im.model.input().channels(), im.model.input().height(), im.model.input().width()};
  Net net(im.model, input, im.model.num_classes(), DType::f32);
  for (const ParamEntry& e : net.param_entries()) {
    auto it = im.tensors.find(e.name);
    if (it == im.tensors.end()) fail_input("{}: no tensor for parameter '{}'", o.model, e.name);
    if (it->second.shape() != e.shape)
      fail_input("{}: tensor '{}' is {}, the layer needs {}", o.model, e.name,
                 it->second.shape().str(), e.shape.str());
    net.mutable_param_view(e).copy_from(it->second);
  }
  for (auto& [name, t] : net.mutable_state()) {
    auto it = im.tensors.find(name);
    if (it == im.tensors.end()) fail_input("{}: no tensor for state '{}'", o.model, name);
    t->copy_from(it->second);
  }
  proto::ExperimentConfig cfg;
  cfg.set_name(o.name);
  *cfg.mutable_model() = im.model;
  cfg.mutable_data()->set_dataset(o.dataset);
  io::save_weights(o.weights, net);
  io::write_file_atomic(o.out, "# Imported from " + o.model + " by deeptrain import-onnx\n" +
                                   to_text(cfg));
  Output out(o.json);
  for (const std::string& n : im.notes) out.note(n);
  out.event({{"event", "onnx_import"}, {"model", o.model}, {"config", o.out},
             {"weights", o.weights}, {"layers", im.model.layer_size()}},
            fmt::format("wrote {} ({} layers) and {} from {}", o.out, im.model.layer_size(),
                        o.weights, o.model));
}

void add_import_onnx_command(CLI::App& cli) {
  auto o = std::make_shared<OnnxImportCli>();
  CLI::App* sub = cli.add_subcommand(
      "import-onnx", "read an ONNX model (Conv, MaxPool, Relu, Gemm, BatchNormalization, Add, "
                     "Concat, GlobalAveragePool, Flatten, Dropout) into a config and weights");
  sub->add_option("model", o->model, "the .onnx file")->required();
  sub->add_option("--out", o->out, "the config to write (text format)")->required();
  sub->add_option("--weights", o->weights, "the weights file to write")->required();
  sub->add_option("--dataset", o->dataset, "data.dataset of the config (default mnist)");
  sub->add_option("--name", o->name, "the config's name (default imported)");
  sub->add_flag("--json", o->json, "one JSON object per line");
  sub->footer(
      "Examples:\n"
      "  deeptrain import-onnx resnet20.onnx --out resnet20.prototxt --weights resnet20.weights\n"
      "  deeptrain eval resnet20.prototxt --weights resnet20.weights");
  sub->callback([o] { run_import_onnx(*o); });
}

}  // namespace deeptrain::app
