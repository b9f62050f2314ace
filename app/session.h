#pragma once
// What every command builds from a config: threads, data, backend, model.
#include <memory>
#include <string>

#include "core/backend/backend.h"
#include "core/config.h"
#include "core/data/dataset.h"
#include "core/net.h"
#include "distributed/communicator.h"
#include "distributed/trainer.h"
#include "distributed/watchdog.h"

namespace deeptrain::app {

struct Session {
  // Multi-rank jobs: ends the job when a step or a collective exceeds its deadline. First, so
  // that it is destroyed last (the communication thread reports to it).
  std::unique_ptr<Watchdog> watchdog;
  proto::ExperimentConfig cfg;
  int threads = 0;
  data::DatasetSplit data;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Net> net;
  // The job's ranks (one, without mpirun). Last, so that it is destroyed first: after an error
  // its thread stops before the buffers that collectives still in flight point into go away.
  std::unique_ptr<Communicator> comm;
  bool speaks() const { return comm->rank() == 0; }  // only rank 0 prints and writes
};

// load_data = false builds the model for the data set's shape without reading any file.
// Under mpirun (MPI initialised by main) the session joins the job: an MPI communicator over all
// ranks, this rank's default thread count (its share of the host's cores), a watchdog, the
// gradient-sync options of cfg.distributed, and the start-up consistency check (every rank must
// have the same model, config and data, else JobWideError on every rank). Collective.
Session open_session(const proto::ExperimentConfig& cfg, bool load_data);
// The trainer's options as the config gives them (batch sizes, seed, rate and its schedule,
// epochs, augmentation, loss scaling, exact mode): the one place they are read from a config.
TrainerOptions trainer_options(const proto::ExperimentConfig& cfg);
// The config's name, else its file name without extension: names the default run directory.
std::string run_name(const proto::ExperimentConfig& cfg, const std::string& config_path);
double peak_rss_mb();

}  // namespace deeptrain::app
