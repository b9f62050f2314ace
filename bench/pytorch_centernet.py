#!/usr/bin/python3
"""PyTorch twin of a detection config (default examples/centernet_mnist_scenes.prototxt).

The network is the config's, built layer for layer by pytorch_from_config.py from deeptrain's
own schema (the example: a VGG-like encoder to stride 8, a bilinear-initialised x2 upsampling
added to a projection of pool2, a neck, three heads concatenated), initialised as deeptrain
does (He-normal convolutions, zero biases but the heatmap's bias_init -2.19, the transposed
convolution as bilinear upsampling) or, with --init-weights, from a deeptrain weights file. The
recipe is the config's (Adam with eps 1e-7, its learning rate and schedule per step, batch,
epochs; each overridable); the data are the scenes `deeptrain export-scenes CONFIG --out DIR`
wrote (DIR/train, DIR/test: list.csv, images/*.png, boxes.csv). The heads must be the example's
(heatmap FOCAL 1, size L1 0.1, offset L1 1, output stride 4): the losses are deeptrain's
DETECTION loss (core/backend/detection_targets.h) for them, per sample (focal + 0.1 size L1 +
offset L1) / max(1, boxes), the focal loss (alpha 2, beta 4) against CenterNet's Gaussians,
summed over the batch and divided by its size. Decoding: 3x3 peaks of the heatmap logits, the
top 100 with score >= 0.01, boxes clipped to the image, per-class NMS at IoU 0.5; mAP@0.5 (VOC
all-point) and the mean over IoU 0.5:0.05:0.95 per class, with COCO's greedy matching. Inputs
are pixel / 255. The epoch order is a seeded shuffle (not deeptrain's Philox order: the runs
are the same recipe, not the same stream of batches).

Prints one JSON line per epoch: train loss, test loss, mAP@0.5 and mAP@[.5:.95] (overall and
per class), images per second of the training loop. --eval-only prints one line for the
starting weights instead, to check the twin computes what deeptrain computes.
"""

import csv
import json
import math
import os
import sys

import numpy as np
import torch
import torchvision
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pytorch_from_config  # noqa: E402

CLASSES = 10
STRIDE = 4
THRESHOLDS = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]


def load_split(d, limit):
    rows, x = pytorch_from_config.read_scenes(d, limit)
    boxes = [[] for _ in rows]
    index = {row["image"]: i for i, row in enumerate(rows)}  # boxes.csv names the image as list.csv does
    with open(os.path.join(d, "boxes.csv")) as f:
        for r in csv.DictReader(f):
            i = index.get(r["image"])
            if i is not None:
                boxes[i].append((int(r["label"]), int(r["x0"]), int(r["y0"]), int(r["x1"]), int(r["y1"])))
    return x, boxes


