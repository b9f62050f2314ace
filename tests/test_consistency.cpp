// The consistency guard (distributed/consistency.h): fingerprints round-trip through text, the
// message names the first difference and the ranks on each side, and the job's fingerprint
// leaves out per-rank fields.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/config.h"
#include "core/net.h"
#include "distributed/consistency.h"

using namespace deeptrain;

TEST(Consistency, FingerprintRoundTripsThroughText) {
  Fingerprint f;
  f.add("a.b", "1");
  f.add("model structure, layer 0", "conv1 Conv (16, 28, 28) 160");
  f.add("multi", "x\ny\\z");
  const Fingerprint g = Fingerprint::parse(f.serialize());
  EXPECT_EQ(g.facts, f.facts);
}

TEST(Consistency, MessageNamesTheFirstDifferenceAndTheRanksOnEachSide) {
  auto fp = [](const std::string& bs, const std::string& lr) {
    Fingerprint f;
    f.add("deeptrain.version", "0.1.0");
    f.add("schedule.batch_size", bs);
    f.add("optimizer.lr", lr);
    return f;
  };
  const std::vector<std::string> hosts{"h1", "h2", "h3"};
  EXPECT_EQ(compare_fingerprints({fp("100", "0.001"), fp("100", "0.001"), fp("100", "0.001")}, hosts), "");
  const std::string m =
      compare_fingerprints({fp("100", "0.001"), fp("64", "0.002"), fp("100", "0.001")}, hosts);
  EXPECT_EQ(m.rfind("ranks disagree on schedule.batch_size: 100 on rank 0 (h1), rank 2 (h3); 64 "
                    "on rank 1 (h2). ", 0), 0u) << m;
  EXPECT_EQ(m.find("optimizer.lr"), std::string::npos) << m;  // only the first difference
  // A fact one rank lacks is "(unset)" there.
  Fingerprint extra = fp("100", "0.001");
  extra.add("distributed.compression", "COMPRESSION_FP16");
  const std::string u = compare_fingerprints({fp("100", "0.001"), extra}, {"a", "b"});
  EXPECT_NE(u.find("ranks disagree on distributed.compression: (unset) on rank 0 (a); "
                   "COMPRESSION_FP16 on rank 1 (b)"), std::string::npos) << u;
}

TEST(Consistency, JobFingerprintSkipsPerRankFieldsAndCoversTheModel) {
  proto::ExperimentConfig a = parse_config("run { threads: 1 save_weights: \"x\" } data { dir: \"/a\" }", "a");
  proto::ExperimentConfig b = parse_config("run { threads: 2 } data { dir: \"/b\" verify_checksums: true }", "b");
  Net net(a.model(), Shape{1, 28, 28}, 10, DType::f32);
  const Fingerprint fa = job_fingerprint(a, net, nullptr), fb = job_fingerprint(b, net, nullptr);
  EXPECT_EQ(compare_fingerprints({fa, fb}, {"h", "h"}), "");
  bool has_structure = false, has_count = false, has_bucket = false;
  for (const auto& [k, v] : fa.facts) {
    has_structure |= k == "model structure, layer 0";
    has_count |= k == "model parameter count";
    has_bucket |= k == "distributed.bucket_mb";
    EXPECT_NE(k, "run.threads");
    EXPECT_NE(k, "data.dir");
  }
  EXPECT_TRUE(has_structure && has_count && has_bucket);
  proto::ExperimentConfig c = parse_config("distributed { compression: COMPRESSION_BF16 }", "c");
  const std::string m = compare_fingerprints({fa, job_fingerprint(c, net, nullptr)}, {"h1", "h2"});
  EXPECT_NE(m.find("ranks disagree on distributed.compression"), std::string::npos) << m;
}
