#!/usr/bin/python3
"""A folder of larger RGB images made from MNIST digits, in torchvision's ImageFolder layout:

    OUT/train/<digit>/<index>.png   OUT/test/<digit>/<index>.png

Each image is a canvas of a random size (--min-size..--max-size pixels a side, not square) with a
textured background (a random dark colour, a diagonal stripe pattern and smooth noise); on it one
MNIST digit (the classes in turn), scaled by a random factor (1 to --max-scale), tinted a random bright colour and placed
at a random position. The label is the digit. Everything is drawn from a generator seeded by
(--seed, split), so the same arguments always write the same files.

  scripts/make_color_digits.py --mnist data/mnist --out /tmp/color_digits --train 6000 --test 1000

Needs only Python 3 and NumPy (PNG files are written with zlib); --format jpeg needs PIL too.
"""
import argparse
import gzip
import os
import struct
import sys
import zlib

import numpy as np


def read_idx(path):
    """An IDX file (plain or .gz, as scripts/fetch_data.sh leaves them) as a NumPy array."""
    for p in (path, path + ".gz"):
        if os.path.exists(p):
            data = (gzip.open if p.endswith(".gz") else open)(p, "rb").read()
            ndim = data[3]
            dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
            return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    sys.exit(f"make_color_digits.py: {path} not found (plain or .gz): fetch it with scripts/fetch_data.sh")


def write_png(path, rgb):
    """rgb: uint8 (H, W, 3). A plain 8-bit RGB PNG, every row with filter type 0."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
           chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(png)
    os.replace(tmp, path)  # a file is either whole or absent


def scaled(digit, factor):
    """Bilinear resize of a 28x28 digit by `factor`, values in [0, 1]."""
    n = max(1, int(round(28 * factor)))
    src = (np.arange(n) + 0.5) / factor - 0.5
    i0 = np.clip(np.floor(src).astype(int), 0, 27)
    i1 = np.clip(i0 + 1, 0, 27)
    f = np.clip(src - np.floor(src), 0, 1)
    d = digit.astype(np.float64) / 255.0
    rows = d[i0] * (1 - f)[:, None] + d[i1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i1] * f[None, :]


def background(rng, h, w):
    base = rng.uniform(0, 110, size=3)
    period = rng.uniform(6, 20)
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    coarse = rng.uniform(-1, 1, size=(h // 8 + 2, w // 8 + 2))
    noise = np.kron(coarse, np.ones((8, 8)))[:h, :w]
    tint = rng.uniform(0.3, 1.0, size=3)
    img = base[None, None, :] + (20 * stripes + 25 * noise)[:, :, None] * tint[None, None, :]
    return img


def write_jpeg(path, rgb, quality):
    from PIL import Image  # only for --format jpeg (python3-pil, which torchvision brings)
    tmp = path + ".tmp"
    Image.fromarray(rgb).save(tmp, format="JPEG", quality=quality)
    os.replace(tmp, path)


def make_split(images, labels, count, rng, args, out):
    # Classes in turn (every class present, balanced), each a random digit of its class.
    of_class = [np.flatnonzero(labels == c) for c in range(args.classes)]
    for k in range(count):
        pool = of_class[k % args.classes]
        i = pool[rng.integers(len(pool))]
        h = int(rng.integers(args.min_size, args.max_size + 1))
        w = int(rng.integers(args.min_size, args.max_size + 1))
        img = background(rng, h, w)
        factor = rng.uniform(1.0, min(args.max_scale, min(h, w) / 28.0))
        alpha = scaled(images[i], factor)
        dh, dw = alpha.shape
        top, left = int(rng.integers(0, h - dh + 1)), int(rng.integers(0, w - dw + 1))
        colour = rng.uniform(150, 255, size=3)
        region = img[top:top + dh, left:left + dw]
        img[top:top + dh, left:left + dw] = region * (1 - alpha[:, :, None]) + colour * alpha[:, :, None]
        label = int(labels[i])
        d = os.path.join(out, str(label))
        os.makedirs(d, exist_ok=True)
        pixels = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        if args.format == "png":
            write_png(os.path.join(d, f"{k:06d}.png"), pixels)
        else:
            write_jpeg(os.path.join(d, f"{k:06d}.jpg"), pixels, args.quality)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mnist", default="data/mnist", help="the MNIST IDX files (default data/mnist)")
    ap.add_argument("--out", required=True, help="a new directory: OUT/train and OUT/test")
    ap.add_argument("--train", type=int, default=6000, help="training images (default 6000)")
    ap.add_argument("--test", type=int, default=1000, help="test images (default 1000)")
    ap.add_argument("--min-size", type=int, default=64, help="smallest canvas side (default 64)")
    ap.add_argument("--max-size", type=int, default=96, help="largest canvas side (default 96)")
    ap.add_argument("--max-scale", type=float, default=2.0, help="largest digit scale (default 2)")
    ap.add_argument("--classes", type=int, default=10, help="use digits 0..N-1 only (default 10)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--format", choices=("png", "jpeg"), default="png",
                    help="file format (default png; jpeg needs python3-pil)")
    ap.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    args = ap.parse_args()
    if not (28 <= args.min_size <= args.max_size):
        sys.exit("make_color_digits.py: need 28 <= --min-size <= --max-size")
    if not (2 <= args.classes <= 10):
        sys.exit("make_color_digits.py: --classes must be in [2, 10]")
    if os.path.exists(args.out):
        sys.exit(f"make_color_digits.py: {args.out} exists: give a new directory")
    for split, files, count in (("train", ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), args.train),
                                ("test", ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"), args.test)):
        images = read_idx(os.path.join(args.mnist, files[0]))
        labels = read_idx(os.path.join(args.mnist, files[1]))
        rng = np.random.default_rng([args.seed, 0 if split == "train" else 1])
        make_split(images, labels, count, rng, args, os.path.join(args.out, split))
        print(f"{split}: {count} images in {os.path.join(args.out, split)}")


if __name__ == "__main__":
    main()
