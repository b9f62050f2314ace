#pragma once
// A run's directory: everything one training run writes (the config it ran with, its log,
// metrics, TensorBoard event file, plots, weights) in one place, so runs can be compared,
// plotted and shared by directory.
#include <ctime>
#include <string>

namespace deeptrain::report {

// "runs/<name>-YYYYmmdd-HHMMSS" in local time; characters of `name` outside [A-Za-z0-9._-]
// become '_' (an empty name is "run").
std::string default_run_dir(const std::string& name, std::time_t when);

// Creates and returns the run directory. `requested` empty: default_run_dir(name, now), with
// "-2", "-3", ... appended if that exists already (two runs started in the same second).
// Otherwise `requested`, which may exist as an empty or unrelated directory but must not hold
// a run already (its metrics would be overwritten). Errors (InputError) start with
// "run directory <dir>:".
std::string create_run_dir(const std::string& requested, const std::string& name);

}  // namespace deeptrain::report
