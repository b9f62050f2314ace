// An ONNX graph as a deeptrain model (core/io/onnx.h). Nodes are read in their (topological)
// order; each becomes a layer, or an alias of its input where deeptrain's layers already do the
// work (Flatten before Gemm: affine flattens; Dropout and Identity at evaluation).
#include <cstring>
#include <set>

#include "core/error.h"
#include "core/io/onnx.h"
#include "core/io/read_file.h"
#include "onnx/onnx.pb.h"

namespace deeptrain::io {
namespace {

constexpr uint64_t kMaxOnnxBytes = uint64_t(2) << 30;  // protobuf's own limit

struct Value {        // what an ONNX tensor name stands for
  std::string layer;  // the producing layer ("data": the graph input)
  Shape shape;        // that layer's per-sample output shape
};

class Importer {
 public:
  explicit Importer(const std::string& path) : path_(path) {}
  OnnxImport run(const onnx::ModelProto& m);

 private:
  template <class... A>
  [[noreturn]] void fail(fmt::format_string<A...> f, A&&... a) {
    fail_input("{}: {}", path_, fmt::format(f, std::forward<A>(a)...));
  }
  Tensor decode(const onnx::TensorProto& t);
  const Tensor& constant(const onnx::NodeProto& n, int i, const char* what);
  const Value& value(const onnx::NodeProto& n, int i);
  std::string layer_name(const onnx::NodeProto& n);
  void add_layer(proto::LayerConfig lc, const onnx::NodeProto& n, std::vector<std::string> ins);

