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
#include "app/onnx_cmds.h"
#include "app/commands.h"
#include "core/error.h"
#include "core/config.h"
#include "core/threads.h"
#include "distributed/startup.h"
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
  PredictOptionsCli predict;
  add_train_command(cli, common, train);
  add_eval_command(cli, common, eval);
  add_bench_command(cli, bench);
  add_predict_command(cli, predict);
  add_inspect_command(cli);  // these run from their CLI11 callbacks
  add_export_command(cli);
  add_import_onnx_command(cli);
  add_data_commands(cli);
  add_export_scenes_command(cli);
  // Start-up: parse the command line and read the config of train and eval. Either can fail
  // on one rank only (an unknown flag, --help, a config file missing on its host), so in a job
  // of several ranks every rank then reports to the start-up agreement (distributed/startup.h)
  // and all go on, or all stop with the failed rank's message, before any other collective.
  // (Commands that run from their CLI11 callbacks, doctor, plot, inspect, export and
  // verify-invariance, have run inside parse; they join the agreement after it.)
  bool started = true;
  int start_code = 0;
  std::string start_error;
  bool printed = false;  // this rank printed its own outcome (help, a usage error)
  std::string command;
  try {
    cli.parse(argc, argv);
    for (CLI::App* sub : cli.get_subcommands()) command = sub->get_name();
    // Only to fail before the work.
    if (command == "train" || command == "eval")
      deeptrain::load_config(common.config, common.overrides);
    if (command == "predict") {
      deeptrain::ConfigOverrides ov;
      if (!predict.backend.empty()) ov.backend = predict.backend;
      deeptrain::load_config(predict.config, ov);
    }
  } catch (const CLI::ParseError& e) {
    // Help and version exit 0; every other command-line error is bad input: 2.
    started = false;
    start_code = e.get_exit_code() == 0 ? 0 : 2;
    start_error = start_code == 0 ? "printed its help or version instead of running"
                                  : fmt::format("command line: {}", e.what());
    if (rank == 0 || world == 1) {
      cli.exit(e);
      printed = true;
    }
  } catch (const deeptrain::InputError& e) {
    started = false;
    start_code = 2;
    start_error = e.what();
  } catch (const std::exception& e) {
    started = false;
    start_code = 1;
    start_error = e.what();
  }
  if (world > 1) {
    const deeptrain::StartupVerdict v = deeptrain::agree_on_startup(
        started, start_code, start_error, deeptrain::startup_timeout_s());
    if (!v.proceed) {
      std::fflush(stdout);
      if (rank == 0 && !(v.failed_rank == 0 && printed))
        std::cerr << "deeptrain: error: " << v.message << "\n";
      return v.exit_code;
    }
  } else if (!started) {
    if (!printed) std::cerr << "deeptrain: error: " << start_error << "\n";
    return start_code;
  }
  try {
    if (command == "train") return run_train(common, train);
    if (command == "eval") return run_eval(common, eval);
    if (command == "bench") return run_bench(bench);
    if (command == "predict") return run_predict(predict);
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
