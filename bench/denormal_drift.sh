#!/usr/bin/env bash
# Does a training step get slower as the model learns? Runs the whole recipe (default: the
# book's DeepConvNet, 20 epochs) and compares the median step time of the last epoch with the
# first's, from the run's metrics_steps.jsonl. Late in training, gradients and Adam's second
# moments reach subnormal floats, which x86 cores compute in slow microcode unless the threads
# flush them to zero (run.flush_denormals, docs/denormals.md); a 50-step benchmark never gets
# there. --compare also runs the recipe with flush_denormals: false, the slowdown it prevents.
#
# Usage: bench/denormal_drift.sh [--config FILE] [--epochs N] [--threads N] [--compare]
#                                [--deeptrain BIN] [--out DIR]
# Prints, per run: the first and last epoch's median step (ms), their ratio, the training
# seconds; exit status 0 when the flushing run's last epoch is within 5% of its first, 1 when
# not, 2 when something needed is missing. The runs' directories stay in --out (default: a
# temporary directory, removed at exit).
set -euo pipefail
cd "$(dirname "$0")/.."

CONFIG=examples/deep_convnet_mnist.prototxt
EPOCHS=""
THREADS=""
COMPARE=0
DEEPTRAIN=build/deeptrain
OUT=""
usage() { awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --config) CONFIG=$2; shift 2 ;;
    --epochs) EPOCHS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --compare) COMPARE=1; shift ;;
    --deeptrain) DEEPTRAIN=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "denormal_drift.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ -x $DEEPTRAIN ]] || { echo "denormal_drift.sh: no $DEEPTRAIN (build first: scripts/setup.sh)" >&2; exit 2; }
[[ -f $CONFIG ]] || { echo "denormal_drift.sh: no config $CONFIG" >&2; exit 2; }
if [[ -z $OUT ]]; then
  OUT=$(mktemp -d)
  trap 'rm -rf "$OUT"' EXIT
fi
mkdir -p "$OUT"

# run NAME FLUSH: trains the recipe with run.flush_denormals = FLUSH into $OUT/NAME.
run() {
  local name=$1 flush=$2 cfg="$OUT/$1.prototxt"
  # The config with run.flush_denormals set (added to its run { } block, or a new block).
  python3 - "$CONFIG" "$cfg" "$flush" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
field = f"flush_denormals: {sys.argv[3]} "
if re.search(r"^\s*run\s*\{", text, re.M):
    text = re.sub(r"^(\s*run\s*\{)", r"\1 " + field, text, count=1, flags=re.M)
else:
    text += f"\nrun {{ {field}}}\n"
open(sys.argv[2], "w").write(text)
PY
  local args=(train "$cfg" --json --run-dir "$OUT/$name")
  [[ -n $EPOCHS ]] && args+=(--epochs "$EPOCHS")
  [[ -n $THREADS ]] && args+=(--threads "$THREADS")
  echo "denormal_drift.sh: $DEEPTRAIN ${args[*]}" >&2
  "$DEEPTRAIN" "${args[@]}" > "$OUT/$name.log"
}

# report NAME: one table row from the run's per-step metrics; prints the ratio last.
report() {
  local steps
  steps=$(find "$OUT/$1" -name metrics_steps.jsonl | head -n 1)
  python3 - "$steps" "$1" <<'PY'
import json, statistics, sys
by_epoch = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    by_epoch.setdefault(int(r["epoch"]), []).append(float(r["seconds"]))
first, last = min(by_epoch), max(by_epoch)
a = statistics.median(by_epoch[first]) * 1e3
b = statistics.median(by_epoch[last]) * 1e3
total = sum(sum(v) for v in by_epoch.values())
print(f"{sys.argv[2]:<22} {a:>10.2f} {b:>10.2f} {b / a:>8.3f} {total:>9.1f}", file=sys.stderr)
print(f"{b / a:.4f}")
PY
}

run flush true
[[ $COMPARE == 1 ]] && run keep false
echo "$(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores" >&2
printf "%-22s %10s %10s %8s %9s\n" "run" "first ms" "last ms" "ratio" "train s" >&2
ratio=$(report flush)
[[ $COMPARE == 1 ]] && report keep >/dev/null
python3 -c "import sys; r = float('$ratio'); print(f'last epoch / first epoch step time: {r:.3f} (limit 1.05)'); sys.exit(0 if r <= 1.05 else 1)"
