#include "report/canvas.h"

#include <cmath>

#include <fmt/format.h>

namespace deeptrain::report {

void RasterCanvas::line(Point a, Point b, Rgb c, double width, double dash) {
  r_.line(a.x, a.y, b.x, b.y, c, width, dash);
}

void RasterCanvas::series(const std::vector<Point>& points, Rgb c, double width, double dash,
                          const std::string&) {
  for (size_t i = 1; i < points.size(); ++i) line(points[i - 1], points[i], c, width, dash);
}

void RasterCanvas::marker(Point p, Rgb c, Marker m, int radius) {
  r_.marker(p.x, p.y, c, m, radius);
}

void RasterCanvas::fill(Point a, Point b, Rgb c) {
  r_.fill_rect(int(std::lround(a.x)), int(std::lround(a.y)), int(std::lround(b.x)),
               int(std::lround(b.y)), c);
}

void RasterCanvas::text(Point p, const std::string& s, Rgb c, int scale, Anchor a) {
  const int w = Raster::text_width(s, scale);
  const int x = int(std::lround(a == Anchor::start ? p.x : a == Anchor::middle ? p.x - w / 2.0 : p.x - w));
  r_.text(x, int(std::lround(p.y - Raster::text_height(scale) / 2.0)), s, c, scale);
}

namespace {
std::string css(Rgb c) { return fmt::format("#{:02x}{:02x}{:02x}", c.r, c.g, c.b); }
std::string dash_attr(double dash) {
  return dash > 0 ? fmt::format(" stroke-dasharray=\"{:g} {:g}\"", dash, dash * 2 / 3) : "";
}
}  // namespace

std::string xml_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else if (c == '"') o += "&quot;";
    else o += c;
  }
  return o;
}

SvgCanvas::SvgCanvas(int width, int height) : width_(width), height_(height) {}

void SvgCanvas::line(Point a, Point b, Rgb c, double width, double dash) {
  body_ += fmt::format(
      "<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"{}\" "
      "stroke-width=\"{:g}\"{}/>\n",
      a.x, a.y, b.x, b.y, css(c), width, dash_attr(dash));
}

void SvgCanvas::series(const std::vector<Point>& points, Rgb c, double width, double dash,
                       const std::string& name) {
  std::string pts;
  for (const Point& p : points) pts += fmt::format("{}{:.1f},{:.1f}", pts.empty() ? "" : " ", p.x, p.y);
  body_ += fmt::format(
      "<polyline data-series=\"{}\" points=\"{}\" fill=\"none\" stroke=\"{}\" "
      "stroke-width=\"{:g}\"{}/>\n",
      xml_escape(name), pts, css(c), width, dash_attr(dash));
}

void SvgCanvas::marker(Point p, Rgb c, Marker m, int radius) {
  if (m == Marker::circle)
    body_ += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"{}\" fill=\"{}\"/>\n", p.x, p.y,
                         radius, css(c));
  else
    body_ += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{}\" height=\"{}\" fill=\"{}\"/>\n",
                         p.x - radius, p.y - radius, 2 * radius + 1, 2 * radius + 1, css(c));
}

void SvgCanvas::fill(Point a, Point b, Rgb c) {
  body_ += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\"/>\n",
                       a.x, a.y, b.x - a.x, b.y - a.y, css(c));
}

void SvgCanvas::text(Point p, const std::string& s, Rgb c, int scale, Anchor a) {
  const char* anchor = a == Anchor::start ? "start" : a == Anchor::middle ? "middle" : "end";
  // A 10 * scale px monospace font has about the 7 * scale px capitals of the raster font.
  // The baseline goes half a capital below y (renderers disagree on dominant-baseline).
  body_ += fmt::format(
      "<text x=\"{:.1f}\" y=\"{:.1f}\" font-family=\"monospace\" font-size=\"{}\" fill=\"{}\" "
      "text-anchor=\"{}\">{}</text>\n",
      p.x, p.y + 3.5 * scale, 10 * scale, css(c), anchor, xml_escape(s));
}

std::string SvgCanvas::finish() {
  return fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
      "viewBox=\"0 0 {0} {1}\">\n<rect width=\"{0}\" height=\"{1}\" fill=\"#ffffff\"/>\n{2}</svg>\n",
      width_, height_, body_);
}

}  // namespace deeptrain::report
