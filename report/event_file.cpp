#include "report/event_file.h"

#include <unistd.h>

#include <chrono>
#include <cmath>

#include "core/error.h"

namespace deeptrain::report {

double unix_time_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == 0) return "localhost";
  return buf;
}

std::string event_file_name(double wall_time, const std::string& host) {
  return fmt::format("events.out.tfevents.{}.{}", int64_t(std::floor(wall_time)), host);
}

EventFileWriter::EventFileWriter(const std::string& dir)
    : records_(dir + "/" + event_file_name(unix_time_now(), host_name())) {
  tensorboard::Event e;
  e.set_file_version(kEventFileVersion);
  e.mutable_source_metadata()->set_writer("deeptrain " DEEPTRAIN_VERSION);
  write(e);
  flush();
}

void EventFileWriter::write(tensorboard::Event& e) {
  e.set_wall_time(unix_time_now());
  records_.write(e.SerializeAsString());
}

void EventFileWriter::scalars(int64_t step,
                              const std::vector<std::pair<std::string, double>>& values) {
  tensorboard::Event e;
  e.set_step(step);
  for (const auto& [tag, value] : values) {
    auto* v = e.mutable_summary()->add_value();
    v->set_tag(tag);
    v->set_simple_value(float(value));
  }
  write(e);
}

void EventFileWriter::image(int64_t step, const std::string& tag, std::string png, int height,
                            int width) {
  tensorboard::Event e;
  e.set_step(step);
  auto* v = e.mutable_summary()->add_value();
  v->set_tag(tag);
  auto* img = v->mutable_image();
  img->set_height(height);
  img->set_width(width);
  img->set_colorspace(3);  // RGB
  img->set_encoded_image_string(std::move(png));
  write(e);
}

std::vector<tensorboard::Event> read_event_file(const std::string& path) {
  std::vector<tensorboard::Event> events;
  for (const std::string& record : read_tfrecords(path)) {
    if (!events.emplace_back().ParseFromString(record))
      fail_input("{}: record {} is not an Event message", path, events.size() - 1);
  }
  return events;
}

}  // namespace deeptrain::report
