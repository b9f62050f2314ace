#pragma once
// ONNX from the command line (app/onnx_cmds.cpp): `export ... --onnx` and `import-onnx`.
#include <string>

#include <CLI/CLI.hpp>

namespace deeptrain::app {

struct OnnxExportCli {
  // Either a config with its weights file, or a checkpoint (a resolved ckpt-* path: its config
  // and tensors are used; config and weights stay empty).
  std::string config, weights, checkpoint, onnx;
  bool softmax = false;  // end the graph with Softmax ("probabilities")
  bool json = false;
  bool fp16 = false;     // float16 weights and activations (io::OnnxExportOptions::fp16)
};
struct OnnxImportCli {
  std::string model, out, weights;
  std::string dataset = "mnist";
  std::string name = "imported";
  bool json = false;
};

// Both throw InputError naming the file and the node or tensor; nothing is written then.
void run_export_onnx(const OnnxExportCli& o);
void run_import_onnx(const OnnxImportCli& o);
void add_import_onnx_command(CLI::App& cli);

}  // namespace deeptrain::app
