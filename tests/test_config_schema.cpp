// The config schema's enums (run.backend, run.math), their words on the command line, schema 1's
// strings (old text configs: refused with what to write; old checkpoints: read), and the
// defaults: one place (core/config.h), the same in --help, the resolver and the libraries.
#include <gtest/gtest.h>

#include <regex>

#include "cli_util.h"
#include "core/backend/backend.h"
#include "core/config.h"
#include "core/error.h"
#include "distributed/communicator.h"
#include "distributed/trainer.h"
#include "error_util.h"

using namespace deeptrain;

TEST(ConfigSchema, BackendAndMathAreEnumsWithTheCliWords) {
  const auto cfg = parse_config("run { backend: BACKEND_CPU_REF }", "t");
  EXPECT_EQ(cfg.run().backend(), proto::BACKEND_CPU_REF);
  EXPECT_EQ(cfg.run().math(), proto::MATH_FP32);  // resolved
  ConfigOverrides o;
  o.backend = "cuda-im2col";
  o.math = "tf32";
  const auto gpu = parse_config("", "t", o);
  EXPECT_EQ(gpu.run().backend(), proto::BACKEND_CUDA_IM2COL);
  EXPECT_EQ(gpu.run().math(), proto::MATH_TF32);
  EXPECT_EQ(backend_words(), "cpu, cpu-ref, cuda, cuda-im2col");
  EXPECT_EQ(math_words(), "fp32, tf32, bf16, fp16");
  o.backend = "gpu";
  EXPECT_CONTAINS(error_of<InputError>([&] { parse_config("", "t", o); }),
                  "--backend: unknown 'gpu' (known: cpu, cpu-ref, cuda, cuda-im2col)");
  o.backend = "cpu";
  o.math = "tf32";
  EXPECT_CONTAINS(error_of<InputError>([&] { parse_config("", "t", o); }), "needs a GPU backend");
  // bf16 is the fast CPU backend's too (it checks the processor when it starts), not the
  // reference's.
  o.math = "bf16";
  EXPECT_EQ(parse_config("", "t", o).run().math(), proto::MATH_BF16);
  o.backend = "cpu-ref";
  EXPECT_CONTAINS(error_of<InputError>([&] { parse_config("", "t", o); }),
                  "BACKEND_CPU_REF computes in fp32");
}

// distributed.device_transport: NCCL unless set; host-mpi on the command line; unknown words
// and values refused by name.
TEST(ConfigSchema, DeviceTransportDefaultsToNcclAndTakesItsWords) {
  EXPECT_EQ(parse_config("", "t").distributed().device_transport(), proto::DEVICE_TRANSPORT_NCCL);
  EXPECT_EQ(device_transport_words(), "nccl, host-mpi");
  ConfigOverrides o;
  o.device_transport = "host-mpi";
  EXPECT_EQ(parse_config("", "t", o).distributed().device_transport(),
            proto::DEVICE_TRANSPORT_HOST_MPI);
  EXPECT_EQ(parse_config("distributed { device_transport: DEVICE_TRANSPORT_HOST_MPI }", "t")
                .distributed().device_transport(),
            proto::DEVICE_TRANSPORT_HOST_MPI);
  o.device_transport = "gloo";
  EXPECT_CONTAINS(error_of<InputError>([&] { parse_config("", "t", o); }),
                  "--device-transport: unknown 'gloo' (known: nccl, host-mpi)");
  EXPECT_CONTAINS(error_of<InputError>([&] { parse_config("distributed { device_transport: 7 }", "t"); }),
                  "distributed.device_transport");
}

TEST(ConfigSchema, TheBackendsMathNamesAreTheConfigWords) {
  for (proto::MathMode m : {proto::MATH_FP32, proto::MATH_TF32, proto::MATH_BF16, proto::MATH_FP16})
    EXPECT_EQ(math_mode_name(math_mode(m)), math_word(m));
  EXPECT_EQ(make_backend(proto::BACKEND_CPU_REF)->name(), backend_word(proto::BACKEND_CPU_REF));
  EXPECT_EQ(make_backend("cpu-ref")->name(), "cpu-ref");
}

