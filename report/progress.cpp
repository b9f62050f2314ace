#include "report/progress.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <fmt/format.h>

namespace deeptrain::report {

std::string format_duration(double seconds) {
  const int64_t s = std::max<int64_t>(0, std::llround(seconds));
  if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
  return fmt::format("{}:{:02}", s / 60, s % 60);
}

double Progress::steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Progress::Progress(std::ostream& out, bool tty, std::string label, int64_t steps, int64_t every,
                   Clock clock)
    : out_(out), tty_(tty), label_(std::move(label)), steps_(std::max<int64_t>(steps, 1)),
      every_(every > 0 ? every : std::max<int64_t>(1, steps_ / 10)), clock_(std::move(clock)),
      start_(clock_()) {}

std::string Progress::status(int64_t done, int64_t images, double loss) const {
  const double elapsed = clock_() - start_;
  const double rate = elapsed > 0 ? double(images) / elapsed : 0;
  const double eta = done > 0 ? elapsed / double(done) * double(steps_ - done) : 0;
  return fmt::format("{}/{}  {:.0f} img/s  loss {:.4f}  ETA {}", done, steps_, rate, loss,
                     format_duration(eta));
}

void Progress::update(int64_t done, int64_t images, double loss) {
  if (!tty_) {
    if (done % every_ != 0 && done != steps_) return;
    out_ << label_ << "  step " << status(done, images, loss) << "\n" << std::flush;
    return;
  }
  const double now = clock_();
  if (done != steps_ && last_draw_ >= 0 && now - last_draw_ < kRedrawSeconds) return;
  last_draw_ = now;
  constexpr int kBarWidth = 20;
  const int filled = int(kBarWidth * done / steps_);
  std::string line = fmt::format("{} [{}{}] {}", label_, std::string(filled, '#'),
                                 std::string(kBarWidth - filled, '.'), status(done, images, loss));
  const size_t width = line.size();
  if (width < drawn_width_) line += std::string(drawn_width_ - width, ' ');  // erase the rest
  drawn_width_ = width;
  out_ << '\r' << line << std::flush;
}

void Progress::finish() {
  if (!tty_ || drawn_width_ == 0) return;
  out_ << '\r' << std::string(drawn_width_, ' ') << '\r' << std::flush;
  drawn_width_ = 0;
}

}  // namespace deeptrain::report
