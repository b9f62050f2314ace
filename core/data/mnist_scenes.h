#pragma once
// mnist_scenes: canvases holding several MNIST digits at random places and sizes, with a label
// map and the digits' boxes, for segmentation and detection (no download beyond MNIST).
// Scene i of a split is a pure function of (scenes seed, split, i) and the MNIST files: any
// process, rank count or thread count builds the same scenes, in integer arithmetic.
#include <cstdint>
#include <string>

#include "core/data/dataset.h"
#include "proto/deeptrain.pb.h"

namespace deeptrain::data {

// Label map values: 0 background, digit class + 1 where the digit's pixel (the brightest digit
// there) is >= kStrokeThreshold, kIgnoreLabel where the brightest pixel is faint (1..threshold).
inline constexpr int kStrokeThreshold = 128;
inline constexpr int kSceneIgnoreLabel = 255;
inline constexpr int kSceneClasses = 11;  // background + 10 digits
inline constexpr int kMaxSceneDigits = 64;  // data.scenes.max_digits' bound: digit k draws block k + 1

// Builds scenes from MNIST training digits (train split) and test digits (test split).
// source: the MNIST data set (load_dataset("mnist", ...)); scenes: the finalized options.
// train_limit / test_limit > 0 keep only the first that many scenes.
DatasetSplit make_mnist_scenes(const DatasetSplit& source, const proto::MnistScenesConfig& scenes,
                               int64_t train_limit = 0, int64_t test_limit = 0);

// One scene into image (canvas * canvas u8), label map (the same) and its boxes: `digits` are
// the source digits (u8 (N, 1, 28, 28)) and their labels; `split` keys the random stream.
void render_scene(const Tensor& digits, const Tensor& labels, const proto::MnistScenesConfig& s,
                  uint32_t split, int64_t index, uint8_t* image, uint8_t* label_map,
                  std::vector<Box>* boxes);

}  // namespace deeptrain::data
