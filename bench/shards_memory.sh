#!/usr/bin/env bash
# Peak RSS of training from a large pack: a ~2 GB shard set is generated (--samples images of
# 512x512 RGB noise PNGs, ~0.8 MB each and incompressible; the list file names 16 distinct files
# over and over, so making it takes seconds), packed, and examples/resnet8_color_digits.prototxt
# trains one epoch from it (64x64 crops through data.transform, 1 data thread, 1 compute thread).
# The same run on a pack of the first 128 samples gives the baseline: what the process, the
# model, the decode buffers and the prefetch slots take whatever the set's size. The pipeline's
# own memory grows with the set only by its in-memory indexes and labels (28 bytes a sample), so
# the bound checked is
#     peak RSS (large pack) <= peak RSS (128-sample pack) + 28 B x samples + 32 MiB
# (32 MiB: the allocator's slack between two runs). The shard bytes are read with pread and left
# to the page cache, which is not the process's RSS.
#
#   bench/shards_memory.sh                      # 2700 samples (~2.1 GB)
#   bench/shards_memory.sh --samples 64         # a smoke run
#
# Options: --samples N, --work DIR (default runs/bench_memory; the pack is made once),
# --deeptrain BIN. Needs build/deeptrain and NumPy (/usr/bin/python3).
set -euo pipefail
cd "$(dirname "$0")/.."
SAMPLES=2700 WORK=runs/bench_memory BIN=build/deeptrain
while [[ $# -gt 0 ]]; do
  case "$1" in
    --samples) SAMPLES=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --deeptrain) BIN=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "shards_memory.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ -x $BIN ]] || { echo "shards_memory.sh: $BIN not built" >&2; exit 2; }
SMALL=$(( SAMPLES < 128 ? SAMPLES : 128 ))
set_dir=$WORK/noise_$SAMPLES
if [[ ! -f $set_dir/packs/train/manifest.json ]]; then
  rm -rf "$set_dir"
  mkdir -p "$set_dir/files"
  /usr/bin/python3 - "$set_dir" "$SAMPLES" <<'PY'
import os, sys
import numpy as np
sys.path.insert(0, "scripts")
from make_color_digits import write_png
out, samples = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(7)
for k in range(16):
    write_png(f"{out}/files/{k}.png", rng.integers(0, 256, size=(512, 512, 3), dtype=np.uint8))
with open(f"{out}/list.csv", "w") as f:
    for i in range(samples):
        f.write(f"files/{i % 16}.png,{i % 10}\n")
PY
  "$BIN" pack --list "$set_dir/list.csv" --out "$set_dir/packs/train" --json > /dev/null
  "$BIN" pack --list "$set_dir/list.csv" --limit "$SMALL" --out "$set_dir/small/train" --json > /dev/null
  "$BIN" pack --list "$set_dir/list.csv" --limit 64 --out "$set_dir/packs/test" --json > /dev/null
  cp -r "$set_dir/packs/test" "$set_dir/small/test"
fi
peak() {  # peak RSS (MB) of one epoch from the packs in $1 (run directory $WORK/run_$2)
  rm -rf "$WORK/run_$2"
  "$BIN" train examples/resnet8_color_digits.prototxt --data-dir "$1" --epochs 1 --threads 1 \
    --json --run-dir "$WORK/run_$2" | sed -n 's/.*"event":"summary".*"peak_rss_mb":\([0-9.]*\).*/\1/p'
}
pack_mb=$(du -sm "$set_dir/packs/train" | cut -f1)
small=$(peak "$set_dir/small" small) large=$(peak "$set_dir/packs" large)
bound=$(awk -v s="$small" -v n="$SAMPLES" 'BEGIN { printf "%.1f", s + 28 * n / 1048576 + 32 }')
echo "pack: $SAMPLES samples, $pack_mb MB of shards"
echo "peak RSS: $large MB (baseline, $SMALL samples: $small MB); bound $bound MB"
if awk -v l="$large" -v b="$bound" 'BEGIN { exit !(l <= b) }'; then
  echo "within the bound"
else
  echo "OVER the bound"
  exit 1
fi
