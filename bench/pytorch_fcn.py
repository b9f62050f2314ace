#!/usr/bin/python3
"""PyTorch twin of examples/fcn_mnist_scenes.prototxt (segmentation of MNIST scenes).

The same network, data, loss, initialisation and recipe as deeptrain's example, on the
scenes `deeptrain export-scenes CONFIG --out DIR` wrote (DIR/train, DIR/test: list.csv,
images/*.png, masks/*.png):

    encoder: [conv3x3 p1, relu] x 2 then maxpool2, for 16, 32, 64, 128 channels
    fc5 conv3x3 128 p1, relu; score_fr conv1x1 11                 (stride 16)
    upscore2: transposed conv 4x4 s2 p1, bilinear init            (stride 8)
      + score_pool3 (conv1x1 11 on pool3)
    upscore_pool3: transposed conv 4x4 s2 p1, bilinear init       (stride 4)
      + score_pool2 (conv1x1 11 on pool2)
    upscore4: transposed conv 8x8 s4 p2, bilinear init            (the input's size)

(deeptrain's crops are the identity here: every size is a power of two.) Convolutions start
He-normal (std sqrt(2 / fan_in)) with zero biases, the transposed convolutions as bilinear
upsampling (each channel to itself) with zero biases; Adam with eps 1e-7 (the book's and
deeptrain's default). The loss is deeptrain's PIXEL_SOFTMAX_CE: the sum of the per-pixel
cross-entropies over pixels not labelled 255, divided by batch * H * W. Inputs are
pixel / 255. The epoch order is a seeded shuffle (not deeptrain's Philox order: the runs are
the same recipe, not the same stream of batches).

Prints one JSON line per epoch: train loss, test pixel accuracy, mean IoU over the classes
that occur (with and without the background), images per second of the training loop.
"""

import argparse
import csv
import json
import os
import sys
import time

import numpy as np
import torch
from PIL import Image
from torch import nn
import torch.nn.functional as F

CLASSES = 11
IGNORE = 255


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenes", required=True, help="the directory export-scenes wrote")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--limit", type=int, default=0, help="only the first N scenes of each split")
    return p.parse_args()


def load_split(d, limit):
    with open(os.path.join(d, "list.csv")) as f:
        rows = list(csv.DictReader(f))
    if limit:
        rows = rows[:limit]
    images = np.stack([np.array(Image.open(os.path.join(d, r["image"]))) for r in rows])
    masks = np.stack([np.array(Image.open(os.path.join(d, r["mask"]))) for r in rows])
    x = torch.from_numpy(images.astype(np.float32) / np.float32(255.0)).unsqueeze(1)
    t = torch.from_numpy(masks.astype(np.int64))
    return x, t


def bilinear_(w):
    """FCN's upsample_filt on the diagonal: w[i, i] = f(y) f(x), 0 off it."""
    k = w.shape[2]
    factor = (k + 1) // 2
    centre = factor - 1 if k % 2 == 1 else factor - 0.5
    og = torch.arange(k, dtype=torch.float64)
    f = 1 - (og - centre).abs() / factor
    with torch.no_grad():
        w.zero_()
        for i in range(w.shape[0]):
            w[i, i] = (f[:, None] * f[None, :]).to(w.dtype)


class FCN(nn.Module):
    def __init__(self):
        super().__init__()
        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.MaxPool2d(2))
        self.b1, self.b2, self.b3, self.b4 = block(1, 16), block(16, 32), block(32, 64), block(64, 128)
        self.fc5 = nn.Conv2d(128, 128, 3, padding=1)
        self.score_fr = nn.Conv2d(128, CLASSES, 1)
        self.upscore2 = nn.ConvTranspose2d(CLASSES, CLASSES, 4, stride=2, padding=1)
        self.score_pool3 = nn.Conv2d(64, CLASSES, 1)
        self.upscore_pool3 = nn.ConvTranspose2d(CLASSES, CLASSES, 4, stride=2, padding=1)
        self.score_pool2 = nn.Conv2d(32, CLASSES, 1)
        self.upscore4 = nn.ConvTranspose2d(CLASSES, CLASSES, 8, stride=4, padding=2)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                nn.init.normal_(m.weight, std=(2.0 / fan_in) ** 0.5)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.ConvTranspose2d):
                bilinear_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        pool2 = self.b2(self.b1(x))
        pool3 = self.b3(pool2)
        pool4 = self.b4(pool3)
        s = self.score_fr(F.relu(self.fc5(pool4)))
        s = self.upscore2(s) + self.score_pool3(pool3)
        s = self.upscore_pool3(s) + self.score_pool2(pool2)
        return self.upscore4(s)


def confusion(pred, t):
    keep = t != IGNORE
    idx = t[keep] * CLASSES + pred[keep]
    return torch.bincount(idx, minlength=CLASSES * CLASSES).reshape(CLASSES, CLASSES)


def metrics(conf):
    conf = conf.double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    occurs = union > 0
    iou = tp / union.clamp(min=1)
    fg = occurs.clone()
    fg[0] = False
    return {"test_pixel_accuracy": float(tp.sum() / conf.sum().clamp(min=1)),
            "test_mean_iou": float(iou[occurs].mean()) if occurs.any() else 0.0,
            "test_mean_iou_fg": float(iou[fg].mean()) if fg.any() else 0.0}


def main():
    a = parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    xtr, ttr = load_split(os.path.join(a.scenes, "train"), a.limit)
    xte, tte = load_split(os.path.join(a.scenes, "test"), a.limit)
    model = FCN()
    opt = torch.optim.Adam(model.parameters(), lr=a.lr, eps=1e-7)
    gen = torch.Generator().manual_seed(a.seed)
    pixels = xtr.shape[2] * xtr.shape[3]
    for epoch in range(1, a.epochs + 1):
        model.train()
        order = torch.randperm(len(xtr), generator=gen)
        loss_sum, t0 = 0.0, time.perf_counter()
        for b in range(0, len(xtr), a.batch):
            ids = order[b:b + a.batch]
            z = model(xtr[ids])
            loss = F.cross_entropy(z, ttr[ids], ignore_index=IGNORE, reduction="sum") / (len(ids) * pixels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss) * len(ids)
        seconds = time.perf_counter() - t0
        model.eval()
        conf = torch.zeros(CLASSES, CLASSES, dtype=torch.int64)
        with torch.inference_mode():
            for b in range(0, len(xte), 1000):
                conf += confusion(model(xte[b:b + 1000]).argmax(1), tte[b:b + 1000])
        out = {"impl": "pytorch", "torch": torch.__version__, "epoch": epoch,
               "train_loss": loss_sum / len(xtr), "threads": a.threads,
               "images_per_sec": len(xtr) / seconds}
        out.update(metrics(conf))
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
