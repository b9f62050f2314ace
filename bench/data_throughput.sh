#!/usr/bin/env bash
# Decode + augment throughput per data thread: deeptrain's shard reader (data.transform:
# RandomResizedCrop + flip + normalisation, `deeptrain bench --mode data`) against PyTorch's
# DataLoader + torchvision 0.14 ImageFolder with the same transforms and the same number of
# workers, on the same files: PNG and JPEG images of 64x64 and 224x224 made by
# scripts/make_color_digits.py. Prints a table with the ratio deeptrain / PyTorch.
#
#   bench/data_throughput.sh                       # 1 worker, 2000 images a set, 30 batches of 64
#   bench/data_throughput.sh --workers 2 --images 4000 --steps 50
#   bench/data_throughput.sh --images 200 --steps 2 --warmup 1 --sizes 64   # a smoke run
#
# Options: --workers N (deeptrain data_threads and PyTorch num_workers), --images N per set,
# --batch N, --steps N, --warmup N, --sizes "64 224", --formats "png jpeg", --work DIR (default
# runs/bench_data; sets are generated once and reused), --out FILE (every JSON line),
# --deeptrain BIN. Needs build/deeptrain, data/mnist, NumPy, python3-torchvision.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=1 IMAGES=2000 BATCH=64 STEPS=30 WARMUP=3 SIZES="64 224" FORMATS="png jpeg"
WORK=runs/bench_data OUT="" BIN=build/deeptrain
while [[ $# -gt 0 ]]; do
  case "$1" in
    --workers) WORKERS=$2; shift 2 ;;
    --images) IMAGES=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --sizes) SIZES=$2; shift 2 ;;
    --formats) FORMATS=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --deeptrain) BIN=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "data_throughput.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
PY=/usr/bin/python3
[[ -x $BIN ]] || { echo "data_throughput.sh: $BIN not built" >&2; exit 2; }
$PY -c 'import torchvision' 2>/dev/null || { echo "data_throughput.sh: python3-torchvision missing (scripts/install_deps.sh --with-torch)" >&2; exit 2; }
mkdir -p "$WORK"
field() { sed -n "s/.*\"$1\": *\([0-9.]*\).*/\1/p" <<<"$2"; }
printf '%-6s %-5s %8s %14s %14s %7s\n' format size workers deeptrain/thr pytorch/thr ratio
for fmt in $FORMATS; do
  for size in $SIZES; do
    set_dir=$WORK/${fmt}_${size}_${IMAGES}
    if [[ ! -f $set_dir/packs/train/manifest.json ]]; then
      rm -rf "$set_dir"
      $PY scripts/make_color_digits.py --out "$set_dir/images" --train "$IMAGES" --test "$BATCH" \
        --min-size "$size" --max-size "$size" --max-scale "$(( size / 28 ))" --format "$fmt" > /dev/null
      for split in train test; do
        "$BIN" pack --folder "$set_dir/images/$split" --out "$set_dir/packs/$split" --json > /dev/null
      done
    fi
    cfg=$set_dir/bench.prototxt
    cat > "$cfg" <<CFG
model { input { channels: 3 height: $size width: $size }
        layer { name: "gap" global_avg_pool {} } layer { name: "fc" affine { out_features: 10 } } }
data { dataset: "shards" dir: "$set_dir/packs" data_threads: $WORKERS prefetch_batches: 2
       transform { random_resized_crop: true flip_horizontal: true mean: 0.5 std: 0.25 } }
schedule { batch_size: $BATCH }
run { seed: 1 threads: 1 }
CFG
    dt=$("$BIN" bench --mode data --config "$cfg" --steps "$STEPS" --warmup "$WARMUP" --json)
    pt=$($PY bench/pytorch_imagefolder.py --root "$set_dir/images/train" --size "$size" \
         --workers "$WORKERS" --batch "$BATCH" --steps "$STEPS" --warmup "$WARMUP")
    [[ -n $OUT ]] && printf '%s\n%s\n' "$dt" "$pt" >> "$OUT"
    d=$(field images_per_sec_per_thread "$dt") p=$(field images_per_sec_per_thread "$pt")
    printf '%-6s %-5s %8s %14s %14s %7s\n' "$fmt" "$size" "$WORKERS" "$d" "$p" \
      "$(awk -v d="$d" -v p="$p" 'BEGIN { printf "%.2f", d / p }')"
  done
done
