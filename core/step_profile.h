#pragma once
// StepProfile: where a step's time goes, phase by phase (the batch, each layer's forward and
// backward, the loss, the gradient reduction, the optimizer). Every mark first waits for the
// backend's queued work (a GPU's stream), so the time between two marks is what the phase
// cost the device plus its launch overhead. Those waits slow the whole step down, so a profile
// finds the expensive phases; throughput is what `deeptrain bench` without --profile measures.
//
// The clock is wall time, or the process's CPU time (all its threads): on a machine shared with
// other work, a one-thread run's CPU time is what its phases cost, where wall time also counts
// the time the thread waited for a core.
#include <map>
#include <string>
#include <vector>

namespace deeptrain {

class Backend;

enum class ProfileClock { wall, cpu };
// Milliseconds since an arbitrary origin on that clock.
double clock_ms(ProfileClock clock);

class StepProfile {
 public:
  explicit StepProfile(ProfileClock clock = ProfileClock::wall) : clock_(clock) {}
  // A step starts: waits for the backend, then starts the clock.
  void begin_step(Backend& backend);
  // The phase `name` ended now: waits for the backend, adds the time since the last mark (or
  // begin_step) to this step's `name`. A name seen twice in a step adds up.
  void mark(Backend& backend, const std::string& name);
  void end_step();  // this step's times become one sample per phase

  struct Row {
    std::string phase;
    double median_ms;  // over the steps, 0 in steps that did not reach the phase
  };
  // One row per phase, in the order they were first marked.
  std::vector<Row> table() const;
  int steps() const { return int(samples_.empty() ? 0 : samples_.front().size()); }

 private:
  ProfileClock clock_;
  std::vector<std::string> phases_;
  std::map<std::string, size_t> index_;
  std::vector<double> current_;                // ms of the step being measured, per phase
  std::vector<std::vector<double>> samples_;   // per phase, one value per finished step
  double last_ = 0;  // clock_ms at the last mark
  int finished_ = 0;
};

}  // namespace deeptrain
