#include "distributed/consistency.h"

#include "core/checksum.h"

#include <algorithm>
#include <cstring>
#include <map>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <google/protobuf/text_format.h>
#include <zlib.h>

namespace deeptrain {

namespace {

void flatten(const google::protobuf::Message& m, const std::string& prefix, Fingerprint& f) {
  using google::protobuf::FieldDescriptor;
  const auto* refl = m.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  refl->ListFields(m, &fields);
  const auto& skip = per_rank_config_fields();
  for (const FieldDescriptor* fd : fields) {
    const std::string path = prefix + fd->name();
    if (std::find(skip.begin(), skip.end(), path) != skip.end()) continue;
    const bool msg = fd->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE;
    if (fd->is_repeated()) {
      const int n = refl->FieldSize(m, fd);
      f.add(path + ".size", std::to_string(n));
      for (int i = 0; i < n; ++i) {
        const std::string p = fmt::format("{}[{}]", path, i);
        if (msg) {
          flatten(refl->GetRepeatedMessage(m, fd, i), p + ".", f);
        } else {
          std::string v;
          google::protobuf::TextFormat::PrintFieldValueToString(m, fd, i, &v);
          f.add(p, v);
        }
      }
    } else if (msg) {
      flatten(refl->GetMessage(m, fd), path + ".", f);
    } else {
      std::string v;
      google::protobuf::TextFormat::PrintFieldValueToString(m, fd, -1, &v);
      f.add(path, v);
    }
  }
}

std::string crc_of(const Tensor& t) { return fmt::format("{:08x}", crc32_of(t.raw(), t.nbytes())); }

std::string rank_list(const std::vector<int>& ranks, const std::vector<std::string>& hosts) {
  std::string s;
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (i == 8) {
      s += fmt::format(" and {} more", ranks.size() - 8);
      break;
    }
    const int r = ranks[i];
    s += fmt::format("{}rank {} ({})", i ? ", " : "", r, r < int(hosts.size()) ? hosts[r] : "?");
  }
  return s;
}

}  // namespace

const std::vector<std::string>& per_rank_config_fields() {
  static const std::vector<std::string> f{"run.threads", "run.save_weights", "data.dir",
                                          "data.verify_checksums"};
  return f;
}

std::string Fingerprint::serialize() const {
  std::string s;
  for (const auto& [k, v] : facts) {
    // Keys never contain ':' or newlines; values may contain newlines (escaped).
    std::string e;
    for (char c : v) {
      if (c == '\\') e += "\\\\";
      else if (c == '\n') e += "\\n";
      else e += c;
    }
    s += k + ": " + e + "\n";
  }
  return s;
}

Fingerprint Fingerprint::parse(const std::string& text) {
  Fingerprint f;
  size_t at = 0;
  while (at < text.size()) {
    size_t nl = text.find('\n', at);
    if (nl == std::string::npos) nl = text.size();
    const std::string line = text.substr(at, nl - at);
    at = nl + 1;
    const size_t c = line.find(": ");
    if (c == std::string::npos) continue;
    std::string v;
    for (size_t i = c + 2; i < line.size(); ++i) {
      if (line[i] == '\\' && i + 1 < line.size()) {
        v += line[i + 1] == 'n' ? '\n' : line[i + 1];
        ++i;
      } else {
        v += line[i];
      }
    }
    f.add(line.substr(0, c), v);
  }
  return f;
}

