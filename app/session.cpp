#include "app/session.h"

#include <sys/resource.h>

#include "core/threads.h"

namespace deeptrain::app {

Session open_session(const proto::ExperimentConfig& cfg, bool load_data) {
  Session s;
  s.comm = std::make_unique<SingleProcessCommunicator>();
  s.cfg = cfg;
  s.threads = set_cpu_threads(cfg.run().threads());
  const auto& d = cfg.data();
  if (load_data)
    s.data = data::load_dataset(d.dataset(), d.dir(), d.verify_checksums(), d.train_limit(),
                          d.test_limit());
  s.backend = make_backend(cfg.run().backend());
  // MNIST and Fashion-MNIST: 1 x 28 x 28, 10 classes, unless the config says otherwise.
  const auto& in = cfg.model().input();
  Shape input{in.channels() ? in.channels() : 1, in.height() ? in.height() : 28,
              in.width() ? in.width() : 28};
  const int classes = cfg.model().num_classes() ? cfg.model().num_classes() : 10;
  s.net = std::make_unique<Net>(cfg.model(), input, classes, DType::f32);
  s.net->init_params(cfg.run().seed());
  return s;
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\', o += c;
    else if (c == '\n') o += "\\n";
    else if (static_cast<unsigned char>(c) < 0x20) o += fmt::format("\\u{:04x}", int(c));
    else o += c;
  }
  return o;
}

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;
}

}  // namespace deeptrain::app