  std::string path_;
  std::map<std::string, Tensor> consts_;  // initializers, Constant and Cast outputs
  std::map<std::string, Value> values_;
  std::set<std::string> names_;
  std::vector<Shape> in_shapes_;
  OnnxImport out_;
};

const onnx::AttributeProto* attr(const onnx::NodeProto& n, const std::string& name) {
  for (const onnx::AttributeProto& a : n.attribute())
    if (a.name() == name) return &a;
  return nullptr;
}
int64_t attr_int(const onnx::NodeProto& n, const std::string& name, int64_t def) {
  const onnx::AttributeProto* a = attr(n, name);
  return a ? a->i() : def;
}
std::vector<int64_t> attr_ints(const onnx::NodeProto& n, const std::string& name) {
  const onnx::AttributeProto* a = attr(n, name);
  return a ? std::vector<int64_t>(a->ints().begin(), a->ints().end()) : std::vector<int64_t>{};
}
std::string where(const onnx::NodeProto& n) { return fmt::format("{} node '{}'", n.op_type(), n.name()); }

Tensor Importer::decode(const onnx::TensorProto& t) {
  if (t.data_location() == onnx::TensorProto::EXTERNAL)
    fail("tensor '{}': data in an external file; import reads self-contained models", t.name());
  std::vector<int64_t> dims(t.dims().begin(), t.dims().end());
  for (int64_t d : dims)
    if (d < 0) fail("tensor '{}': negative dimension", t.name());
  const Shape shape(dims);
  DType dt;
  size_t size;
  switch (t.data_type()) {
    case onnx::TensorProto::FLOAT: dt = DType::f32, size = 4; break;
    case onnx::TensorProto::DOUBLE: dt = DType::f64, size = 8; break;
    case onnx::TensorProto::INT64: dt = DType::i64, size = 8; break;
    default:
      fail("tensor '{}': dtype {} ({}); import takes float32 weights (float64 BatchNorm "
           "statistics, int64 shapes)", t.name(),
           onnx::TensorProto::DataType_Name(onnx::TensorProto::DataType(t.data_type())), t.data_type());
  }
  Tensor x = Tensor::empty(shape, dt);
  const size_t n = size_t(shape.numel());
  if (t.has_raw_data()) {
    if (t.raw_data().size() != n * size)
      fail("tensor '{}': {} bytes of data for shape {}", t.name(), t.raw_data().size(), shape.str());
    std::memcpy(x.raw(), t.raw_data().data(), n * size);  // little-endian, as this host
  } else {
    const size_t have = dt == DType::f32 ? t.float_data_size()
                        : dt == DType::f64 ? t.double_data_size() : t.int64_data_size();
    if (have != n) fail("tensor '{}': {} values for shape {}", t.name(), have, shape.str());
    if (dt == DType::f32) std::memcpy(x.raw(), t.float_data().data(), n * 4);
    if (dt == DType::f64) std::memcpy(x.raw(), t.double_data().data(), n * 8);
    if (dt == DType::i64) std::memcpy(x.raw(), t.int64_data().data(), n * 8);
  }
  return x;
}

const Tensor& Importer::constant(const onnx::NodeProto& n, int i, const char* what) {
  if (i >= n.input_size() || n.input(i).empty()) fail("{}: no {}", where(n), what);
  auto it = consts_.find(n.input(i));
  if (it == consts_.end())
    fail("{}: its {} '{}' is computed in the graph; import needs it as a constant", where(n),
         what, n.input(i));
  return it->second;
}

const Value& Importer::value(const onnx::NodeProto& n, int i) {
  auto it = values_.find(n.input(i));
  if (it == values_.end())
    fail("{}: input '{}' is neither the graph input nor an earlier node's output", where(n), n.input(i));
  return it->second;
}

std::string Importer::layer_name(const onnx::NodeProto& n) {
  std::string s = n.name();
  while (!s.empty() && s[0] == '/') s.erase(0, 1);  // PyTorch's "/layer1/conv1/Conv"
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') c = '_';
  for (char& c : s) if (c == '.') c = '_';  // "." separates a layer from its tensor's suffix
  if (s.empty() || s == "data") s = n.op_type() + std::to_string(names_.size() + 1);
  std::string u = s;
  for (int k = 2; names_.count(u); ++k) u = s + "_" + std::to_string(k);
  names_.insert(u);
  return u;
}

void Importer::add_layer(proto::LayerConfig lc, const onnx::NodeProto& n, std::vector<std::string> ins) {
  std::vector<Shape> shapes;
  const std::string prev = out_.model.layer_size() ? out_.model.layer(out_.model.layer_size() - 1).name() : "data";
  for (int i = 0; i < int(ins.size()); ++i) {
    const Value& v = value(n, i);
    shapes.push_back(v.shape);
    if (ins.size() > 1 || v.layer != prev) lc.add_input(v.layer);
  }
  const Shape out = make_layer(lc, out_.model.layer_size())->setup(shapes);
  values_[n.output(0)] = {lc.name(), out};
  *out_.model.add_layer() = std::move(lc);
}

OnnxImport Importer::run(const onnx::ModelProto& m) {
  int64_t opset = -1;
  for (const onnx::OperatorSetIdProto& o : m.opset_import())
    if (o.domain().empty() || o.domain() == "ai.onnx") opset = o.version();
  if (opset < kOnnxMinImportOpset || opset > kOnnxMaxImportOpset)
    fail("opset {} of the standard operators; import knows opsets {} to {}", opset,
         kOnnxMinImportOpset, kOnnxMaxImportOpset);
  static const std::set<std::string> known{
      "Conv", "MaxPool", "Relu", "Gemm", "BatchNormalization", "Add", "Sum", "Concat",
      "GlobalAveragePool", "Flatten", "Dropout", "Identity", "Softmax", "Cast", "Constant", "Mul",
      "Reshape"};
  std::vector<std::string> unknown;
  const onnx::GraphProto& g = m.graph();
  for (const onnx::NodeProto& n : g.node())
    if (!known.count(n.op_type()) || !(n.domain().empty() || n.domain() == "ai.onnx"))
      unknown.push_back(fmt::format("{} (node '{}')", n.op_type(), n.name()));
  if (!unknown.empty())
    fail("unsupported operators: {}", fmt::join(unknown, ", "));

  for (const onnx::TensorProto& t : g.initializer()) {
    if (consts_.count(t.name())) fail("initializer '{}' appears twice", t.name());
    consts_[t.name()] = decode(t);
  }
  // The one graph input that is not an initializer: (batch, C, H, W) with C, H, W fixed.
  for (const onnx::ValueInfoProto& in : g.input()) {
    if (consts_.count(in.name())) continue;
    if (values_.count("") || !values_.empty()) fail("more than one graph input ('{}')", in.name());
    const auto& sh = in.type().tensor_type().shape();
    if (in.type().tensor_type().elem_type() != onnx::TensorProto::FLOAT)
      fail("input '{}': elem type {}, import takes float32 images", in.name(),
           in.type().tensor_type().elem_type());
    if (sh.dim_size() != 4) fail("input '{}': rank {}, import takes (batch, C, H, W)", in.name(), sh.dim_size());
    std::vector<int64_t> chw;
    for (int i = 1; i < 4; ++i) {
      if (!sh.dim(i).has_dim_value() || sh.dim(i).dim_value() <= 0)
        fail("input '{}': dimension {} ('{}') is not fixed; import needs C, H, W as numbers",
             in.name(), i, sh.dim(i).dim_param());
      chw.push_back(sh.dim(i).dim_value());
    }
    values_[in.name()] = {"data", Shape(chw)};
    out_.model.mutable_input()->set_channels(int32_t(chw[0]));
    out_.model.mutable_input()->set_height(int32_t(chw[1]));
    out_.model.mutable_input()->set_width(int32_t(chw[2]));
  }
  if (values_.empty()) fail("the graph has no input");

  const std::string graph_out = g.output_size() == 1 ? g.output(0).name() : "";
  if (graph_out.empty()) fail("{} graph outputs; import takes one (the logits)", g.output_size());
  std::set<std::string> outputs;
  for (const onnx::NodeProto& n : g.node()) {
    if (n.output_size() < 1) fail("{}: no output", where(n));
    if (!outputs.insert(n.output(0)).second || consts_.count(n.output(0)))
      fail("{}: its output '{}' has the name of another tensor", where(n), n.output(0));
    const std::string& op = n.op_type();
    auto alias = [&] { values_[n.output(0)] = value(n, 0); };
    if (op == "Constant") {
      const onnx::AttributeProto* a = attr(n, "value");
      if (!a || !a->has_t()) fail("{}: only 'value' tensors are supported", where(n));
      consts_[n.output(0)] = decode(a->t());
    } else if (op == "Cast" && consts_.count(n.input(0))) {
      consts_[n.output(0)] = consts_.at(n.input(0));  // kept in its own precision (f64 stats)
    } else if (op == "Identity" || op == "Dropout" || op == "Flatten" || op == "Reshape") {
      // Flatten (axis 1) and Reshape to (n, -1) or back: affine flattens by itself, BatchNorm
      // over flattened activations is per_activation (below). Other reshapes have no layer.
      if (op == "Flatten" && attr_int(n, "axis", 1) != 1) fail("{}: axis must be 1", where(n));
      if (op == "Reshape") {
        const Tensor& s = constant(n, 1, "shape");
        const int64_t* d = s.data<int64_t>();
        int64_t prod = 1;
        for (int64_t i = 1; i < s.numel(); ++i) prod *= d[i] == -1 ? value(n, 0).shape.numel() : d[i];
        if (s.numel() < 2 || prod != value(n, 0).shape.numel())
          fail("{}: only (batch, features) and back is supported", where(n));
      }
      alias();
    } else if (op == "Softmax") {
      if (n.output(0) != graph_out) fail("{}: Softmax only at the end (it is dropped)", where(n));
      out_.notes.push_back(fmt::format("{}: the final Softmax is dropped: deeptrain's models end "
                                       "in logits", where(n)));
      alias();
    } else {
      proto::LayerConfig lc;
      lc.set_name(layer_name(n));
      const std::string& name = lc.name();
      std::vector<std::string> ins{n.input(0)};
      if (op == "Conv" || op == "MaxPool") {
        const std::vector<int64_t> k = attr_ints(n, "kernel_shape"), s = attr_ints(n, "strides"),
                                   p = attr_ints(n, "pads"), dil = attr_ints(n, "dilations");
        const int64_t stride = s.empty() ? 1 : s[0], pad = p.empty() ? 0 : p[0];
        for (int64_t x : s) if (x != stride) fail("{}: strides {} differ", where(n), fmt::join(s, ","));
        for (int64_t x : p) if (x != pad) fail("{}: pads {} are not all equal", where(n), fmt::join(p, ","));
        for (int64_t x : dil) if (x != 1) fail("{}: dilations are not supported", where(n));
        if (attr(n, "auto_pad") && attr(n, "auto_pad")->s() != "NOTSET")
          fail("{}: auto_pad is not supported (give pads)", where(n));
        if (op == "MaxPool") {
          if (k.size() != 2 || k[0] != k[1]) fail("{}: only square kernels", where(n));
          if (attr_int(n, "ceil_mode", 0) != 0) fail("{}: ceil_mode 1 is not supported", where(n));
          if (n.output_size() > 1) fail("{}: the indices output is not supported", where(n));
          lc.mutable_max_pool()->set_kernel(int32_t(k[0]));
          lc.mutable_max_pool()->set_stride(int32_t(stride));
          lc.mutable_max_pool()->set_pad(int32_t(pad));
        } else {
          if (attr_int(n, "group", 1) != 1) fail("{}: grouped convolution is not supported", where(n));
          const Tensor& W = constant(n, 1, "weight");
          if (W.dtype() != DType::f32 || W.shape().rank() != 4)
            fail("{}: weight '{}' must be float32 (K, C, kh, kw)", where(n), n.input(1));
          auto* c = lc.mutable_conv();
          c->set_out_channels(int32_t(W.dim(0)));
          c->set_kernel_h(int32_t(W.dim(2)));
          c->set_kernel_w(int32_t(W.dim(3)));
          if (W.dim(2) == W.dim(3)) c->set_kernel(int32_t(W.dim(2))), c->clear_kernel_h(), c->clear_kernel_w();
          c->set_stride(int32_t(stride));
          c->set_pad(int32_t(pad));
          out_.tensors[name + ".W"] = W;
          if (n.input_size() > 2 && !n.input(2).empty()) out_.tensors[name + ".b"] = constant(n, 2, "bias");
          else c->set_no_bias(true);
        }
      } else if (op == "Relu") {
        lc.mutable_relu();
      } else if (op == "Gemm") {
        if (attr(n, "alpha") && attr(n, "alpha")->f() != 1.0f) fail("{}: alpha must be 1", where(n));
        if (attr(n, "beta") && attr(n, "beta")->f() != 1.0f) fail("{}: beta must be 1", where(n));
        if (attr_int(n, "transA", 0) != 0) fail("{}: transA must be 0", where(n));
        Tensor W = constant(n, 1, "weight");
        if (W.dtype() != DType::f32 || W.shape().rank() != 2) fail("{}: weight must be float32 2-d", where(n));
        if (attr_int(n, "transB", 0)) {  // PyTorch's Linear: (m, d); affine takes (d, m)
          Tensor t = Tensor::empty({W.dim(1), W.dim(0)}, DType::f32);
          for (int64_t i = 0; i < W.dim(0); ++i)
            for (int64_t j = 0; j < W.dim(1); ++j) t.data<float>()[j * W.dim(0) + i] = W.data<float>()[i * W.dim(1) + j];
          W = t;
        }
        lc.mutable_affine()->set_out_features(int32_t(W.dim(1)));
        out_.tensors[name + ".W"] = W;
        if (n.input_size() > 2 && !n.input(2).empty()) {
          const Tensor& b = constant(n, 2, "bias");
          if (b.numel() != W.dim(1)) fail("{}: bias '{}' has {} values, not {}", where(n), n.input(2), b.numel(), W.dim(1));
          out_.tensors[name + ".b"] = b.reshape({W.dim(1)});
        } else {
          lc.mutable_affine()->set_no_bias(true);
        }
      } else if (op == "BatchNormalization") {
        if (attr_int(n, "training_mode", 0) != 0) fail("{}: training_mode must be 0", where(n));
        const onnx::AttributeProto* eps = attr(n, "epsilon");
        lc.mutable_batch_norm()->set_eps(eps ? eps->f() : 1e-5f);  // ONNX's default
        const char* parts[] = {"scale", "bias", "mean", "var"};
        const char* names[] = {".gamma", ".beta", ".running_mean", ".running_var"};
        const Shape& s = value(n, 0).shape;
        for (int i = 0; i < 4; ++i) {
          const Tensor& t = constant(n, i + 1, parts[i]);
          if (t.dtype() == DType::i64) fail("{}: {} '{}' is not floating point", where(n), parts[i], n.input(i + 1));
          // Parameters f32, running statistics f64 (deeptrain's state), each as given.
          out_.tensors[name + names[i]] = i < 2 ? t.to(DType::f32) : t.to(DType::f64);
        }
        const int64_t c = out_.tensors[name + ".gamma"].numel();
        if (s.rank() == 3 && c == s.numel() && c != s[0]) lc.mutable_batch_norm()->set_per_activation(true);
      } else if (op == "GlobalAveragePool") {
        lc.mutable_global_avg_pool();
      } else if (op == "Add" || op == "Sum" || op == "Concat") {
        for (int i = 1; i < n.input_size(); ++i) {
          if (consts_.count(n.input(i)) || consts_.count(n.input(0)))
            fail("{}: adding a constant is not supported", where(n));
          ins.push_back(n.input(i));
        }
        if (op == "Concat") {
          const int64_t axis = attr_int(n, "axis", 1);
          if (axis != 1 && axis != -3) fail("{}: only the channel axis (1)", where(n));
          lc.mutable_concat();
        } else {
          lc.mutable_add();
        }
      } else if (op == "Mul") {  // by a scalar: the book's dropout at evaluation
        const Tensor& c = constant(n, 1, "scale");
        const float scale = c.numel() == 1 && c.dtype() == DType::f32 ? c.data<float>()[0] : -1.0f;
        const float ratio = 1.0f - scale;
        if (!(ratio >= 0.0f && ratio < 1.0f) || 1.0f - ratio != scale)
          fail("{}: only multiplication by a float32 scalar in (0, 1] (the book's dropout)", where(n));
        lc.mutable_dropout()->set_ratio(ratio);
        lc.mutable_dropout()->set_mode(proto::DropoutParam::BOOK);
      } else {
        fail("{}: unexpected here (its inputs are not constants)", where(n));
      }
      add_layer(std::move(lc), n, ins);
    }
  }
  auto it = values_.find(graph_out);
  if (it == values_.end() || it->second.layer == "data") fail("output '{}' is not computed by a layer", graph_out);
  if (it->second.layer != out_.model.layer(out_.model.layer_size() - 1).name() || it->second.shape.rank() != 1)
    fail("output '{}' must be the last node's (batch, classes)", graph_out);
  out_.model.set_num_classes(int32_t(it->second.shape[0]));
  return std::move(out_);
}

}  // namespace

OnnxImport import_onnx(const std::string& path) {
  const std::string bytes = read_file(path, kMaxOnnxBytes, "an ONNX model");
  onnx::ModelProto m;
  if (!m.ParseFromString(bytes) || !m.has_graph() || m.ir_version() <= 0)
    fail_input("{}: not an ONNX model (no ModelProto with a graph; a truncated or another file)", path);
  return Importer(path).run(m);
}

}  // namespace deeptrain::io
