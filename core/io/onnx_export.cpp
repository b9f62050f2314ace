// A Net as an ONNX model (core/io/onnx.h). Each layer becomes standard operators; tensor names
// are layer names, so that import (onnx_import.cpp) gives back the same layers and weights.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/error.h"
#include "core/io/onnx.h"
#include "onnx/onnx.pb.h"

namespace deeptrain::io {
namespace {

class GraphWriter {
 public:
  explicit GraphWriter(onnx::GraphProto* g) : g_(g) {}
  onnx::NodeProto* node(const std::string& op, const std::string& name,
                        std::vector<std::string> in, const std::string& out) {
    onnx::NodeProto* n = g_->add_node();
    n->set_op_type(op);
    n->set_name(name);
    for (const std::string& i : in) n->add_input(i);
    n->add_output(out);
    return n;
  }
  static void ints(onnx::NodeProto* n, const std::string& name, std::vector<int64_t> v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  }
  static void integer(onnx::NodeProto* n, const std::string& name, int64_t v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void real(onnx::NodeProto* n, const std::string& name, float v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
  }
  // An initializer: f32 or f64 or i64 values, little-endian raw data (ONNX's byte order).
  void initializer(const std::string& name, const std::vector<int64_t>& dims, const void* data,
                   size_t bytes, onnx::TensorProto::DataType type) {
    onnx::TensorProto* t = g_->add_initializer();
    t->set_name(name);
    for (int64_t d : dims) t->add_dims(d);
    t->set_data_type(type);
    t->set_raw_data(data, bytes);
  }
  // With half: float16 values (round to nearest even); a value beyond float16's range
  // (|v| > 65504, or not finite) is an InputError naming the tensor, before anything is written.
  void tensor(const std::string& name, const Tensor& x, bool half = false) {
    DT_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::f64, "onnx export: {} dtype", name);
    if (half) {
      std::vector<uint16_t> h(size_t(x.numel()));
      for (size_t i = 0; i < h.size(); ++i) {
        const double v = x.dtype() == DType::f32 ? double(static_cast<const float*>(x.raw())[i])
                                                 : static_cast<const double*>(x.raw())[i];
        if (!(std::fabs(v) <= 65504.0))
          fail_input("onnx export --fp16: tensor '{}' holds {} (element {}), beyond float16's "
                     "range (|v| <= 65504)", name, v, i);
        const _Float16 f = static_cast<_Float16>(static_cast<float>(v));
        std::memcpy(&h[i], &f, sizeof f);
      }
      initializer(name, x.shape().dims(), h.data(), h.size() * 2, onnx::TensorProto::FLOAT16);
      return;
    }
    initializer(name, x.shape().dims(), x.raw(), x.nbytes(),
                x.dtype() == DType::f32 ? onnx::TensorProto::FLOAT : onnx::TensorProto::DOUBLE);
  }
  void shape_constant(const std::string& name, const std::vector<int64_t>& v) {
    initializer(name, {int64_t(v.size())}, v.data(), v.size() * sizeof(int64_t),
                onnx::TensorProto::INT64);
  }

