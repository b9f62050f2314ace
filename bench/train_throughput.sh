#!/usr/bin/env bash
# Compare deeptrain and PyTorch on the book's DeepConvNet, in one invocation.
#
# Each round runs, one after the other (never two at once):
#   deeptrain train, pytorch train, deeptrain infer, pytorch infer
# so both implementations see the same machine state. The table reports the
# median images/s over rounds, the ratio deeptrain/pytorch (> 1: deeptrain is
# faster) and the largest peak RSS seen.
#
# Usage: bench/train_throughput.sh [--threads N] [--rounds N] [--steps N]
#                                  [--warmup N] [--config FILE] [--data DIR]
#                                  [--out FILE] [--deeptrain BIN]
# PyTorch uses the batch_size of the config's schedule (100 if it has none)
# and the MNIST files of its data dir (random images if that is absent).
# Exit status: 0 ok, 1 a benchmark run failed, 2 something needed is missing.
set -euo pipefail

cd "$(dirname "$0")/.."   # repository root

THREADS=2
ROUNDS=3
STEPS=50
WARMUP=5
CONFIG=examples/deep_convnet_mnist.prototxt
DATA=""        # default: the dir: of the config's data { } block, if it exists
OUT=""         # default: a temporary file, removed at exit
DEEPTRAIN=build/deeptrain
PYTHON=/usr/bin/python3

usage() { awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads) THREADS=$2; shift 2 ;;
    --rounds)  ROUNDS=$2;  shift 2 ;;
    --steps)   STEPS=$2;   shift 2 ;;
    --warmup)  WARMUP=$2;  shift 2 ;;
    --config)  CONFIG=$2;  shift 2 ;;
    --data)    DATA=$2;    shift 2 ;;
    --out)     OUT=$2;     shift 2 ;;
    --deeptrain) DEEPTRAIN=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done

# ---------------------------------------------------------------- checks
if [[ ! -x $DEEPTRAIN ]]; then
  echo "$DEEPTRAIN not found: build deeptrain first (cmake -B build && cmake --build build)" >&2
  exit 2
fi
if [[ ! -f $CONFIG ]]; then
  echo "config $CONFIG not found" >&2
  exit 2
fi
if ! "$PYTHON" -c 'import torch, numpy' 2>/dev/null; then
  echo "PyTorch not importable by $PYTHON: apt-get install -y python3-torch python3-numpy" >&2
  exit 2
fi

# Same batch as deeptrain: the config's schedule { batch_size: N }.
BATCH=$(sed -n 's/^[^#]*\bbatch_size: *\([0-9][0-9]*\).*/\1/p' "$CONFIG" | head -n 1)
BATCH=${BATCH:-100}

# PyTorch reads the same MNIST files as deeptrain when the config names a
# directory that exists; otherwise it uses random images (same speed).
if [[ -z $DATA ]]; then
  DATA=$(sed -n 's/^[^#]*\bdir: *"\([^"]*\)".*/\1/p' "$CONFIG" | head -n 1)
fi
PT_DATA=()
if [[ -n $DATA && -d $DATA ]]; then
  PT_DATA=(--data "$DATA")
fi

KEEP_OUT=1
if [[ -z $OUT ]]; then
  OUT=$(mktemp)
  KEEP_OUT=0
  trap 'rm -f "$OUT"' EXIT
else
  : > "$OUT"
fi

# ---------------------------------------------------------------- helpers
# One JSON line on stdin -> "impl mode images_per_sec step_ms_median peak_rss_mb"
json_fields() {
  if command -v jq > /dev/null; then
    jq -r '[.impl, .mode, .images_per_sec, .step_ms_median, (.peak_rss_mb // "NA")] | @tsv'
  else
    "$PYTHON" -c 'import json, sys
d = json.loads(sys.stdin.read())
keys = ("impl", "mode", "images_per_sec", "step_ms_median", "peak_rss_mb")
print("\t".join(str(d.get(k, "NA")) for k in keys))'
  fi
}

