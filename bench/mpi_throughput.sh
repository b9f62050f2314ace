#!/usr/bin/env bash
# Data-parallel training throughput on one machine: 1 process with T threads against N ranks
# (mpirun) with T/N threads each, same global batch, run alternately so both see the same
# machine load; the table reports the median over rounds and the ratio.
#
# Usage: bench/mpi_throughput.sh [--threads T] [--np N] [--rounds R] [--steps S] [--warmup W]
#                                [--batch B] [--deeptrain BIN] [--mpirun-args "ARGS"]
# Defaults: T = 2, N = 2 (the 2-core target: np=2 x 1 thread vs np=1 x 2 threads), R = 5,
# S = 50, W = 5, B = 100 (the book's batch, global), BIN = build/deeptrain.
# Each run is `deeptrain bench --mode train` (the real Trainer: forward, backward with the
# gradient buckets reduced across ranks, Adam): img/s = global batch / median step time.
# Under mpirun every rank prints its line; rank 0's is taken (mpirun --tag-output).
# Exit status: 0 ok, 1 a run failed, 2 something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=2 NP=2 ROUNDS=5 STEPS=50 WARMUP=5 BATCH=100 DEEPTRAIN=build/deeptrain MPIRUN_ARGS=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads) THREADS=$2; shift 2 ;;
    --np) NP=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --deeptrain) DEEPTRAIN=$2; shift 2 ;;
    --mpirun-args) MPIRUN_ARGS=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
[[ -x $DEEPTRAIN ]] || { echo "$DEEPTRAIN not found: build first" >&2; exit 2; }
command -v mpirun > /dev/null || { echo "mpirun not found: apt-get install openmpi-bin" >&2; exit 2; }
PER_RANK=$(( THREADS / NP )); (( PER_RANK >= 1 )) || PER_RANK=1
ROOT_ARGS=()
[[ $(id -u) == 0 ]] && ROOT_ARGS=(--allow-run-as-root)
(( NP > $(nproc) )) && ROOT_ARGS+=(--oversubscribe)

json_field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"; }
median() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) print "NA"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

single=() multi=()
echo "DeepConvNet training, global batch $BATCH: 1 process x $THREADS threads vs $NP ranks x $PER_RANK threads"
echo "binary: $DEEPTRAIN ($("$DEEPTRAIN" --version)), $(nproc) cores, $ROUNDS rounds x $STEPS steps (+$WARMUP)"
echo "load before: $(uptime | sed 's/.*load average/load average/')"
for ((r = 1; r <= ROUNDS; r++)); do
  line=$("$DEEPTRAIN" bench --mode train --threads "$THREADS" --batch "$BATCH" --steps "$STEPS" \
         --warmup "$WARMUP" --json | grep '^{' | tail -n 1) || { echo "single-process run failed" >&2; exit 1; }
  single+=("$(echo "$line" | json_field images_per_sec)")
  # shellcheck disable=SC2086
  line=$(mpirun "${ROOT_ARGS[@]}" -np "$NP" --tag-output $MPIRUN_ARGS "$DEEPTRAIN" bench --mode train \
         --threads "$PER_RANK" --batch "$BATCH" --steps "$STEPS" --warmup "$WARMUP" --json \
         | grep '^\[1,0\]<stdout>:{' | tail -n 1 | sed 's/^\[1,0\]<stdout>://') \
    || { echo "mpirun run failed" >&2; exit 1; }
  multi+=("$(echo "$line" | json_field images_per_sec)")
  printf 'round %d: 1 x %d threads %8.1f img/s   %d x %d threads %8.1f img/s   (load %s)\n' "$r" \
    "$THREADS" "${single[-1]}" "$NP" "$PER_RANK" "${multi[-1]}" "$(cut -d' ' -f1 /proc/loadavg)"
done
echo "load after:  $(uptime | sed 's/.*load average/load average/')"
s=$(printf '%s\n' "${single[@]}" | median)
m=$(printf '%s\n' "${multi[@]}" | median)
printf '\nmedian img/s: 1 x %d threads %s, %d x %d threads %s, ratio (ranks / single) %s\n' \
  "$THREADS" "$s" "$NP" "$PER_RANK" "$m" "$(awk -v a="$m" -v b="$s" 'BEGIN {printf "%.2f", a / b}')"