 private:
  onnx::GraphProto* g_;
};

void value_info(onnx::ValueInfoProto* v, const std::string& name, const std::vector<int64_t>& dims) {
  v->set_name(name);
  onnx::TypeProto_Tensor* t = v->mutable_type()->mutable_tensor_type();
  t->set_elem_type(onnx::TensorProto::FLOAT);
  t->mutable_shape()->add_dim()->set_dim_param("batch");  // any batch size
  for (int64_t d : dims) t->mutable_shape()->add_dim()->set_dim_value(d);
}

void metadata(onnx::ModelProto& m, const std::string& key, const std::string& value) {
  if (value.empty()) return;
  onnx::StringStringEntryProto* e = m.add_metadata_props();
  e->set_key(key);
  e->set_value(value);
}

}  // namespace

std::string export_onnx(const Net& net, const OnnxExportOptions& o) {
  onnx::ModelProto model;
  model.set_ir_version(onnx::IR_VERSION);
  model.set_producer_name("deeptrain");
  model.set_producer_version(DEEPTRAIN_VERSION);
  model.set_model_version(1);
  model.add_opset_import()->set_version(kOnnxOpset);  // domain "": the standard operators
  metadata(model, "deeptrain_version", DEEPTRAIN_VERSION);
  metadata(model, "deeptrain_config", o.config_text);
  metadata(model, "input_normalization", o.normalization);
  std::string names;
  for (const std::string& c : o.class_names) names += (names.empty() ? "" : ",") + c;
  metadata(model, "class_names", names);

  onnx::GraphProto* g = model.mutable_graph();
  const proto::ModelConfig& cfg = net.config();
  g->set_name(cfg.preset().empty() ? "deeptrain" : cfg.preset());
  GraphWriter w(g);
  value_info(g->add_input(), "input", net.input_shape().dims());
  // fp16: the float32 input cast to float16 first, every weight and activation float16 after,
  // and the output cast back to float32, so that callers feed and read float32 either way.
  const std::string input = o.fp16 ? "input/f16" : "input";
  if (o.fp16)
    GraphWriter::integer(w.node("Cast", "input/cast", {"input"}, input), "to",
                         onnx::TensorProto::FLOAT16);

  // Parameters and layer state by name, as the Net holds them (host copies, current).
  std::map<std::string, Tensor> tensors;
  for (const ParamEntry& e : net.param_entries()) tensors[e.name] = net.param_view(e);
  for (const auto& [name, t] : net.state()) tensors[name] = *t;
  auto add_tensor = [&](const std::string& name) {
    auto it = tensors.find(name);
    DT_CHECK(it != tensors.end(), "onnx export: no tensor {}", name);
    w.tensor(name, it->second, o.fp16);
    return name;
  };

  // Each layer's output tensor is named after the layer; the last one "logits" (or feeds the
  // Softmax). Per-sample shapes come from the layers' own setup(), as the Net computed them.
  std::map<std::string, std::string> out_of;       // layer -> its output tensor
  std::map<std::string, Shape> shape_of;           // layer -> per-sample output shape
  const int last = cfg.layer_size() - 1;
  std::string prev = input;
  Shape prev_shape = net.input_shape();
  for (int i = 0; i <= last; ++i) {
    const proto::LayerConfig& lc = cfg.layer(i);
    const std::string& name = lc.name();
    std::vector<std::string> in;
    std::vector<Shape> in_shapes;
    if (lc.input_size() == 0) {
      in.push_back(prev);
      in_shapes.push_back(prev_shape);
    }
    for (const std::string& s : lc.input()) {
      in.push_back(s == "data" ? input : out_of.at(s));
      in_shapes.push_back(s == "data" ? net.input_shape() : shape_of.at(s));
    }
    const Shape out_shape = make_layer(lc, i)->setup(in_shapes);
    std::string out = i == last ? (o.softmax ? "logits_" : o.fp16 ? "logits/f16" : "logits") : name;
    using K = proto::LayerConfig::KindCase;
    switch (lc.kind_case()) {
      case K::kConv: {
        const Tensor& W = tensors.at(name + ".W");
        std::vector<std::string> ins{in[0], add_tensor(name + ".W")};
        if (!lc.conv().no_bias()) ins.push_back(add_tensor(name + ".b"));
        onnx::NodeProto* n = w.node("Conv", name, ins, out);
        const int64_t s = lc.conv().stride() ? lc.conv().stride() : 1, p = lc.conv().pad();
        GraphWriter::ints(n, "kernel_shape", {W.dim(2), W.dim(3)});
        GraphWriter::ints(n, "strides", {s, s});
        GraphWriter::ints(n, "pads", {p, p, p, p});
        break;
      }
      case K::kMaxPool: {
        onnx::NodeProto* n = w.node("MaxPool", name, {in[0]}, out);
        const int64_t k = lc.max_pool().kernel() ? lc.max_pool().kernel() : 2;
        const int64_t s = lc.max_pool().stride() ? lc.max_pool().stride() : k, p = lc.max_pool().pad();
        GraphWriter::ints(n, "kernel_shape", {k, k});
        GraphWriter::ints(n, "strides", {s, s});
        GraphWriter::ints(n, "pads", {p, p, p, p});
        break;
      }
      case K::kRelu: w.node("Relu", name, {in[0]}, out); break;
      case K::kAffine: {
        // The book's affine flattens (C, H, W) in that order, as Flatten(axis 1) does.
        w.node("Flatten", name + "/flatten", {in[0]}, name + "/flat");
        std::vector<std::string> ins{name + "/flat", add_tensor(name + ".W")};
        if (!lc.affine().no_bias()) ins.push_back(add_tensor(name + ".b"));
        w.node("Gemm", name, ins, out);  // x (n, d) . W (d, m) + b: transB 0
        break;
      }
      case K::kDropout:
        if (lc.dropout().mode() == proto::DropoutParam::BOOK && lc.dropout().ratio() > 0) {
          // The book's dropout scales at evaluation by (1 - ratio), as the layer computes it.
          const float scale = 1.0f - lc.dropout().ratio();
          if (o.fp16) {
            const _Float16 h = static_cast<_Float16>(scale);
            w.initializer(name + ".scale", {}, &h, sizeof h, onnx::TensorProto::FLOAT16);
          } else {
            w.initializer(name + ".scale", {}, &scale, sizeof scale, onnx::TensorProto::FLOAT);
          }
          w.node("Mul", name, {in[0], name + ".scale"}, out);
        } else if (i == last) {
          w.node("Identity", name, {in[0]}, out);
        } else {
          out = in[0];  // inverted dropout is the identity at evaluation: no node
        }
        break;
      case K::kBatchNorm: {
        // Running statistics: f64 initializers cast to f32 (BatchNormalization takes one type);
        // with fp16, float16 initializers as the other inputs are.
        std::string stats[2];
        for (int k = 0; k < 2; ++k) {
          const std::string s = name + (k ? ".running_var" : ".running_mean");
          stats[k] = add_tensor(s);
          if (o.fp16) continue;
          onnx::NodeProto* c = w.node("Cast", s + "/cast", {stats[k]}, s + "/f32");
          GraphWriter::integer(c, "to", onnx::TensorProto::FLOAT);
          stats[k] = s + "/f32";
        }
        const bool per_element = in_shapes[0].rank() == 3 && lc.batch_norm().per_activation();
        std::string x = in[0], y = out;
        if (per_element) {  // per activation: BatchNormalization over (n, C*H*W) features
          w.shape_constant(name + "/features", {0, -1});
          w.node("Reshape", name + "/to_features", {in[0], name + "/features"}, name + "/x");
          x = name + "/x", y = name + "/y";
        }
        onnx::NodeProto* n = w.node("BatchNormalization", name,
                                    {x, add_tensor(name + ".gamma"), add_tensor(name + ".beta"),
                                     stats[0], stats[1]}, y);
        GraphWriter::real(n, "epsilon", lc.batch_norm().has_eps() ? lc.batch_norm().eps() : 1e-6f);
        if (per_element) {
          std::vector<int64_t> dims{0};
          for (int64_t d : in_shapes[0].dims()) dims.push_back(d);
          w.shape_constant(name + "/chw", dims);
          w.node("Reshape", name + "/from_features", {y, name + "/chw"}, out);
        }
        break;
      }
      case K::kGlobalAvgPool:
        // (n, C, 1, 1) flattened to the layer's (n, C).
        w.node("GlobalAveragePool", name + "/pool", {in[0]}, name + "/pooled");
        w.node("Flatten", name, {name + "/pooled"}, out);
        break;
      case K::kAdd: w.node(in.size() == 2 ? "Add" : "Sum", name, in, out); break;
      case K::kConcat: GraphWriter::integer(w.node("Concat", name, in, out), "axis", 1); break;
      default: fail_input("onnx export: layer '{}': kind {} has no ONNX mapping", name, int(lc.kind_case()));
    }
    out_of[name] = out;
    shape_of[name] = out_shape;
    prev = out;
    prev_shape = out_shape;
  }
  const std::vector<int64_t> out_dims{net.num_classes()};
  const std::string result = o.softmax ? "probabilities" : "logits";
  if (o.softmax)
    GraphWriter::integer(w.node("Softmax", "softmax", {"logits_"}, o.fp16 ? "probabilities/f16" : result),
                         "axis", 1);
  if (o.fp16)
    GraphWriter::integer(w.node("Cast", result + "/cast", {result + "/f16"}, result), "to",
                         onnx::TensorProto::FLOAT);
  value_info(g->add_output(), result, out_dims);
  std::string bytes;
  DT_CHECK(model.SerializeToString(&bytes), "onnx export: serialisation failed");
  return bytes;
}

}  // namespace deeptrain::io
