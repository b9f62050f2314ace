#!/usr/bin/env python3
"""ONNX tests against real references (ctest -L onnx; tests/CMakeLists.txt passes the paths).

  export     deeptrain's exported models pass the ONNX checker and give, in ONNX Runtime, the
             logits of deeptrain's own inference (dt_logits) on MNIST test images
  import     models built and exported by PyTorch (torch.onnx.export), imported: PyTorch's logits
  roundtrip  export then import: the same logits bit for bit (float32)
  errors     truncated / non-ONNX files, an unknown opset, unsupported operators: exit 2 naming
             the node, nothing written
  finetune   a PyTorch-trained model, imported, trained on by deeptrain (transfer.init_from): the
             first step's loss is PyTorch's on that batch, and the loss falls
  fp16       export --fp16 (float16 weights and activations): the checker passes, ONNX Runtime
             gives deeptrain's float32 logits within the float16 bound below, the file is under
             0.6 times the float32 one's size
  checkpoint export from a checkpoint: the graph of the weights file saved at the same step,
             another step's differs; a damaged or missing checkpoint: exit 2, nothing written

Tolerance (float32, u = 2**-24): each dot product of length K computed in another order than
the reference's differs by at most about K*u*sum|w*x| (Higham's gamma_K, first order); over D
weighted layers whose gains are about 1 (trained and initialised nets: He scaling), that gives
  |logit - reference| <= 2 * D * K_max * u * max(1, max|reference logit|)
with D the Conv/Gemm count and K_max their largest dot-product length (C*kh*kw or d). It is a
worst case for sums (rounding errors rarely all share a sign), so it holds on AVX2 and AVX-512
kernels alike; it is not fitted to this machine.
"""
import argparse
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnx.numpy_helper

U = 2.0 ** -24
N_IMAGES = 1000  # the first 1000 MNIST test images (two cores: ResNet-20 on 10000 takes minutes)


