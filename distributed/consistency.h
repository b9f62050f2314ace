#pragma once
// The start-up consistency guard. Ranks that disagree on the model, the config or the data would
// train different things, or deadlock when their gradient buckets differ. Before training, every
// rank describes what must agree as "key: value" facts; the ranks exchange them (allgather) and
// every rank compares all of them, so all reach the same verdict and refuse to train with the
// same message, which names the first key that differs and the ranks (and hosts) on each side:
//   ranks disagree on schedule.batch_size: 100 on rank 0 (h1), rank 2 (h3); 64 on rank 1 (h2)
#include <string>
#include <utility>
#include <vector>

#include "core/data/dataset.h"
#include "core/error.h"
#include "core/net.h"
#include "distributed/communicator.h"
#include "proto/deeptrain.pb.h"

namespace deeptrain {

// An error every rank of the job raises identically (after comparing notes): the CLI prints it
// once (rank 0) and every rank exits with the same code, without aborting the job.
class JobWideError : public InputError {
 public:
  using InputError::InputError;
};

struct Fingerprint {
  std::vector<std::pair<std::string, std::string>> facts;  // in a fixed order
  void add(std::string key, std::string value) { facts.emplace_back(std::move(key), std::move(value)); }
  std::string serialize() const;
  static Fingerprint parse(const std::string& text);
};

// The config fields that may differ between ranks (per-host paths and per-rank resources).
const std::vector<std::string>& per_rank_config_fields();

// Every set field of the config as "path: value" (e.g. "schedule.batch_size: 100"), except
// per_rank_config_fields(); the model's layers, parameter count and deeptrain's version; and,
// when given, the data sets' sizes and CRC-32s.
Fingerprint job_fingerprint(const proto::ExperimentConfig& cfg, const Net& net,
                            const data::DatasetSplit* data);

// Collective. Throws JobWideError on every rank if any fact differs between ranks.
void verify_consistency(Communicator& comm, const Fingerprint& mine);

// The comparison alone (for tests): empty if all agree, else the message.
std::string compare_fingerprints(const std::vector<Fingerprint>& by_rank,
                                 const std::vector<std::string>& hosts);

}  // namespace deeptrain
