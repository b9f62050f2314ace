#!/usr/bin/env bash
# Training from shards vs from the IDX files in memory: the same example config trained one epoch
# (--train-limit images) with 1 compute thread, once with data.dataset as the example has it
# and once from a pack of the same set (`deeptrain pack --builtin`) read by 1 data thread that
# decodes the next batches while the current step computes. The batches are bit-identical
# (tests/test_shards.cpp), so only the pipeline differs. Rounds alternate the two; the table
# gives each one's median images per second and the ratio shards / IDX (the target: >= 0.95).
#
#   bench/shards_vs_idx.sh                          # DeepConvNet and ResNet-20, 3 rounds, 6000 images
#   bench/shards_vs_idx.sh --rounds 5 --images 10000
#   bench/shards_vs_idx.sh --rounds 1 --images 200 --models deep_convnet   # a smoke run
#
# Options: --rounds N, --images N (training images an epoch), --models "deep_convnet resnet20",
# --work DIR (default runs/bench_shards; packs are made once), --out FILE (every summary line),
# --deeptrain BIN. Needs build/deeptrain and data/mnist, data/fashion_mnist.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=3 IMAGES=6000 MODELS="deep_convnet resnet20" WORK=runs/bench_shards OUT="" BIN=build/deeptrain
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --images) IMAGES=$2; shift 2 ;;
    --models) MODELS=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --deeptrain) BIN=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "shards_vs_idx.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ -x $BIN ]] || { echo "shards_vs_idx.sh: $BIN not built" >&2; exit 2; }
mkdir -p "$WORK"
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
printf '%-13s %12s %12s %7s\n' model idx_img/s shards_img/s ratio
for model in $MODELS; do
  case "$model" in
    deep_convnet) example=examples/deep_convnet_mnist.prototxt set=mnist ;;
    resnet20) example=examples/resnet20_fashion_mnist.prototxt set=fashion_mnist ;;
    *) echo "shards_vs_idx.sh: unknown model '$model' (deep_convnet, resnet20)" >&2; exit 2 ;;
  esac
  packs=$WORK/packs_$set
  for split in train test; do
    [[ -f $packs/$split/manifest.json ]] ||
      "$BIN" pack --builtin "$set" --split "$split" --data-dir "data/$set" --out "$packs/$split" --json > /dev/null
  done
  # The example with its data set swapped for the pack (its augmentation, if any, kept).
  shards_cfg=$WORK/${model}_shards.prototxt
  sed -e "s|dataset: \"$set\"|dataset: \"shards\" data_threads: 1 prefetch_batches: 2|" \
      -e "s|dir: \"data/$set\"|dir: \"$packs\"|" -e 's|verify_checksums: true||' "$example" > "$shards_cfg"
  grep -q 'dataset: "shards"' "$shards_cfg" || { echo "shards_vs_idx.sh: cannot rewrite $example" >&2; exit 1; }
  idx=() sh=()
  for ((r = 1; r <= ROUNDS; r++)); do
    for kind in idx shards; do
      cfg=$example
      [[ $kind == shards ]] && cfg=$shards_cfg
      rm -rf "$WORK/run_${model}_$kind"
      line=$("$BIN" train "$cfg" --epochs 1 --threads 1 --train-limit "$IMAGES" --test-limit 100 \
               --json --run-dir "$WORK/run_${model}_$kind" | grep '"event":"epoch"' | tail -n 1)
      [[ -n $OUT ]] && printf '{"model":"%s","kind":"%s","epoch":%s}\n' "$model" "$kind" "$line" >> "$OUT"
      ips=$(sed -n 's/.*"images_per_sec":\([0-9.]*\).*/\1/p' <<<"$line")
      if [[ $kind == idx ]]; then idx+=("$ips"); else sh+=("$ips"); fi
    done
  done
  mi=$(printf '%s\n' "${idx[@]}" | median) ms=$(printf '%s\n' "${sh[@]}" | median)
  printf '%-13s %12s %12s %7s\n' "$model" "$mi" "$ms" "$(awk -v a="$ms" -v b="$mi" 'BEGIN { printf "%.3f", a / b }')"
done
