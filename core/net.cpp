#include "core/net.h"

#include "core/loss.h"

#include <cmath>

#include "core/random.h"

namespace deeptrain {
namespace {

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// Room for the largest layout a backend may write: channel blocks of 16 pad C up.
int64_t capacity_per_sample(const Shape& s) {
  if (s.rank() != 3) return s.numel();
  return (s[0] + 15) / 16 * 16 * s[1] * s[2];
}

Shape with_batch(int64_t n, const Shape& per_sample) {
  std::vector<int64_t> d{n};
  d.insert(d.end(), per_sample.dims().begin(), per_sample.dims().end());
  return Shape(d);
}

}  // namespace

Net::Net(const proto::ModelConfig& model, Shape input, int num_classes, DType dtype)
    : input_(input), num_classes_(num_classes), dtype_(dtype) {
  proto::ModelConfig m = model;
  m.set_num_classes(num_classes);
  config_ = expand_model(m);

  // Layers, their inputs by name, and their output shapes.
  std::map<std::string, int> blob_of;  // layer name -> output blob
  std::vector<Shape> shapes;
  // The loss's options first: an output stride that cannot divide the input is the config's
  // error, not a layer's shape mismatch.
  const LossFn loss(config_.loss(), input_, num_classes);
  for (int i = 0; i < config_.layer_size(); ++i) {
    const proto::LayerConfig& lc = config_.layer(i);
    if (lc.name().empty()) fail_input("model.layer[{}]: name is empty", i);
    if (blob_of.count(lc.name())) fail_input("model.layer[{}]: duplicate name '{}'", i, lc.name());
    Node node;
    if (lc.input_size() == 0) {
      node.inputs.push_back(i == 0 ? -1 : nodes_.back().output);
    } else {
      for (const std::string& in : lc.input()) {
        if (in == "data") { node.inputs.push_back(-1); continue; }
        auto it = blob_of.find(in);
        if (it == blob_of.end())
          fail_input("layer '{}': input '{}' is not an earlier layer (or 'data')", lc.name(), in);
        node.inputs.push_back(it->second);
      }
    }
    std::vector<Shape> in_shapes;
    for (int b : node.inputs) in_shapes.push_back(b < 0 ? input_ : blobs_[b].per_sample);
    layers_.push_back(make_layer(lc, i));
    Blob blob;
    blob.per_sample = layers_.back()->setup(in_shapes);
    for (int b : node.inputs)
      if (b >= 0) blobs_[b].consumers++;
    node.output = static_cast<int>(blobs_.size());
    blobs_.push_back(std::move(blob));
    blob_of[lc.name()] = node.output;
    nodes_.push_back(node);
  }
  if (layers_.empty()) fail_input("model: no layers");
  const Shape& out = blobs_[nodes_.back().output].per_sample;
  const Shape want = loss.output_shape();
  if (loss.detection()) {
    const proto::LayerConfig& last = config_.layer(config_.layer_size() - 1);
    if (last.has_concat()) {
      std::vector<std::pair<std::string, Shape>> heads;
      for (size_t k = 0; k < nodes_.back().inputs.size(); ++k) {
        const int b = nodes_.back().inputs[k];
        heads.emplace_back(last.input(int(k)), b < 0 ? input_ : blobs_[b].per_sample);
      }
      check_detection_heads(config_.loss(), num_classes, last.name(), heads);
    }
    if (out != want)
      fail_input("model: the last layer '{}' outputs {} per sample; the detection heads of "
                 "model.loss need {} (the heads' channels at 1/{} of the input's size)",
                 layers_.back()->name(), out.str(), want.str(), loss.detection_spec().stride);
  }
  if (out != want && want.rank() == 1)
    fail_input("model: the last layer '{}' outputs {} per sample, the data set has {} classes",
               layers_.back()->name(), out.str(), num_classes);
  if (out != want)  // a dense loss: a score map of the input's size
    fail_input("model: the last layer '{}' outputs {} per sample; model.loss (per pixel) needs {} "
               "(a score per class at each input pixel: upsample and crop back to the input's "
               "size)", layers_.back()->name(), out.str(), want.str());

  // Fuse each ReLU into a conv/affine producer that feeds nothing else: the ReLU's output
  // becomes the producer's output, and consumers of the ReLU read the producer's blob.
  for (size_t i = 0; i < nodes_.size(); ++i) {
    Node& relu = nodes_[i];
    if (std::string(layers_[i]->type()) != "relu" || relu.inputs[0] < 0) continue;
    const int b = relu.inputs[0];
    size_t producer = 0;
    while (nodes_[producer].output != b) ++producer;
    if (blobs_[b].consumers != 1 || !layers_[producer]->can_fuse_relu() ||
        layers_[producer]->fused_relu())
      continue;
    layers_[producer]->set_fused_relu(true);
    relu.absorbed = true;
    const int gone = relu.output;
    relu.output = b;
    blobs_[b].consumers = blobs_[gone].consumers;
    for (Node& n : nodes_)
      for (int& in : n.inputs)
        if (in == gone) in = b;
  }

  // One flat parameter buffer and one flat gradient buffer, in layer order.
  int64_t total = 0;
  for (size_t i = 0; i < layers_.size(); ++i)
    for (const ParamSpec& s : layers_[i]->param_specs()) {
      entries_.push_back({layers_[i]->name() + "." + s.suffix, s.shape, total, int(i), s});
      total += s.shape.numel();
    }
  params_ = SyncedTensor(Tensor::zeros({total}, dtype_));
  grads_ = Tensor::zeros({total}, dtype_);
  bind_layers(params_.host(), grads_);
}

void Net::bind_layers(const Tensor& params, const Tensor& grads) {
  for (size_t i = 0; i < layers_.size(); ++i) {
    std::vector<Tensor> p, g;
    for (const ParamEntry& e : entries_)
      if (e.layer == int(i)) {
        p.push_back(params.slice_flat(e.offset, e.shape));
        g.push_back(grads.slice_flat(e.offset, e.shape));
      }
    layers_[i]->bind(std::move(p), std::move(g));
  }
}

void Net::place_on(Backend& backend) {
  if (backend.device() == Device::cpu || device_ == &backend) return;
  DT_CHECK(device_ == nullptr, "the net is already placed on another device");
  device_ = &backend;
  params_.place_on(backend);
  grads_ = backend.zeros(grads_.shape(), dtype_);
  // The layers compute with views of the device copy; forward() keeps it current.
  bind_layers(params_.compute(), grads_);
  for (Blob& b : blobs_) b.value_store = b.grad_store = Tensor();  // reallocated on the device
  accum_ = Tensor();
  batch_ = -1;
}

std::vector<std::pair<std::string, const Tensor*>> Net::state() const {
  state_to_host(/*write=*/false);
  std::vector<std::pair<std::string, const Tensor*>> out;
  for (auto& [name, t] : layer_state()) out.push_back({name, t});
  return out;
}

std::vector<std::pair<std::string, Tensor*>> Net::mutable_state() {
  state_to_host(/*write=*/true);
  return layer_state();
}

std::vector<std::pair<std::string, Tensor*>> Net::layer_state() const {
  std::vector<std::pair<std::string, Tensor*>> out;
  for (const auto& layer : layers_)
    for (auto& [suffix, t] : layer->state()) out.push_back({layer->name() + "." + suffix, t});
  return out;
}

void Net::state_to_host(bool write) const {
  if (!device_) return;
  auto download = [this] {
    for (const auto& l : layers_) l->state_to_host(*device_);
    device_->synchronize();
  };
  if (write) state_head_.write_host(download);
  else state_head_.read_host(download);
}

void Net::state_to_device(bool write) {
  if (!device_) return;
  auto upload = [this] {
    for (const auto& l : layers_) l->state_to_device(*device_);
    device_->synchronize();  // as SyncedTensor's upload: the host copies may be written next
  };
  if (write) state_head_.write_device(upload);
  else state_head_.read_device(upload);
}

const ParamEntry& Net::param(const std::string& name) const {
  for (const ParamEntry& e : entries_)
    if (e.name == name) return e;
  fail_input("model has no parameter '{}'", name);
}

namespace {
// FCN's bilinear upsampling kernel (its surgery.py upsample_filt): w[i][o][y][x] = (i == o) *
// f(y) * f(x), f(t) = 1 - |t - centre| / factor, factor = ceil(size / 2).
void init_bilinear(const ParamEntry& e, Tensor& v) {
  const Shape& s = e.shape;
  if (s.rank() != 4 || s[0] != s[1] || s[2] != s[3])
    fail_input("{}: init BILINEAR needs a square kernel and as many output as input channels, "
               "got {}", e.name, s.str());
  const int64_t size = s[2], factor = (size + 1) / 2;
  const double centre = size % 2 == 1 ? double(factor - 1) : double(factor) - 0.5;
  auto f = [&](int64_t t) { return 1.0 - std::abs(double(t) - centre) / double(factor); };
  for (int64_t i = 0; i < s[0]; ++i)
    for (int64_t o = 0; o < s[1]; ++o)
      for (int64_t y = 0; y < size; ++y)
        for (int64_t x = 0; x < size; ++x) {
          const int64_t k = ((i * s[1] + o) * size + y) * size + x;
          const double w = i == o ? f(y) * f(x) : 0.0;
          if (v.dtype() == DType::f64) v.data<double>()[k] = w;
          else v.data<float>()[k] = float(w);
        }
}
}  // namespace

void Net::init_params(uint64_t seed) {
  for (const ParamEntry& e : entries_) {
    Tensor v = mutable_param_view(e);
    if (e.spec.is_bias && !e.spec.constant) { v.fill_zero(); continue; }
    if (e.spec.constant) {  // e.g. BatchNorm's gamma = 1
      for (int64_t i = 0; i < v.numel(); ++i) {
        if (dtype_ == DType::f64) v.data<double>()[i] = *e.spec.constant;
        else v.data<float>()[i] = float(*e.spec.constant);
      }
      continue;
    }
    if (e.spec.init == proto::BILINEAR) {
      init_bilinear(e, v);
      continue;
    }
    // He: N(0, 2/fan_in), the book's choice with ReLU; Xavier: N(0, 1/fan_in).
    const double var = (e.spec.init == proto::XAVIER ? 1.0 : 2.0) / double(e.spec.fan_in);
    const RandomStream rs{seed, fnv1a(e.name)};
    const double sd = std::sqrt(var);
    for (int64_t i = 0; i < v.numel(); ++i) {
      const double x = sd * rs.normal(uint64_t(i));
      if (dtype_ == DType::f64) v.data<double>()[i] = x;
      else v.data<float>()[i] = float(x);
    }
  }
}

void Net::prepare_blobs(int64_t n) {
  if (n == batch_) return;
  for (Blob& b : blobs_) {
    const int64_t cap = n * capacity_per_sample(b.per_sample);
    if (!b.value_store.raw() || b.value_store.numel() < cap) b.value_store = alloc({cap});
    b.value = b.value_store.slice_flat(0, with_batch(n, b.per_sample));
    b.grad = Tensor();  // prepare_grads() binds it: an inference batch never needs gradients
  }
  batch_ = n;
}

// The gradient buffers are allocated by the first backward at a batch size, not by forward:
// evaluation runs large batches forward only, and holding their gradient room would double
// its memory for the rest of the run.
void Net::prepare_grads() {
  for (Blob& b : blobs_) {
    if (b.grad.raw()) continue;
    const int64_t cap = batch_ * capacity_per_sample(b.per_sample);
    if (!b.grad_store.raw() || b.grad_store.numel() < cap) b.grad_store = alloc({cap});
    b.grad = b.grad_store.slice_flat(0, with_batch(batch_, b.per_sample));
  }
}

int64_t Net::held_bytes() const {
  const auto bytes = [](const Tensor& t) { return t.raw() ? int64_t(t.nbytes()) : 0; };
  int64_t sum = bytes(accum_);
  for (const Blob& b : blobs_) sum += bytes(b.value_store) + bytes(b.grad_store);
  return sum;
}

int64_t Net::activation_bytes_per_sample() const {
  int64_t elems = 0;
  for (const Blob& b : blobs_) elems += capacity_per_sample(b.per_sample);
  return elems * int64_t(dtype_size(dtype_));
}

const Tensor& Net::forward(StepContext& ctx, const Tensor& x) {
  DT_CHECK(x.dtype() == dtype_, "net is {}, input is {}", dtype_name(dtype_), dtype_name(x.dtype()));
  if (with_batch(x.dim(0), input_) != x.shape())
    fail_input("input batch {} does not match the model's input {} per sample", x.shape().str(),
               input_.str());
  prepare_blobs(x.dim(0));
  if (device_) {
    params_.compute();  // the layers' views of the device copy: the host's values, if newer
    state_to_device(/*write=*/ctx.training);  // training updates the running statistics
  }
  input_value_ = x;
  std::vector<Tensor*> in;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i].absorbed) continue;
    in.clear();
    for (int b : nodes_[i].inputs) in.push_back(b < 0 ? &input_value_ : &blobs_[b].value);
    layers_[i]->forward(ctx, in, blobs_[nodes_[i].output].value);
    if (ctx.profile) ctx.profile->mark(ctx.backend, "forward " + layers_[i]->name());
  }
  return blobs_[nodes_.back().output].value;
}

