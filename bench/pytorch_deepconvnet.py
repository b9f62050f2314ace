#!/usr/bin/python3
"""PyTorch reference for deeptrain's throughput benchmark.

The network is DeepConvNet from chapter 8 of "Deep Learning from Scratch":

    conv3x3 16 p1, relu, conv3x3 16 p1, relu, maxpool2
    conv3x3 32 p1, relu, conv3x3 32 p2, relu, maxpool2
    conv3x3 64 p1, relu, conv3x3 64 p1, relu, maxpool2
    flatten (C,H,W) -> linear 1024->50, relu, dropout 0.5,
    linear 50->10, dropout 0.5, softmax cross-entropy

He initialisation (normal, std = sqrt(2 / fan_in), zero biases), Adam with
lr 1e-3 and eps 1e-7 as in the book, batch 100.

What is timed: one training step = forward, loss, backward, optimizer step
(--mode train), or one forward pass under torch.inference_mode() in eval
mode (--mode infer). The images the run needs ((warmup + steps) * batch,
at most 60,000) sit in memory as one tensor, shuffled once before timing;
each step takes the next slice, so loading and shuffling are not measured.
After --warmup untimed steps, --steps steps are timed one by one;
images_per_sec = batch / median step time. peak_rss_mb is the whole
process's peak resident memory, so it includes the images held in memory
(reported as data_mb), the MNIST file read at start-up (47 MB, released
before timing) and the PyTorch runtime itself (about 230 MB).

Prints one JSON line, e.g.
  {"impl": "pytorch", "torch": "1.13.0a0", "threads": 2, "mode": "train",
   "batch": 100, "steps": 50, "images_per_sec": ..., "step_ms_median": ...,
   "peak_rss_mb": ..., ...}

Note: nn.Dropout scales kept activations by 1/(1-p) during training while
the book's Dropout does not (it scales by 1-p at test time instead). The
cost is the same, so throughput is unaffected.
"""

import argparse
import contextlib
import json
import os
import resource
import statistics
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2,
                   help="intra-op threads (default 2)")
    p.add_argument("--steps", type=int, default=50,
                   help="timed steps (default 50)")
    p.add_argument("--warmup", type=int, default=5,
                   help="untimed steps before timing (default 5)")
    p.add_argument("--mode", choices=["train", "infer"], default="train")
    p.add_argument("--batch", type=int, default=None,
                   help="batch size (default: the config's, else 100)")
    p.add_argument("--config", default=None,
                   help="a deeptrain experiment config: its network (layer list or preset) "
                        "and optimizer, built by pytorch_from_config.py, on random data of its "
                        "input shape; default: the book's DeepConvNet written out below")
    p.add_argument("--data", default=None,
                   help="directory with MNIST IDX files (train-images-idx3-ubyte, "
                        "train-labels-idx1-ubyte, optionally .gz); random data if absent")
    p.add_argument("--channels-last", action="store_true",
                   help="use torch.channels_last memory format (off by default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cuda: model and the run's images on GPU 0, steps timed with "
                        "torch.cuda.synchronize() after each")
    p.add_argument("--math", choices=["fp32", "tf32", "bf16", "fp16"], default="fp32",
                   help="GPU math: fp32 (TF32 off in cuBLAS and cuDNN), tf32, or "
                        "bf16/fp16 autocast (fp16 with a GradScaler)")
    p.add_argument("--table", metavar="RUNS", default=None,
                   help="several runs in this one process, one JSON line each (a GPU check "
                        "saves a process start and CUDA's initialisation per run): a comma-"
                        "separated list of mode:batch:math[:cl], e.g. train:100:fp32,"
                        "infer:1024:bf16:cl (cl: channels_last); each run overrides --mode, "
                        "--batch, --math and --channels-last; peak_rss_mb is the process's "
                        "peak so far")
    p.add_argument("--profile", metavar="FILE", default=None,
                   help="after timing, run 10 more steps under torch.profiler and write "
                        "the kernels and ops by total time to FILE (to set against "
                        "deeptrain's bench --profile)")
    return p.parse_args()


ARGS = parse_args()