Fingerprint job_fingerprint(const proto::ExperimentConfig& cfg, const Net& net,
                            const data::DatasetSplit* data) {
  Fingerprint f;
  f.add("deeptrain.version", DEEPTRAIN_VERSION);
  flatten(cfg, "", f);
  // The model as built (presets expanded): one fact per layer, then the parameter count.
  const std::string summary = net.summary();
  size_t at = 0;
  for (int i = 0; at < summary.size(); ++i) {
    size_t nl = summary.find('\n', at);
    if (nl == std::string::npos) nl = summary.size();
    std::string line = summary.substr(at, nl - at);
    at = nl + 1;
    if (line.rfind("parameters:", 0) == 0) continue;
    while (!line.empty() && line.back() == ' ') line.pop_back();
    f.add(fmt::format("model structure, layer {}", i), line);
  }
  f.add("model parameter count", std::to_string(net.num_params()));
  if (data) {
    for (const auto* d : {&data->train, &data->test}) {
      const std::string name = d == &data->train ? "train" : "test";
      f.add("data " + name + " samples", std::to_string(d->labels.numel()));
      f.add("data " + name + " labels crc32", crc_of(d->labels));
      if (d->source) f.add("data " + name + " images", d->source->fingerprint());
      else f.add("data " + name + " images crc32", crc_of(d->images));
    }
  }
  return f;
}

std::string compare_fingerprints(const std::vector<Fingerprint>& by_rank,
                                 const std::vector<std::string>& hosts) {
  // Keys in the order rank 0 lists them, then any others in rank order.
  std::vector<std::string> keys;
  std::vector<std::map<std::string, std::string>> maps(by_rank.size());
  for (size_t r = 0; r < by_rank.size(); ++r)
    for (const auto& [k, v] : by_rank[r].facts) {
      if (maps[r].emplace(k, v).second && std::find(keys.begin(), keys.end(), k) == keys.end())
        keys.push_back(k);
    }
  for (const std::string& k : keys) {
    std::vector<std::pair<std::string, std::vector<int>>> groups;  // value -> ranks
    for (size_t r = 0; r < maps.size(); ++r) {
      auto it = maps[r].find(k);
      const std::string v = it == maps[r].end() ? "(unset)" : it->second;
      auto g = std::find_if(groups.begin(), groups.end(), [&](const auto& x) { return x.first == v; });
      if (g == groups.end()) groups.push_back({v, {int(r)}});
      else g->second.push_back(int(r));
    }
    if (groups.size() == 1) continue;
    std::string msg = fmt::format("ranks disagree on {}: ", k);
    for (size_t i = 0; i < groups.size(); ++i)
      msg += fmt::format("{}{} on {}", i ? "; " : "", groups[i].first,
                         rank_list(groups[i].second, hosts));
    std::string allowed;
    for (const std::string& s : per_rank_config_fields()) allowed += (allowed.empty() ? "" : ", ") + s;
    return msg + fmt::format(
                     ". Every rank must run the same deeptrain, model, config and data (only {} "
                     "may differ); refusing to train",
                     allowed);
  }
  return {};
}

void verify_consistency(Communicator& comm, const Fingerprint& mine) {
  const int n = comm.size();
  if (n == 1) return;
  const std::string text = mine.serialize();
  Tensor len = Tensor::empty({1}, DType::i64), lens = Tensor::empty({n}, DType::i64);
  len.data<int64_t>()[0] = int64_t(text.size());
  comm.allgather(len, lens, "consistency check (sizes)");
  int64_t longest = 0;
  for (int r = 0; r < n; ++r) longest = std::max(longest, lens.data<int64_t>()[r]);
  Tensor buf = Tensor::zeros({longest}, DType::u8), all = Tensor::empty({longest * n}, DType::u8);
  std::memcpy(buf.raw(), text.data(), text.size());
  comm.allgather(buf, all, "consistency check");
  std::vector<Fingerprint> prints;
  std::vector<std::string> hosts;
  for (int r = 0; r < n; ++r) {
    const char* p = static_cast<const char*>(all.raw()) + r * longest;
    prints.push_back(Fingerprint::parse(std::string(p, size_t(lens.data<int64_t>()[r]))));
    hosts.push_back(comm.host_of(r));
  }
  const std::string verdict = compare_fingerprints(prints, hosts);
  if (!verdict.empty()) throw JobWideError(verdict);
}

}  // namespace deeptrain
