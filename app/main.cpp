// deeptrain's command line: parses, wires the pieces, turns errors into messages and exit codes
// (2: bad input such as a config, data or weights file; 1: anything else).
//
// Under mpirun (or any MPI launcher) every rank initialises MPI here and finalises it on return;
// a plain run never touches MPI. In a job of several ranks an error on one rank is printed with
// its rank and host and ends every rank (MPI_Abort with the exit code), so no rank waits forever
// for a dead peer; an error that every rank raises identically (the start-up consistency check)
// is printed once, by rank 0, and every rank exits with its code (a diverged loss too).
#include <cstdio>
#include <iostream>
#include <memory>

#include <CLI/CLI.hpp>

#include "app/checkpoint_cmds.h"
#include "app/commands.h"
#include "core/error.h"
#include "core/threads.h"
#include "distributed/consistency.h"
#include "distributed/mpi_communicator.h"
#include "distributed/trainer.h"

int main(int argc, char** argv) {
  using namespace deeptrain::app;
  // Before any thread starts (MPI's, the watchdog's, OpenMP's): they inherit the mode. The
  // config can turn it off later (run.flush_denormals; core/threads.h).
  deeptrain::set_flush_denormals(true);
  std::unique_ptr<deeptrain::MpiRuntime> mpi;
  try {
    if (deeptrain::launched_under_mpi()) mpi = std::make_unique<deeptrain::MpiRuntime>(&argc, &argv);
  } catch (const std::exception& e) {
    std::cerr << "deeptrain: error: " << e.what() << "\n";
    return 1;
  }
  const int rank = mpi ? mpi->world_rank() : 0, world = mpi ? mpi->world_size() : 1;
  // Prints the error (naming rank and host in a multi-rank job) and returns the exit code, or
  // ends the whole job with it.
  auto error_exit = [&](int code, std::string what, bool job_wide) -> int {
    std::fflush(stdout);
    if (world == 1 || job_wide) {
      if (rank == 0) std::cerr << "deeptrain: error: " << what << "\n";
      return code;
    }
    const std::string where =
        fmt::format("rank {} on {}", rank, deeptrain::local_host_name());
    if (what.rfind(where + ": ", 0) == 0) what = what.substr(where.size() + 2);
    std::cerr << "deeptrain: error: " << where << ": " << what << "\n";
    deeptrain::abort_job(code);
  };
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
  add_inspect_command(cli);  // these run from their CLI11 callbacks
  add_export_command(cli);
  try {
    cli.parse(argc, argv);
    for (CLI::App* sub : cli.get_subcommands()) {
      const std::string name = sub->get_name();
      if (name == "train") return run_train(common, train);
      if (name == "eval") return run_eval(common, eval);
      if (name == "bench") return run_bench(bench);
    }
  } catch (const CLI::ParseError& e) {
    if (rank != 0) return e.get_exit_code();  // every rank parses the same arguments
    return cli.exit(e);
  } catch (const deeptrain::JobWideError& e) {
    return error_exit(2, e.what(), true);
  } catch (const deeptrain::InputError& e) {
    return error_exit(2, e.what(), false);
  } catch (const deeptrain::TrainingDiverged& e) {
    // Every rank's loss is the same reduced sum, so every rank throws it after the same step.
    return error_exit(1, e.what(), true);
  } catch (const std::exception& e) {
    return error_exit(1, e.what(), false);
  }
  return 0;
}