def run(cmd, ok=True, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if ok and r.returncode != 0:
        sys.exit(f"FAILED: {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r


def mnist_images(data, n):
    raw = np.fromfile(os.path.join(data, 'mnist', 't10k-images-idx3-ubyte'), dtype=np.uint8)
    x = raw[16:16 + n * 784].reshape(n, 1, 28, 28)
    return (x.astype(np.float32) / np.float32(255.0))  # what the data sets feed: byte / 255


def tolerance(model_path, ref):
    m = onnx.load(model_path)
    inits = {t.name: t for t in m.graph.initializer}
    ks = []
    for n in m.graph.node:
        if n.op_type in ('Conv', 'Gemm'):
            dims = list(inits[n.input[1]].dims)
            trans = any(a.name == 'transB' and a.i for a in n.attribute)
            ks.append(int(np.prod(dims[1:])) if n.op_type == 'Conv' else dims[1 if trans else 0])
    return 2 * len(ks) * max(ks) * U * max(1.0, float(np.abs(ref).max())), len(ks), max(ks)


U16 = 2.0 ** -11  # float16's unit roundoff


def tolerance_fp16(model_path, ref):
    """The --fp16 export against deeptrain's float32 logits. Every float16 value is a rounding of
    the float32 one by a relative at most u16 = 2**-11: each weight once (D weighted layers on a
    path), and each node's float16 output once (L nodes: every node of the graph, more than any
    path holds). ONNX Runtime's CPU kernels sum dot products in float32 (its float16 Conv/Gemm
    accumulate in float32, and where it has no float16 kernel it casts to float32 around the
    float32 one), so the sums add the float32 bound's 2*D*K_max*u32. With gains about 1, as
    in the float32 bound, and its factor 2:
      |logit - reference| <= (2*(D + L)*u16 + 2*D*K_max*u32) * max(1, max|reference logit|)"""
    _, d, k = tolerance(model_path, ref)
    nodes = len(onnx.load(model_path).graph.node)
    m = max(1.0, float(np.abs(ref).max()))
    return (2 * (d + nodes) * U16 + 2 * d * k * U) * m, d, k, nodes


def test_fp16(c):
    for config, tag, n in EXPORT_MODELS[:2]:  # DeepConvNet and ResNet-20
        images = c.first_images(n)
        w = c.train(config, tag)
        cfg = os.path.join(c.a.source, config)
        f32, f16 = c.path(tag + '.onnx'), c.path(tag + '.fp16.onnx')
        run([c.a.deeptrain, 'export', cfg, '--weights', w, '--onnx', f32])
        r = run([c.a.deeptrain, 'export', cfg, '--weights', w, '--onnx', f16, '--fp16'])
        print(r.stdout.strip())
        m = onnx.load(f16)
        onnx.checker.check_model(m, full_check=True)
        assert all(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer
                   if t.data_type != onnx.TensorProto.INT64), "a non-float16 initializer"
        for v in (m.graph.input[0], m.graph.output[0]):  # callers feed and read float32
            assert v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT, v
        ratio = os.path.getsize(f16) / os.path.getsize(f32)
        print(f"{tag}: --fp16 file {os.path.getsize(f16)} bytes, float32 {os.path.getsize(f32)}: "
              f"{ratio:.3f}x")
        assert ratio < 0.6, f"{tag}: --fp16 file is {ratio:.3f}x the float32 one"
        ref = c.dt_logits(cfg, w, tag, images)
        got = c.ort(f16, images, tag + '.fp16')
        tol, d, k, nodes = tolerance_fp16(f16, ref)
        compare(f"{tag}: ONNX Runtime --fp16 vs deeptrain float32", got, ref, tol,
                f"(D={d}, K_max={k}, L={nodes})")
    # --fp16 is for ONNX: with --npz it is refused, nothing written.
    bad = c.path('refused.npz')
    r = run([c.a.deeptrain, 'export', c.path('dcn.run'), '--npz', bad, '--fp16'], ok=False)
    assert r.returncode == 2 and '--fp16' in r.stderr and not os.path.exists(bad), r


def compare(name, got, ref, tol, report):
    diff = float(np.abs(got.astype(np.float64) - ref.astype(np.float64)).max())
    same = np.argmax(got, 1) == np.argmax(ref, 1)
    print(f"{name}: max |logit difference| {diff:.3g}, tolerance {tol:.3g}; "
          f"same class {int(same.sum())}/{len(same)} {report}")
    if diff > tol:
        sys.exit(f"FAILED: {name}: difference {diff} over the tolerance {tol}")
    # A different class is an error unless the reference's top two are within the tolerance.
    srt = np.sort(ref, 1)
    bad = ~same & (srt[:, -1] - srt[:, -2] > 2 * tol)
    if bad.any():
        sys.exit(f"FAILED: {name}: another class for images {np.nonzero(bad)[0][:10]}")


class Ctx:
    def __init__(self, a):
        self.a = a
        shutil.rmtree(a.work, ignore_errors=True)  # a fresh directory: runs refuse old ones
        os.makedirs(a.work)
        self.images = os.path.join(a.work, 'images.npy')
        np.save(self.images, mnist_images(a.data, N_IMAGES))

    def path(self, name):
        return os.path.join(self.a.work, name)

    def first_images(self, n):
        """An .npy of the first n of the test images."""
        if n == N_IMAGES:
            return self.images
        path = self.path(f'images{n}.npy')
        if not os.path.exists(path):
            np.save(path, np.load(self.images)[:n])
        return path

    def train(self, config, tag, extra=()):
        """Weights from a few training steps (BatchNorm statistics move off their start)."""
        w = self.path(tag + '.weights')
        run([self.a.deeptrain, 'train', os.path.join(self.a.source, config), '--epochs', '1',
             '--train-limit', '300', '--test-limit', '100', '--save-weights', w,
             '--run-dir', self.path(tag + '.run'), '--data-dir', self.data_dir(config), *extra])
        return w

    def data_dir(self, config):
        return os.path.join(self.a.data, 'fashion_mnist' if 'fashion' in config else 'mnist')

    def dt_logits(self, config, weights, tag, images=None):
        out = self.path(tag + '.dt.npy')
        run([self.a.dt_logits, config, weights, images or self.images, out])
        return np.load(out)

    def ort(self, model, images, tag):
        out = self.path(tag + '.ort.npy')
        env = dict(os.environ, NODE_PATH=os.path.join(self.a.tools, 'node_modules'))
        run(['node', os.path.join(self.a.source, 'tests', 'onnx', 'ort_run.js'), model, images, out],
            env=env)
        return np.load(out)


# (config, tag, test images): every example architecture. VGG and GoogLeNet are the slowest
# per image on two cores, so they are checked on fewer images; each still has every layer kind
# it uses (BatchNorm, Concat of four branches, padded stride-1 MaxPool) exercised per image.
EXPORT_MODELS = [('examples/deep_convnet_mnist.prototxt', 'dcn', N_IMAGES),
                 ('examples/resnet20_fashion_mnist.prototxt', 'resnet20', N_IMAGES),
                 ('examples/vgg_mnist.prototxt', 'vgg', 300),
                 ('examples/googlenet_mnist.prototxt', 'googlenet', 300)]


def test_export(c):
    for config, tag, n in EXPORT_MODELS:
        images = c.first_images(n)
        w = c.train(config, tag)
        model = c.path(tag + '.onnx')
        cfg = os.path.join(c.a.source, config)
        run([c.a.deeptrain, 'export', cfg, '--weights', w, '--onnx', model])
        m = onnx.load(model)
        onnx.checker.check_model(m, full_check=True)  # the schema, and shape inference
        assert [o.version for o in m.opset_import] == [13], m.opset_import
        assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == 'batch'
        meta = {p.key: p.value for p in m.metadata_props}
        for k in ('deeptrain_version', 'deeptrain_config', 'input_normalization', 'class_names'):
            assert meta.get(k), f"metadata {k} missing"
        ref = c.dt_logits(cfg, w, tag, images)
        got = c.ort(model, images, tag)
        tol, d, k = tolerance(model, ref)
        compare(f"{tag}: ONNX Runtime vs deeptrain", got, ref, tol, f"(D={d}, K_max={k})")
        # Another batch size through the same model: the batch dimension is dynamic.
        few = c.path(tag + '.few.npy')
        np.save(few, np.load(c.images)[:7])
        assert np.array_equal(c.ort(model, few, tag + '.few').shape, (7, 10))
        if tag == 'dcn':
            check_docs_node_example(c, got)


def write_grey_png(path, img):
    """An 8-bit greyscale PNG (zlib and CRC-32 from the standard library)."""
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack('>I', len(data)) + kind + data
                + struct.pack('>I', zlib.crc32(kind + data) & 0xFFFFFFFF))
    h, w = img.shape
    rows = b''.join(b'\0' + img[r].tobytes() for r in range(h))  # filter 0 per row
    open(path, 'wb').write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 0, 0, 0, 0))
                           + chunk(b'IDAT', zlib.compress(rows))
                           + chunk(b'IEND', b''))


