#pragma once
// Optimizers: the book's update rules (common/optimizer.py of "Deep Learning from Scratch") plus
// AdamW, applied in one pass over the model's flat f32 parameter buffer.
//
// All parameters live in one flat buffer, all gradients in another of the same layout, and an
// optimizer's state (Adam's m and v, ...) is flat in that layout too, so a checkpoint can save it
// and a data-parallel job can resume it on any number of ranks. Every element is updated
// independently of the others (no reductions), so the result does not depend on the thread count.
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/backend/backend.h"
#include "core/tensor.h"
#include "proto/deeptrain.pb.h"

namespace deeptrain {

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual const char* name() const = 0;
  // One update of params (f32, n) from grads (f32, n) at learning rate lr (a schedule may change lr
  // every step). lr_scale: optional per-element multiplier (f32, n) for per-layer learning rates and
  // frozen layers (0); nullptr means 1 everywhere. Frozen elements (scale 0) are skipped entirely:
  // their params stay bit-identical (no weight decay either) and their state is not touched.
  virtual void step(Tensor& params, const Tensor& grads, float lr, const Tensor* lr_scale = nullptr) = 0;
  // Named state tensors in the params' layout (e.g. {"m", &m_}, {"v", &v_}), for checkpoints.
  // Empty for SGD.
  virtual std::vector<std::pair<std::string, Tensor*>> state() = 0;
  // Every step() counts, whichever the optimizer; Adam's bias correction uses it as t.
  int64_t steps_taken() const { return t_; }
  void set_steps_taken(int64_t t) { t_ = t; }  // restoring a checkpoint

 protected:
  int64_t t_ = 0;
};

// Validates cfg (an InputError naming the field, e.g. "optimizer.beta1: must be in [0, 1), got 1.5";
// "optimizer.type: not set"), fills defaults (0 means "default" for every field but lr) and
// allocates zeroed state for n parameters.
// Defaults: momentum 0.9, beta1 0.9, beta2 0.999, decay_rate 0.99, eps 1e-7 (the book's value, for
// every optimizer), weight_decay 0. weight_decay is decoupled for ADAMW and L2 (wd * p added to the
// gradient) for the others.
//
// device: the backend whose memory holds the parameters when that is not the host (a GPU): the
// state is allocated there and every step is that backend's fused update (the same rules,
// element by element). nullptr: host buffers, the update here.
std::unique_ptr<Optimizer> make_optimizer(const proto::OptimizerConfig& cfg, int64_t n,
                                          Backend* device = nullptr);

}  // namespace deeptrain
