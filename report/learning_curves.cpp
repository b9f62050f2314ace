#include "report/learning_curves.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "core/io/atomic_file.h"

namespace deeptrain::report {
namespace {

constexpr Rgb kTrainColor{31, 119, 180}, kTestColor{255, 127, 14}, kLrColor{44, 160, 44};
constexpr Rgb kAxisColor{60, 60, 60}, kGridColor{225, 225, 225};

// An axis range with "nice" tick marks (steps of 1, 2 or 5 times a power of ten).
struct Axis {
  double lo, hi, step;
  std::vector<double> ticks() const {
    std::vector<double> t;
    for (double v = lo; v <= hi + step * 1e-6; v += step) t.push_back(std::round(v / step) * step);
    return t;
  }
};

Axis nice_axis(double lo, double hi, int target_ticks, double min_step = 0) {
  if (!(hi > lo)) {  // one value (or none): give it some room
    const double pad = lo == 0 ? 1 : std::abs(lo) * 0.1;
    lo -= pad, hi += pad;
  }
  const double raw = (hi - lo) / target_ticks;
  const double magnitude = std::pow(10, std::floor(std::log10(raw)));
  double step = magnitude * 10;
  for (double m : {1.0, 2.0, 5.0})
    if (raw <= m * magnitude) { step = m * magnitude; break; }
  step = std::max(step, min_step);
  return {std::floor(lo / step + 1e-9) * step, std::ceil(hi / step - 1e-9) * step, step};
}

std::string tick_label(double v) {
  if (std::abs(v) < 1e-12) return "0";
  return fmt::format("{:g}", v);
}

std::vector<double> finite(const std::vector<double>& v) {
  std::vector<double> f;
  for (double x : v) if (std::isfinite(x)) f.push_back(x);
  return f;
}

// The range of the finite values of some series, as an Axis.
Axis axis_for(std::initializer_list<const std::vector<double>*> series, bool from_zero) {
  double lo = from_zero ? 0 : INFINITY, hi = -INFINITY;
  for (const auto* s : series)
    for (double v : finite(*s)) lo = std::min(lo, v), hi = std::max(hi, v);
  if (!std::isfinite(lo) || !std::isfinite(hi)) lo = 0, hi = 1;
  return nice_axis(lo, hi, 5);
}

// A plotting frame: data coordinates to pixels.
struct Frame {
  double left, top, right, bottom;
  Axis x, y;
  Point at(double xv, double yv) const {
    return {left + (xv - x.lo) / (x.hi - x.lo) * (right - left),
            bottom - (yv - y.lo) / (y.hi - y.lo) * (bottom - top)};
  }
  double y_of(double yv, const Axis& a) const {
    return bottom - (yv - a.lo) / (a.hi - a.lo) * (bottom - top);
  }
};

struct Style {
  int scale;       // font scale
  double char_w;   // pixels per character
  double char_h;
};

void draw_frame(Canvas& c, const Frame& f, const Style& s, const std::string& title) {
  for (double v : f.y.ticks()) {
    const double y = f.y_of(v, f.y);
    c.line({f.left, y}, {f.right, y}, kGridColor, 1);
    c.line({f.left - s.char_w / 2, y}, {f.left, y}, kAxisColor, 1);
    c.text({f.left - s.char_w, y}, tick_label(v), kAxisColor, s.scale, Anchor::end);
  }
  for (double v : f.x.ticks()) {
    const double x = f.at(v, f.y.lo).x;
    c.line({x, f.bottom}, {x, f.bottom + s.char_w / 2}, kAxisColor, 1);
    c.text({x, f.bottom + s.char_h * 1.5}, tick_label(v), kAxisColor, s.scale, Anchor::middle);
  }
  c.line({f.left, f.top}, {f.right, f.top}, kAxisColor, 1);
  c.line({f.left, f.bottom}, {f.right, f.bottom}, kAxisColor, 1);
  c.line({f.left, f.top}, {f.left, f.bottom}, kAxisColor, 1);
  c.line({f.right, f.top}, {f.right, f.bottom}, kAxisColor, 1);
  c.text({(f.left + f.right) / 2, f.top - s.char_h * 1.3}, title, kBlack, s.scale, Anchor::middle);
  c.text({(f.left + f.right) / 2, f.bottom + s.char_h * 3.2}, "epoch", kBlack, s.scale,
         Anchor::middle);
}

struct Series {
  const std::vector<double>* values;
  Rgb color;
  bool markers;
  Marker marker;
  double dash;
  std::string name, label;
};

// Draws one series and returns its polyline in pixels (for placing the legend).
std::vector<Point> draw_series(Canvas& c, const Frame& f, const Axis& y,
                               const std::vector<double>& epoch, const Series& s, const Style& st) {
  std::vector<Point> pts;
  for (size_t i = 0; i < epoch.size() && i < s.values->size(); ++i)
    if (std::isfinite((*s.values)[i])) pts.push_back({f.at(epoch[i], 0).x, f.y_of((*s.values)[i], y)});
  c.series(pts, s.color, st.scale, s.dash, s.name);
  if (s.markers)
    for (const Point& p : pts) c.marker(p, s.color, s.marker, st.scale + 1);
  return pts;
}

// How many points of the series' polylines (sampled along each segment) fall inside a box.
int points_inside(const std::vector<std::vector<Point>>& lines, double x0, double y0, double x1,
                  double y1) {
  int n = 0;
  for (const auto& pts : lines)
    for (size_t i = 0; i < pts.size(); ++i)
      for (int k = 0; k < (i + 1 < pts.size() ? 16 : 1); ++k) {
        const Point a = pts[i], b = i + 1 < pts.size() ? pts[i + 1] : a;
        const double x = a.x + (b.x - a.x) * k / 16, y = a.y + (b.y - a.y) * k / 16;
        n += x >= x0 && x <= x1 && y >= y0 && y <= y1;
      }
  return n;
}

// Legend entries stacked in the corner of the frame that hides the fewest data points (as
// matplotlib's loc="best"); `lines` are the plotted polylines in pixels.
void draw_legend(Canvas& c, const Frame& f, const std::vector<Series>& series,
                 const std::vector<std::vector<Point>>& lines, const Style& s) {
  size_t longest = 0;
  for (const auto& e : series) longest = std::max(longest, e.label.size());
  const double sample = 3 * s.char_w, row = s.char_h * 1.8;
  const double box_w = sample + (longest + 1) * s.char_w, box_h = row * double(series.size());
  const double margin = s.char_w;
  double best_x = 0, best_y = 0;
  int fewest = -1;
  // Preference on ties: top right, bottom right, top left, bottom left.
  for (auto [right, top] : {std::pair{true, true}, {true, false}, {false, true}, {false, false}}) {
    const double x = right ? f.right - margin - box_w : f.left + margin + s.char_w;
    const double y = top ? f.top + margin : f.bottom - margin - box_h;
    const int n = points_inside(lines, x - s.char_w, y, x + box_w, y + box_h);
    if (fewest < 0 || n < fewest) fewest = n, best_x = x, best_y = y;
  }
  // White behind the legend keeps it legible where it must cover a curve.
  c.fill({best_x - s.char_w / 2, best_y}, {best_x + box_w + s.char_w / 2, best_y + box_h}, kWhite);
  double y = best_y + row / 2;
  for (const auto& e : series) {
    c.line({best_x, y}, {best_x + sample, y}, e.color, s.scale, e.dash);
    if (e.markers) c.marker({best_x + sample / 2, y}, e.color, e.marker, s.scale + 1);
    c.text({best_x + sample + s.char_w, y}, e.label, kBlack, s.scale, Anchor::start);
    y += row;
  }
}

}  // namespace

LearningCurves learning_curves_from(const MetricsTable& t) {
  if (t.rows.empty()) fail_input("{}: no epoch has finished yet", t.origin);
  LearningCurves c;
  c.epoch = t.values("epoch");
  c.train_accuracy = t.values("train_accuracy");
  c.test_accuracy = t.values("test_accuracy");
  c.train_loss = t.values("train_loss");
  c.test_loss = t.values("test_loss");
  c.learning_rate = t.values("learning_rate");
  return c;
}

void draw_learning_curves(Canvas& canvas, const LearningCurves& c, int width, int height) {
  Style s;
  s.scale = height >= 360 && width >= 720 ? 2 : 1;
  s.char_w = 6.0 * s.scale;
  s.char_h = 7.0 * s.scale;
  double first_epoch = INFINITY, last_epoch = -INFINITY;
  for (double e : finite(c.epoch)) first_epoch = std::min(first_epoch, e), last_epoch = std::max(last_epoch, e);
  if (!std::isfinite(first_epoch)) first_epoch = last_epoch = 1;
  const Axis x = nice_axis(first_epoch, last_epoch, 5, 1);
  const double half = width / 2.0, top = s.char_h * 3, bottom = height - s.char_h * 5;

  const Series train_acc{&c.train_accuracy, kTrainColor, true, Marker::circle, 0, "train_accuracy", "train"};
  const Series test_acc{&c.test_accuracy, kTestColor, true, Marker::square, 0, "test_accuracy", "test"};
  const Frame acc{s.char_w * 9, top, half - s.char_w * 3, bottom, x,
                  axis_for({&c.train_accuracy, &c.test_accuracy}, false)};
  draw_frame(canvas, acc, s, "accuracy");
  std::vector<std::vector<Point>> lines;
  for (const Series& e : {train_acc, test_acc}) lines.push_back(draw_series(canvas, acc, acc.y, c.epoch, e, s));
  draw_legend(canvas, acc, {train_acc, test_acc}, lines, s);

  const Series train_loss{&c.train_loss, kTrainColor, true, Marker::circle, 0, "train_loss", "train"};
  const Series test_loss{&c.test_loss, kTestColor, true, Marker::square, 0, "test_loss", "test"};
  const Series lr{&c.learning_rate, kLrColor, false, Marker::circle, 4.0 * s.scale, "learning_rate",
                  "learning rate"};
  const Frame loss{half + s.char_w * 9, top, width - s.char_w * 10, bottom, x,
                   axis_for({&c.train_loss, &c.test_loss}, true)};
  draw_frame(canvas, loss, s, "loss, learning rate (right)");
  const Axis lr_axis = axis_for({&c.learning_rate}, true);
  for (double v : lr_axis.ticks()) {
    const double y = loss.y_of(v, lr_axis);
    canvas.line({loss.right, y}, {loss.right + s.char_w / 2, y}, kLrColor, 1);
    canvas.text({loss.right + s.char_w, y}, tick_label(v), kLrColor, s.scale, Anchor::start);
  }
  lines.clear();
  for (const Series& e : {train_loss, test_loss}) lines.push_back(draw_series(canvas, loss, loss.y, c.epoch, e, s));
  lines.push_back(draw_series(canvas, loss, lr_axis, c.epoch, lr, s));
  draw_legend(canvas, loss, {train_loss, test_loss, lr}, lines, s);
}

std::string learning_curves_png(const LearningCurves& c, int width, int height) {
  Raster r(width, height);
  RasterCanvas canvas(r);
  draw_learning_curves(canvas, c, width, height);
  return encode_png(r);
}

std::string learning_curves_svg(const LearningCurves& c, int width, int height) {
  SvgCanvas canvas(width, height);
  draw_learning_curves(canvas, c, width, height);
  return canvas.finish();
}

std::vector<std::string> plot_run_dir(const std::string& run_dir, int width, int height) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(run_dir)) fail_input("{}: no such run directory", run_dir);
  const fs::path metrics = fs::path(run_dir) / "metrics_epochs.csv";
  if (!fs::exists(metrics))
    fail_input("{}: no metrics_epochs.csv, so not a run directory (`deeptrain train` writes one "
               "per run, under runs/ unless --run-dir says otherwise)", run_dir);
  if (width < 200 || height < 120)
    fail_input("plot size {}x{}: must be at least 200x120", width, height);
  const LearningCurves c = learning_curves_from(read_metrics_csv(metrics.string()));
  const std::string png = (fs::path(run_dir) / "curves.png").string();
  const std::string svg = (fs::path(run_dir) / "curves.svg").string();
  io::write_file_atomic(png, learning_curves_png(c, width, height));
  io::write_file_atomic(svg, learning_curves_svg(c, width, height));
  return {png, svg};
}

}  // namespace deeptrain::report
