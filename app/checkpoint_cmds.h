#pragma once
// `deeptrain inspect CKPT` and `deeptrain export CKPT --npz OUT`: what a checkpoint holds, and
// its weights for users who continue elsewhere (NumPy). Neither builds a model; `export --onnx`
// (app/onnx_cmds.h) does, from a checkpoint or a config with its weights.
#include <string>

#include <CLI/CLI.hpp>

namespace deeptrain::app {

struct InspectOptions {
  std::string path;     // a ckpt-* directory, its MANIFEST.pb, or a --checkpoint-dir (newest valid)
  bool verify = false;  // also read tensors.pb and check every checksum
};

struct ExportOptions {
  std::string path;     // as InspectOptions::path
  std::string npz;      // output .npz
  std::string onnx, weights;  // ONNX instead, of the checkpoint or (with weights) of a config
  bool softmax = false, json = false, fp16 = false;
};

// Each runs from its subcommand's callback during parsing (as `plot` does); errors propagate
// as exceptions (InputError: exit code 2). Output goes to stdout; notes (a passed-over
// damaged checkpoint) to stderr.
void add_inspect_command(CLI::App& cli);
void add_export_command(CLI::App& cli);
void run_inspect(const InspectOptions& o);
void run_export(const ExportOptions& o);

}  // namespace deeptrain::app
