#!/usr/bin/env bash
# An ensemble (chapter 8): MEMBERS (default 5) DeepConvNets with augmentation and LR decay
# (examples/deep_convnet_mnist_aug.prototxt), each from its own seed, then `deeptrain eval`
# over all of them, averaging their softmax probabilities. Prints each member's test accuracy
# and the ensemble's. Target: >= 99.6% per member, >= 99.7% for the ensemble.
#
#   scripts/ensemble_mnist.sh                     # 5 members, the config's 30 epochs each
#   MEMBERS=3 scripts/ensemble_mnist.sh --epochs 20
#
# Extra arguments go to every `deeptrain train` (e.g. --epochs, --threads). Members already
# trained (runs/ensemble/seedK/weights.bin present) are reused. Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${DEEPTRAIN:-build/deeptrain}
CONFIG=${CONFIG:-examples/deep_convnet_mnist_aug.prototxt}
OUT=runs/ensemble
mkdir -p "$OUT"
weights=()
for seed in $(seq 1 "${MEMBERS:-5}"); do
  w=$OUT/seed$seed/weights.bin
  if [[ ! -f $w ]]; then
    echo "member $seed: training $CONFIG with --seed $seed"
    "$BIN" train "$CONFIG" --seed "$seed" --json --run-dir "$OUT/seed$seed" "$@" \
      > "$OUT/seed$seed.jsonl"
  fi
  weights+=(--weights "$w")
done
"$BIN" eval "$CONFIG" "${weights[@]}"