def gaussian_radius(h, w, m=0.7):
    b1, c1 = h + w, w * h * (1 - m) / (1 + m)
    r1 = (b1 + math.sqrt(b1 * b1 - 4 * c1)) / 2
    b2, c2 = 2 * (h + w), (1 - m) * w * h
    r2 = (b2 + math.sqrt(b2 * b2 - 16 * c2)) / 2
    a3, b3, c3 = 4 * m, -2 * m * (h + w), (m - 1) * w * h
    r3 = (b3 + math.sqrt(b3 * b3 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def targets(boxes, oh, ow):
    """Per sample: the heatmap target (K, oh, ow) and the objects (cell, w, h, ox, oy)."""
    heat = np.zeros((len(boxes), CLASSES, oh, ow), np.float32)
    objects = []
    for i, bs in enumerate(boxes):
        objs = []
        for label, x0, y0, x1, y1 in bs:
            cx, cy = 0.5 * (x0 + x1) / STRIDE, 0.5 * (y0 + y1) / STRIDE
            w, h = (x1 - x0) / STRIDE, (y1 - y0) / STRIDE
            px, py = min(max(int(math.floor(cx)), 0), ow - 1), min(max(int(math.floor(cy)), 0), oh - 1)
            r = gaussian_radius(math.ceil(h), math.ceil(w))
            r = int(r) if r > 0 else 0
            two_s2 = 2 * ((2 * r + 1) / 6) ** 2
            for y in range(max(0, py - r), min(oh - 1, py + r) + 1):
                for x in range(max(0, px - r), min(ow - 1, px + r) + 1):
                    g = math.exp(-((x - px) ** 2 + (y - py) ** 2) / two_s2)
                    heat[i, label, y, x] = max(heat[i, label, y, x], g)
            objs.append((py * ow + px, w, h, cx - px, cy - py))
        objects.append(objs)
    return torch.from_numpy(heat), objects


def split_heads(out, classes):
    """The config's last layer, the heads' concatenation, as (heatmap, size, offset)."""
    return out[:, :classes], out[:, classes:classes + 2], out[:, classes + 2:classes + 4]


def check_heads(cfg, pb):
    """The twin's losses are the example's: a focal heatmap, L1 size (0.1) and offset (1)."""
    heads = [(h.target, h.loss, h.weight if h.HasField("weight") else 1.0) for h in cfg.model.loss.head]
    L = pb.HeadConfig
    want = [(L.CENTER_HEATMAP, L.FOCAL, 1.0), (L.BOX_SIZE, L.L1, 0.1), (L.CENTER_OFFSET, L.L1, 1.0)]
    if len(heads) != 3 or any(h[0] != w[0] or h[1] != w[1] or abs(h[2] - w[2]) > 1e-6
                              for h, w in zip(heads, want)):
        sys.exit("error: the twin computes the example's heads (heatmap FOCAL 1, size L1 0.1, "
                 "offset L1 1); the config declares %s" % heads)


def loss_of(heat, size, offset, target, objects, alpha=2.0, beta=4.0):
    """The sum over the batch of each sample's (focal + 0.1 size + offset) / max(1, boxes)."""
    n = heat.shape[0]
    lp, lq = F.logsigmoid(heat), F.logsigmoid(-heat)
    p, q = lp.exp(), lq.exp()
    pos = target >= 1
    focal = torch.where(pos, -q.pow(alpha) * lp, -(1 - target).pow(beta) * p.pow(alpha) * lq)
    per_sample = focal.flatten(1).sum(1)
    norm = torch.tensor([1.0 / max(1, len(o)) for o in objects])
    rows, cells, want_wh, want_off = [], [], [], []
    for i, objs in enumerate(objects):
        for cell, w, h, ox, oy in objs:
            rows.append(i), cells.append(cell), want_wh.append((w, h)), want_off.append((ox, oy))
    reg = torch.zeros(n, dtype=heat.dtype)
    if rows:
        rows_t, cells_t = torch.tensor(rows), torch.tensor(cells)
        s = size.flatten(2)[rows_t, :, cells_t]
        o = offset.flatten(2)[rows_t, :, cells_t]
        l1 = 0.1 * (s - torch.tensor(want_wh)).abs().sum(1) + (o - torch.tensor(want_off)).abs().sum(1)
        reg = reg.index_add(0, rows_t, l1)
    return ((per_sample + reg) * norm).sum()


def decode(heat, size, offset, height, width, top_k=100, threshold=0.01, nms_iou=0.5):
    """Per image: (boxes (m, 4), scores, labels), as deeptrain's decode_detections."""
    n, K, oh, ow = heat.shape
    peak = heat == F.max_pool2d(heat, 3, stride=1, padding=1)
    scores = torch.sigmoid(heat.double()).float()
    out = []
    for i in range(n):
        s = torch.where(peak[i], scores[i], torch.zeros_like(scores[i])).flatten()
        keep = torch.nonzero((s >= threshold) & peak[i].flatten()).flatten()
        order = torch.argsort(-s[keep], stable=True)[:top_k]
        idx = keep[order]
        label, cell = idx // (oh * ow), idx % (oh * ow)
        y, x = (cell // ow).double(), (cell % ow).double()
        ox, oy = offset[i, 0].flatten()[cell].double(), offset[i, 1].flatten()[cell].double()
        bw, bh = size[i, 0].flatten()[cell].double() * STRIDE, size[i, 1].flatten()[cell].double() * STRIDE
        cx, cy = (x + ox) * STRIDE, (y + oy) * STRIDE
        boxes = torch.stack([(cx - bw / 2).clamp(0, width), (cy - bh / 2).clamp(0, height),
                             (cx + bw / 2).clamp(0, width), (cy + bh / 2).clamp(0, height)], 1).float()
        sc = s[idx]
        kept = torchvision.ops.batched_nms(boxes, sc, label, nms_iou)
        kept = kept[torch.argsort(-sc[kept], stable=True)]
        out.append((boxes[kept].tolist(), sc[kept].tolist(), label[kept].tolist()))
    return out


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def average_precisions(found, truth):
    """found: per image (boxes, scores, labels) by decreasing score; truth: per image boxes."""
    dets = [[] for _ in range(CLASSES)]  # (score, matched bits)
    npos = [0] * CLASSES
    for (boxes, scores, labels), gts in zip(found, truth):
        for g in gts:
            npos[g[0]] += 1
        bits = [0] * len(boxes)
        for t, thr in enumerate(THRESHOLDS):
            taken = [False] * len(gts)
            for d, (b, lab) in enumerate(zip(boxes, labels)):
                best, best_iou = -1, -1.0
                for g, gt in enumerate(gts):
                    if gt[0] == lab and not taken[g]:
                        o = iou(b, gt[1:])
                        if o > best_iou:
                            best, best_iou = g, o
                if best >= 0 and best_iou >= thr:
                    taken[best] = True
                    bits[d] |= 1 << t
        for s, lab, m in zip(scores, labels, bits):
            dets[lab].append((s, m))
    ap50, ap = [], []
    for c in range(CLASSES):
        if npos[c] == 0:
            ap50.append(float("nan")), ap.append(float("nan"))
            continue
        mine = sorted(dets[c], key=lambda d: -d[0])
        per_t = []
        for t in range(len(THRESHOLDS)):
            rec, prec, tp = [0.0], [0.0], 0
            for i, (_, m) in enumerate(mine):
                tp += (m >> t) & 1
                rec.append(tp / npos[c])
                prec.append(tp / (i + 1))
            rec.append(1.0), prec.append(0.0)
            for i in range(len(prec) - 2, -1, -1):
                prec[i] = max(prec[i], prec[i + 1])
            per_t.append(sum((rec[i] - rec[i - 1]) * prec[i] for i in range(1, len(rec))))
        ap50.append(per_t[0]), ap.append(sum(per_t) / len(per_t))
    valid = [c for c in range(CLASSES) if not math.isnan(ap50[c])]
    return (sum(ap50[c] for c in valid) / len(valid), sum(ap[c] for c in valid) / len(valid), ap50, ap)


def evaluate(model, xte, bte, H, W):
    """Test mAPs and loss (the mean per scene) of the model."""
    model.eval()
    heat_te, objects_te = targets(bte, H // STRIDE, W // STRIDE)
    found, loss = [], 0.0
    with torch.inference_mode():
        for b in range(0, len(xte), 500):
            heat, size, offset = split_heads(model(xte[b:b + 500]), CLASSES)
            loss += float(loss_of(heat.double(), size.double(), offset.double(), heat_te[b:b + 500].double(),
                                  objects_te[b:b + 500]))
            found += decode(heat, size, offset, H, W)
    truth = [[(g[0], g[1], g[2], g[3], g[4]) for g in bs] for bs in bte]
    map50, mapall, ap50, ap = average_precisions(found, truth)
    return {"test_map50": map50, "test_map": mapall, "test_ap50_per_class": ap50,
            "test_ap_per_class": ap, "test_loss": loss / len(xte)}


def main():
    a = pytorch_from_config.scenes_twin_args(__doc__.split("\n")[0], "centernet_mnist_scenes.prototxt")
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    twin = pytorch_from_config.build(a.config)
    pb, cfg, model = twin.schema, twin.config, twin.model
    check_heads(cfg, pb)
    if a.init_weights:
        pytorch_from_config.load_weights(model, a.init_weights, pb)
    xte, bte = load_split(os.path.join(a.scenes, "test"), a.limit)
    H, W = xte.shape[2], xte.shape[3]
    out = {"impl": "pytorch", "torch": torch.__version__, "threads": a.threads}
    if a.eval_only:
        out.update(evaluate(model, xte, bte, H, W))
        print(json.dumps(out), flush=True)
        return 0
    xtr, btr = load_split(os.path.join(a.scenes, "train"), a.limit)
    heat_tr, objects_tr = targets(btr, H // STRIDE, W // STRIDE)

    def batch_loss(ids):
        heat, size, offset = split_heads(model(xtr[ids]), CLASSES)
        return loss_of(heat, size, offset, heat_tr[ids], [objects_tr[i] for i in ids.tolist()]) / len(ids)

    pytorch_from_config.train_recipe(twin, a, len(xtr), batch_loss,
                                     lambda: evaluate(model, xte, bte, H, W), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
