"""A deeptrain experiment config's network, built in PyTorch, layer for layer.

The config is read with deeptrain's own schema (proto/deeptrain.proto, compiled by protoc into
a temporary directory), so the PyTorch twin is the architecture deeptrain trains, not a copy
written by hand: the same layers, in the same graph (inputs by name, residual adds, concats),
with the same shapes. Supported: the explicit layer lists of examples/ (segmentation's deconv
and crop too) and the presets deep_convnet and simple_convnet. Initialisation is He (as
deeptrain's default; deconv's fan-in is its input channels x taps, and init BILINEAR is FCN's
upsampling filter); BatchNorm uses the config's momentum and eps. load_weights() instead takes
a deeptrain weights file, so a twin can start from the very numbers deeptrain starts from.
"""

import math

import collections
import gzip
import importlib
import os
import subprocess
import sys
import tempfile

import torch
from torch import nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Input shape and classes of the built-in data sets (what deeptrain takes when model.input and
# model.num_classes are unset).
DATASETS = {"mnist": ((1, 28, 28), 10), "fashion_mnist": ((1, 28, 28), 10),
            "cifar10": ((3, 32, 32), 10), "": ((1, 28, 28), 10)}


def load_schema():
    """deeptrain_pb2, compiled from the repository's schema; or, where DEEPTRAIN_SCHEMA_DESCRIPTOR
    names a descriptor set of it (protoc --descriptor_set_out, as scripts/gpu_bundle.sh packs for
    a GPU machine without protoc), the same messages and enums built from that."""
    descriptor_set = os.environ.get("DEEPTRAIN_SCHEMA_DESCRIPTOR")
    if descriptor_set:
        return schema_from_descriptor_set(descriptor_set)
    out = tempfile.mkdtemp(prefix="deeptrain_pb2_")
    subprocess.run(["protoc", "-I", os.path.join(REPO, "proto"), "--python_out", out,
                    os.path.join(REPO, "proto", "deeptrain.proto")], check=True)
    sys.path.insert(0, out)
    return importlib.import_module("deeptrain_pb2")


def schema_from_descriptor_set(path):
    """A namespace that reads as deeptrain_pb2: the message classes of deeptrain.proto and its
    top-level enum values, built from a serialized FileDescriptorSet (whose wire format, unlike
    generated code, any protobuf runtime reads)."""
    import types
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    with open(path, "rb") as f:
        files = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for fd in files.file:  # (AddSerializedFile: in every runtime, the C++ and upb ones too)
        pool.AddSerializedFile(fd.SerializeToString())
    schema = pool.FindFileByName("deeptrain.proto")
    if hasattr(message_factory, "GetMessageClass"):  # protobuf 4.22 and later
        message_class = message_factory.GetMessageClass
    else:
        message_class = message_factory.MessageFactory(pool).GetPrototype
    pb = types.SimpleNamespace()
    for name, desc in schema.message_types_by_name.items():
        setattr(pb, name, message_class(desc))
    for enum in schema.enum_types_by_name.values():
        for value in enum.values:
            setattr(pb, value.name, value.number)
    return pb


def preset_layers(pb, preset, classes):
    """The presets of core/models.cpp as layer configs."""
    layers = []

    def add(name, kind, **kw):
        layer = pb.LayerConfig(name=name)
        getattr(layer, kind).SetInParent()
        for k, v in kw.items():
            setattr(getattr(layer, kind), k, v)
        layers.append(layer)

    if preset == "deep_convnet":
        spec = [("conv1", 16, 1), ("conv2", 16, 1), "pool1", ("conv3", 32, 1), ("conv4", 32, 2),
                "pool2", ("conv5", 64, 1), ("conv6", 64, 1), "pool3"]
        for s in spec:
            if isinstance(s, str):
                add(s, "max_pool")
            else:
                add(s[0], "conv", out_channels=s[1], kernel=3, pad=s[2])
                add("relu" + s[0][4:], "relu")
        add("fc7", "affine", out_features=50)
        add("relu7", "relu")
        add("drop7", "dropout", ratio=0.5)
        add("fc8", "affine", out_features=classes)
        add("drop8", "dropout", ratio=0.5)
    elif preset == "simple_convnet":
        add("conv1", "conv", out_channels=30, kernel=5)
        add("relu1", "relu")
        add("pool1", "max_pool")
        add("fc2", "affine", out_features=100)
        add("relu2", "relu")
        add("fc3", "affine", out_features=classes)
    else:
        sys.exit("error: preset '%s' has no PyTorch twin here" % preset)
    return layers


def bilinear_(w):
    """FCN's upsample_filt on the diagonal: w[i, i] = f(y) f(x), 0 off it (deeptrain's
    deconv init BILINEAR)."""
    k = w.shape[2]
    factor = (k + 1) // 2
    centre = factor - 1 if k % 2 == 1 else factor - 0.5
    og = torch.arange(k, dtype=torch.float64)
    f = 1 - (og - centre).abs() / factor
    with torch.no_grad():
        w.zero_()
        for i in range(w.shape[0]):
            w[i, i] = (f[:, None] * f[None, :]).to(w.dtype)


class Crop(nn.Module):
    def __init__(self, oh, ow, h, w):
        super().__init__()
        self.box = (oh, ow, h, w)

    def forward(self, x):
        oh, ow, h, w = self.box
        return x[:, :, oh:oh + h, ow:ow + w]


class ConfigNet(nn.Module):
    """The layer graph of a ModelConfig: each layer reads the outputs its `input` names (the
    previous layer's by default); the last layer's output is the logits."""

    def __init__(self, pb, layers, in_shape):
        super().__init__()
        self.mods = nn.ModuleDict()
        self.order = []  # (name, kind, input names)
        shapes = {}
        prev = None
        for layer in layers:
            kind = layer.WhichOneof("kind")
            # "data" (or nothing, for the first layer) is the network's input: None
            inputs = [None if i == "data" else i for i in layer.input] or [prev]
            ins = [shapes[i] if i else in_shape for i in inputs]
            mod, out = self._make(kind, getattr(layer, kind), ins)
            if mod is not None:
                self.mods[layer.name] = mod
            shapes[layer.name] = out
            self.order.append((layer.name, kind, inputs))
            prev = layer.name
        for m in self.modules():  # He, as deeptrain initialises by default; biases zero
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.ConvTranspose2d):
                if m.bilinear:
                    bilinear_(m.weight)
                else:  # PyTorch's fan_in of a transposed conv is its outputs'; deeptrain's the inputs'
                    fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                    nn.init.normal_(m.weight, std=math.sqrt(2.0 / fan_in))
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)) and m.bias is not None:
                nn.init.constant_(m.bias, getattr(m, "bias_init", 0.0))

    @staticmethod
    def _make(kind, p, ins):
        c, h, w = ins[0] if len(ins[0]) == 3 else (ins[0][0], 1, 1)
        if kind == "conv":
            kh = p.kernel_h or p.kernel
            kw = p.kernel_w or p.kernel
            s = p.stride or 1
            mod = nn.Conv2d(c, p.out_channels, (kh, kw), stride=s, padding=p.pad,
                            bias=not p.no_bias)
            mod.bias_init = p.bias_init  # deeptrain's conv bias_init (a detector's heatmap prior)
            return mod, (p.out_channels, (h + 2 * p.pad - kh) // s + 1,
                         (w + 2 * p.pad - kw) // s + 1)
        if kind == "max_pool":
            k = p.kernel or 2
            s = p.stride or k
            return (nn.MaxPool2d(k, stride=s, padding=p.pad),
                    (c, (h + 2 * p.pad - k) // s + 1, (w + 2 * p.pad - k) // s + 1))
        if kind == "relu":
            return nn.ReLU(), ins[0]
        if kind == "affine":
            n = 1
            for d in ins[0]:
                n *= d
            return nn.Sequential(nn.Flatten(), nn.Linear(n, p.out_features,
                                                         bias=not p.no_bias)), (p.out_features,)
        if kind == "dropout":
            return nn.Dropout(p.ratio), ins[0]
        if kind == "batch_norm":
            if p.per_activation:
                sys.exit("error: per-activation BatchNorm has no twin here")
            momentum = p.momentum if p.HasField("momentum") else 0.9
            eps = p.eps if p.HasField("eps") else 1e-6
            # deeptrain: running = m * running + (1 - m) * batch; PyTorch's momentum is 1 - m.
            return nn.BatchNorm2d(c, eps=eps, momentum=1 - momentum), ins[0]
        if kind == "deconv":
            s, pad, op = p.stride or 1, p.pad, p.output_padding
            mod = nn.ConvTranspose2d(c, p.out_channels, p.kernel, stride=s, padding=pad,
                                     output_padding=op, bias=not p.no_bias)
            mod.bilinear = p.init == 3  # Init.BILINEAR
            return mod, (p.out_channels, (h - 1) * s - 2 * pad + p.kernel + op,
                         (w - 1) * s - 2 * pad + p.kernel + op)
        if kind == "crop":  # the first input cut to the reference's (the second's) size
            mod = Crop(p.offset_h, p.offset_w, ins[1][1], ins[1][2])
            return mod, (c, ins[1][1], ins[1][2])
        if kind == "global_avg_pool":
            return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), (c,)
        if kind == "add":
            return None, ins[0]
        if kind == "concat":
            return None, (sum(s[0] for s in ins),) + tuple(ins[0][1:])
        sys.exit("error: layer kind '%s' has no twin here" % kind)

    def forward(self, x):
        out = {None: x}
        last = None
        for name, kind, inputs in self.order:
            xs = [out[i] for i in inputs]
            if kind == "add":
                y = xs[0]
                for other in xs[1:]:
                    y = y + other
            elif kind == "concat":
                y = torch.cat(xs, dim=1)
            elif kind == "crop":
                y = self.mods[name](xs[0])
            else:
                y = self.mods[name](xs[0])
            out[name] = y
            last = y
        return last


# A config's network and what a benchmark needs beside it; `schema` is deeptrain_pb2.
Twin = collections.namedtuple("Twin", "model input_shape classes optimizer batch schema config")


def build(config_path):
    """The Twin of a config: its network, input shape (C, H, W), classes, optimizer config,
    batch size, the compiled schema and the parsed config."""
    from google.protobuf import text_format
    pb = load_schema()
    cfg = pb.ExperimentConfig()
    with open(config_path) as f:
        text_format.Merge(f.read(), cfg)
    in_shape, classes = DATASETS.get(cfg.data.dataset, DATASETS[""])
    if cfg.data.dataset == "mnist_scenes":  # background + 10 digits (a detector: 10) on canvases
        side = cfg.data.scenes.canvas or 64
        in_shape = (1, side, side)
        classes = 10 if cfg.model.loss.type == pb.LossConfig.DETECTION else 11
    if cfg.model.HasField("input"):
        i = cfg.model.input
        in_shape = (i.channels, i.height, i.width)
    classes = cfg.model.num_classes or classes
    layers = list(cfg.model.layer) or preset_layers(pb, cfg.model.preset or "deep_convnet",
                                                    classes)
    batch = cfg.schedule.batch_size if cfg.schedule.HasField("batch_size") else 100
    return Twin(ConfigNet(pb, layers, in_shape), in_shape, classes, cfg.optimizer, batch, pb, cfg)


def make_optimizer(params, opt, pb):
    """The config's optimizer with deeptrain's defaults (core/config.h)."""
    t = opt.type
    lr = opt.lr if opt.HasField("lr") else (0.01 if t == pb.SGD else 1e-3)
    eps = opt.eps or 1e-7
    if t in (pb.ADAM, pb.ADAMW, pb.OPTIMIZER_UNSET):
        betas = (opt.beta1 or 0.9, opt.beta2 or 0.999)
        cls = torch.optim.AdamW if t == pb.ADAMW else torch.optim.Adam
        return cls(params, lr=lr, betas=betas, eps=eps, weight_decay=opt.weight_decay)
    if t in (pb.MOMENTUM, pb.NESTEROV):
        return torch.optim.SGD(params, lr=lr, momentum=opt.momentum or 0.9,
                               nesterov=t == pb.NESTEROV, weight_decay=opt.weight_decay)
    if t == pb.SGD:
        return torch.optim.SGD(params, lr=lr, weight_decay=opt.weight_decay)
    if t == pb.RMSPROP:
        return torch.optim.RMSprop(params, lr=lr, alpha=opt.decay_rate or 0.99, eps=eps)
    if t == pb.ADAGRAD:
        return torch.optim.Adagrad(params, lr=lr, eps=eps)
    sys.exit("error: optimizer type %d has no twin here" % t)


def load_weights(model, path, pb):
    """Copies a deeptrain weights file (a WeightsFile message: "<layer>.W", "<layer>.b", BatchNorm's
    gamma/beta and running statistics) into a ConfigNet; every tensor must find its place."""
    import numpy as np
    wf = pb.WeightsFile()
    with open(path, "rb") as f:
        wf.ParseFromString(f.read())
    dtypes = {pb.F32: np.float32, pb.F64: np.float64}
    with torch.no_grad():
        for t in wf.tensor:
            layer, _, what = t.name.rpartition(".")
            if t.dtype not in dtypes:
                sys.exit("error: %s: %s holds dtype %d, not f32/f64" % (path, t.name, t.dtype))
            v = torch.from_numpy(np.frombuffer(t.data, dtype=dtypes[t.dtype]).copy()).reshape(tuple(t.shape))
            mod = model.mods[layer] if layer in model.mods else None
            if isinstance(mod, nn.Sequential):  # affine: Flatten + Linear
                mod = mod[1]
            if mod is None:
                sys.exit("error: %s: no layer '%s' in the twin for %s" % (path, layer, t.name))
            if isinstance(mod, nn.Linear) and what == "W":
                v = v.t()  # deeptrain's affine W is (in, out)
            dest = {"W": "weight", "b": "bias", "gamma": "weight", "beta": "bias",
                    "running_mean": "running_mean", "running_var": "running_var"}.get(what)
            target = getattr(mod, dest, None) if dest else None
            if target is None or tuple(target.shape) != tuple(v.shape):
                sys.exit("error: %s: %s %s has no place in the twin" % (path, t.name, tuple(v.shape)))
            target.copy_(v.to(target.dtype))


def lr_at(sched, pb, base_lr, step, steps_per_epoch, total_steps):
    """deeptrain's learning rate at a global step (core/optim/schedule.cpp): CONSTANT, STEP,
    EXPONENTIAL and COSINE, times the linear warm-up."""
    epoch = step // steps_per_epoch
    lr = base_lr
    if sched.type == pb.STEP:
        gamma = sched.gamma if sched.HasField("gamma") else 0.1
        decays = sum(epoch >= m for m in sched.milestones) if sched.milestones else epoch // sched.step_epochs
        lr = base_lr * gamma ** decays
    elif sched.type == pb.EXPONENTIAL:
        lr = base_lr * (sched.gamma if sched.HasField("gamma") else 0.95) ** epoch
    elif sched.type == pb.COSINE:
        pct = min(step, total_steps) / total_steps
        lr = sched.min_lr + (base_lr - sched.min_lr) / 2.0 * (math.cos(math.pi * pct) + 1.0)
    elif sched.type != pb.CONSTANT:
        sys.exit("error: lr_schedule type %d has no twin here" % sched.type)
    warmup = round(sched.warmup_epochs * steps_per_epoch)
    if step < warmup:
        lr *= (step + 1) / warmup
    return lr


# The IDX files of MNIST and Fashion-MNIST (pytorch_deepconvnet.py, pytorch_recipe.py).

def read_idx(path):
    """Read an IDX file (plain or .gz) into a numpy array."""
    import numpy as np
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find_file(directory, name):
    for candidate in (name, name + ".gz"):
        path = os.path.join(directory, candidate)
        if os.path.exists(path):
            return path
    return None


# What the scene twins (pytorch_fcn.py, pytorch_centernet.py) share: their command line, the
# scenes' images, and the config's recipe around their own loss and evaluation.

def scenes_twin_args(description, example):
    """The scene twins' command line; `example` names the default config in examples/."""
    import argparse
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--scenes", required=True, help="the directory export-scenes wrote")
    p.add_argument("--config", default=os.path.join(REPO, "examples", example))
    p.add_argument("--epochs", type=int, help="default: the config's")
    p.add_argument("--batch", type=int, help="default: the config's")
    p.add_argument("--lr", type=float, help="default: the config's")
    p.add_argument("--init-weights", help="start from this deeptrain weights file")
    p.add_argument("--eval-only", action="store_true", help="evaluate the starting weights")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--limit", type=int, default=0, help="only the first N scenes of each split")
    return p.parse_args()


def read_scenes(d, limit):
    """A split export-scenes wrote: its list.csv rows (the first `limit`, 0 = all) and the images
    as (n, 1, H, W) float32 pixel / 255."""
    import csv
    import numpy as np
    from PIL import Image
    with open(os.path.join(d, "list.csv")) as f:
        rows = list(csv.DictReader(f))
    if limit:
        rows = rows[:limit]
    images = np.stack([np.array(Image.open(os.path.join(d, r["image"]))) for r in rows])
    return rows, torch.from_numpy(images.astype(np.float32) / np.float32(255.0)).unsqueeze(1)


def train_recipe(twin, a, n, batch_loss, evaluate, out):
    """The config's recipe (optimizer, per-step learning rate, batch, epochs; --epochs, --batch
    and --lr override) over n training samples in a seeded shuffle: batch_loss(ids) is the
    batch's mean loss, evaluate() the test metrics; one JSON line per epoch."""
    import json
    import time
    pb, cfg, model = twin.schema, twin.config, twin.model
    epochs = a.epochs or (cfg.schedule.epochs if cfg.schedule.HasField("epochs") else 20)
    batch = a.batch or twin.batch
    opt = make_optimizer(model.parameters(), twin.optimizer, pb)
    base_lr = a.lr or opt.param_groups[0]["lr"]
    steps_per_epoch = (n + batch - 1) // batch
    gen = torch.Generator().manual_seed(a.seed)
    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n, generator=gen)
        loss_sum, t0 = 0.0, time.perf_counter()
        for b in range(0, n, batch):
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg.schedule.lr_schedule, pb, base_lr, step, steps_per_epoch,
                                epochs * steps_per_epoch)
            ids = order[b:b + batch]
            loss = batch_loss(ids)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum = loss_sum + loss.detach().float() * len(ids)  # (on a GPU: no wait a step)
            step += 1
        loss_sum = float(loss_sum)
        seconds = time.perf_counter() - t0
        out.update({"epoch": epoch, "train_loss": loss_sum / n, "images_per_sec": n / seconds})
        out.update(evaluate())
        print(json.dumps(out), flush=True)
