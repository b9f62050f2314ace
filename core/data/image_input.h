#pragma once
// An image file (PNG or JPEG) brought to a model's input as evaluation brings the model's own
// data there, for `deeptrain predict`:
//  - data.transform (own data): its evaluation path, Resize + CenterCrop, with its channel rule
//    (convert_channels) and its normalisation;
//  - otherwise (the built-in sets, a pack without a transform): an image of another size is
//    resized to the input's height x width by PIL's bilinear filter (the whole image, aspect
//    not kept); a colour image for a gray model becomes gray by PIL's convert("L"); a gray image
//    for a colour model is refused (nothing in such a config says to convert it).
// The result is u8 (C, H, W); gather_batch then scales it as training's data (p / 255, then the
// Dataset's mean/std).
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "proto/deeptrain.pb.h"

namespace deeptrain::data {

class ModelImageInput {
 public:
  // input: the model's (C, H, W). Throws InputError naming data.transform's field when invalid.
  ModelImageInput(const proto::DataConfig& data, Shape input, uint64_t seed);
  // Reads, decodes and prepares `path` into out (C x H x W bytes). Throws InputError naming the
  // file: missing or unreadable, not a PNG or JPEG, corrupt, a channel count that cannot be used.
  void prepare(const std::string& path, uint8_t* out) const;
  // The same from bytes already read (`what` names them in errors).
  void prepare(const std::vector<uint8_t>& bytes, const std::string& what, uint8_t* out) const;
  // Per-channel normalisation the model's data has (data.transform's mean/std, one per channel;
  // empty: p / 255 only): for the Dataset the prepared images go into.
  const std::vector<float>& mean() const { return mean_; }
  const std::vector<float>& std() const { return std_; }

 private:
  proto::DataConfig data_;
  Shape input_;
  uint64_t seed_;
  std::vector<float> mean_, std_;
};

}  // namespace deeptrain::data
