#pragma once
// TensorBoard event files: TFRecord-framed tensorboard::Event messages, the first one carrying
// the file version, the rest scalar or image summaries. `tensorboard --logdir runs` reads them.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "proto/tensorboard.pb.h"
#include "report/tfrecord.h"

namespace deeptrain::report {

constexpr const char* kEventFileVersion = "brain.Event:2";

double unix_time_now();
std::string host_name();
// "events.out.tfevents.<whole seconds>.<host>", TensorFlow's naming, which TensorBoard expects.
std::string event_file_name(double wall_time, const std::string& host);

class EventFileWriter {
 public:
  // Creates <dir>/event_file_name(unix_time_now(), host_name()) and writes the version record.
  explicit EventFileWriter(const std::string& dir);
  // One Event holding a simple_value per (tag, value).
  void scalars(int64_t step, const std::vector<std::pair<std::string, double>>& values);
  void scalar(int64_t step, const std::string& tag, double value) { scalars(step, {{tag, value}}); }
  // An image summary; `png` is a whole PNG file of an RGB image.
  void image(int64_t step, const std::string& tag, std::string png, int height, int width);
  void flush() { records_.flush(); }
  const std::string& path() const { return records_.path(); }

 private:
  void write(tensorboard::Event& e);
  TfRecordWriter records_;
};

// Every Event of a file, in order (throws InputError on a bad record or message).
std::vector<tensorboard::Event> read_event_file(const std::string& path);

}  // namespace deeptrain::report
