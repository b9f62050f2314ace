#!/usr/bin/python3
"""PyTorch's side of bench/data_throughput.sh: torchvision 0.14's ImageFolder + DataLoader
decoding and augmenting a folder of images as a training loop would read them, the same
transforms deeptrain's data.transform computes (RandomResizedCrop, RandomHorizontalFlip,
ToTensor, Normalize). Prints one JSON line: images per second over the timed batches, and per
worker.

  bench/pytorch_imagefolder.py --root DIR --size 64 --workers 1 --batch 64 --steps 50 --warmup 5

--workers 0 decodes in the main process (counted as one worker), as deeptrain's data_threads: 0.
Torch's own threads are set to 1: the decoding is in PIL, one image per worker at a time.
"""
import argparse
import json
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True, help="an ImageFolder tree (one directory per class)")
    ap.add_argument("--size", type=int, required=True, help="the crop's side (the model input)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch
        import torchvision
        from torchvision import datasets, transforms as T
    except ImportError as e:
        print(f"pytorch_imagefolder.py: {e} (scripts/install_deps.sh --with-torch)", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    tf = T.Compose([T.RandomResizedCrop(a.size), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])])
    ds = datasets.ImageFolder(a.root, transform=tf)
    steps = min(a.warmup + a.steps, len(ds) // a.batch)
    if steps <= a.warmup:
        print(f"pytorch_imagefolder.py: {len(ds)} images make {len(ds) // a.batch} batches of "
              f"{a.batch}: fewer than --warmup {a.warmup} + 1", file=sys.stderr)
        return 2
    loader = torch.utils.data.DataLoader(ds, batch_size=a.batch, shuffle=True, num_workers=a.workers,
                                         drop_last=True)  # 2 batches prefetched per worker
    it = iter(loader)
    t0 = None
    for i in range(steps):
        if i == a.warmup:
            t0 = time.perf_counter()
        next(it)
    seconds = time.perf_counter() - t0
    ips = (steps - a.warmup) * a.batch / seconds
    print(json.dumps({"impl": "pytorch", "torchvision": torchvision.__version__, "mode": "data",
                      "workers": a.workers, "batch": a.batch, "steps": steps - a.warmup,
                      "size": a.size, "images_per_sec": round(ips, 1),
                      "images_per_sec_per_thread": round(ips / max(1, a.workers), 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
