#!/usr/bin/python3
"""torchvision.ops.nms on boxes from a file: each line "x0 y0 x1 y1 score"; argv[2] the IoU
threshold. Prints the kept indices, space separated (tests/test_detection.cpp)."""
import sys

import torch
import torchvision

rows = [list(map(float, line.split())) for line in open(sys.argv[1]) if line.strip()]
t = torch.tensor(rows, dtype=torch.float32)
keep = torchvision.ops.nms(t[:, :4], t[:, 4], float(sys.argv[2]))
print(" ".join(str(int(i)) for i in keep))
