"""A deeptrain experiment config's network, built in PyTorch, layer for layer.

The config is read with deeptrain's own schema (proto/deeptrain.proto, compiled by protoc into
a temporary directory), so the PyTorch twin is the architecture deeptrain trains, not a copy
written by hand: the same layers, in the same graph (inputs by name, residual adds, concats),
with the same shapes. Supported: the explicit layer lists of examples/ and the presets
deep_convnet and simple_convnet. Initialisation is He (as deeptrain's default); BatchNorm uses
the config's momentum and eps.
"""

import collections
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
    """deeptrain_pb2, compiled from the repository's schema."""
    out = tempfile.mkdtemp(prefix="deeptrain_pb2_")
    subprocess.run(["protoc", "-I", os.path.join(REPO, "proto"), "--python_out", out,
                    os.path.join(REPO, "proto", "deeptrain.proto")], check=True)
    sys.path.insert(0, out)
    return importlib.import_module("deeptrain_pb2")


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
            inputs = list(layer.input) or ([prev] if prev else [None])
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
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @staticmethod
    def _make(kind, p, ins):
        c, h, w = ins[0] if len(ins[0]) == 3 else (ins[0][0], 1, 1)
        if kind == "conv":
            kh = p.kernel_h or p.kernel
            kw = p.kernel_w or p.kernel
            s = p.stride or 1
            mod = nn.Conv2d(c, p.out_channels, (kh, kw), stride=s, padding=p.pad,
                            bias=not p.no_bias)
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
            else:
                y = self.mods[name](xs[0])
            out[name] = y
            last = y
        return last


# A config's network and what a benchmark needs beside it; `schema` is deeptrain_pb2.
Twin = collections.namedtuple("Twin", "model input_shape classes optimizer batch schema")


def build(config_path):
    """The Twin of a config: its network, input shape (C, H, W), classes, optimizer config,
    batch size and the compiled schema."""
    from google.protobuf import text_format
    pb = load_schema()
    cfg = pb.ExperimentConfig()
    with open(config_path) as f:
        text_format.Merge(f.read(), cfg)
    in_shape, classes = DATASETS.get(cfg.data.dataset, DATASETS[""])
    if cfg.model.HasField("input"):
        i = cfg.model.input
        in_shape = (i.channels, i.height, i.width)
    classes = cfg.model.num_classes or classes
    layers = list(cfg.model.layer) or preset_layers(pb, cfg.model.preset or "deep_convnet",
                                                    classes)
    batch = cfg.schedule.batch_size if cfg.schedule.HasField("batch_size") else 100
    return Twin(ConfigNet(pb, layers, in_shape), in_shape, classes, cfg.optimizer, batch, pb)


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