def check_docs_node_example(c, ort_logits):
    """docs/onnx.md's Node deployment example, run as written on PNGs of test images (in the
    work directory, next to the dcn.onnx it loads): the class ONNX Runtime gave them here."""
    doc = open(os.path.join(c.a.source, 'docs', 'onnx.md')).read()
    js = doc.split('```js\n', 1)[1].split('```', 1)[0]
    script = c.path('classify.js')
    open(script, 'w').write(js)
    raw = np.fromfile(os.path.join(c.a.data, 'mnist', 't10k-images-idx3-ubyte'), dtype=np.uint8)
    env = dict(os.environ, NODE_PATH=os.path.join(c.a.tools, 'node_modules'))
    # Up to three images that ONNX Runtime puts in different classes (the few training steps
    # leave the model favouring some), so that a wrong pixel layout would show.
    cls = np.argmax(ort_logits, 1)
    for i in [int(np.nonzero(cls == k)[0][0]) for k in np.unique(cls)[:3]]:
        png = c.path(f'digit{i}.png')
        write_grey_png(png, raw[16 + i * 784:16 + (i + 1) * 784].reshape(28, 28))
        r = subprocess.run(['node', script, png], capture_output=True, text=True, env=env,
                           cwd=c.a.work)
        want = f"class {int(np.argmax(ort_logits[i]))}"
        print(f"docs/onnx.md Node example on {png}: {r.stdout.strip()} (expected {want})")
        if r.returncode != 0 or r.stdout.strip() != want:
            sys.exit(f"FAILED: docs/onnx.md's Node example: {r.stdout}{r.stderr}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument('what', choices=['export', 'import', 'roundtrip', 'errors', 'checkpoint',
                                      'finetune', 'fp16'])
    for opt in ('deeptrain', 'dt-logits', 'source', 'data', 'tools', 'work'):
        p.add_argument('--' + opt, required=True)
    a = p.parse_args()
    c = Ctx(a)
    {'export': test_export, 'import': test_import, 'roundtrip': test_roundtrip,
     'errors': test_errors, 'checkpoint': test_checkpoint,
     'finetune': test_finetune, 'fp16': test_fp16}[a.what](c)
    print(f"test_onnx_{a.what}: passed")


