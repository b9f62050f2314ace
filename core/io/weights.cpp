#include "core/io/weights.h"

#include <cstring>

#include "core/checksum.h"
#include "core/config.h"
#include "core/io/atomic_file.h"
#include "core/io/npz.h"
#include "core/io/read_file.h"
#include "core/io/transfer.h"

namespace deeptrain::io {
namespace {


// Multiplies a parameter (f32 or f64) by s.
void scale_param(Net& net, const std::string& name, double s) {
  Tensor v = net.mutable_param_view(net.param(name));
  for (int64_t i = 0; i < v.numel(); ++i) {
    if (v.dtype() == DType::f64) v.data<double>()[i] *= s;
    else v.data<float>()[i] = float(v.data<float>()[i] * s);
  }
}

// The book's dropout multiplies by (1 - p) at evaluation; ours is the identity there. Every
// layer between a dropout and the nearest parameterised layer is positively homogeneous
// (ReLU, pooling, dropout), so the factor moves exactly into that layer: into the weights of
// the next one downstream, or, for a dropout after the last one, into its weights and bias.
void fold_book_dropout(Net& net) {
  const auto& layers = net.layers();
  auto params_of = [&](size_t i) {
    std::vector<std::string> names;
    for (const ParamEntry& e : net.param_entries())
      if (e.layer == int(i)) names.push_back(e.name);
    return names;
  };
  for (size_t i = 0; i < layers.size(); ++i) {
    if (std::string(layers[i]->type()) != "dropout") continue;
    // A BOOK-mode dropout applies the factor itself.
    if (net.config().layer(int(i)).dropout().mode() == proto::DropoutParam::BOOK) continue;
    const double keep = 1.0 - net.config().layer(int(i)).dropout().ratio();
    bool done = false;
    for (size_t j = i + 1; j < layers.size() && !done; ++j)
      for (const std::string& n : params_of(j))
        if (n.ends_with(".W")) { scale_param(net, n, keep); done = true; }
    for (size_t j = i; j-- > 0 && !done;) {
      auto names = params_of(j);
      for (const std::string& n : names) scale_param(net, n, keep);
      done = !names.empty();
    }
    if (!done) fail_input("dropout '{}' has no parameterised layer to fold into", layers[i]->name());
  }
}

void assign(Net& net, const ParamEntry& e, const Tensor& src, const std::string& origin) {
  if (src.shape() != e.shape)
    fail_input("{}: has shape {}, the model's {} is {}", origin, src.shape().str(), e.name, e.shape.str());
  Tensor v = net.mutable_param_view(e);
  if (src.dtype() == v.dtype()) v.copy_from(src);
  else if (src.dtype() == DType::f32 || src.dtype() == DType::f64) v.copy_from(src.to(v.dtype()));
  else fail_input("{}: '{}' is {}, expected a float array", origin, e.name, dtype_name(src.dtype()));
}

}  // namespace

void save_weights(const std::string& path, const Net& net) {
  proto::WeightsFile f;
  f.set_format_version(1);
  f.set_producer("deeptrain " DEEPTRAIN_VERSION);
  *f.mutable_model() = net.config();
  for (const ParamEntry& e : net.param_entries()) {
    Tensor v = net.param_view(e);
    proto::TensorProto* t = f.add_tensor();
    t->set_name(e.name);
    for (int64_t d : e.shape.dims()) t->add_shape(d);
    t->set_dtype(v.dtype() == DType::f64 ? proto::F64 : proto::F32);
    t->set_data(std::string(static_cast<const char*>(v.raw()), v.nbytes()));
    t->set_crc32(crc32_of(t->data()));
  }
  // Layer state (BatchNorm's running statistics, f64): evaluation needs it as much as the
  // parameters.
  for (auto& [name, v] : net.state()) {
    proto::TensorProto* t = f.add_tensor();
    t->set_name(name);
    for (int64_t d : v->shape().dims()) t->add_shape(d);
    t->set_dtype(v->dtype() == DType::f64 ? proto::F64 : proto::F32);
    t->set_data(std::string(static_cast<const char*>(v->raw()), v->nbytes()));
    t->set_crc32(crc32_of(t->data()));
  }
  std::string bytes;
  if (!f.SerializeToString(&bytes)) fail("{}: cannot serialise the weights", path);
  write_file_atomic(path, bytes);
}

WeightsFileContents read_weights_file(const std::string& path) {
  proto::WeightsFile f;
  if (!f.ParseFromString(read_file(path)))
    fail_input("{}: not a deeptrain weights file (protobuf parse failed; truncated?)", path);
  if (f.format_version() != 1)
    fail_input("{}: format_version {} is not supported (this build reads 1)", path, f.format_version());
  WeightsFileContents out;
  if (f.has_model()) out.model = f.model();
  for (const proto::TensorProto& t : f.tensor()) {
    const std::string& data = t.data();
    if (crc32_of(data) != t.crc32())
      fail_input("{}: tensor '{}' fails its CRC-32 check", path, t.name());
    if (t.dtype() != proto::F32 && t.dtype() != proto::F64)
      fail_input("{}: tensor '{}' is not f32 or f64", path, t.name());
    const DType dt = t.dtype() == proto::F64 ? DType::f64 : DType::f32;
    Shape s(std::vector<int64_t>(t.shape().begin(), t.shape().end()));
    if (int64_t(data.size()) != s.numel() * int64_t(dtype_size(dt)))
      fail_input("{}: tensor '{}' holds {} bytes, its shape {} needs {}", path, t.name(),
                 data.size(), s.str(), s.numel() * dtype_size(dt));
    Tensor v = Tensor::empty(s, dt);
    if (!data.empty()) std::memcpy(v.raw(), data.data(), data.size());
    out.tensors[t.name()] = v;
  }
  return out;
}

std::map<std::string, Tensor> read_weight_tensors(const std::string& path) {
  if (path.ends_with(".npz")) return read_npz(path);
  return read_weights_file(path).tensors;
}

void load_weights(const std::string& path, Net& net) {
  WeightsFileContents f = read_weights_file(path);
  // The architecture the weights were trained as (stored since format 1): tensors of the right
  // shapes under another model (another dropout, a BatchNorm's eps, a fused ReLU) would be taken
  // silently for this one.
  if (f.model) {
    const std::vector<std::string> diffs = message_differences(*f.model, net.config());
    if (!diffs.empty()) {
      std::string list;
      for (const std::string& d : diffs) list += (list.empty() ? "" : "; ") + d;
      fail_input("{}: the weights belong to another model than the config's (file -> config: {})",
                 path, list);
    }
  }
  // The stored tensor `name`, removed from f.tensors so that what is left over is known.
  auto take = [&](const std::string& name, const char* what) {
    auto it = f.tensors.find(name);
    if (it == f.tensors.end())
      fail_input("{}: no tensor '{}' (the model needs it{})", path, name, what);
    const Tensor t = it->second;
    f.tensors.erase(it);
    return t;
  };
  for (const ParamEntry& e : net.param_entries()) assign(net, e, take(e.name, ""), path);
  for (auto& [name, dst] : net.mutable_state()) {
    const Tensor src = take(name, ": a running statistic evaluation uses; a file written "
                                  "before weights files kept them lacks it");
    if (src.shape() != dst->shape())
      fail_input("{}: '{}' has shape {}, the model's is {}", path, name, src.shape().str(),
                 dst->shape().str());
    if (src.dtype() == dst->dtype()) dst->copy_from(src);
    else dst->copy_from(src.to(dst->dtype()));
  }
  if (!f.tensors.empty())
    fail_input("{}: tensor '{}' is not a parameter of this model", path, f.tensors.begin()->first);
}

int import_npz(const std::string& path, Net& net, NpzDropout dropout) {
  std::map<std::string, Tensor> arrays = read_npz(path);
  // The book numbers the parameterised layers 1..n: W1/b1 belong to the first one.
  std::map<int, int> book_index;  // layer index -> 1-based number
  for (const ParamEntry& e : net.param_entries())
    if (!book_index.count(e.layer)) book_index[e.layer] = int(book_index.size()) + 1;
  int imported = 0;
  for (const ParamEntry& e : net.param_entries()) {
    const std::string book = fmt::format("{}{}", e.spec.is_bias ? "b" : "W", book_index[e.layer]);
    auto it = arrays.count(e.name) ? arrays.find(e.name) : arrays.find(book);
    if (it == arrays.end())
      fail_input("{}: no array '{}' or '{}' for parameter {}", path, e.name, book, e.name);
    assign(net, e, it->second, fmt::format("{} [{}]", path, it->first));
    arrays.erase(it);
    ++imported;
  }
  // Layer state by our names ("bn1.running_mean"), as `deeptrain export` writes it.
  for (auto& [name, dst] : net.mutable_state()) {
    auto it = arrays.find(name);
    if (it == arrays.end())
      fail_input("{}: no array '{}' (the model's running statistic; `deeptrain export` writes "
                 "it with the parameters)", path, name);
    if (it->second.shape() != dst->shape())
      fail_input("{} [{}]: has shape {}, the model's is {}", path, name,
                 it->second.shape().str(), dst->shape().str());
    if (it->second.dtype() != DType::f32 && it->second.dtype() != DType::f64)
      fail_input("{}: '{}' is {}, expected a float array", path, name,
                 dtype_name(it->second.dtype()));
    dst->copy_from(it->second.dtype() == dst->dtype() ? it->second : it->second.to(dst->dtype()));
    ++imported;
  }
  if (dropout == NpzDropout::book) fold_book_dropout(net);
  return imported;
}

}  // namespace deeptrain::io
