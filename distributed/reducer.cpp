#include "distributed/reducer.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "core/error.h"
#include "distributed/half.h"

namespace deeptrain {

std::vector<std::pair<int64_t, int64_t>> plan_buckets(
    const std::vector<std::pair<int64_t, int64_t>>& ranges, int64_t cap_elems) {
  std::vector<std::pair<int64_t, int64_t>> out;
  int64_t b = -1, e = -1;
  for (const auto& [rb, re] : ranges) {
    if (re <= rb) continue;
    if (b < 0) {
      b = rb;
      e = re;
    } else {
      DT_CHECK(re == b, "layer ranges are not contiguous in reverse order: [{}, {}) after [{}, {})",
               rb, re, b, e);
      b = rb;
    }
    if (cap_elems > 0 && e - b >= cap_elems) {
      out.emplace_back(b, e);
      b = e = -1;
    }
  }
  if (b >= 0) out.emplace_back(b, e);
  return out;
}

Reducer::Reducer(Communicator& comm, Net& net, const GradientSyncOptions& opt)
    : comm_(comm), net_(net), opt_(opt) {
  DT_CHECK(net.compute_grads().dtype() == DType::f32, "gradients are {}",
           dtype_name(net.compute_grads().dtype()));
  // Each layer's parameter range, in reverse layer order, with the layer's name.
  std::map<int, std::pair<int64_t, int64_t>> by_layer;
  for (const ParamEntry& p : net.param_entries()) {
    auto [it, fresh] = by_layer.try_emplace(p.layer, p.offset, p.offset + p.shape.numel());
    if (!fresh) {
      it->second.first = std::min(it->second.first, p.offset);
      it->second.second = std::max(it->second.second, p.offset + p.shape.numel());
    }
  }
  std::vector<std::pair<int64_t, int64_t>> ranges;
  std::vector<int> layer_of;
  for (auto it = by_layer.rbegin(); it != by_layer.rend(); ++it) {
    ranges.push_back(it->second);
    layer_of.push_back(it->first);
  }
  const int64_t cap = opt_.overlap ? opt_.bucket_bytes / int64_t(sizeof(float)) : 0;
  const auto plan = plan_buckets(ranges, cap);
  for (size_t i = 0; i < plan.size(); ++i) {
    std::string first, last;  // layer names in forward order
    for (size_t k = 0; k < ranges.size(); ++k)
      if (ranges[k].first >= plan[i].first && ranges[k].second <= plan[i].second) {
        const std::string& n = net.layers()[layer_of[k]]->name();
        if (last.empty()) last = n;
        first = n;
      }
    buckets_.push_back({plan[i].first, plan[i].second,
                        fmt::format("gradient bucket {}/{} ({}{}{})", i + 1, plan.size(), first,
                                    first == last ? "" : "..", first == last ? "" : last)});
  }
  remaining_.resize(buckets_.size());
  pending_.resize(buckets_.size());
  compress_ = opt_.compression != WireCompression::none && comm_.size() > 1;
  if (compress_ && net.on_device())
    fail_input("distributed.compression: 16-bit gradients on the wire are implemented for CPU "
               "backends only; with a GPU backend leave it unset");
  if (compress_)
    wire_ = Tensor::empty({net.num_params()},
                          opt_.compression == WireCompression::f16 ? DType::f16 : DType::bf16);
}

Reducer::~Reducer() = default;

void Reducer::begin_step(int64_t global_batch) {
  DT_CHECK(!active_, "begin_step before the previous step's finish()");
  DT_CHECK(!settling_, "begin_step before the previous step's settle()");
  active_ = true;
  next_ = 0;
  for (size_t b = 0; b < buckets_.size(); ++b) remaining_[b] = buckets_[b].end - buckets_[b].begin;
  prescale_ = opt_.compression == WireCompression::f16 ? float(global_batch) : 1.0f;
  t_begin_ = now_seconds();
}

Net::GradsReady Reducer::callback() {
  if ((comm_.size() == 1 && !comm_.reduces_alone()) || !opt_.overlap) return {};
  return [this](int64_t b, int64_t e) { grads_ready(b, e); };
}

void Reducer::grads_ready(int64_t begin, int64_t end) {
  DT_CHECK(active_, "grads_ready outside a step");
  for (size_t b = 0; b < buckets_.size(); ++b) {
    const int64_t lo = std::max(begin, buckets_[b].begin), hi = std::min(end, buckets_[b].end);
    if (hi > lo) remaining_[b] -= hi - lo;
  }
  // Start complete buckets in bucket order (every rank starts the same collectives in the same
  // order, whatever order its layers finish in).
  while (next_ < buckets_.size() && remaining_[next_] <= 0) launch(next_++);
}

void Reducer::launch(size_t b) {
  const Bucket& k = buckets_[b];
  const int64_t n = k.end - k.begin;
  Tensor g = net_.compute_grads().slice_flat(k.begin, {n});
  if (compress_) {
    Tensor w = wire_.slice_flat(k.begin, {n});
    const float* src = g.data<float>();
    auto* dst = static_cast<uint16_t*>(w.raw());
    if (opt_.compression == WireCompression::f16)
      f32_to_f16_array(src, dst, n, prescale_);
    else
      for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
    pending_[b] = comm_.iallreduce_sum(w, k.name.c_str());
    stats_.wire_bytes += n * 2;
  } else {
    pending_[b] = comm_.iallreduce_sum(g, k.name.c_str());
    stats_.wire_bytes += n * 4;
  }
  ++stats_.collectives;
}

void Reducer::finish() {
  DT_CHECK(active_, "finish() without begin_step()");
  t_finish_ = now_seconds();
  active_ = false;
  settling_ = true;
  bool on_device = false;
  if (comm_.size() > 1 || comm_.reduces_alone()) {
    while (next_ < buckets_.size()) launch(next_++);
    // A GPU transport orders the step's remaining work after the buckets on the device; the
    // host waits later, in settle(), once that work is enqueued. (Compression decodes on the
    // host: it must wait now.)
    on_device = !compress_ && std::all_of(pending_.begin(), pending_.end(), [](auto& r) {
      return r->order_on_device();
    });
  }
  finish_seconds_ = now_seconds() - t_finish_;
  if (!on_device) settle();
}

void Reducer::finish_exact(const MicroShards& micro) {
  DT_CHECK(active_, "finish_exact() without begin_step()");
  DT_CHECK(!net_.on_device(), "exact mode reduces host gradients");
  t_finish_ = now_seconds();
  active_ = false;
  micro.ordered_sum(micro.grads(), net_.compute_grads());
  if (comm_.size() > 1) {
    ++stats_.collectives;
    stats_.wire_bytes += micro.grads().nbytes();
    stats_.comm_seconds += now_seconds() - t_finish_;
  }
  stats_.exposed_seconds += now_seconds() - t_finish_;
  stats_.backward_seconds += t_finish_ - t_begin_;
  ++stats_.steps;
}

void Reducer::settle() {
  if (!settling_) return;
  settling_ = false;
  const double t_settle = now_seconds();
  if (comm_.size() > 1 || comm_.reduces_alone()) {
    // Wait for all, then decompress, then account the union of in-flight intervals.
    for (auto& r : pending_) r->wait();
    std::vector<std::pair<double, double>> iv;
    for (size_t b = 0; b < buckets_.size(); ++b) {
      iv.emplace_back(pending_[b]->started_at(), pending_[b]->finished_at());
      if (compress_) {
        const int64_t n = buckets_[b].end - buckets_[b].begin;
        float* dst = net_.compute_grads().data<float>() + buckets_[b].begin;
        const auto* src = static_cast<const uint16_t*>(wire_.raw()) + buckets_[b].begin;
        bool finite = true;
        if (opt_.compression == WireCompression::f16) {
          f16_to_f32_array(src, dst, n, 1.0f / prescale_);
          for (int64_t i = 0; i < n; ++i) finite &= std::isfinite(dst[i]);
        } else {
          for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
        }
        if (!finite)
          fail("{}: f16 gradient compression overflowed in {} (a summed per-sample gradient "
               "beyond 65504); use distributed.compression: COMPRESSION_BF16 or COMPRESSION_NONE",
               comm_.where(), buckets_[b].name);
      }
      pending_[b].reset();
    }
    std::sort(iv.begin(), iv.end());
    double union_s = 0, cur_b = -1, cur_e = -1;
    for (const auto& [s, e] : iv) {
      if (s > cur_e) {
        if (cur_e > cur_b) union_s += cur_e - cur_b;
        cur_b = s;
        cur_e = e;
      } else {
        cur_e = std::max(cur_e, e);
      }
    }
    if (cur_e > cur_b) union_s += cur_e - cur_b;
    stats_.comm_seconds += union_s;
  }
  stats_.exposed_seconds += finish_seconds_ + (now_seconds() - t_settle);
  stats_.backward_seconds += t_finish_ - t_begin_;
  ++stats_.steps;
}

}  // namespace deeptrain
