// `deeptrain inspect` and `deeptrain export`: checkpoints seen from the command line
// (core/io/checkpoint.h has the format). Library calls throw; main turns errors into messages.
#include "app/checkpoint_cmds.h"

#include <cstdio>
#include <memory>
#include <vector>

#include "app/onnx_cmds.h"
#include "core/io/checkpoint.h"
#include "core/error.h"

namespace deeptrain::app {
namespace {

// The checkpoint `path` names, telling on stderr which newer ones were passed over and why.
std::string checkpoint_at(const std::string& path) {
  std::vector<std::string> skipped;
  const std::string chosen = io::resolve_checkpoint(path, &skipped);
  for (const std::string& why : skipped) std::fprintf(stderr, "note: passed over: %s\n", why.c_str());
  if (chosen != path) std::fprintf(stderr, "note: the newest valid checkpoint in %s is %s\n",
                                   path.c_str(), chosen.c_str());
  return chosen;
}

}  // namespace

void run_inspect(const InspectOptions& o) {
  std::fputs(io::describe_checkpoint(checkpoint_at(o.path), o.verify).c_str(), stdout);
}

void run_export(const ExportOptions& o) {
  if (!o.onnx.empty() || !o.weights.empty()) {
    if (o.onnx.empty() || !o.npz.empty())
      fail_input("export: ONNX takes a config with --weights W, or a checkpoint, and --onnx "
                 "OUT.onnx (not --npz)");
    if (!o.weights.empty()) run_export_onnx({o.path, o.weights, "", o.onnx, o.softmax, o.json, o.fp16});
    else run_export_onnx({"", "", checkpoint_at(o.path), o.onnx, o.softmax, o.json, o.fp16});
    return;
  }
  if (o.fp16) fail_input("export: --fp16 is for --onnx (an .npz keeps the checkpoint's float32)");
  if (o.npz.empty()) fail_input("export: give --npz OUT.npz (a checkpoint) or --onnx OUT.onnx");
  const std::string path = checkpoint_at(o.path);
  const io::TrainingState s = io::load_checkpoint(path);
  io::export_npz(s, o.npz);
  int arrays = 0;
  for (const io::NamedTensor& t : s.tensors) arrays += !t.name.starts_with("optim/");
  std::printf("wrote %s: %d arrays (the weights of %s, global step %lld)\n", o.npz.c_str(), arrays,
              path.c_str(), static_cast<long long>(s.global_step));
}

void add_inspect_command(CLI::App& cli) {
  auto o = std::make_shared<InspectOptions>();
  CLI::App* sub = cli.add_subcommand(
      "inspect", "print what a checkpoint holds (step, epoch, tensors and sizes, metrics, config) "
                 "without building the model");
  sub->add_option("checkpoint", o->path,
                  "a checkpoint (DIR/ckpt-0000000400), or a --checkpoint-dir for its newest valid one")
      ->required();
  sub->add_flag("--verify", o->verify, "also read the tensors and check every checksum");
  sub->footer(
      "Examples:\n"
      "  deeptrain inspect runs/dcn/checkpoints/ckpt-0000001200\n"
      "  deeptrain inspect runs/dcn/checkpoints --verify");
  sub->callback([o] { run_inspect(*o); });
}

void add_export_command(CLI::App& cli) {
  auto o = std::make_shared<ExportOptions>();
  CLI::App* sub = cli.add_subcommand(
      "export", "write a checkpoint's weights (parameters and layer state, named as in the model: "
                "conv1.W, ...) as a NumPy .npz");
  sub->add_option("checkpoint", o->path,
                  "a checkpoint (DIR/ckpt-0000000400), or a --checkpoint-dir for its newest valid one")
      ->required();
  sub->add_option("--npz", o->npz, "the .npz to write");
  sub->add_option("--onnx", o->onnx, "write an ONNX model instead (docs/onnx.md) of the checkpoint, "
                                     "or of a config given with --weights");
  sub->add_option("--weights", o->weights, "with --onnx: the positional argument is a config, and "
                                           "this its weights file");
  sub->add_flag("--softmax", o->softmax, "with --onnx: end with Softmax (output 'probabilities')");
  sub->add_flag("--fp16", o->fp16, "with --onnx: float16 weights and activations (half the "
                                   "file; input and output stay float32; docs/onnx.md)");
  sub->add_flag("--json", o->json, "with --onnx: one JSON object per line");
  sub->footer(
      "Examples:\n"
      "  deeptrain export runs/dcn/checkpoints --npz dcn.npz\n"
      "  deeptrain export examples/deep_convnet_mnist.prototxt --weights dcn.weights --onnx dcn.onnx\n"
      "  deeptrain export runs/dcn/checkpoints --onnx dcn.onnx\n"
      "  deeptrain export runs/dcn/checkpoints --onnx dcn_fp16.onnx --fp16\n"
      "  python3 -c \"import numpy as np; print(np.load('dcn.npz')['conv1.W'].shape)\"");
  sub->callback([o] { run_export(*o); });
}

}  // namespace deeptrain::app
