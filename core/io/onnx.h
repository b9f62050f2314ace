#pragma once
// ONNX models in and out (docs/onnx.md). Export maps each layer kind to standard operators at
// opset kOnnxOpset, with a dynamic batch dimension; import reads a graph of those operators (as
// deeptrain or PyTorch's torch.onnx.export write them) into a ModelConfig plus its tensors.
// Both go through the ONNX schema compiled into the build (onnx/onnx.pb.h), never by hand.
#include <map>
#include <string>
#include <vector>

#include "core/net.h"

namespace deeptrain::io {

// The opset export writes: every operator used has had its present definition since opset 13
// or earlier, and ONNX Runtime, TensorRT and OpenVINO all run it.
inline constexpr int64_t kOnnxOpset = 13;
// The opsets import accepts: the supported operators mean the same in all of them.
inline constexpr int64_t kOnnxMinImportOpset = 9, kOnnxMaxImportOpset = 17;

struct OnnxExportOptions {
  bool softmax = false;                  // end with Softmax: "probabilities" instead of "logits"
  // Float16 initializers and activations: the float32 input is cast to float16 by the first
  // node and the output back to float32 by the last (the graph's input and output stay
  // float32). Half the file; ONNX Runtime's CPU kernels run it (docs/onnx.md: precision).
  bool fp16 = false;
  std::vector<std::string> class_names;  // metadata "class_names", comma-separated
  std::string normalization;             // metadata "input_normalization"
  std::string config_text;               // metadata "deeptrain_config" (the experiment config)
};
// The serialized ModelProto of `net` in evaluation mode: input "input" (batch, C, H, W) float32,
// output "logits" (batch, classes) or "probabilities". Parameters keep their names ("conv1.W")
// as float32 initializers; BatchNorm's running statistics stay float64 (as deeptrain holds them)
// and are cast to float32 in the graph, so that import restores them exactly. With o.fp16 every
// initializer is float16 (import reads float32 and float64 ones only).
std::string export_onnx(const Net& net, const OnnxExportOptions& o);

struct OnnxImport {
  proto::ModelConfig model;              // explicit layers, input shape and num_classes set
  std::map<std::string, Tensor> tensors; // parameters (f32) and BatchNorm state (f64), by name
  std::vector<std::string> notes;        // what was dropped or folded ("final Softmax dropped")
};
// Reads an ONNX model file. Throws InputError naming the file and the node or tensor: not an
// ONNX model, an opset outside the supported range, unsupported operators (all of them listed,
// by operator and node), attributes deeptrain has no layer for, dynamic dimensions other than
// the batch, initializers of another dtype or in external files, duplicate names.
OnnxImport import_onnx(const std::string& path);

}  // namespace deeptrain::io
