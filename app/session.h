#pragma once
// What every command builds from a config: threads, data, backend, model.
#include <memory>
#include <string>

#include "core/backend/backend.h"
#include "core/config.h"
#include "core/data/dataset.h"
#include "core/net.h"
#include "distributed/communicator.h"

namespace deeptrain::app {

struct Session {
  std::unique_ptr<Communicator> comm;  // the job's ranks (one, without mpirun)
  proto::ExperimentConfig cfg;
  int threads = 0;
  data::DatasetSplit data;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Net> net;
  bool speaks() const { return comm->rank() == 0; }  // only rank 0 prints and writes
};

// load_data = false builds the model for the data set's shape without reading any file.
Session open_session(const proto::ExperimentConfig& cfg, bool load_data);
std::string json_escape(const std::string& s);
double peak_rss_mb();

}  // namespace deeptrain::app