# PyTorch (and the OpenMP / OpenBLAS runtimes it loads) read these when the
# library is loaded, so they must be set before `import torch`. Without them
# Debian's build starts with 1 thread on this machine.
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_threads(ARGS.threads)


# ---------------------------------------------------------------- data

def load_data(directory, n_images, rng):
    """Return (images n,1,28,28 float32 in [0,1], labels n int64, description).

    Only the images the run uses are kept, so that peak memory is mostly the
    network and the runtime, not the data set. For MNIST they are a random
    (shuffled) sample of the training set, drawn once here.
    """
    if directory:
        from pytorch_from_config import find_file, read_idx  # noqa: E402
        images_path = find_file(directory, "train-images-idx3-ubyte")
        labels_path = find_file(directory, "train-labels-idx1-ubyte")
        if images_path and labels_path:
            images = read_idx(images_path)
            labels = read_idx(labels_path)
            perm = rng.permutation(images.shape[0])[:n_images]
            pixels = images[perm].astype(np.float32)
            pixels /= 255.0  # in place: no second float copy
            x = torch.from_numpy(pixels)
            t = torch.from_numpy(labels[perm].astype(np.int64))
            return x.reshape(-1, 1, 28, 28), t, "mnist:" + os.path.abspath(directory)
        print("warning: no MNIST IDX files in %s, using random data" % directory,
              file=sys.stderr)
    # Throughput does not depend on the pixel values; random data need no shuffle.
    x = torch.rand(n_images, 1, 28, 28)
    t = torch.randint(0, 10, (n_images,))
    return x, t, "random"


# ---------------------------------------------------------------- model

def conv(cin, cout, pad):
    return nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=pad)


class DeepConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            conv(1, 16, 1), nn.ReLU(), conv(16, 16, 1), nn.ReLU(), nn.MaxPool2d(2),
            conv(16, 32, 1), nn.ReLU(), conv(32, 32, 2), nn.ReLU(), nn.MaxPool2d(2),
            conv(32, 64, 1), nn.ReLU(), conv(64, 64, 1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (N, 64, 4, 4) -> (N, 1024) in C,H,W order
            nn.Linear(64 * 4 * 4, 50), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(50, 10), nn.Dropout(0.5),
        )
        # He init as in the book: N(0, 2 / fan_in), biases zero.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(self.features(x))


# ---------------------------------------------------------------- benchmark

