#include "core/step_profile.h"

#include <algorithm>
#include <chrono>
#include <ctime>

#include "core/backend/backend.h"

namespace deeptrain {

double clock_ms(ProfileClock clock) {
  if (clock == ProfileClock::cpu) {
    timespec t{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return double(t.tv_sec) * 1e3 + double(t.tv_nsec) * 1e-6;
  }
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch()).count();
}

void StepProfile::begin_step(Backend& backend) {
  backend.synchronize();
  std::fill(current_.begin(), current_.end(), 0.0);
  last_ = clock_ms(clock_);
}

void StepProfile::mark(Backend& backend, const std::string& name) {
  backend.synchronize();
  const double now = clock_ms(clock_);
  auto [it, added] = index_.emplace(name, phases_.size());
  if (added) {
    phases_.push_back(name);
    current_.push_back(0.0);
    // A phase first seen after some steps had none of it in those.
    samples_.emplace_back(size_t(finished_), 0.0);
  }
  current_[it->second] += now - last_;
  last_ = now;
}

void StepProfile::end_step() {
  for (size_t i = 0; i < samples_.size(); ++i) samples_[i].push_back(current_[i]);
  ++finished_;
}

std::vector<StepProfile::Row> StepProfile::table() const {
  std::vector<Row> rows;
  for (size_t i = 0; i < phases_.size(); ++i) {
    std::vector<double> v = samples_[i];
    double median = 0;
    if (!v.empty()) {
      std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
      median = v[v.size() / 2];
    }
    rows.push_back({phases_[i], median});
  }
  return rows;
}

}  // namespace deeptrain
