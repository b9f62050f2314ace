#!/usr/bin/env bash
# A classification config's whole recipe, deeptrain against PyTorch, timed from process start
# to exit: every epoch, its evaluation, data loading and start-up included (not a warm window).
#
# Runs, one after the other (never two at once):
#   deeptrain train CONFIG --threads N --json         (the run directory is a temporary one),
#     once per convolution algorithm asked for (--conv-algorithm direct,winograd)
#   bench/pytorch_recipe.py --config CONFIG --threads N, once per PyTorch layout asked for
# and prints one JSON line per run (wall seconds, the last epoch's test accuracy) and a table
# with the ratio of PyTorch's best layout's wall time to deeptrain's (> 1: deeptrain is faster).
#
# Usage: bench/recipe_wall.sh [--config FILE] [--threads N] [--epochs N] [--math fp32|bf16]
#                             [--layouts nchw,channels_last] [--limit N] [--seed N]
#                             [--conv-algorithm direct,winograd] [--deeptrain BIN]
# --epochs and --limit (the first N samples of each split) shorten the recipe for a smoke run.
# Exit status: 0 ok, 1 a run failed, 2 something needed is missing.
set -euo pipefail

cd "$(dirname "$0")/.."   # repository root

CONFIG=examples/deep_convnet_mnist.prototxt
THREADS=2
EPOCHS=""
MATH=fp32
LAYOUTS=nchw,channels_last
ALGORITHMS=direct
LIMIT=0
SEED=1
DEEPTRAIN=build/deeptrain
PYTHON=/usr/bin/python3

usage() { awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --config)  CONFIG=$2;  shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --epochs)  EPOCHS=$2;  shift 2 ;;
    --math)    MATH=$2;    shift 2 ;;
    --layouts) LAYOUTS=$2; shift 2 ;;
    --conv-algorithm) ALGORITHMS=$2; shift 2 ;;
    --limit)   LIMIT=$2;   shift 2 ;;
    --seed)    SEED=$2;    shift 2 ;;
    --deeptrain) DEEPTRAIN=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done

[[ -x $DEEPTRAIN ]] || { echo "$DEEPTRAIN not found: build deeptrain first" >&2; exit 2; }
[[ -f $CONFIG ]] || { echo "config $CONFIG not found" >&2; exit 2; }
"$PYTHON" -c 'import torch, numpy' 2>/dev/null ||
  { echo "PyTorch not importable by $PYTHON: apt-get install -y python3-torch python3-numpy" >&2; exit 2; }

IFS=, read -ra LAYOUT_LIST <<< "$LAYOUTS"
for layout in "${LAYOUT_LIST[@]}"; do
  [[ $layout == nchw || $layout == channels_last ]] ||
    { echo "unknown layout: $layout (nchw, channels_last)" >&2; exit 2; }
done
[[ ${#LAYOUT_LIST[@]} -gt 0 ]] || { echo "--layouts: none given" >&2; exit 2; }
IFS=, read -ra ALGORITHM_LIST <<< "$ALGORITHMS"
for algorithm in "${ALGORITHM_LIST[@]}"; do
  [[ $algorithm == direct || $algorithm == winograd ]] ||
    { echo "unknown convolution algorithm: $algorithm (direct, winograd)" >&2; exit 2; }
done

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

DT_ARGS=(--threads "$THREADS" --seed "$SEED" --math "$MATH" --json)
PT_ARGS=(--config "$CONFIG" --threads "$THREADS" --seed "$SEED" --math "$MATH")
if [[ -n $EPOCHS ]]; then DT_ARGS+=(--epochs "$EPOCHS"); PT_ARGS+=(--epochs "$EPOCHS"); fi
if [[ $LIMIT != 0 ]]; then
  DT_ARGS+=(--train-limit "$LIMIT" --test-limit "$LIMIT"); PT_ARGS+=(--limit "$LIMIT")
fi

now() { date +%s.%N; }

# One timed run: its output in $TMP/NAME.jsonl, one JSON line for the table.
timed() {
  local name=$1; shift
  local t0 t1
  t0=$(now)
  if ! "$@" > "$TMP/$name.jsonl" 2> "$TMP/$name.err"; then
    echo "$name failed:" >&2; tail -n 20 "$TMP/$name.err" >&2; exit 1
  fi
  t1=$(now)
  "$PYTHON" - "$name" "$t0" "$t1" "$TMP/$name.jsonl" <<'EOF'
import json, sys
name, t0, t1, path = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
epochs = [json.loads(l) for l in open(path) if '"epoch"' in l and '"summary"' not in l]
last = epochs[-1]
print(json.dumps({"run": name, "wall_seconds": round(t1 - t0, 2), "epochs": len(epochs),
                  "test_accuracy": last["test_accuracy"]}))
EOF
}

{
  for algorithm in "${ALGORITHM_LIST[@]}"; do
    name=deeptrain; [[ $algorithm == direct ]] || name=deeptrain_$algorithm
    timed "$name" "$DEEPTRAIN" train "$CONFIG" "${DT_ARGS[@]}" --conv-algorithm "$algorithm" \
      --run-dir "$TMP/run_$algorithm"
  done
  for layout in "${LAYOUT_LIST[@]}"; do
    if [[ $layout == nchw ]]; then timed pytorch_nchw "$PYTHON" bench/pytorch_recipe.py "${PT_ARGS[@]}"
    else timed pytorch_channels_last "$PYTHON" bench/pytorch_recipe.py "${PT_ARGS[@]}" --channels-last; fi
  done
} | tee "$TMP/runs.jsonl"

"$PYTHON" - "$TMP/runs.jsonl" "$CONFIG" "$THREADS" "$MATH" <<'EOF'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
ours = [r for r in runs if r["run"].startswith("deeptrain")]
best = min((r for r in runs if r not in ours), key=lambda r: r["wall_seconds"])
print()
print("| %s, %s threads, %s | epochs | wall s | test accuracy |" % (sys.argv[2], sys.argv[3], sys.argv[4]))
print("|---|---|---|---|")
for r in runs:
    print("| %s | %d | %.1f | %.4f |" % (r["run"], r["epochs"], r["wall_seconds"], r["test_accuracy"]))
print()
for dt in ours:
    print("wall-time ratio, PyTorch's best layout (%s) / %s: %.2fx"
          % (best["run"], dt["run"], best["wall_seconds"] / dt["wall_seconds"]))
EOF
