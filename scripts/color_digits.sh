#!/usr/bin/env bash
# The larger-image example of docs/own_data.md: a folder of generated 64..96-pixel RGB images
# (scripts/make_color_digits.py: coloured, scaled, placed MNIST digits on textured backgrounds,
# ImageFolder layout), packed into shards, and a small ResNet trained from them through
# data.transform (examples/resnet8_color_digits.prototxt).
#
#   scripts/color_digits.sh                      # 6,000 training and 1,000 test images, 8 epochs
#   TRAIN=1200 TEST=300 CLASSES=4 CONFIG=my.prototxt OUT=/tmp/cd scripts/color_digits.sh --epochs 3
# (CLASSES < 10: the config's classifier must have CLASSES outputs.)
#
# Extra arguments go to `deeptrain train`. Needs the MNIST files (scripts/fetch_data.sh) and
# NumPy (Debian's, for /usr/bin/python3; PYTHON=... for another). Images and packs are kept in
# OUT (default runs/color_digits) and reused by a re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${DEEPTRAIN:-build/deeptrain}
OUT=${OUT:-runs/color_digits}
mkdir -p "$OUT"
if [[ ! -d $OUT/images ]]; then
  "${PYTHON:-/usr/bin/python3}" scripts/make_color_digits.py --mnist "${MNIST:-data/mnist}" --out "$OUT/images" \
    --train "${TRAIN:-6000}" --test "${TEST:-1000}" --classes "${CLASSES:-10}"
fi
for split in train test; do
  if [[ ! -f $OUT/packs/$split/manifest.json ]]; then
    "$BIN" pack --folder "$OUT/images/$split" --out "$OUT/packs/$split"
  fi
done
"$BIN" train "${CONFIG:-examples/resnet8_color_digits.prototxt}" --data-dir "$OUT/packs" --run-dir "$OUT/run" "$@"
