#pragma once
// Encoded images (PNG through libpng, JPEG through libjpeg-turbo) to and from the planar u8
// layout of a Dataset sample: (C, H, W), C = 1 (grayscale) or 3 (RGB). The format is told by
// the bytes' magic number, never by a file name, so a misnamed file still decodes and a file
// that is no image is refused whatever it is called.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace deeptrain::data {

enum class ImageFormat { unknown, png, jpeg };

// From the first bytes: PNG's 8-byte signature, JPEG's SOI marker FF D8 FF.
ImageFormat sniff_image_format(const uint8_t* bytes, size_t size);
const char* image_format_extension(ImageFormat f);  // "png", "jpg", "" for unknown

struct DecodedImage {
  int channels = 0, height = 0, width = 0;
  std::vector<uint8_t> pixels;  // planar (C, H, W)
};

// Decodes PNG or JPEG bytes. `what` names the image in errors ("shard-00000.tar offset 1536",
// "photos/cat/1.jpg"). want_channels 0: as stored (gray stays 1, colour 3; PNG alpha and
// palettes are resolved by libpng: gray+alpha -> 1, RGBA/palette -> 3); 1 or 3: converted to
// that. Throws InputError "<what>: not a PNG or JPEG image" / "<what>: corrupt PNG: ..." /
// "<what>: truncated or corrupt JPEG: ..." for anything libpng or libjpeg refuses or warns about
// (a truncated JPEG decodes to grey padding in libjpeg: that is refused, not returned).
DecodedImage decode_image(const uint8_t* bytes, size_t size, const std::string& what,
                          int want_channels = 0);

// Lossless PNG of planar u8 pixels (C = 1 or 3): decode_image gives the same bytes back.
std::string encode_png(const uint8_t* planar, int channels, int height, int width);
// Baseline JPEG at `quality` (1..100), for tests and pack-time re-encoding; lossy.
std::string encode_jpeg(const uint8_t* planar, int channels, int height, int width, int quality);

}  // namespace deeptrain::data
