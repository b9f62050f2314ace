#!/usr/bin/python3
"""deeptrain against PyTorch 1.13 on the CPU, network by network, in one run.

For each config (default: the four example networks of chapter 8: DeepConvNet, VGG, GoogLeNet,
ResNet-20), each mode (train, infer) and each math (fp32; bf16 where the processor has
AVX512-BF16), every round runs one after the other, never two at once:
  deeptrain bench --config C --math M --no-augment
  PyTorch, the same network built from the same config (pytorch_from_config.py):
    fp32: NCHW and channels_last (the table takes PyTorch's better layout)
    bf16: torch.autocast("cpu", torch.bfloat16), channels_last (and NCHW; the better)
The table gives the median images/s over rounds and the ratio deeptrain / PyTorch's best.
Both sides are checked to have the same number of parameters. Augmentation is off on both
sides (PyTorch's twin has none). With --peak, bench/peak_flops's figures come first and each
throughput is also given as a fraction of the machine's f32 (bf16) matmul peak.

Usage: bench/cpu_table.py [--threads 2] [--rounds 3] [--steps 30] [--warmup 5]
                          [--configs A,B,...] [--modes train,infer] [--maths fp32,bf16]
                          [--conv-algorithms direct,winograd]
                          [--out FILE.jsonl] [--markdown FILE.md] [--peak]
Exit status: 0 ok, 1 a run failed or the twins differ, 2 something needed is missing.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIGS = ["examples/deep_convnet_mnist.prototxt", "examples/vgg_mnist.prototxt",
                   "examples/googlenet_mnist.prototxt",
                   "examples/resnet20_fashion_mnist.prototxt"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS))
    p.add_argument("--modes", default="train,infer")
    p.add_argument("--maths", default=None, help="default: fp32, and bf16 where the CPU has it")
    p.add_argument("--conv-algorithms", default="direct",
                   help="deeptrain's run.conv_algorithm, each its own row (direct,winograd); "
                        "winograd runs in fp32 only, against the same PyTorch runs")
    p.add_argument("--deeptrain", default=os.path.join(REPO, "build", "deeptrain"))
    p.add_argument("--peak-flops", default=os.path.join(REPO, "build", "peak_flops"))
    p.add_argument("--peak", action="store_true", help="measure the machine's peaks first")
    p.add_argument("--out", default=None, help="append every run's JSON line here")
    p.add_argument("--markdown", default=None, help="write the table here too")
    return p.parse_args()


def cpu_has_bf16():
    with open("/proc/cpuinfo") as f:
        return " avx512_bf16" in f.read()


def run_json(cmd):
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write("failed (%d): %s\n%s%s" % (r.returncode, " ".join(cmd), r.stdout,
                                                    r.stderr))
        sys.exit(1)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1])


def main():
    a = parse_args()
    if not os.access(a.deeptrain, os.X_OK):
        sys.exit("error: %s not found: build deeptrain first" % a.deeptrain)
    if subprocess.run(["/usr/bin/python3", "-c", "import torch"], capture_output=True).returncode:
        sys.stderr.write("error: PyTorch is not importable by /usr/bin/python3 "
                         "(scripts/setup.sh --with-torch)\n")
        sys.exit(2)
    maths = a.maths.split(",") if a.maths else (["fp32", "bf16"] if cpu_has_bf16() else ["fp32"])
    if "bf16" in maths and not cpu_has_bf16():
        sys.exit("error: --maths bf16: this processor has no AVX512-BF16")
    out = open(a.out, "a") if a.out else None

    def record(j):
        if out:
            out.write(json.dumps(j) + "\n")
            out.flush()

    peak = None
    if a.peak:
        peak = run_json([a.peak_flops, "--threads", str(a.threads)])
        record(peak)

    common = ["--threads", str(a.threads), "--steps", str(a.steps), "--warmup", str(a.warmup)]
    rows = []
    for config in a.configs.split(","):
        for mode in a.modes.split(","):
            for math in maths:
                algorithms = [x for x in a.conv_algorithms.split(",")
                              if x == "direct" or math == "fp32"]
                dt, pt = {x: [] for x in algorithms}, {"nchw": [], "channels_last": []}
                dt_params = pt_params = None
                for _ in range(a.rounds):
                    for algorithm in algorithms:
                        j = run_json([a.deeptrain, "bench", "--config", config, "--math", math,
                                      "--mode", mode, "--no-augment", "--json",
                                      "--conv-algorithm", algorithm] + common)
                        record(dict(j, config=config, conv_algorithm=algorithm))
                        dt[algorithm].append(j["images_per_sec"])
                        dt_params = j.get("params")
                    for layout in ("nchw", "channels_last"):
                        cmd = ["/usr/bin/python3", "bench/pytorch_deepconvnet.py", "--config",
                               config, "--math", math, "--mode", mode] + common
                        if layout == "channels_last":
                            cmd.append("--channels-last")
                        j = run_json(cmd)
                        record(j)
                        pt[layout].append(j["images_per_sec"])
                        pt_params = j.get("params")
                if dt_params != pt_params:
                    sys.stderr.write("error: %s: deeptrain has %s parameters, the PyTorch twin %s\n"
                                     % (config, dt_params, pt_params))
                    sys.exit(1)
                best_layout = max(pt, key=lambda k: statistics.median(pt[k]))
                p = statistics.median(pt[best_layout])
                for algorithm in algorithms:
                    d = statistics.median(dt[algorithm])
                    label = math if algorithm == "direct" else "%s, %s" % (math, algorithm)
                    rows.append((os.path.basename(config).replace(".prototxt", ""), mode, label,
                                 d, statistics.median(pt["nchw"]),
                                 statistics.median(pt["channels_last"]), d / p))
                    print("%s %s %s: deeptrain %.0f img/s, PyTorch %.0f (%s): %.2fx" %
                          (rows[-1][0], mode, label, d, p, best_layout, d / p), flush=True)

    lines = ["| network | mode | math | deeptrain img/s | PyTorch NCHW | PyTorch channels_last "
             "| ratio to PyTorch's best |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| %s | %s | %s | %.0f | %.0f | %.0f | %.2fx |" % r)
    text = "\n".join(lines)
    if peak:
        text = ("peak (%d threads): f32 FMA %.0f GFLOP/s, oneDNN f32 matmul %.0f, bf16 matmul %s\n\n"
                % (a.threads, peak["fma_f32_gflops"], peak["matmul_f32_gflops"],
                   peak["matmul_bf16_gflops"])) + text
    print(text)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
