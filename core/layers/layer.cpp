// make_layer: the layer kind a LayerConfig names, built by its file's factory (kinds.h).
#include "core/layers/kinds.h"

namespace deeptrain {

void expect_inputs(const std::string& name, const std::vector<Shape>& in, size_t n, int rank) {
  if (in.size() != n) fail_input("layer '{}': expects {} input(s), got {}", name, n, in.size());
  if (rank > 0 && in[0].rank() != rank)
    fail_input("layer '{}': expects a {}-d input per sample, got {}", name, rank, in[0].str());
}

std::unique_ptr<Layer> make_layer(const proto::LayerConfig& cfg, int index) {
  using K = proto::LayerConfig;
  switch (cfg.kind_case()) {
    case K::kConv: return make_conv(cfg, index);
    case K::kMaxPool: return make_max_pool(cfg, index);
    case K::kRelu: return make_relu(cfg, index);
    case K::kAffine: return make_affine(cfg, index);
    case K::kDropout: return make_dropout(cfg, index);
    case K::kBatchNorm: return make_batch_norm(cfg, index);
    case K::kGlobalAvgPool: return make_global_avg_pool(cfg, index);
    case K::kAdd: return make_add(cfg, index);
    case K::kConcat: return make_concat(cfg, index);
    case K::kDeconv: return make_deconv(cfg, index);
    case K::kCrop: return make_crop(cfg, index);
    case K::KIND_NOT_SET: break;
  }
  fail_input("layer '{}': no layer kind given (conv, max_pool, relu, affine, dropout, "
             "batch_norm, global_avg_pool, add, concat, deconv, crop)", cfg.name());
}

}  // namespace deeptrain
