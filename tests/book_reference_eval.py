#!/usr/bin/env python3
"""The book's own DeepConvNet forward pass (ch. 8, im2col in NumPy, non-inverted dropout:
evaluation multiplies by 1 - 0.5), independent of deeptrain. Prints the number of correct
predictions on the MNIST test set for the given weights, for tests/test_cli.cpp to compare with.

usage: book_reference_eval.py PARAMS.npz MNIST_DIR"""
import gzip
import os
import sys

import numpy as np


def read_idx(path):
    opener = gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = np.frombuffer(data[4:4 + 4 * ndim], dtype=">u4")
    return np.frombuffer(data[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)


def find(d, name):
    for n in (name, name + ".gz"):
        if os.path.exists(os.path.join(d, n)):
            return os.path.join(d, n)
    sys.exit(f"missing {name} in {d}")


def im2col(x, fh, fw, pad):
    n, c, h, w = x.shape
    oh, ow = h + 2 * pad - fh + 1, w + 2 * pad - fw + 1
    img = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)])
    col = np.zeros((n, c, fh, fw, oh, ow), dtype=x.dtype)
    for y in range(fh):
        for xx in range(fw):
            col[:, :, y, xx, :, :] = img[:, :, y:y + oh, xx:xx + ow]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(n * oh * ow, -1), oh, ow


def conv(x, W, b, pad):
    fn, _, fh, fw = W.shape
    col, oh, ow = im2col(x, fh, fw, pad)
    out = col @ W.reshape(fn, -1).T + b
    return out.reshape(x.shape[0], oh, ow, -1).transpose(0, 3, 1, 2)


def pool(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def predict(p, x):
    relu = lambda a: np.maximum(a, 0)
    pads = [1, 1, 1, 2, 1, 1]
    for i in range(6):
        x = relu(conv(x, p[f"W{i+1}"], p[f"b{i+1}"], pads[i]))
        if i % 2 == 1:
            x = pool(x)
    x = x.reshape(x.shape[0], -1)
    x = relu(x @ p["W7"] + p["b7"]) * 0.5   # dropout at evaluation (not inverted)
    return (x @ p["W8"] + p["b8"]) * 0.5


def main():
    params = dict(np.load(sys.argv[1]))
    images = read_idx(find(sys.argv[2], "t10k-images-idx3-ubyte"))
    labels = read_idx(find(sys.argv[2], "t10k-labels-idx1-ubyte"))
    x = images.astype(np.float32).reshape(-1, 1, 28, 28) / 255.0
    correct = 0
    for i in range(0, len(x), 500):
        correct += int((predict(params, x[i:i + 500]).argmax(1) == labels[i:i + 500]).sum())
    print(correct)


if __name__ == "__main__":
    main()
