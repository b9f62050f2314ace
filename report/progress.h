#pragma once
// Progress of one epoch, as people watching a run expect it: on a terminal a bar redrawn in
// place (at most ~10 times a second, so a fast loop does not spend its time printing); in a
// file or pipe (CI, SLURM logs) a plain line every ~10% of the epoch, since \r-redraws would
// leave thousands of fragments there.
#include <cstdint>
#include <functional>
#include <ostream>
#include <string>

namespace deeptrain::report {

// "0:07", "12:05", "1:02:03".
std::string format_duration(double seconds);

class Progress {
 public:
  using Clock = std::function<double()>;  // monotonic seconds
  static double steady_seconds();
  static constexpr double kRedrawSeconds = 0.1;

  // `label` leads every line ("epoch 3/20"); `steps` is the epoch's step count; `every` is the
  // plain-mode interval in steps (0: a tenth of the epoch).
  Progress(std::ostream& out, bool tty, std::string label, int64_t steps, int64_t every = 0,
           Clock clock = steady_seconds);
  // After `done` of `steps` steps, having trained on `images` images this epoch with mean loss
  // `loss` so far.
  void update(int64_t done, int64_t images, double loss);
  // On a terminal, erases the bar so that the caller's epoch summary takes its line.
  void finish();

 private:
  std::string status(int64_t done, int64_t images, double loss) const;
  std::ostream& out_;
  bool tty_;
  std::string label_;
  int64_t steps_, every_;
  Clock clock_;
  double start_, last_draw_ = -1;
  size_t drawn_width_ = 0;  // of the bar now on screen, to erase it
};

}  // namespace deeptrain::report
