#include "core/data/image_input.h"

#include <cstring>

#include "core/data/dataset.h"
#include "core/data/image_codec.h"
#include "core/data/image_transform.h"
#include "core/error.h"
#include "core/io/read_file.h"

namespace deeptrain::data {

ModelImageInput::ModelImageInput(const proto::DataConfig& data, Shape input, uint64_t seed)
    : data_(data), input_(std::move(input)), seed_(seed) {
  DT_CHECK(input_.rank() == 3, "ModelImageInput: input {} is not (C, H, W)", input_.str());
  if (!data_.has_transform()) return;
  const auto& t = data_.transform();
  // Validates every field now, so that a bad config fails before any image is read.
  ImageTransform(t, int(input_[0]), int(input_[1]), int(input_[2]), seed_);
  const int c = int(input_[0]);
  for (int i = 0; i < c && t.mean_size() > 0; ++i) {
    const bool one = t.mean_size() == 1;  // one value for every channel, as the reader takes it
    mean_.push_back(t.mean(one ? 0 : i));
    std_.push_back(t.std(one ? 0 : i));
  }
}

void ModelImageInput::prepare(const std::string& path, uint8_t* out) const {
  prepare(io::read_file_bytes(path, io::kNoSizeLimit, "an image"), path, out);
}

void ModelImageInput::prepare(const std::vector<uint8_t>& bytes, const std::string& what,
                              uint8_t* out) const {
  const int c = int(input_[0]), h = int(input_[1]), w = int(input_[2]);
  DecodedImage img = decode_image(bytes.data(), bytes.size(), what);
  if (data_.has_transform()) {
    ImageTransform(data_.transform(), c, h, w, seed_).apply(std::move(img), 0, kEvalEpoch, what, out);
    return;
  }
  if (img.channels != c) {
    if (c != 1)
      fail_input("{}: a {}-channel image, the model takes {} channels; convert the image (the "
                 "config has no data.transform.convert_channels to say how)", what, img.channels, c);
    convert_image_channels(img, 1);  // colour for a gray model: PIL's convert("L")
  }
  if (img.height == h && img.width == w) {
    std::memcpy(out, img.pixels.data(), size_t(c) * h * w);
    return;
  }
  crop_resize_bilinear(img.pixels.data(), c, img.height, img.width, {0, 0, img.height, img.width},
                       h, w, out);
}

}  // namespace deeptrain::data
