#pragma once
// What a figure is drawn on, so that one piece of layout code produces both the PNG (a Raster)
// and the SVG (text) of a figure, and the two always agree.
#include <string>
#include <vector>

#include "report/raster.h"

namespace deeptrain::report {

struct Point {
  double x, y;
};
enum class Anchor { start, middle, end };  // horizontal; text is centred vertically on y

class Canvas {
 public:
  virtual ~Canvas() = default;
  virtual void line(Point a, Point b, Rgb c, double width = 1, double dash = 0) = 0;
  // One data series; `name` identifies it in the SVG (data-series attribute).
  virtual void series(const std::vector<Point>& points, Rgb c, double width, double dash,
                      const std::string& name) = 0;
  virtual void marker(Point p, Rgb c, Marker m, int radius) = 0;
  virtual void fill(Point top_left, Point bottom_right, Rgb c) = 0;
  // `scale` as in Raster::text: the font is 7 * scale pixels high.
  virtual void text(Point p, const std::string& s, Rgb c, int scale, Anchor a) = 0;
};

class RasterCanvas : public Canvas {
 public:
  explicit RasterCanvas(Raster& r) : r_(r) {}
  void line(Point a, Point b, Rgb c, double width, double dash) override;
  void series(const std::vector<Point>& points, Rgb c, double width, double dash,
              const std::string& name) override;
  void marker(Point p, Rgb c, Marker m, int radius) override;
  void fill(Point top_left, Point bottom_right, Rgb c) override;
  void text(Point p, const std::string& s, Rgb c, int scale, Anchor a) override;

 private:
  Raster& r_;
};

class SvgCanvas : public Canvas {
 public:
  SvgCanvas(int width, int height);
  void line(Point a, Point b, Rgb c, double width, double dash) override;
  void series(const std::vector<Point>& points, Rgb c, double width, double dash,
              const std::string& name) override;
  void marker(Point p, Rgb c, Marker m, int radius) override;
  void fill(Point top_left, Point bottom_right, Rgb c) override;
  void text(Point p, const std::string& s, Rgb c, int scale, Anchor a) override;
  std::string finish();  // the whole SVG document

 private:
  std::string body_;
  int width_, height_;
};

std::string xml_escape(const std::string& s);

}  // namespace deeptrain::report
