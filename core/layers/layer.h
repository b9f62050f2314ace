#pragma once
// A layer: explicit forward/backward over batch tensors, parameters as views into the Net's
// flat buffers. Shapes given to setup() are per sample (no batch dimension).
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/backend/backend.h"
#include "core/micro_shards.h"
#include "core/step_profile.h"
#include "proto/deeptrain.pb.h"

namespace deeptrain {

// What one forward/backward pass needs to know beyond its tensors.
struct StepContext {
  Backend& backend;
  bool training = false;
  uint64_t seed = 0;
  int64_t step = 0;                    // global step (random streams are keyed by it)
  const int64_t* sample_ids = nullptr; // global sample indices of the batch's n samples
  // Sums a small f64 tensor over all ranks, in place (synchronised BatchNorm's statistics).
  // Empty in a single process: the local batch is then the global one. Every rank must call
  // it the same number of times per step, so with it set every rank runs forward and
  // backward on every step.
  std::function<void(Tensor&)> allreduce_sum = {};
  // With allreduce_sum set: the samples of the global batch over all ranks, which synchronised
  // BatchNorm divides by (known to the trainer, so no collective is spent on it).
  int64_t global_batch = 0;
  // Exact mode (core/micro_shards.h): layers compute each micro-shard of the batch on its own,
  // write parameter gradients into the micro-shards' rows and sum over samples per micro-shard.
  // Null: the batch is one piece.
  MicroShards* micro = nullptr;
  // Set by `deeptrain bench --profile`: Net marks each layer's forward and backward in it.
  StepProfile* profile = nullptr;
  // Set where no backward follows the forward (evaluation, prediction): layers may then skip
  // what only their backward reads (max pooling's argmax).
  bool forward_only = false;
};

struct ParamSpec {
  std::string suffix;   // "W" or "b"; the parameter is named "<layer>.<suffix>"
  Shape shape;
  proto::Init init;     // ignored for biases (zero)
  int64_t fan_in;
  bool is_bias;
  // When set, the parameter starts at this value instead (BatchNorm's gamma = 1).
  std::optional<double> constant = std::nullopt;
};

class Layer {
 public:
  Layer(std::string name, int index) : name_(std::move(name)), index_(index) {}
  virtual ~Layer() = default;
  const std::string& name() const { return name_; }
  int index() const { return index_; }
  virtual const char* type() const = 0;

  // Checks the input shapes and returns the output shape (per sample).
  virtual Shape setup(const std::vector<Shape>& in) = 0;
  virtual std::vector<ParamSpec> param_specs() const { return {}; }
  // Views into the flat buffers, in param_specs() order.
  void bind(std::vector<Tensor> params, std::vector<Tensor> grads) {
    params_ = std::move(params);
    grads_ = std::move(grads);
  }
  const std::vector<Tensor>& params() const { return params_; }
  // Tensors the layer updates itself and evaluation needs (BatchNorm's running statistics),
  // by suffix: "<layer>.<suffix>" is saved with the weights. Not parameters: no gradient,
  // never seen by an optimizer or a reducer. Always f64, whatever the net's dtype.
  virtual std::vector<std::pair<std::string, Tensor*>> state() { return {}; }
  // A layer computing on a device keeps a copy of its state there (no readback per step), and
  // state() returns the host tensors as they are. The Net owns which copy is current and calls
  // these when a reader needs the other: read and write state through Net::state() and
  // Net::mutable_state(), not through a layer.
  virtual void state_to_device(Backend&) {}
  virtual void state_to_host(Backend&) {}

  // A ReLU that directly follows this layer can be computed inside it (one pass less).
  virtual bool can_fuse_relu() const { return false; }
  void set_fused_relu(bool on) { fused_relu_ = on; }
  bool fused_relu() const { return fused_relu_; }

  virtual void forward(StepContext& ctx, const std::vector<Tensor*>& in, Tensor& out) = 0;
  // dout is scratch (may be modified). din[i] is null when input i needs no gradient.
  virtual void backward(StepContext& ctx, const std::vector<Tensor*>& in, const Tensor& out,
                        Tensor& dout, const std::vector<Tensor*>& din) = 0;

 protected:
  std::string name_;
  int index_;
  std::vector<Tensor> params_, grads_;
  bool fused_relu_ = false;
};

// Builds the layer a LayerConfig describes (fails with the layer's name on a bad parameter).
std::unique_ptr<Layer> make_layer(const proto::LayerConfig& cfg, int index);

}  // namespace deeptrain
