#!/usr/bin/python3
"""PyTorch twin of a segmentation config (default examples/fcn_mnist_scenes.prototxt).

The network is the config's, built layer for layer by pytorch_from_config.py from deeptrain's
own schema (convolutions, transposed convolutions with FCN's bilinear initialisation, crops,
skips), with deeptrain's initialisation (He-normal convolutions, zero biases) or, with
--init-weights, a deeptrain weights file. The recipe is the config's: Adam (eps 1e-7, the
book's and deeptrain's default), its learning rate and schedule per step, batch size and
epochs (each overridable). The data are the scenes `deeptrain export-scenes CONFIG --out DIR`
wrote (DIR/train, DIR/test: list.csv, images/*.png, masks/*.png). The loss is deeptrain's
PIXEL_SOFTMAX_CE: the sum of the per-pixel cross-entropies over pixels not labelled 255,
divided by batch * H * W. Inputs are pixel / 255. The epoch order is a seeded shuffle (not
deeptrain's Philox order: the runs are the same recipe, not the same stream of batches).

Prints one JSON line per epoch: train loss, test pixel accuracy, mean IoU over the classes
that occur (with and without the background), images per second of the training loop.
--eval-only prints one line for the starting weights instead (with the test loss), to check
the twin computes what deeptrain computes.
"""

import json
import os
import sys

import numpy as np
import torch
from PIL import Image
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pytorch_from_config  # noqa: E402

CLASSES = 11
IGNORE = 255


def load_split(d, limit):
    rows, x = pytorch_from_config.read_scenes(d, limit)
    masks = np.stack([np.array(Image.open(os.path.join(d, r["mask"]))) for r in rows])
    return x, torch.from_numpy(masks.astype(np.int64))


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


def evaluate(model, xte, tte):
    """The test set's confusion matrix and loss (PIXEL_SOFTMAX_CE's mean per scene)."""
    model.eval()
    conf = torch.zeros(CLASSES, CLASSES, dtype=torch.int64)
    loss = 0.0
    pixels = xte.shape[2] * xte.shape[3]
    with torch.inference_mode():
        for b in range(0, len(xte), 250):
            z = model(xte[b:b + 250])
            t = tte[b:b + 250]
            loss += float(F.cross_entropy(z.double(), t, ignore_index=IGNORE, reduction="sum")) / pixels
            conf += confusion(z.argmax(1), t)
    return conf, loss / len(xte)


def main():
    a = pytorch_from_config.scenes_twin_args(__doc__.split("\n")[0], "fcn_mnist_scenes.prototxt")
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    twin = pytorch_from_config.build(a.config)
    pb, model = twin.schema, twin.model
    if twin.classes != CLASSES:
        sys.exit("error: %s: the twin reads mnist_scenes (11 classes), the config has %d"
                 % (a.config, twin.classes))
    if a.init_weights:
        pytorch_from_config.load_weights(model, a.init_weights, pb)
    xte, tte = load_split(os.path.join(a.scenes, "test"), a.limit)
    out = {"impl": "pytorch", "torch": torch.__version__, "threads": a.threads}
    if a.eval_only:
        conf, loss = evaluate(model, xte, tte)
        out.update(metrics(conf))
        out.update({"test_loss": loss, "test_total": int(conf.sum())})
        print(json.dumps(out), flush=True)
        return 0
    xtr, ttr = load_split(os.path.join(a.scenes, "train"), a.limit)
    pixels = xtr.shape[2] * xtr.shape[3]

    def batch_loss(ids):
        z = model(xtr[ids])
        return F.cross_entropy(z, ttr[ids], ignore_index=IGNORE, reduction="sum") / (len(ids) * pixels)

    def test_metrics():
        conf, test_loss = evaluate(model, xte, tte)
        return dict(metrics(conf), test_loss=test_loss)

    pytorch_from_config.train_recipe(twin, a, len(xtr), batch_loss, test_metrics, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