// A config of schema 1 wrote the backend as a string: refused, saying what to write instead.
TEST(ConfigSchema, Schema1TextConfigIsRefusedNamingTheReplacement) {
  TempDir d;
  const std::string path =
      d.file("old.prototxt", "model { preset: \"deep_convnet\" }\nrun { seed: 1 threads: 0 backend: \"cpu-ref\" }\n");
  const std::string e = error_of<InputError>([&] { load_config(path); });
  EXPECT_CONTAINS(e, path + ":2:");
  EXPECT_CONTAINS(e, "write `backend: BACKEND_CPU_REF` instead of `backend: \"cpu-ref\"`");
  const std::string m = error_of<InputError>([&] { parse_config("run { math: 'tf32' }", "m.prototxt"); });
  EXPECT_CONTAINS(m, "write `math: MATH_TF32`");
  // The fields that hold schema 1's strings are for old checkpoints, not new text.
  EXPECT_CONTAINS(error_of<InputError>([&] { parse_config("run { schema1_backend: 'cpu' }", "s"); }),
                  "run.schema1_backend");
}

// The bytes of a schema-1 config (run.backend and run.math as strings in fields 3 and 7), as a
// checkpoint written then embeds it: read as the same backend and math, not as unset.
TEST(ConfigSchema, Schema1ConfigBytesReadAsTheSameBackendAndMath) {
  auto field = [](int number, const std::string& bytes) {
    return std::string(1, char(number << 3 | 2)) + char(bytes.size()) + bytes;
  };
  const std::string run = field(3, "cpu-ref") + field(7, "fp32");
  const std::string bytes = field(6, run);  // ExperimentConfig.run = 6
  proto::ExperimentConfig c;
  ASSERT_TRUE(c.ParseFromString(bytes));
  upgrade_config(c);
  EXPECT_EQ(c.run().backend(), proto::BACKEND_CPU_REF);
  EXPECT_EQ(c.run().math(), proto::MATH_FP32);
  EXPECT_TRUE(c.run().schema1_backend().empty());
  // An unknown word is an error naming it, not a silent default.
  proto::ExperimentConfig bad;
  ASSERT_TRUE(bad.ParseFromString(field(6, field(3, "tpu"))));
  EXPECT_CONTAINS(error_of<InputError>([&] { upgrade_config(bad); }),
                  "run.backend (schema 1): unknown 'tpu'");
}

// The defaults --help states are the ones the resolver fills in.
TEST(ConfigDefaults, HelpTextStatesTheResolvedDefaults) {
  const proto::ExperimentConfig cfg = parse_config("", "(defaults)");
  const CommandResult help = run_command(deeptrain_cmd("train --help"));
  ASSERT_EQ(help.exit_code, 0) << help.output;
  auto stated = [&](const std::string& pattern) {
    std::smatch m;
    const std::regex re(pattern);
    EXPECT_TRUE(std::regex_search(help.output, m, re)) << pattern << "\n" << help.output;
    return m.size() > 1 ? m[1].str() : std::string();
  };
  EXPECT_EQ(stated(R"(schedule.epochs \(default (\d+)\))"), std::to_string(cfg.schedule().epochs()));
  EXPECT_EQ(stated(R"(global batch \(default (\d+)\))"), std::to_string(cfg.schedule().batch_size()));
  EXPECT_EQ(stated(R"(default [0-9.]+ for SGD, ([0-9.e-]+) otherwise)"),
            fmt::format("{}", cfg.optimizer().lr()));  // ADAM's
  EXPECT_EQ(stated(R"(\(default ([a-z-]+); [a-z-]+ in exact mode\))"),
            backend_word(cfg.run().backend()));
  EXPECT_EQ(stated(R"(fp16 \(default ([a-z0-9]+)\))"), math_word(cfg.run().math()));
}

// The library defaults are the config's: the gradient bucket was 100 KiB in GradientSyncOptions
// and 0.1 MiB in the config.
TEST(ConfigDefaults, LibraryDefaultsAreTheConfigs) {
  const proto::ExperimentConfig cfg = parse_config("", "(defaults)");
  EXPECT_EQ(GradientSyncOptions{}.bucket_bytes,
            int64_t(double(cfg.distributed().bucket_mb()) * 1024.0 * 1024.0));
  const TrainerOptions t;
  EXPECT_EQ(t.batch_size, cfg.schedule().batch_size());
  EXPECT_EQ(t.eval_batch_size, cfg.run().eval_batch_size());
  EXPECT_EQ(t.lr, cfg.optimizer().lr());
}
