#!/usr/bin/python3
"""Runs torchvision 0.14's own transforms on the PNG files test_image_transform wrote and
compares them with deeptrain's model inputs for the same samples.

  compare_transforms.py CASES.json

Evaluation: ImageFolder's loader (PIL, convert("RGB"); Grayscale for a 1-channel model), then
Resize(resize), CenterCrop((H, W)), ToTensor(), Normalize(mean, std).
Training: the same loader, then RandomResizedCrop((H, W), scale, ratio), RandomHorizontalFlip(),
ToTensor(), Normalize(mean, std), with torch's random draws replaced by deeptrain's (the
area fractions, log aspect ratios, offsets and flip deeptrain drew): torchvision's own
get_params then decides the box, and must pick deeptrain's.

deeptrain computes PIL's bilinear filter in PIL's integer arithmetic and the normalisation in
the same two float32 operations, so the tolerance is zero: any difference is a defect.
Exit status: 0 all equal, 1 a difference (printed), 77 torchvision or PIL not installed.
"""
import json
import sys

try:
    import numpy as np
    import torch
    import torchvision
    import torchvision.transforms.transforms as TT
    from PIL import Image
    from torchvision import transforms as T
except ImportError as e:  # python3-torchvision absent: the caller skips
    print(f"compare_transforms.py: {e}")
    sys.exit(77)


class Draws:
    """Stands in for the torch module inside torchvision.transforms.transforms: uniform_,
    randint and rand return deeptrain's draws (checked to lie in torchvision's ranges)."""

    def __init__(self, floats, ints, flip):
        self.floats, self.ints, self.flip = list(floats), list(ints), flip

    def __getattr__(self, name):
        return getattr(torch, name)

    def empty(self, *args, **kwargs):
        draws = self

        class Uniform:
            def uniform_(self, lo, hi):
                v = draws.floats.pop(0)
                assert float(lo) <= v <= float(hi), f"draw {v} outside torchvision's [{float(lo)}, {float(hi)}]"
                return torch.tensor([v], dtype=torch.float32)

        return Uniform()

    def randint(self, lo, hi, size):
        v = self.ints.pop(0)
        assert lo <= v < hi, f"offset {v} outside torchvision's [{lo}, {hi})"
        return torch.tensor([v])

    def rand(self, *args):
        return torch.tensor([0.0 if self.flip else 0.75])  # RandomHorizontalFlip: rand < 0.5


def load(path, channels):
    img = Image.open(path)
    img = img.convert("RGB")  # torchvision.datasets.folder.pil_loader
    return img.convert("L") if channels == 1 else img  # T.Grayscale() on a PIL image


def main():
    cfg = json.load(open(sys.argv[1]))
    C, H, W = cfg["channels"], cfg["height"], cfg["width"]
    norm = [T.ToTensor(), T.Normalize(cfg["mean"], cfg["std"])]
    evaluate = T.Compose([T.Resize(cfg["resize"]), T.CenterCrop((H, W))] + norm)
    rrc = T.RandomResizedCrop((H, W), scale=tuple(cfg["scale"]), ratio=tuple(cfg["ratio"]))
    train = T.Compose([rrc, T.RandomHorizontalFlip()] + norm)
    failures, compared = 0, 0
    for case in cfg["cases"]:
        img = load(case["png"], C)
        want = np.fromfile(case["out"], dtype=np.float32).reshape(C, H, W)
        if case["epoch"] < 0:
            got = evaluate(img).numpy()
        else:
            floats = [v for a in case["attempts"] for v in (a[0], a[1])]
            fit = case["attempts"][-1]
            draws = Draws(floats, [fit[2], fit[3]], case["flip"])
            real = TT.torch
            TT.torch = draws
            try:
                box = list(TT.RandomResizedCrop.get_params(img, rrc.scale, rrc.ratio))
                draws.floats = floats
                draws.ints = [fit[2], fit[3]]
                got = train(img).numpy()
            finally:
                TT.torch = real
            if box != case["box"]:
                print(f"{case['png']} epoch {case['epoch']}: torchvision's box (top, left, h, w) {box}, "
                      f"deeptrain's {case['box']}")
                failures += 1
                continue
        compared += 1
        diff = np.abs(got - want)
        if diff.max() != 0:
            where = np.unravel_index(np.argmax(diff), diff.shape)
            print(f"{case['png']} epoch {case['epoch']}: {int((diff != 0).sum())} of {diff.size} values "
                  f"differ, largest {diff.max()} at {where}: torchvision {got[where]}, deeptrain {want[where]}")
            failures += 1
    print(f"torchvision {torchvision.__version__}: {compared} samples compared, {failures} differ")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