void Net::backward(StepContext& ctx, Tensor& dlogits, const GradsReady& grads_ready) {
  DT_CHECK(batch_ == dlogits.dim(0), "backward without a matching forward");
  prepare_grads();
  std::vector<bool> written(blobs_.size(), false);
  const int last = nodes_.back().output;
  std::vector<Tensor*> in, din;
  for (size_t i = nodes_.size(); i-- > 0;) {
    const Node& node = nodes_[i];
    if (node.absorbed) continue;
    const int o = node.output;
    Tensor& dout = o == last ? dlogits : blobs_[o].grad;
    if (o != last && !written[o]) ctx.backend.fill_zero(blobs_[o].grad);  // a branch nobody consumed
    in.clear();
    din.clear();
    std::vector<int> accumulate;
    for (size_t k = 0; k < node.inputs.size(); ++k) {
      const int b = node.inputs[k];
      in.push_back(b < 0 ? &input_value_ : &blobs_[b].value);
      if (b < 0) { din.push_back(nullptr); continue; }
      if (blobs_[b].consumers > 1 && written[b]) {
        if (accum_.numel() < blobs_[b].grad.numel())
          accum_ = alloc({capacity_per_sample(blobs_[b].per_sample) * batch_});
        accum_ = accum_.slice_flat(0, blobs_[b].grad.shape());
        din.push_back(&accum_);
        accumulate.push_back(b);
      } else {
        din.push_back(&blobs_[b].grad);
      }
    }
    layers_[i]->backward(ctx, in, blobs_[o].value, dout, din);
    for (int b : accumulate) {
      Tensor& g = blobs_[b].grad;
      if (g.layout() == accum_.layout()) {  // elementwise: any shared layout will do
        ctx.backend.accumulate(g, accum_);
        continue;
      }
      Tensor plain = ctx.backend.to_plain(accum_);
      Tensor gp = ctx.backend.to_plain(g);
      ctx.backend.accumulate(gp, plain);
      if (gp.raw() != g.raw()) ctx.backend.copy(gp, g);
      g.set_layout(Layout::plain);
    }
    if (ctx.profile) ctx.profile->mark(ctx.backend, "backward " + layers_[i]->name());
    for (int b : node.inputs)
      if (b >= 0) written[b] = true;
    if (grads_ready) {
      int64_t begin = -1, end = -1;
      for (const ParamEntry& e : entries_)
        if (e.layer == int(i)) {
          if (begin < 0) begin = e.offset;
          end = e.offset + e.shape.numel();
        }
      if (begin >= 0) grads_ready(begin, end);
    }
  }
}

std::string Net::summary() const {
  std::string s;
  for (size_t i = 0; i < layers_.size(); ++i) {
    int64_t np = 0;
    for (const ParamEntry& e : entries_)
      if (e.layer == int(i)) np += e.shape.numel();
    s += fmt::format("{:<8} {:<9} {:<14} {:>7}{}\n", layers_[i]->name(), layers_[i]->type(),
                     blobs_[nodes_[i].output].per_sample.str(), np,
                     nodes_[i].absorbed ? "  (fused into the layer before)" : "");
  }
  return s + fmt::format("parameters: {}\n", num_params());
}

}  // namespace deeptrain
