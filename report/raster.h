#pragma once
// An RGB pixel buffer with the few drawing operations our figures need (thick and dashed
// lines, filled rectangles, markers, 5x7 text scaled by whole numbers) and PNG encoding.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace deeptrain::report {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
  bool operator==(const Rgb&) const = default;
};
constexpr Rgb kWhite{255, 255, 255}, kBlack{0, 0, 0};

enum class Marker { circle, square };

class Raster {
 public:
  Raster(int width, int height, Rgb background = kWhite);
  int width() const { return width_; }
  int height() const { return height_; }
  const std::vector<uint8_t>& pixels() const { return pixels_; }  // rows of R, G, B
  Rgb at(int x, int y) const;

  void set(int x, int y, Rgb c);  // outside the image: ignored
  void fill_rect(int x0, int y0, int x1, int y1, Rgb c);  // [x0, x1) x [y0, y1)
  // `dash` > 0: dashes of that many pixels, with gaps of two thirds of it.
  void line(double x0, double y0, double x1, double y1, Rgb c, double width = 1, double dash = 0);
  void marker(double x, double y, Rgb c, Marker m, int radius);
  // Text with its top-left corner at (x, y), each font pixel a scale x scale block.
  void text(int x, int y, std::string_view s, Rgb c, int scale = 1);
  static int text_width(std::string_view s, int scale = 1);
  static int text_height(int scale = 1);

 private:
  void dot(double x, double y, Rgb c, double width);
  int width_, height_;
  std::vector<uint8_t> pixels_;
};

// The whole PNG file (8-bit RGB, no interlace). Throws Error if libpng fails.
std::string encode_png(const Raster& image);

}  // namespace deeptrain::report
