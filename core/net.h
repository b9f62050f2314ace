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
#include "core/synced_tensor.h"

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
  int64_t num_params() const { return grads_.numel(); }  // (the parameters' layout)
  DType dtype() const { return dtype_; }
  Shape input_shape() const { return input_; }
  int num_classes() const { return num_classes_; }
  Shape output_shape() const { return blobs_[nodes_.back().output].per_sample; }  // per sample

  // ---- parameters and layer state: one owner ----
  // The parameters have a host copy and, once the net is placed on a device, a device copy;
  // the Net knows which is current and copies when a reader needs the other (SyncedTensor).
  // Host readers and writers (initialisation, weight files, checkpoints, transfer, replica
  // checks, tests) use params()/mutable_params() and never move anything: forward() takes
  // the host's values to the device if they are newer, and params() brings the device's back.
  // A write goes through mutable_*() just before it (see core/synced_tensor.h).
  const Tensor& params() const { return params_.host(); }  // flat, (num_params), current
  Tensor& mutable_params() { return params_.mutable_host(); }
  Tensor param_view(const ParamEntry& e) const { return params().slice_flat(e.offset, e.shape); }
  Tensor mutable_param_view(const ParamEntry& e) {
    return mutable_params().slice_flat(e.offset, e.shape);
  }
  // Layer state (BatchNorm's running statistics) by "<layer>.<suffix>", host copies, current:
  // the same contract, through the layers' state_to_device()/state_to_host().
  std::vector<std::pair<std::string, const Tensor*>> state() const;  // to read
  std::vector<std::pair<std::string, Tensor*>> mutable_state();       // to write
  // The step's side. The optimizer updates mutable_compute_params() in place (the host copy is
  // then stale). Gradients have one copy, where they are computed (device memory on a device):
  // they are reduced and consumed there; the rare host reader (tests, gradient checks) copies
  // them with Backend::to_host().
  Tensor& mutable_compute_params() { return params_.mutable_compute(); }
  Tensor& compute_grads() { return grads_; }

  // He / Xavier normal weights and zero biases, drawn from (seed, parameter name).
  void init_params(uint64_t seed);

  // x: (n, C, H, W) -> logits (n, num_classes), plain layout (a dense loss's: (n,
  // num_classes, H, W), in any layout the backend writes). Activations are kept for backward.
  const Tensor& forward(StepContext& ctx, const Tensor& x);
  // From dlogits (modified) back to every parameter gradient. After each layer's gradients
  // are complete, grads_ready(begin, end) is called with the flat element range they occupy
  // (ranges arrive in reverse layer order), so a reducer can start communicating them.
  using GradsReady = std::function<void(int64_t begin, int64_t end)>;
  void backward(StepContext& ctx, Tensor& dlogits, const GradsReady& grads_ready = {});

  // Computing on a device (a GPU backend): the parameters get a copy in the backend's memory,
  // the gradients and activations live there, and the layers are bound to those. A no-op for
  // host backends.
  void place_on(Backend& backend);
  bool on_device() const { return device_ != nullptr; }
  Backend* device_backend() const { return device_; }  // null on the host

  // One line per layer: name, type, output shape, parameter count (for logs and fingerprints).
  std::string summary() const;
  // The bytes one sample's layer outputs take (the room forward holds per sample of a batch).
  int64_t activation_bytes_per_sample() const;
  int64_t held_bytes() const;  // the layer outputs' and their gradients' buffers, as allocated

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
  void prepare_grads();
  void bind_layers(const Tensor& params, const Tensor& grads);
  // The layers' state to the host (download) or the device (upload), when it is stale there.
  void state_to_host(bool write) const;
  void state_to_device(bool write);
  std::vector<std::pair<std::string, Tensor*>> layer_state() const;  // as it is, no move
  Tensor alloc(const Shape& s) { return device_ ? device_->empty(s, dtype_) : Tensor::empty(s, dtype_); }

  proto::ModelConfig config_;
  Shape input_;
  int num_classes_;
  DType dtype_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::vector<Node> nodes_;
  std::vector<Blob> blobs_;
  std::vector<ParamEntry> entries_;
  SyncedTensor params_;
  Tensor grads_;                      // in the compute memory
  mutable SyncHead state_head_;       // which copy of the layers' state() is current
  Backend* device_ = nullptr;         // set by place_on() for a device backend
  Tensor input_value_;         // the last forward's input
  Tensor accum_;               // scratch for a gradient that several consumers add to
  int64_t batch_ = -1;
};

// The ModelConfig with a preset ("deep_convnet", "simple_convnet") expanded into layers.
proto::ModelConfig expand_model(const proto::ModelConfig& model);

}  // namespace deeptrain
