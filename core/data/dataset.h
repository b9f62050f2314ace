#pragma once
// The two data sets of the book's chapter 8: MNIST and Fashion-MNIST (same shapes, 10 classes).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace deeptrain::data {

// The epoch argument of a read that wants evaluation's (deterministic) transform.
constexpr int64_t kEvalEpoch = -1;

// Samples decoded on demand by global index, for a data set that is not held in memory (a
// packed one: core/data/shard_reader.h). Thread-safe.
class SampleSource {
 public:
  virtual ~SampleSource() = default;
  virtual Shape sample_shape() const = 0;  // (C, H, W)
  // Samples ids[0..n) as u8 (C, H, W) each, one after another into out. epoch >= 0: as
  // training sees them in that epoch (a random transform draws from it); kEvalEpoch: as
  // evaluation does. Throws InputError naming the file and sample of a corrupt one.
  virtual void read(const int64_t* ids, int64_t n, uint8_t* out, int64_t epoch) = 0;
  // How many batches ahead a caller may announce with prefetch() (0: it need not).
  virtual int prefetch_depth() const { return 0; }
  // These samples will be read soon, with this epoch: the source may decode them ahead, in its
  // own threads.
  virtual void prefetch(const int64_t* /*ids*/, int64_t /*n*/, int64_t /*epoch*/) {}
  // Identifies the content (the multi-rank consistency check compares it between ranks).
  virtual std::string fingerprint() const = 0;
  // Whether read() mirrors sample `id` left-right in `epoch` (a pack with masks or boxes whose
  // data.transform flips): gather_batch then mirrors its label map or boxes too.
  virtual bool mirrored(int64_t /*id*/, int64_t /*epoch*/) const { return false; }
};

// An object in an image: its class and its pixel box [x0, x1) x [y0, y1).
struct Box {
  int32_t label;
  int32_t x0, y0, x1, y1;
};

struct Dataset {
  std::string name;
  Tensor images;  // u8 (N, C, H, W); unset when `source` streams the samples
  Tensor labels;  // i32 (N): always in memory (4 bytes a sample), so the sampler needs no I/O
  int num_classes = 0;
  std::shared_ptr<SampleSource> source;  // set: samples are read from it by global index
  // Per-channel normalisation of the model's input, x = (p / 255 - mean[c]) / std[c] in float32
  // (torchvision's ToTensor then Normalize); empty: x = p / 255. Streamed sets only.
  std::vector<float> mean, std;
  // Dense tasks (segmentation): a label map per sample, u8 (N, H, W), the batches' targets
  // instead of `labels` (which then hold 0). Unset for classification.
  Tensor label_maps;
  std::vector<std::vector<Box>> boxes;   // per sample, for detection (empty when none)
  int box_classes = 0;  // a pack with boxes: its boxes' labels are below this (0: not said)

  int64_t size() const { return labels.numel(); }
  Shape sample_shape() const;  // (C, H, W)
};

struct DatasetSplit {
  Dataset train, test;
};

// dataset_name: "mnist" or "fashion_mnist". `dir` holds the four standard files, each either
// plain (train-images-idx3-ubyte) or gzip'ed (train-images-idx3-ubyte.gz); plain wins when both
// exist. Validates images vs labels count, label range [0, num_classes) and image dims.
// verify_checksums: SHA-256 of the uncompressed content against the published files.
// train_limit / test_limit > 0 keep only the first that many samples (for quick runs).
DatasetSplit load_dataset(const std::string& dataset_name, const std::string& dir,
                          bool verify_checksums, int64_t train_limit = 0, int64_t test_limit = 0);

// The u8 pixels of the batch ids[0..n) (ids checked against d.size()): sample i at at(i). In
// memory they point into d.images; a streamed set's are read from d.source, the whole batch in
// one read, transformed for `epoch` (SampleSource::read). Every gather goes through it, so both
// kinds give the same pixels to the same code.
class BatchPixels {
 public:
  BatchPixels(const Dataset& d, const int64_t* ids, int64_t n, int64_t epoch = kEvalEpoch);
  const uint8_t* at(int64_t i) const {
    return buffer_.empty() ? base_ + ids_[i] * sample_ : buffer_.data() + i * sample_;
  }

 private:
  const int64_t* ids_;
  const uint8_t* base_ = nullptr;
  int64_t sample_;
  std::vector<uint8_t> buffer_;
};

// Book normalisation: x = pixel / 255.0f (a float division, to match numpy float32 bit for bit),
// then d.mean/d.std when set. Copies samples ids[0..n) into x (f32, (n, C, H, W), already
// allocated) and t (i32, (n)), or t (i32, (n, H, W)) from the label maps of a dense data set,
// or t (i32, (n, M, 5)) from the boxes of a set with boxes and no label maps (label, x0, y0,
// x1, y1; rows past a sample's boxes have label -1); epoch: as BatchPixels.
void gather_batch(const Dataset& d, const int64_t* ids, int64_t n, Tensor& x, Tensor& t,
                  int64_t epoch = kEvalEpoch);

// How gather_batch lays out one sample's targets in t: boxes (a set with boxes and no label
// maps; t (n, M, 5)), or `elements` i32 a sample (1: a label; H * W: a label map).
struct TargetLayout {
  bool boxes;
  int64_t elements;
};
TargetLayout target_layout(const Dataset& d, const Tensor& t);

// A sample's boxes as its `max_boxes` rows of t (label, x0, y0, x1, y1), the rows past them
// with label -1; boxes.size() <= max_boxes (checked by the caller).
void write_box_rows(const std::vector<Box>& boxes, int64_t max_boxes, int32_t* rows);

// Boxes mirrored left-right in an image `width` pixels wide: columns [x0, x1) become
// [width - x1, width - x0).
std::vector<Box> mirrored_boxes(const std::vector<Box>& boxes, int32_t width);

// A detection set's boxes: labels in [0, classes), a positive width and height, inside the
// height x width image, at most max_boxes a sample; else an InputError naming the field, the
// sample and the box.
void check_boxes(const Dataset& d, int64_t height, int64_t width, int classes, int max_boxes);

// Applies d.mean/d.std (when set) to n samples of x already holding pixel / 255.
void normalise_batch(const Dataset& d, int64_t n, float* x);

// What the doctor/eval commands print: files found, sizes, checksum status. Never throws for
// missing or bad files (that is what it reports); throws InputError for an unknown data set.
std::string describe_files(const std::string& dataset_name, const std::string& dir);

}  // namespace deeptrain::data
