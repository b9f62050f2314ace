// deeptrain's command line: parses, wires the pieces, turns errors into messages and exit codes
// (2: bad input such as a config, data or weights file; 1: anything else).
#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>

#include "app/commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  using namespace deeptrain::app;
  CLI::App cli{"deeptrain: data-parallel training of the convolutional networks of "
               "'Deep Learning from Scratch', chapter 8"};
  cli.set_version_flag("--version", "deeptrain " DEEPTRAIN_VERSION);
  cli.require_subcommand(1);
  cli.footer(
      "Examples:\n"
      "  deeptrain train examples/deep_convnet_mnist.prototxt\n"
      "  deeptrain train examples/deep_convnet_mnist.prototxt --epochs 1 --json\n"
      "  deeptrain eval examples/deep_convnet_mnist.prototxt --weights runs/dcn.weights\n"
      "  deeptrain eval examples/deep_convnet_mnist.prototxt --init-from book_deep_convnet_params.npz\n"
      "  deeptrain bench --mode train --threads 2 --steps 50");
  CommonOptions common;
  TrainOptionsCli train;
  EvalOptionsCli eval;
  BenchOptionsCli bench;
  add_train_command(cli, common, train);
  add_eval_command(cli, common, eval);
  add_bench_command(cli, bench);
  try {
    cli.parse(argc, argv);
    for (CLI::App* sub : cli.get_subcommands()) {
      const std::string name = sub->get_name();
      if (name == "train") return run_train(common, train);
      if (name == "eval") return run_eval(common, eval);
      if (name == "bench") return run_bench(bench);
    }
  } catch (const CLI::ParseError& e) {
    return cli.exit(e);
  } catch (const deeptrain::InputError& e) {
    std::fflush(stdout);
    std::cerr << "deeptrain: error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::cerr << "deeptrain: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
