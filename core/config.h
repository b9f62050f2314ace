#pragma once
// Experiment configs: protobuf text files, validated with errors that name the file, line and
// field; defaults are the book's recipe (DeepConvNet, Adam lr 1e-3, batch 100, 20 epochs).
#include <optional>
#include <string>
#include <vector>

#include "proto/deeptrain.pb.h"

namespace deeptrain {

// The defaults finalize_config fills in where a config leaves a field unset: each stated once,
// here (proto3 has no [default = ...]). Help texts, TrainerOptions and GradientSyncOptions read
// them from here (tests/test_config_schema.cpp); the proto's comments repeat them for readers.
namespace config_defaults {
inline constexpr const char* kPreset = "deep_convnet";
inline constexpr const char* kDataset = "mnist";
inline constexpr int kDataThreads = 2, kPrefetchBatches = 2;  // data.dataset: shards
inline constexpr proto::OptimizerType kOptimizer = proto::ADAM;
inline constexpr float kLrSgd = 0.01f;  // optimizer.lr of SGD
inline constexpr float kLr = 1e-3f;     // optimizer.lr of every other optimizer
inline constexpr int kEpochs = 20;
inline constexpr int kBatchSize = 100;
// run.eval_batch_size when unset: this many samples, fewer where their layer outputs would
// take more than kEvalActivationBytes (an FCN's 64x64 maps: 1000 would hold gigabytes).
inline constexpr int kEvalBatchSize = 1000;
inline constexpr int64_t kEvalActivationBytes = int64_t(512) << 20;
inline constexpr proto::Backend kBackend = proto::BACKEND_CPU;
inline constexpr proto::Backend kExactBackend = proto::BACKEND_CPU_REF;  // distributed.exact
inline constexpr proto::MathMode kMath = proto::MATH_FP32;
inline constexpr bool kFlushDenormals = true;
inline constexpr float kBucketMiB = 0.1f;  // distributed.bucket_mb
inline constexpr float kStepTimeoutS = 600;
inline constexpr float kCollectiveTimeoutS = 300;
inline constexpr int kMicroBatch = 10;
// data.scenes (dataset mnist_scenes) and model.loss
inline constexpr int kSceneCanvas = 64, kSceneMinDigits = 1, kSceneMaxDigits = 5;
inline constexpr float kSceneMinScale = 0.8f, kSceneMaxScale = 1.6f, kSceneMaxOverlap = 1.0f;
inline constexpr int kTrainScenes = 10000, kTestScenes = 1000;
inline constexpr uint64_t kSceneSeed = 1;
inline constexpr int kIgnoreLabel = 255;
// model.loss.detection and its heads (type DETECTION)
inline constexpr int kOutputStride = 4, kMaxBoxes = 16, kTopK = 100;
inline constexpr float kFocalAlpha = 2, kFocalBeta = 4, kScoreThreshold = 0.01f, kNmsIou = 0.5f;
inline constexpr float kHeatmapWeight = 1, kBoxSizeWeight = 0.1f, kOffsetWeight = 1;
}  // namespace config_defaults

// The words of the backends and math modes on the command line and in messages ("cpu-ref",
// "tf32"): the enum value's name without its prefix, in lower case with '-' for '_'. One table
// (core/config.cpp); the factory and every message read it.
std::string backend_word(proto::Backend b);
std::string math_word(proto::MathMode m);
// The value of a word; an InputError naming `what` (e.g. "--backend") and the known words
// otherwise. Also takes the enum's own name ("BACKEND_CPU_REF").
proto::Backend backend_from_word(const std::string& word, const std::string& what);
proto::MathMode math_from_word(const std::string& word, const std::string& what);
std::string backend_words();  // "cpu, cpu-ref, cuda, cuda-im2col"
std::string math_words();     // "fp32, tf32, bf16, fp16"
std::string conv_algorithm_word(proto::ConvAlgorithm a);  // "direct", "winograd"
proto::ConvAlgorithm conv_algorithm_from_word(const std::string& word, const std::string& what);
std::string conv_algorithm_words();
std::string device_transport_word(proto::DeviceTransport t);  // "nccl", "host-mpi"
proto::DeviceTransport device_transport_from_word(const std::string& word, const std::string& what);
std::string device_transport_words();

// A config of schema 1 (run.backend and run.math as strings; the config a checkpoint written
// then embeds) in today's terms: the strings move into the enums. InputError when a word is
// unknown or both forms are set.
void upgrade_config(proto::ExperimentConfig& c);

// Command-line overrides of the common fields (applied before validation).
struct ConfigOverrides {
  std::optional<int> epochs, batch_size, threads;
  std::optional<float> lr;
  std::optional<uint64_t> seed;
  std::optional<std::string> data_dir;
  std::optional<std::string> backend, math, conv_algorithm;  // the words: "cpu-ref", "tf32"
  std::optional<int> train_limit, test_limit;
  std::optional<bool> exact;  // distributed.exact
  std::optional<std::string> device_transport;  // distributed.device_transport as a word
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
