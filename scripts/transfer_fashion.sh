#!/usr/bin/env bash
# Transfer learning, chapter 8: DeepConvNet trained on MNIST, then fine-tuned on the first 1,000
# Fashion-MNIST training images, against the same net trained from scratch on those 1,000.
# Both are tested on the 10,000 Fashion-MNIST test images; the script prints both accuracies.
#
#   scripts/transfer_fashion.sh            # MNIST pre-training for PRETRAIN_EPOCHS (default 3)
#   PRETRAIN_EPOCHS=20 scripts/transfer_fashion.sh
#   MNIST_WEIGHTS=runs/dcn/weights.bin scripts/transfer_fashion.sh   # reuse a trained model
#   SEEDS="1 2 3 4 5" scripts/transfer_fashion.sh   # fine-tune and scratch runs per seed (default 1 2 3)
#
# Extra arguments go to every `deeptrain train` (e.g. --threads 2). Run from the repository
# root; everything lands in runs/transfer/.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${DEEPTRAIN:-build/deeptrain}
OUT=runs/transfer
mkdir -p "$OUT"
# The fine-tuning config reads its start from this path.
WEIGHTS=$OUT/mnist.weights

accuracy() {  # the test accuracy of the summary line of a --json run
  tail -n 1 "$1" | sed -n 's/.*"test_accuracy":\([0-9.]*\).*/\1/p'
}

if [[ -n "${MNIST_WEIGHTS:-}" ]]; then
  cp "$MNIST_WEIGHTS" "$WEIGHTS"
else
  echo "1/3 DeepConvNet on MNIST, ${PRETRAIN_EPOCHS:-3} epochs -> $WEIGHTS"
  "$BIN" train examples/deep_convnet_mnist.prototxt --epochs "${PRETRAIN_EPOCHS:-3}" --json \
    --save-weights "$WEIGHTS" --run-dir "$OUT/pretrain" "$@" > "$OUT/pretrain.jsonl"
  echo "    MNIST test accuracy $(accuracy "$OUT/pretrain.jsonl")"
fi
# Each seed draws the new layers' initial weights, the dropout masks and the data order.
SEEDS=${SEEDS:-1 2 3}
for seed in $SEEDS; do
  echo "2/3 seed $seed: fine-tuning on 1,000 Fashion-MNIST images"
  "$BIN" train examples/deep_convnet_fashion_1k_finetune.prototxt --seed "$seed" --json \
    --run-dir "$OUT/finetune-s$seed" "$@" > "$OUT/finetune-s$seed.jsonl"
  echo "3/3 seed $seed: the same from scratch"
  "$BIN" train examples/deep_convnet_fashion_1k_scratch.prototxt --seed "$seed" --json \
    --run-dir "$OUT/scratch-s$seed" "$@" > "$OUT/scratch-s$seed.jsonl"
done
echo "Fashion-MNIST test accuracy after 1,000 training images (10,000 test images):"
ft=() sc=()
for seed in $SEEDS; do
  ft+=("$(accuracy "$OUT/finetune-s$seed.jsonl")")
  sc+=("$(accuracy "$OUT/scratch-s$seed.jsonl")")
  echo "  seed $seed: fine-tuned from MNIST ${ft[-1]}, from scratch ${sc[-1]}"
done
mean() { printf '%s\n' "$@" | awk '{ s += $1 } END { printf "%.4f", s / NR }'; }
echo "  mean:   fine-tuned $(mean "${ft[@]}"), from scratch $(mean "${sc[@]}")"