def torch_models():
    """DeepConvNet (the book's, as the deep_convnet preset) and ResNet-20 built in PyTorch."""
    import torch
    from torch import nn

    def conv(i, o, s=1, bias=True):
        return nn.Conv2d(i, o, 3, s, 1, bias=bias)

    dcn = nn.Sequential(
        conv(1, 16), nn.ReLU(), conv(16, 16), nn.ReLU(), nn.MaxPool2d(2),
        conv(16, 32), nn.ReLU(), nn.Conv2d(32, 32, 3, 1, 2), nn.ReLU(), nn.MaxPool2d(2),
        conv(32, 64), nn.ReLU(), conv(64, 64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 50), nn.ReLU(), nn.Dropout(0.5), nn.Linear(50, 10),
        nn.Dropout(0.5))

    class Block(nn.Module):
        def __init__(self, i, o, s):
            super().__init__()
            self.c1, self.b1 = conv(i, o, s, False), nn.BatchNorm2d(o)
            self.c2, self.b2 = conv(o, o, 1, False), nn.BatchNorm2d(o)
            self.proj = (nn.Sequential(nn.Conv2d(i, o, 1, s, bias=False), nn.BatchNorm2d(o))
                         if s != 1 or i != o else None)

        def forward(self, x):
            y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
            return torch.relu(y + (self.proj(x) if self.proj is not None else x))

    layers = [conv(1, 16, 1, False), nn.BatchNorm2d(16), nn.ReLU()]
    for i, o, s in [(16, 16, 1), (16, 32, 2), (32, 64, 2)]:
        layers += [Block(i, o, s), Block(o, o, 1), Block(o, o, 1)]
    resnet = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    g = torch.Generator().manual_seed(7)
    for m in resnet.modules():  # running statistics away from (0, 1), as after training
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=g))
    return {'dcn': dcn.eval(), 'resnet20': resnet.eval()}


