// Every --json line a command prints, and every line of a run's .jsonl files, is one JSON object
// that a JSON parser reads, NaN and infinities included (as null): a short real run, a diverging
// one, and an ensemble eval.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli_util.h"

namespace {

using nlohmann::json;

const std::string kMnist = std::string(DEEPTRAIN_DATA_DIR) + "/mnist";

// stdout alone (stderr's notes are for people).
CommandResult run_stdout(const std::string& args) {
  return run_command("{ " + deeptrain_cmd(args) + " 2>/dev/null; }");
}

// Parses every line of `text` (each must be one JSON object); returns them.
std::vector<json> parse_lines(const std::string& text, const std::string& origin) {
  std::vector<json> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    json j;
    EXPECT_NO_THROW(j = json::parse(line)) << origin << ": " << line;
    EXPECT_TRUE(j.is_object()) << origin << ": " << line;
    out.push_back(j);
  }
  return out;
}

std::string read(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<std::string> events(const std::vector<json>& lines) {
  std::vector<std::string> e;
  for (const json& j : lines) e.push_back(j.value("event", std::string("?")));
  return e;
}

TEST(JsonOutput, EveryLineOfARunIsJson) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not in " << kMnist << " (scripts/fetch_data.sh)";
  TempDir d;
  const std::string cfg = d.file(
      "c.prototxt", "name: \"a \\\"quoted\\\" name\"\ndata { dir: '" + kMnist +
                        "' train_limit: 200 test_limit: 100 }\nrun { threads: 1 }\n");
  const std::string run = (d.path / "run").string(), ck = (d.path / "ck").string();
  const CommandResult r = run_stdout("train " + cfg + " --epochs 2 --batch-size 50 --json --run-dir " +
                                     run + " --checkpoint-dir " + ck);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::vector<json> lines = parse_lines(r.output, "stdout");
  EXPECT_EQ(events(lines), (std::vector<std::string>{"epoch", "checkpoint", "epoch", "checkpoint",
                                                     "summary"}))
      << r.output;
  EXPECT_EQ(lines.back()["test_total"], 100);
  EXPECT_TRUE(lines.back()["weights"].is_string());
  EXPECT_EQ(parse_lines(read(run + "/metrics_steps.jsonl"), "metrics_steps.jsonl").size(), 8u);
  const auto epochs = parse_lines(read(run + "/metrics_epochs.jsonl"), "metrics_epochs.jsonl");
  ASSERT_EQ(epochs.size(), 2u);
  EXPECT_TRUE(epochs[1]["step"].is_number_integer()) << epochs[1];
  EXPECT_EQ(epochs[1]["step"], 8);

  // The ensemble of the run's weights (twice): members and summary.
  const std::string w = lines.back()["weights"];
  const CommandResult e =
      run_stdout("eval " + cfg + " --json --weights " + w + " --weights " + w);
  ASSERT_EQ(e.exit_code, 0) << e.output;
  EXPECT_EQ(events(parse_lines(e.output, "eval stdout")),
            (std::vector<std::string>{"member", "member", "summary"}));
}

// A diverging run: its NaN loss reaches --json as null, in a "diverged" event.
TEST(JsonOutput, DivergingRunsNanLossIsNull) {
  if (!have_mnist()) GTEST_SKIP() << "MNIST not in " << kMnist << " (scripts/fetch_data.sh)";
  TempDir d;
  const std::string cfg =
      d.file("c.prototxt", "data { dir: '" + kMnist + "' train_limit: 500 test_limit: 100 }\n"
                           "run { threads: 1 }\n");
  const std::string run = (d.path / "run").string();
  // Adam at lr 1e30: step 1 is finite, its update is not sane, step 2's loss is nan.
  const CommandResult r = run_stdout("train " + cfg +
                                     " --epochs 2 --batch-size 100 --lr 1e30 --json --run-dir " + run);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  const std::vector<json> lines = parse_lines(r.output, "stdout");
  ASSERT_FALSE(lines.empty()) << r.output;
  const json& last = lines.back();
  EXPECT_EQ(last["event"], "diverged") << last;
  EXPECT_EQ(last["step"], 2) << last;
  EXPECT_TRUE(last["loss"].is_null()) << last;  // nan (or inf): JSON has neither
  EXPECT_NE(last["error"].get<std::string>().find("training diverged"), std::string::npos);
  parse_lines(read(run + "/metrics_steps.jsonl"), "metrics_steps.jsonl");
}

}  // namespace
