#include "report/raster.h"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>

#include "core/error.h"
#include "report/font5x7.h"

namespace deeptrain::report {

Raster::Raster(int width, int height, Rgb background) : width_(width), height_(height) {
  DT_CHECK(width > 0 && height > 0, "image size {}x{}", width, height);
  pixels_.resize(size_t(width) * height * 3);
  fill_rect(0, 0, width, height, background);
}

Rgb Raster::at(int x, int y) const {
  const uint8_t* p = &pixels_[(size_t(y) * width_ + x) * 3];
  return {p[0], p[1], p[2]};
}

void Raster::set(int x, int y, Rgb c) {
  if (x < 0 || y < 0 || x >= width_ || y >= height_) return;
  uint8_t* p = &pixels_[(size_t(y) * width_ + x) * 3];
  p[0] = c.r, p[1] = c.g, p[2] = c.b;
}

void Raster::fill_rect(int x0, int y0, int x1, int y1, Rgb c) {
  for (int y = std::max(y0, 0); y < std::min(y1, height_); ++y)
    for (int x = std::max(x0, 0); x < std::min(x1, width_); ++x) set(x, y, c);
}

// A square brush of side `width` centred on (x, y); a 1-pixel brush is one pixel.
void Raster::dot(double x, double y, Rgb c, double width) {
  const int w = std::max(1, int(std::lround(width)));
  const int x0 = int(std::floor(x - (w - 1) / 2.0 + 0.5)), y0 = int(std::floor(y - (w - 1) / 2.0 + 0.5));
  fill_rect(x0, y0, x0 + w, y0 + w, c);
}

void Raster::line(double x0, double y0, double x1, double y1, Rgb c, double width, double dash) {
  const double len = std::hypot(x1 - x0, y1 - y0);
  const int n = std::max(1, int(std::ceil(len * 2)));  // half-pixel steps leave no gaps
  for (int i = 0; i <= n; ++i) {
    const double t = double(i) / n;
    if (dash > 0 && std::fmod(t * len, dash * 5 / 3) >= dash) continue;
    dot(x0 + t * (x1 - x0), y0 + t * (y1 - y0), c, width);
  }
}

void Raster::marker(double x, double y, Rgb c, Marker m, int radius) {
  const int cx = int(std::lround(x)), cy = int(std::lround(y));
  for (int dy = -radius; dy <= radius; ++dy)
    for (int dx = -radius; dx <= radius; ++dx)
      if (m == Marker::square || dx * dx + dy * dy <= radius * radius + radius)
        set(cx + dx, cy + dy, c);
}

void Raster::text(int x, int y, std::string_view s, Rgb c, int scale) {
  for (char ch : s) {
    const Glyph& g = glyph(ch);
    for (int r = 0; r < kGlyphHeight; ++r)
      for (int col = 0; col < kGlyphWidth; ++col)
        if (g[r] & (1 << (kGlyphWidth - 1 - col)))
          fill_rect(x + col * scale, y + r * scale, x + (col + 1) * scale, y + (r + 1) * scale, c);
    x += kGlyphAdvance * scale;
  }
}

int Raster::text_width(std::string_view s, int scale) {
  return s.empty() ? 0 : (int(s.size()) * kGlyphAdvance - 1) * scale;
}

int Raster::text_height(int scale) { return kGlyphHeight * scale; }

namespace {
void append_to_string(png_structp png, png_bytep data, png_size_t n) {
  static_cast<std::string*>(png_get_io_ptr(png))->append(reinterpret_cast<char*>(data), n);
}
}  // namespace

std::string encode_png(const Raster& image) {
  std::string out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_write_struct(&png, nullptr);
    fail("PNG encoder: out of memory");
  }
  // libpng reports errors by longjmp; nothing below owns resources other than png/info.
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    fail("PNG encoder: libpng failed on a {}x{} image", image.width(), image.height());
  }
  png_set_write_fn(png, &out, append_to_string, nullptr);
  png_set_IHDR(png, info, image.width(), image.height(), 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < image.height(); ++y)
    png_write_row(png, const_cast<png_bytep>(&image.pixels()[size_t(y) * image.width() * 3]));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

}  // namespace deeptrain::report