def test_import(c):
    import torch
    torch.manual_seed(0)
    x = torch.from_numpy(np.load(c.images))
    for tag, net in torch_models().items():
        model = c.path(tag + '.torch.onnx')
        torch.onnx.export(net, x[:1], model, opset_version=13, input_names=['input'],
                          output_names=['logits'], dynamic_axes={'input': {0: 'batch'}})
        with torch.no_grad():
            ref = net(x).numpy()
        cfg, w = c.path(tag + '.prototxt'), c.path(tag + '.weights')
        run([c.a.deeptrain, 'import-onnx', model, '--out', cfg, '--weights', w])
        got = c.dt_logits(cfg, w, tag)
        tol, d, k = tolerance(model, ref)
        compare(f"{tag}: deeptrain (imported) vs PyTorch {torch.__version__}", got, ref, tol,
                f"(D={d}, K_max={k})")
        # The imported model evaluates through the CLI too.
        run([c.a.deeptrain, 'eval', cfg, '--weights', w, '--test-limit', '100',
             '--data-dir', c.data_dir('mnist')])


def test_roundtrip(c):
    for config, tag, n in EXPORT_MODELS:
        images = c.first_images(n)
        w = c.train(config, tag)
        cfg = os.path.join(c.a.source, config)
        model, cfg2, w2 = c.path(tag + '.onnx'), c.path(tag + '.prototxt'), c.path(tag + '.2.weights')
        run([c.a.deeptrain, 'export', cfg, '--weights', w, '--onnx', model])
        run([c.a.deeptrain, 'import-onnx', model, '--out', cfg2, '--weights', w2])
        a, b = c.dt_logits(cfg, w, tag, images), c.dt_logits(cfg2, w2, tag + '.2', images)
        print(f"{tag}: export -> import: logits bit-identical: {np.array_equal(a, b)}")
        if not np.array_equal(a, b):
            sys.exit(f"FAILED: {tag}: max difference {np.abs(a - b).max()}")


def test_errors(c):
    import torch
    w = c.train(EXPORT_MODELS[0][0], 'dcn')
    good = c.path('good.onnx')
    run([c.a.deeptrain, 'export', os.path.join(c.a.source, EXPORT_MODELS[0][0]), '--weights', w,
         '--onnx', good])
    data = open(good, 'rb').read()
    cases = {}
    cases['truncated.onnx'] = (data[:len(data) // 2], 'not an ONNX model')
    cases['text.onnx'] = (b'name: "not a model"\n' * 10, 'not an ONNX model')
    m = onnx.load(good)
    m.opset_import[0].version = 99
    cases['opset99.onnx'] = (m.SerializeToString(), 'opset 99')
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 26 * 26, 10), torch.nn.Sigmoid())
    torch.onnx.export(net.eval(), torch.zeros(1, 1, 28, 28), c.path('tanh.onnx'), opset_version=13)
    cases['tanh.onnx'] = (open(c.path('tanh.onnx'), 'rb').read(), 'Tanh (node')
    m = onnx.load(good)
    for t in m.graph.initializer:
        if t.name == 'conv1.W':
            t.CopyFrom(onnx.numpy_helper.from_array(
                onnx.numpy_helper.to_array(t).astype(np.float16), 'conv1.W'))
    cases['fp16.onnx'] = (m.SerializeToString(), "tensor 'conv1.W': dtype FLOAT16")
    m = onnx.load(good)  # a channel count left symbolic: C, H, W must be numbers
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_param = 'channels'
    cases['dynamic.onnx'] = (m.SerializeToString(), "dimension 1 ('channels') is not fixed")
    m = onnx.load(good)  # two initializers of one name
    m.graph.initializer.append(m.graph.initializer[0])
    cases['twice.onnx'] = (m.SerializeToString(),
                           f"initializer '{m.graph.initializer[0].name}' appears twice")
    m = onnx.load(good)  # a node's output named as an initializer
    m.graph.node[1].output[0] = m.graph.initializer[0].name
    cases['collide.onnx'] = (m.SerializeToString(), 'has the name of another tensor')
    for name, (blob, want) in cases.items():
        path = c.path(name)
        open(path, 'wb').write(blob)
        out, wts = c.path(name + '.prototxt'), c.path(name + '.weights')
        r = run([c.a.deeptrain, 'import-onnx', path, '--out', out, '--weights', wts], ok=False)
        msg = (r.stdout + r.stderr).strip()
        print(f"{name}: exit {r.returncode}: {msg}")
        if r.returncode != 2 or want not in msg or path not in msg:
            sys.exit(f"FAILED: {name}: wanted exit 2 and '{want}'")
        if 'Tanh' in want and 'Sigmoid (node' not in msg:
            sys.exit("FAILED: every unsupported operator must be listed")
        if os.path.exists(out) or os.path.exists(wts):
            sys.exit(f"FAILED: {name}: something was written")