# Run one benchmark command, keep its JSON line (the last line starting with
# "{") in $OUT, echo a short progress line.
run_one() {
  local label=$1; shift
  local output line
  if ! output=$("$@"); then
    echo "FAILED: $*" >&2
    exit 1
  fi
  line=$(printf '%s\n' "$output" | grep '^{' | tail -n 1 || true)
  if [[ -z $line ]]; then
    echo "no JSON line from: $*" >&2
    exit 1
  fi
  echo "$line" >> "$OUT"
  printf '  %-16s %s\n' "$label" "$(echo "$line" | json_fields | awk -F'\t' '{printf "%10.1f img/s  %8.2f ms/step  %7s MB peak", $3, $4, $5}')"
}

# Column $3 (images/s) etc. of the runs of one impl and mode.
column_of() {  # impl mode column
  json_fields_all | awk -F'\t' -v i="$1" -v m="$2" -v c="$3" '$1 == i && $2 == m {print $c}'
}
json_fields_all() { while IFS= read -r l; do echo "$l" | json_fields; done < "$OUT"; }

median() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) print "NA"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
maximum() { sort -g | tail -n 1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "NA" || b == "NA" || b == 0) print "NA"; else printf "%.2f", a / b}'; }

# ---------------------------------------------------------------- run
echo "deeptrain vs PyTorch, DeepConvNet, batch $BATCH, $THREADS threads, $ROUNDS rounds x $STEPS steps (+$WARMUP warm-up)"
echo "host: $(hostname), $(nproc) cores visible, git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "pytorch data: ${PT_DATA[1]:-random}"
# Both sides use OpenMP; its wait policy decides how they behave on a busy
# machine, so show it (the same environment applies to both).
echo "OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-default} GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-default}"
echo "load before: $(uptime | sed 's/.*load average/load average/')"

for ((r = 1; r <= ROUNDS; r++)); do
  echo "round $r/$ROUNDS"
  for mode in train infer; do
    run_one "deeptrain $mode" "$DEEPTRAIN" bench --config "$CONFIG" --threads "$THREADS" \
      --steps "$STEPS" --warmup "$WARMUP" --mode "$mode" --json
    run_one "pytorch $mode" "$PYTHON" bench/pytorch_deepconvnet.py --threads "$THREADS" \
      --steps "$STEPS" --warmup "$WARMUP" --mode "$mode" --batch "$BATCH" "${PT_DATA[@]}"
  done
done

echo "load after:  $(uptime | sed 's/.*load average/load average/')"

# ---------------------------------------------------------------- table
echo
printf '%-28s %12s %12s %18s\n' "" deeptrain pytorch "deeptrain/pytorch"
for mode in train infer; do
  dt=$(column_of deeptrain "$mode" 3 | median)
  pt=$(column_of pytorch "$mode" 3 | median)
  printf '%-28s %12s %12s %18s\n' "$mode img/s (median)" "$dt" "$pt" "$(ratio "$dt" "$pt")"
  dt=$(column_of deeptrain "$mode" 4 | median)
  pt=$(column_of pytorch "$mode" 4 | median)
  printf '%-28s %12s %12s %18s\n' "$mode ms/step (median)" "$dt" "$pt" "$(ratio "$dt" "$pt")"
  dt=$(column_of deeptrain "$mode" 5 | maximum)
  pt=$(column_of pytorch "$mode" 5 | maximum)
  printf '%-28s %12s %12s %18s\n' "$mode peak RSS MB (max)" "$dt" "$pt" "$(ratio "$dt" "$pt")"
done
echo
echo "img/s ratio > 1: deeptrain faster. ms/step and memory ratios < 1: deeptrain better."
if [[ $KEEP_OUT == 1 ]]; then echo "raw JSON lines: $OUT"; fi
