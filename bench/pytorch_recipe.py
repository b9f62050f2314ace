#!/usr/bin/python3
"""PyTorch twin of a classification config's whole recipe (default: the book's DeepConvNet,
examples/deep_convnet_mnist.prototxt), for bench/recipe_wall.sh: the config's network built by
pytorch_from_config.py, its optimizer, learning-rate schedule, batch and epochs, on the MNIST
or Fashion-MNIST IDX files of the config's data.dir (or --data), a test-set evaluation after
every epoch. Inputs are pixel / 255, as deeptrain's. The epoch order is a seeded shuffle (the
same recipe as deeptrain's run, not the same stream of batches). The config's data.augment is
drawn from the same distributions (a left-right mirror with probability 1/2, then a rotation,
scale and shift per image, bilinear with zero fill: one affine_grid/grid_sample per batch), not
the same images. --device cuda runs it on GPU 0 (gpu_check.sh's resnet phase). Prints one JSON line per epoch
(train loss, test accuracy, training images per second) and a last line with the wall time
since the process started, imports and data loading included, as deeptrain's run is timed.
"""
import argparse
import json
import os
import sys
import time

WALL_START = time.time()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pytorch_from_config  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=os.path.join(REPO, "examples", "deep_convnet_mnist.prototxt"))
    p.add_argument("--data", help="directory of the IDX files (default: the config's data.dir)")
    p.add_argument("--epochs", type=int, help="default: the config's")
    p.add_argument("--batch", type=int, help="default: the config's")
    p.add_argument("--lr", type=float, help="default: the config's")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--limit", type=int, default=0, help="only the first N samples of each split")
    p.add_argument("--channels-last", action="store_true", help="torch.channels_last layout")
    p.add_argument("--math", choices=["fp32", "tf32", "bf16"], default="fp32",
                   help="bf16: torch.autocast(device, torch.bfloat16) around forward and loss; "
                        "tf32 (cuda): TF32 tensor-core math, off otherwise")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    return p.parse_args()


def load_split(directory, prefix, limit):
    """(images (n, 1, 28, 28) float32 pixel / 255, labels int64) of one split's IDX files (the
    first `limit` samples; 0: all)."""
    paths = [pytorch_from_config.find_file(directory, prefix + "-images-idx3-ubyte"),
             pytorch_from_config.find_file(directory, prefix + "-labels-idx1-ubyte")]
    if None in paths:
        sys.exit("error: %s: no %s-images-idx3-ubyte / %s-labels-idx1-ubyte (plain or .gz)"
                 % (directory, prefix, prefix))
    images, labels = pytorch_from_config.read_idx(paths[0]), pytorch_from_config.read_idx(paths[1])
    if limit:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images.astype(np.float32) / np.float32(255.0)).reshape(-1, 1, 28, 28)
    return x, torch.from_numpy(labels.astype(np.int64))


def make_augment(aug, seed, device):
    """A batch's random mirror, rotation, scale and shift, as deeptrain's data.augment draws
    them (core/data/augment.h): each image its own, bilinear, zero outside the image."""
    gen = torch.Generator(device=device).manual_seed(seed)

    def uniform(n, lo, hi):
        return lo + (hi - lo) * torch.rand(n, generator=gen, device=device)

    def apply(x):
        n, _, h, w = x.shape
        if aug.flip_horizontal:
            flip = torch.rand(n, generator=gen, device=device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        angle = uniform(n, -aug.rotation_deg, aug.rotation_deg) * (3.141592653589793 / 180)
        scale = uniform(n, aug.scale_min, aug.scale_max) if aug.scale_max > 0 else torch.ones(n, device=device)
        # affine_grid maps output to input coordinates in [-1, 1]: shifts of s pixels are 2s/size.
        dx = uniform(n, -aug.shift_px, aug.shift_px) * (2.0 / w)
        dy = uniform(n, -aug.shift_px, aug.shift_px) * (2.0 / h)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, dx], 1), torch.stack([sin, cos, dy], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return apply


def main():
    a = parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    twin = pytorch_from_config.build(a.config)
    cfg = twin.config
    if cfg.data.dataset not in ("mnist", "fashion_mnist"):
        sys.exit("error: %s: data.dataset %r: this twin reads MNIST or Fashion-MNIST IDX files"
                 % (a.config, cfg.data.dataset))
    if a.math == "tf32" and a.device != "cuda":
        sys.exit("error: --math tf32 is a GPU's (--device cuda)")
    data = a.data or os.path.join(REPO, cfg.data.dir or "data/" + cfg.data.dataset)
    xtr, ttr = load_split(data, "train", a.limit)
    xte, tte = load_split(data, "t10k", a.limit)
    device = torch.device(a.device)
    if a.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = a.math == "tf32"
        torch.backends.cudnn.allow_tf32 = a.math == "tf32"
        torch.backends.cudnn.benchmark = True
    layout = torch.channels_last if a.channels_last else torch.contiguous_format
    model = twin.model.to(device=device, memory_format=layout)
    xtr, xte = (x.to(device).contiguous(memory_format=layout) for x in (xtr, xte))
    ttr, tte = ttr.to(device), tte.to(device)
    augment = make_augment(cfg.data.augment, a.seed, device) if cfg.data.augment.enabled else None

    def autocast():
        return torch.autocast(a.device, dtype=torch.bfloat16, enabled=a.math == "bf16")

    def batch_loss(ids):
        ids = ids.to(device)
        x = xtr[ids] if augment is None else augment(xtr[ids])
        with autocast():
            return F.cross_entropy(model(x), ttr[ids])

    def evaluate():
        model.eval()
        correct = 0
        with torch.inference_mode(), autocast():
            for b in range(0, len(xte), 1000):
                correct += int((model(xte[b:b + 1000]).argmax(1) == tte[b:b + 1000]).sum())
        return {"test_accuracy": correct / len(xte), "test_correct": correct}

    out = {"impl": "pytorch", "torch": torch.__version__, "threads": a.threads,
           "layout": "channels_last" if a.channels_last else "nchw", "math": a.math,
           "device": a.device, "augment": augment is not None}
    pytorch_from_config.train_recipe(twin, a, len(xtr), batch_loss, evaluate, out)
    print(json.dumps({"event": "summary", "impl": "pytorch", "test_accuracy": out["test_accuracy"],
                      "wall_seconds": time.time() - WALL_START}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
