#!/usr/bin/python3
"""An independent mAP for tests/test_detection.cpp, written after py-faster-rcnn's voc_eval
(all-point interpolation) with COCO's greedy matching (a detection takes the best-overlapping
truth box of its class not yet taken in its image, at each IoU threshold 0.5:0.05:0.95).

Input file lines: "gt IMAGE LABEL X0 Y0 X1 Y1" and "det IMAGE LABEL SCORE X0 Y0 X1 Y1" (each
image's detections in decreasing score). argv[2]: the class count. Prints "map50 map" then one
line "ap50 ap" per class ("nan" without truth boxes)."""
import math
import sys


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def voc_ap(rec, prec):
    mrec = [0.0] + rec + [1.0]
    mpre = [0.0] + prec + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


def main():
    classes = int(sys.argv[2])
    gts, dets = {}, []
    for line in open(sys.argv[1]):
        f = line.split()
        if not f:
            continue
        if f[0] == "gt":
            gts.setdefault((int(f[1]), int(f[2])), []).append(list(map(float, f[3:7])))
        else:
            dets.append((int(f[1]), int(f[2]), float(f[3]), list(map(float, f[4:8]))))
    ap50s, aps = [], []
    for c in range(classes):
        npos = sum(len(v) for (img, lab), v in gts.items() if lab == c)
        mine = sorted([d for d in dets if d[1] == c], key=lambda d: -d[2])  # stable
        per_t = []
        for t in range(10):
            thr = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95][t]  # exact decimals
            taken = {k: [False] * len(v) for k, v in gts.items()}
            tp = []
            for img, lab, score, box in mine:
                truth = gts.get((img, lab), [])
                best, best_iou = -1, -1.0
                for g, gb in enumerate(truth):
                    if not taken[(img, lab)][g]:
                        o = iou(box, gb)
                        if o > best_iou:
                            best, best_iou = g, o
                hit = best >= 0 and best_iou >= thr
                if hit:
                    taken[(img, lab)][best] = True
                tp.append(1 if hit else 0)
            if npos == 0:
                per_t.append(float("nan"))
                continue
            rec, prec, ctp = [], [], 0
            for i, x in enumerate(tp):
                ctp += x
                rec.append(ctp / npos)
                prec.append(ctp / (i + 1))
            per_t.append(voc_ap(rec, prec))
        ap50s.append(per_t[0])
        aps.append(sum(per_t) / 10)
    valid = [c for c in range(classes) if not math.isnan(ap50s[c])]
    print(sum(ap50s[c] for c in valid) / len(valid), sum(aps[c] for c in valid) / len(valid))
    for c in range(classes):
        print(ap50s[c], aps[c])


if __name__ == "__main__":
    main()
