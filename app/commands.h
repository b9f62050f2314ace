#pragma once
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "core/config.h"

namespace deeptrain::app {

struct CommonOptions {
  std::string config;
  ConfigOverrides overrides;
  bool json = false;
};

struct TrainOptionsCli {
  std::string save_weights;
};

struct EvalOptionsCli {
  std::string weights, init_from;
  std::string npz_dropout = "book";
};

struct BenchOptionsCli {
  std::string config;
  std::string mode = "train";
  std::string backend = "cpu";
  int threads = 0, steps = 50, warmup = 5, batch = 0;
  bool json = false;
};

void add_train_command(CLI::App& cli, CommonOptions& common, TrainOptionsCli& o);
void add_eval_command(CLI::App& cli, CommonOptions& common, EvalOptionsCli& o);
void add_bench_command(CLI::App& cli, BenchOptionsCli& o);
int run_train(const CommonOptions& common, const TrainOptionsCli& o);
int run_eval(const CommonOptions& common, const EvalOptionsCli& o);
int run_bench(const BenchOptionsCli& o);

}  // namespace deeptrain::app