def write_profile(path, step, x, t, batch, n_batches, sync):
    """10 steps under torch.profiler: ops and kernels by total time, largest first."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU]
    if ARGS.device == "cuda":
        activities.append(ProfilerActivity.CUDA)
    sync()
    with profile(activities=activities) as prof:
        for i in range(10):
            b = i % n_batches
            step(x[b * batch:(b + 1) * batch], t[b * batch:(b + 1) * batch])
        sync()
    averages = prof.key_averages()
    # The sort key of device time was renamed over the versions.
    keys = (["device_time_total", "cuda_time_total"] if ARGS.device == "cuda" else []) + \
        ["cpu_time_total"]
    table = None
    for key in keys:
        try:
            table = averages.table(sort_by=key, row_limit=40)
            break
        except (AttributeError, KeyError, ValueError):
            continue
    with open(path, "w") as f:
        f.write("pytorch %s, %s, %s, batch %d, math %s: 10 steps under torch.profiler "
                "(totals over the 10)\n%s\n" % (torch.__version__, ARGS.device, ARGS.mode,
                                                batch, ARGS.math, table))


def parse_table(spec):
    """[(mode, batch, math, channels_last)] of --table."""
    runs = []
    for item in spec.split(","):
        f = item.strip().split(":")
        if len(f) not in (3, 4) or f[0] not in ("train", "infer") or not f[1].isdigit() or \
                f[2] not in ("fp32", "tf32", "bf16", "fp16") or (len(f) == 4 and f[3] != "cl"):
            sys.exit("error: --table: %r is not mode:batch:math[:cl] (mode train or infer, "
                     "math fp32, tf32, bf16 or fp16)" % item)
        runs.append((f[0], int(f[1]), f[2], len(f) == 4))
    return runs


def main():
    if not ARGS.table:
        run_one()
        return
    if ARGS.profile:
        sys.exit("error: --profile takes one run, not --table")
    for mode, batch, math, channels_last in parse_table(ARGS.table):
        ARGS.mode, ARGS.batch, ARGS.math, ARGS.channels_last = mode, batch, math, channels_last
        run_one()
        if ARGS.device == "cuda":
            torch.cuda.empty_cache()


def run_one():
    torch.manual_seed(ARGS.seed)
    twin = None
    if ARGS.config:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import pytorch_from_config  # noqa: E402
        twin = pytorch_from_config.build(ARGS.config)
    batch = ARGS.batch or (twin.batch if twin else 100)
    total_steps = ARGS.warmup + ARGS.steps

    # One batch per step, no batch used twice (capped at MNIST's 60,000).
    rng = np.random.default_rng(ARGS.seed)
    if twin:  # the config's input shape, random pixels (throughput does not depend on them)
        n = min(60000, max(batch, total_steps * batch))
        x = torch.rand((n,) + tuple(twin.input_shape))
        t = torch.randint(0, twin.classes, (n,))
        data_desc = "random"
    else:
        x, t, data_desc = load_data(ARGS.data, min(60000, max(batch, total_steps * batch)), rng)
    if x.shape[0] < batch:
        sys.exit("error: %d images is fewer than one batch of %d" % (x.shape[0], batch))
    n_batches = x.shape[0] // batch

    device = torch.device(ARGS.device)
    if ARGS.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = ARGS.math == "tf32"
        torch.backends.cudnn.allow_tf32 = ARGS.math == "tf32"
        torch.backends.cudnn.benchmark = True
        x, t = x.to(device), t.to(device)
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(ARGS.math)

    def autocast():
        # No autocast context at all for fp32/tf32: PyTorch 1.13 (Debian's, the CPU comparison)
        # refuses a float32 CPU autocast even when it is disabled.
        if autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(ARGS.device, dtype=autocast_dtype)
    scaler = torch.amp.GradScaler("cuda") if ARGS.math == "fp16" else None

    def sync():
        if ARGS.device == "cuda":
            torch.cuda.synchronize()

    model = (twin.model if twin else DeepConvNet()).to(device)
    memory_format = torch.channels_last if ARGS.channels_last else torch.contiguous_format
    if ARGS.channels_last:
        model = model.to(memory_format=memory_format)
        x = x.contiguous(memory_format=memory_format)
    loss_fn = nn.CrossEntropyLoss()
    if twin:
        optimizer = pytorch_from_config.make_optimizer(model.parameters(), twin.optimizer,
                                                         twin.schema)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)

    if ARGS.mode == "train":
        model.train()

        def step(xb, tb):
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = loss_fn(model(xb), tb)
            if scaler:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
    else:
        model.eval()

        def step(xb, tb):
            with torch.inference_mode(), autocast():
                model(xb)

    times = []
    for i in range(total_steps):
        b = i % n_batches
        xb = x[b * batch:(b + 1) * batch]
        tb = t[b * batch:(b + 1) * batch]
        start = time.perf_counter()
        step(xb, tb)
        sync()
        elapsed = time.perf_counter() - start
        if i >= ARGS.warmup:
            times.append(elapsed)

    if ARGS.profile:
        write_profile(ARGS.profile, step, x, t, batch, n_batches, sync)

    median = statistics.median(times)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    result = {
        "impl": "pytorch",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "mode": ARGS.mode,
        "batch": batch,
        "steps": ARGS.steps,
        "warmup": ARGS.warmup,
        "images_per_sec": round(batch / median, 1),
        "step_ms_median": round(median * 1e3, 3),
        "step_ms_min": round(min(times) * 1e3, 3),
        "step_ms_max": round(max(times) * 1e3, 3),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "channels_last": ARGS.channels_last,
        "config": ARGS.config or "deep_convnet (built in)",
        "params": sum(p.numel() for p in model.parameters()),
        "device": (torch.cuda.get_device_name(0) if ARGS.device == "cuda" else "cpu"),
        "math": ARGS.math,
        "data": data_desc,
        "data_mb": round((x.nelement() * x.element_size()) / 2**20, 1),
        # The machine may be shared: the 1-minute load average at the end of
        # the run says how much else was running.
        "load_1m": round(os.getloadavg()[0], 2),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
