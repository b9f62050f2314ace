#include "core/data/image_codec.h"

#include <png.h>
// jpeglib.h needs size_t and FILE declared first.
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <jpeglib.h>

#include "core/error.h"

namespace deeptrain::data {
namespace {

// Far beyond any training image; refused before the decoder allocates for a forged header.
constexpr int64_t kMaxPixels = int64_t(1) << 28;

void check_dims(const std::string& what, int64_t h, int64_t w) {
  if (h <= 0 || w <= 0 || h * w > kMaxPixels)
    fail_input("{}: image of {}x{} pixels: refused (empty, or over {} pixels)", what, w, h,
               kMaxPixels);
}

// Interleaved (H, W, C) <-> planar (C, H, W).
std::vector<uint8_t> to_planar(const uint8_t* hwc, int c, int h, int w) {
  std::vector<uint8_t> out(size_t(c) * h * w);
  const size_t plane = size_t(h) * w;
  for (size_t p = 0; p < plane; ++p)
    for (int k = 0; k < c; ++k) out[k * plane + p] = hwc[p * c + k];
  return out;
}
std::vector<uint8_t> to_interleaved(const uint8_t* chw, int c, int h, int w) {
  std::vector<uint8_t> out(size_t(c) * h * w);
  const size_t plane = size_t(h) * w;
  for (size_t p = 0; p < plane; ++p)
    for (int k = 0; k < c; ++k) out[p * c + k] = chw[k * plane + p];
  return out;
}

DecodedImage decode_png(const uint8_t* bytes, size_t size, const std::string& what, int want) {
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&img, bytes, size))
    fail_input("{}: corrupt PNG: {}", what, img.message);
  const int stored = (img.format & PNG_FORMAT_FLAG_COLOR) ? 3 : 1;
  const int c = want ? want : stored;
  try {
    check_dims(what, img.height, img.width);
  } catch (...) {
    png_image_free(&img);
    throw;
  }
  img.format = c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
  std::vector<uint8_t> hwc(PNG_IMAGE_SIZE(img));
  // Alpha is composited onto black (a null background), the background MNIST-like sets use.
  if (!png_image_finish_read(&img, nullptr, hwc.data(), 0, nullptr))
    fail_input("{}: corrupt or truncated PNG: {}", what, img.message);
  DecodedImage d{c, int(img.height), int(img.width), {}};
  d.pixels = c == 1 ? std::move(hwc) : to_planar(hwc.data(), c, d.height, d.width);
  return d;
}

// libjpeg reports fatal errors through error_exit (which must not return: longjmp back) and
// corrupt data it can paper over (a truncated file, bad Huffman codes) as warnings; both refuse
// the image, so that a damaged photo is never trained on as grey padding.
struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = "";
  bool warned = false;
};

void jpeg_fatal(j_common_ptr cinfo) {
  auto* e = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, e->message);
  std::longjmp(e->jump, 1);
}

void jpeg_message(j_common_ptr cinfo, int level) {
  auto* e = reinterpret_cast<JpegError*>(cinfo->err);
  if (level < 0 && !e->warned) {  // level -1: a warning about corrupt data
    e->warned = true;
    (*cinfo->err->format_message)(cinfo, e->message);
  }
}

DecodedImage decode_jpeg(const uint8_t* bytes, size_t size, const std::string& what, int want) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_fatal;
  err.mgr.emit_message = jpeg_message;
  DecodedImage d;
  std::vector<uint8_t> hwc;
  std::string dims_error;
  // Nothing with a destructor is created between setjmp and the longjmp that may return here.
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    fail_input("{}: truncated or corrupt JPEG: {}", what, err.message);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, bytes, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  const int stored = cinfo.num_components == 1 ? 1 : 3;
  d.channels = want ? want : stored;
  cinfo.out_color_space = d.channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  d.height = int(cinfo.image_height);
  d.width = int(cinfo.image_width);
  if (d.height <= 0 || d.width <= 0 || int64_t(d.height) * d.width > kMaxPixels) {
    jpeg_destroy_decompress(&cinfo);
    check_dims(what, d.height, d.width);
  }
  jpeg_start_decompress(&cinfo);
  hwc.resize(size_t(d.channels) * d.height * d.width);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = hwc.data() + size_t(cinfo.output_scanline) * d.width * d.channels;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  if (err.warned) fail_input("{}: truncated or corrupt JPEG: {}", what, err.message);
  d.pixels = d.channels == 1 ? std::move(hwc) : to_planar(hwc.data(), d.channels, d.height, d.width);
  return d;
}

}  // namespace

ImageFormat sniff_image_format(const uint8_t* b, size_t n) {
  static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (n >= 8 && std::memcmp(b, png_sig, 8) == 0) return ImageFormat::png;
  if (n >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff) return ImageFormat::jpeg;
  return ImageFormat::unknown;
}

const char* image_format_extension(ImageFormat f) {
  return f == ImageFormat::png ? "png" : f == ImageFormat::jpeg ? "jpg" : "";
}

DecodedImage decode_image(const uint8_t* bytes, size_t size, const std::string& what,
                          int want_channels) {
  DT_CHECK(want_channels == 0 || want_channels == 1 || want_channels == 3, "channels {}",
           want_channels);
  if (size == 0) fail_input("{}: empty file (0 bytes), not an image", what);
  switch (sniff_image_format(bytes, size)) {
    case ImageFormat::png: return decode_png(bytes, size, what, want_channels);
    case ImageFormat::jpeg: return decode_jpeg(bytes, size, what, want_channels);
    default: fail_input("{}: not a PNG or JPEG image (unrecognised first bytes)", what);
  }
}

std::string encode_png(const uint8_t* planar, int c, int h, int w) {
  DT_CHECK(c == 1 || c == 3, "encode_png: {} channels", c);
  const std::vector<uint8_t> hwc = c == 1 ? std::vector<uint8_t>(planar, planar + size_t(h) * w)
                                          : to_interleaved(planar, c, h, w);
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  img.width = png_uint_32(w);
  img.height = png_uint_32(h);
  img.format = c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
  png_alloc_size_t n = 0;
  if (!png_image_write_get_memory_size(img, n, 0, hwc.data(), 0, nullptr))
    fail("PNG encoder: {}", img.message);
  std::string out(n, '\0');
  if (!png_image_write_to_memory(&img, out.data(), &n, 0, hwc.data(), 0, nullptr))
    fail("PNG encoder: {}", img.message);
  out.resize(n);
  return out;
}

std::string encode_jpeg(const uint8_t* planar, int c, int h, int w, int quality) {
  DT_CHECK(c == 1 || c == 3, "encode_jpeg: {} channels", c);
  const std::vector<uint8_t> hwc = c == 1 ? std::vector<uint8_t>(planar, planar + size_t(h) * w)
                                          : to_interleaved(planar, c, h, w);
  jpeg_compress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_fatal;
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  if (setjmp(err.jump)) {
    jpeg_destroy_compress(&cinfo);
    std::free(buf);
    fail("JPEG encoder: {}", err.message);
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, &buf, &size);
  cinfo.image_width = JDIMENSION(w);
  cinfo.image_height = JDIMENSION(h);
  cinfo.input_components = c;
  cinfo.in_color_space = c == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(hwc.data()) + size_t(cinfo.next_scanline) * w * c;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::string out(reinterpret_cast<char*>(buf), size);
  std::free(buf);
  return out;
}

}  // namespace deeptrain::data
