// deeptrain's own inference for the ONNX tests (check_onnx.py): a config's model with a weights
// file, evaluated (training off) on images.npy (float32 (n, C, H, W)) -> logits.npy (n, classes).
//   usage: dt_logits CONFIG WEIGHTS IMAGES.npy LOGITS.npy [BACKEND]   (BACKEND: cpu, cpu-ref)
#include <cstdio>
#include <exception>

#include "core/backend/backend.h"
#include "core/config.h"
#include "core/io/atomic_file.h"
#include "core/io/npz.h"
#include "core/io/read_file.h"
#include "core/io/weights.h"
#include "core/net.h"

using namespace deeptrain;

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: dt_logits CONFIG WEIGHTS IMAGES.npy LOGITS.npy [BACKEND]\n");
    return 2;
  }
  try {
    const proto::ExperimentConfig cfg = load_config(argv[1]);
    const std::string npy = io::read_file(argv[3]);
    const Tensor x = io::parse_npy(npy.data(), npy.size(), argv[3]);
    const int classes = cfg.model().num_classes() ? cfg.model().num_classes() : 10;
    Net net(cfg.model(), Shape{x.dim(1), x.dim(2), x.dim(3)}, classes, DType::f32);
    io::load_weights(argv[2], net);
    std::unique_ptr<Backend> be = make_backend(argc > 5 ? argv[5] : "cpu");
    const int64_t n = x.dim(0), per = x.numel() / n, batch = 100;
    Tensor logits = Tensor::empty({n, classes}, DType::f32);
    for (int64_t b = 0; b < n; b += batch) {
      const int64_t m = std::min(batch, n - b);
      StepContext ctx{*be};
      Tensor xb = Tensor::empty({m, x.dim(1), x.dim(2), x.dim(3)}, DType::f32);
      std::copy_n(x.data<float>() + b * per, m * per, xb.data<float>());
      const Tensor y = be->to_host(net.forward(ctx, xb));
      std::copy_n(y.data<float>(), m * classes, logits.data<float>() + b * classes);
    }
    io::write_file_atomic(argv[4], io::format_npy(logits, "logits"));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dt_logits: %s\n", e.what());
    return 1;
  }
}
