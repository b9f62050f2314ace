#!/usr/bin/env bash
# What exact mode (distributed.exact, docs/exact_mode.md) costs: training throughput of the
# default path (oneDNN, "cpu"), of the default path on the reference kernels ("cpu-ref") and of
# exact mode (reference kernels, micro-shards, ordered sums), for DeepConvNet and ResNet-20
# (synchronised BatchNorm, which exact mode requires), on 1 rank x all threads and on
# 2 ranks x 1 thread, measured in the same invocation. Each round runs every configuration once,
# one after the other (never two at once); the table gives the median images/s over the rounds
# and the ratios exact / default and exact / cpu-ref (< 1: exact is slower).
#
# Usage: bench/exact_overhead.sh [--rounds N] [--steps N] [--threads N] [--micro-batch N]
#                                [--deeptrain BIN] [--mpirun BIN]
# Exit status: 0 ok, 1 a run failed, 2 something needed is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=3
STEPS=30
THREADS=$(nproc)
MICRO=""
DEEPTRAIN=build/deeptrain
MPIRUN=mpirun
usage() { awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --micro-batch) MICRO=$2; shift 2 ;;
    --deeptrain) DEEPTRAIN=$2; shift 2 ;;
    --mpirun) MPIRUN=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "exact_overhead.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ -x $DEEPTRAIN ]] || { echo "exact_overhead.sh: no $DEEPTRAIN (build first: scripts/setup.sh)" >&2; exit 2; }
command -v "$MPIRUN" >/dev/null || { echo "exact_overhead.sh: no $MPIRUN" >&2; exit 2; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# The models: DeepConvNet as in the book's recipe; ResNet-20 with synchronised BatchNorm.
micro_line=""
[[ -n $MICRO ]] && micro_line="distributed { micro_batch: $MICRO }"
printf '%s\n%s\n' "$(cat examples/deep_convnet_mnist.prototxt)" "$micro_line" > "$TMP/deep_convnet.prototxt"
sed 's/batch_norm {}/batch_norm { sync: true }/' examples/resnet20_fashion_mnist.prototxt > "$TMP/resnet20.prototxt"
printf '%s\n' "$micro_line" >> "$TMP/resnet20.prototxt"

mpi_args=(-n 2 --oversubscribe)
[[ $EUID == 0 ]] && mpi_args+=(--allow-run-as-root)
# bench_ips MODEL LAYOUT MODE: images/s of one run; LAYOUT 1xT or 2x1, MODE default|ref|exact.
bench_ips() {
  local args=(bench --config "$TMP/$1.prototxt" --mode train --steps "$STEPS" --warmup 3 --json)
  case $3 in
    default) args+=(--backend cpu) ;;
    ref) args+=(--backend cpu-ref) ;;
    exact) args+=(--backend cpu-ref --exact) ;;
  esac
  local out
  if [[ $2 == 2x1 ]]; then
    out=$("$MPIRUN" "${mpi_args[@]}" "$DEEPTRAIN" "${args[@]}" --threads 1)
  else
    out=$("$DEEPTRAIN" "${args[@]}" --threads "$THREADS")
  fi
  python3 -c 'import json, sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["images_per_sec"])' <<<"$out"
}

models=(deep_convnet resnet20)
layouts=("1x$THREADS" 2x1)
modes=(default ref exact)
for ((r = 1; r <= ROUNDS; ++r)); do
  for m in "${models[@]}"; do
    for l in "${layouts[@]}"; do
      for mode in "${modes[@]}"; do
        ips=$(bench_ips "$m" "$l" "$mode") || { echo "exact_overhead.sh: $m $l $mode failed" >&2; exit 1; }
        echo "$m $l $mode $ips" >> "$TMP/results"
        echo "round $r: $m, $l ranks x threads, $mode: $ips img/s" >&2
      done
    done
  done
done

echo "$(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $STEPS steps, median of $ROUNDS rounds"
python3 - "$TMP/results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m, l, mode, ips = line.split()
    rows.setdefault((m, l), {}).setdefault(mode, []).append(float(ips))
print(f"{'model':<14}{'ranks x threads':>16}{'default':>10}{'cpu-ref':>10}{'exact':>10}"
      f"{'exact/default':>15}{'exact/cpu-ref':>15}")
for (m, l), v in rows.items():
    d, r, e = (statistics.median(v[k]) for k in ("default", "ref", "exact"))
    print(f"{m:<14}{l:>16}{d:>10.1f}{r:>10.1f}{e:>10.1f}{e / d:>15.3f}{e / r:>15.3f}")
PY
