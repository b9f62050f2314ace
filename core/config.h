#pragma once
// Experiment configs: protobuf text files, validated with errors that name the file, line and
// field; defaults are the book's recipe (DeepConvNet, Adam lr 1e-3, batch 100, 20 epochs).
#include <optional>
#include <string>
#include <vector>

#include "proto/deeptrain.pb.h"

namespace deeptrain {

// Command-line overrides of the common fields (applied before validation).
struct ConfigOverrides {
  std::optional<int> epochs, batch_size, threads;
  std::optional<float> lr;
  std::optional<uint64_t> seed;
  std::optional<std::string> data_dir, backend, math;
  std::optional<int> train_limit, test_limit;
  std::optional<bool> exact;  // distributed.exact
};

// Parses `path` (errors: "<path>:<line>:<col>: <what>"), applies overrides, fills defaults and
// validates (errors name the field, e.g. "schedule.batch_size: must be > 0, got -5").
proto::ExperimentConfig load_config(const std::string& path, const ConfigOverrides& o = {});
proto::ExperimentConfig parse_config(const std::string& text, const std::string& origin,
                                     const ConfigOverrides& o = {});
// Fills defaults and validates in place.
void finalize_config(proto::ExperimentConfig& cfg);
std::string to_text(const google::protobuf::Message& m);

// The differences between two messages of one type, one line each ("modified: preset:
// \"deep_convnet\" -> \"deep_convnet_book\""), leaving out the fields named in `ignore`
// (paths such as "schedule.epochs", relative to the messages). Empty when they agree.
std::vector<std::string> message_differences(const google::protobuf::Message& before,
                                             const google::protobuf::Message& after,
                                             const std::vector<std::string>& ignore = {});

}  // namespace deeptrain
