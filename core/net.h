#pragma once
// Net: a graph of named layers built from a ModelConfig, with all parameters in one flat
// buffer and all gradients in another of the same layout (layer order), so a reducer can
// allreduce contiguous ranges and an optimizer can update in one pass.
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/layers/layer.h"

namespace deeptrain {

struct ParamEntry {
  std::string name;     // "conv1.W"
  Shape shape;
  int64_t offset;       // into the flat buffers, in elements
  int layer;            // index of the owning layer
  ParamSpec spec;
};

class Net {
 public:
  // input: per-sample (C, H, W). dtype: f32 for training, f64 for gradient checks.
  Net(const proto::ModelConfig& model, Shape input, int num_classes, DType dtype);

  const proto::ModelConfig& config() const { return config_; }  // presets expanded
  const std::vector<std::unique_ptr<Layer>>& layers() const { return layers_; }
  const std::vector<ParamEntry>& param_entries() const { return entries_; }
  const ParamEntry& param(const std::string& name) const;  // throws naming the parameter
  Tensor& params() { return params_; }                      // flat, (num_params)
  Tensor& grads() { return grads_; }
  Tensor param_view(const ParamEntry& e) { return params_.slice_flat(e.offset, e.shape); }
  int64_t num_params() const { return params_.numel(); }
  DType dtype() const { return dtype_; }
  Shape input_shape() const { return input_; }
  int num_classes() const { return num_classes_; }

  // He / Xavier normal weights and zero biases, drawn from (seed, parameter name).
  void init_params(uint64_t seed);

  // x: (n, C, H, W) -> logits (n, num_classes), plain layout. Activations are kept for backward.
  const Tensor& forward(StepContext& ctx, const Tensor& x);
  // From dlogits (modified) back to every parameter gradient. After each layer's gradients
  // are complete, grads_ready(begin, end) is called with the flat element range they occupy
  // (ranges arrive in reverse layer order), so a reducer can start communicating them.
  using GradsReady = std::function<void(int64_t begin, int64_t end)>;
  void backward(StepContext& ctx, Tensor& dlogits, const GradsReady& grads_ready = {});

  // Computing on a device (a GPU backend): the parameters and gradients get copies in the
  // backend's memory, the layers are bound to those, and activations are allocated there.
  // params() and grads() stay the host buffers that initialisation, weight files and
  // checkpoints read and write; upload_params() and download_params() move the values between
  // the two. A no-op for host backends.
  void place_on(Backend& backend);
  bool on_device() const { return device_ != nullptr; }
  Backend* device_backend() const { return device_; }  // null on the host
  // The buffers the step computes with: the device copies, or params()/grads() on the host.
  Tensor& compute_params() { return device_ ? device_params_ : params_; }
  Tensor& compute_grads() { return device_ ? device_grads_ : grads_; }
  // Both move the layers' state() too (BatchNorm's running statistics).
  void upload_params();    // params() -> the device (after initialising, loading, a broadcast)
  void download_params();  // the device -> params() (before saving or comparing replicas)

  // One line per layer: name, type, output shape, parameter count (for logs and fingerprints).
  std::string summary() const;

 private:
  struct Blob {                // a layer output and its gradient
    Shape per_sample;
    Tensor value, grad;
    Tensor value_store, grad_store;  // capacity for the largest batch seen
    int consumers = 0;
  };
  struct Node {
    std::vector<int> inputs;   // blob indices; -1 is the network input
    int output;                // blob index
    bool absorbed = false;     // a ReLU fused into its producer: nothing to run
  };
  void prepare_blobs(int64_t n);
  void bind_layers(Tensor& params, Tensor& grads);
  Tensor alloc(const Shape& s) { return device_ ? device_->empty(s, dtype_) : Tensor::empty(s, dtype_); }

  proto::ModelConfig config_;
  Shape input_;
  int num_classes_;
  DType dtype_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::vector<Node> nodes_;
  std::vector<Blob> blobs_;
  std::vector<ParamEntry> entries_;
  Tensor params_, grads_;
  Backend* device_ = nullptr;         // set by place_on() for a device backend
  Tensor device_params_, device_grads_;
  Tensor input_value_;         // the last forward's input
  Tensor accum_;               // scratch for a gradient that several consumers add to
  int64_t batch_ = -1;
};

// The ModelConfig with a preset ("deep_convnet", "simple_convnet") expanded into layers.
proto::ModelConfig expand_model(const proto::ModelConfig& model);

}  // namespace deeptrain