def mnist_train(data, first, n):
    d = os.path.join(data, 'mnist')
    x = np.fromfile(os.path.join(d, 'train-images-idx3-ubyte'), dtype=np.uint8)[16:]
    y = np.fromfile(os.path.join(d, 'train-labels-idx1-ubyte'), dtype=np.uint8)[8:]
    x = x[first * 784:(first + n) * 784].reshape(n, 1, 28, 28).astype(np.float32) / np.float32(255)
    return x, y[first:first + n].astype(np.int64)


def test_finetune(c):
    """Transfer learning from PyTorch: train there, export, import, go on training here."""
    import torch
    torch.manual_seed(0)
    net = torch_models()['resnet20']
    # Trained a little in PyTorch (on training images 100..1099), so that its loss on the batch
    # below is far from a fresh initialisation's (ln 10 = 2.30): a deeptrain run that did not
    # start from the imported weights could not match it. (The DeepConvNet, with the book's two
    # dropouts, barely moves in so few steps; ResNet-20's BatchNorm makes it quick.)
    x, y = (torch.from_numpy(a) for a in mnist_train(c.a.data, 100, 1000))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    net.train()
    for i in range(0, 1000, 50):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x[i:i + 50]), y[i:i + 50]).backward()
        opt.step()
    # Running statistics of the trained weights (a cumulative average over the same images),
    # not the lagging momentum averages of the few steps.
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        for i in range(0, 1000, 100):
            net(x[i:i + 100])
    net.eval()
    model, cfg, w = (c.path('resnet20.torch.onnx'), c.path('resnet20.prototxt'),
                     c.path('resnet20.weights'))
    torch.onnx.export(net, x[:1], model, opset_version=13, input_names=['input'],
                      output_names=['logits'], dynamic_axes={'input': {0: 'batch'}})
    run([c.a.deeptrain, 'import-onnx', model, '--out', cfg, '--weights', w])
    # The first 100 training images as one full batch, every step: without BatchNorm (PyTorch
    # folds it into the convolutions in an eval-mode export) the training forward pass is the
    # evaluation one, so
    # step 1's loss is PyTorch's mean cross-entropy on these 100 images, whatever their order.
    xb, yb = (torch.from_numpy(a) for a in mnist_train(c.a.data, 0, 100))
    with torch.no_grad():
        logits = net(xb)
        ref = float(torch.nn.functional.cross_entropy(logits.double(), yb))
        ref_acc = float((logits.argmax(1) == yb).double().mean())
    # Plain SGD at a small rate: the folded BatchNorms leave an unnormalised 20-layer net, on
    # which larger steps (SGD 0.01, Adam 0.001) overshoot and the loss jumps.
    ft = c.path('finetune.prototxt')
    with open(ft, 'w') as f:
        f.write(open(cfg).read() + f'''
optimizer {{ type: SGD lr: 0.001 }}
schedule {{ epochs: 8 batch_size: 100 }}
transfer {{ init_from: "{w}" }}
run {{ seed: 1 threads: 0 backend: BACKEND_CPU }}
''')
    rd = c.path('finetune.run')
    run([c.a.deeptrain, 'train', ft, '--train-limit', '100', '--test-limit', '100',
         '--run-dir', rd, '--data-dir', c.data_dir('mnist')])
    import json
    steps = [json.loads(l) for l in open(os.path.join(rd, 'metrics_steps.jsonl'))]
    losses = [s['loss'] for s in steps]
    # Mean cross-entropy moves by at most 2 max|logit difference| (its gradient in the logits,
    # p - onehot, has L1 norm <= 2), the logits by the export test's bound; plus the float32
    # rounding of a mean of 100 terms.
    tol_logits, _, _ = tolerance(model, logits.numpy())
    tol = 2 * tol_logits + 100 * U * max(1.0, ref)
    print(f"finetune: step 1 loss {losses[0]:.7f}, PyTorch's on that batch {ref:.7f} "
          f"(difference {abs(losses[0] - ref):.3g}, tolerance {tol:.3g}); accuracy "
          f"{steps[0]['accuracy']} vs {ref_acc}; losses {[round(l, 4) for l in losses]}")
    if len(losses) != 8 or abs(losses[0] - ref) > tol:
        sys.exit("FAILED: the first step does not start from the imported model")
    if not all(b < a for a, b in zip(losses, losses[1:])):
        sys.exit("FAILED: the loss does not fall while fine-tuning the imported model")


def test_checkpoint(c):
    """`export CKPT --onnx`: the model of the weights file saved at the same step."""
    config = EXPORT_MODELS[1][0]  # ResNet-20: parameters and BatchNorm running statistics
    ckdir = c.path('ckpt')
    # 300 images, batch 100: steps 1..3; checkpoints at step 2 and at the end (step 3), when
    # the weights file is written too.
    w = c.train(config, 'resnet20', ['--checkpoint-dir', ckdir, '--checkpoint-every', '2',
                                     '--keep-checkpoints', '0'])
    assert sorted(os.listdir(ckdir)) == ['ckpt-0000000002', 'ckpt-0000000003'], os.listdir(ckdir)
    ref = c.path('weights.onnx')
    run([c.a.deeptrain, 'export', os.path.join(c.a.source, config), '--weights', w, '--onnx', ref])
    graph = onnx.load(ref).graph
    for src, tag, same in [(ckdir, 'newest', True), (os.path.join(ckdir, 'ckpt-0000000003'), 'step3', True),
                           (os.path.join(ckdir, 'ckpt-0000000002'), 'step2', False)]:
        out = c.path(tag + '.onnx')
        run([c.a.deeptrain, 'export', src, '--onnx', out])
        m = onnx.load(out)
        onnx.checker.check_model(m, full_check=True)
        meta = {p.key: p.value for p in m.metadata_props}
        assert 'resnet20' in meta['deeptrain_config'], "the checkpoint's config in the metadata"
        # The whole graph: nodes, names, shapes and every initializer's bytes.
        print(f"{tag}: graph equals the weights file's: {m.graph == graph} (expected {same})")
        if (m.graph == graph) != same:
            sys.exit(f"FAILED: export of {src} vs export of {w}")
    # A damaged checkpoint and a directory without one: exit 2 naming the path, nothing written.
    bad = c.path('damaged')
    shutil.copytree(os.path.join(ckdir, 'ckpt-0000000003'), os.path.join(bad, 'ckpt-0000000003'))
    tensors = os.path.join(bad, 'ckpt-0000000003', 'tensors.pb')
    blob = bytearray(open(tensors, 'rb').read())
    blob[len(blob) // 2] ^= 0xFF
    open(tensors, 'wb').write(bytes(blob))
    for src in (os.path.join(bad, 'ckpt-0000000003'), c.path('run_without_checkpoints')):
        os.makedirs(src, exist_ok=True)
        out = c.path('bad.onnx')
        r = run([c.a.deeptrain, 'export', src, '--onnx', out], ok=False)
        msg = (r.stdout + r.stderr).strip()
        print(f"{src}: exit {r.returncode}: {msg}")
        if r.returncode != 2 or src not in msg or os.path.exists(out):
            sys.exit(f"FAILED: {src}: wanted exit 2 naming it, nothing written")


if __name__ == '__main__':
    main()
