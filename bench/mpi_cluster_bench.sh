#!/usr/bin/env bash
# Data-parallel DeepConvNet over TCP between 3 "hosts" on this machine (root): network
# namespaces joined by a bridge, each host's link limited to RATE in both directions (tc tbf),
# built by tests/cluster/netns_cluster.sh. Runs build/mpi_bench on them: the allreduce time of
# the whole gradient (f32, f16, bf16 on the wire) and training throughput with overlapped
# buckets and with one allreduce after backward, for each wire format.
#
# Usage: bench/mpi_cluster_bench.sh [--hosts N] [--rate 1gbit] [--threads 1] [--batch 99]
#                                   [--steps 20] [--rounds 3] [--bench BIN]
# The hosts share this machine's cores: with 3 hosts on 2 cores the ranks compete for CPU, so
# img/s is bounded by the cores, not by the link; the allreduce times are the link's figures.
# Exit status: 0 ok, 1 a run failed, 2 something is missing, 3 not root / no namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

HOSTS=3 RATE=1gbit THREADS=1 BATCH=99 STEPS=20 ROUNDS=3 BENCH=build/mpi_bench
while [[ $# -gt 0 ]]; do
  case "$1" in
    --hosts) HOSTS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --bench) BENCH=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
[[ -x $BENCH ]] || { echo "$BENCH not found: build it (it needs MPI)" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "network namespaces need root" >&2; exit 3; }

PREFIX="dtb$$"
BASE="10.214.$(( $$ % 200 + 20 ))"
NETNS=tests/cluster/netns_cluster.sh
trap '$NETNS down "$PREFIX"' EXIT
$NETNS up "$PREFIX" "$HOSTS" "$BASE" "$RATE"
echo "$HOSTS namespace hosts, links limited to $RATE (tbf), $THREADS thread(s) per rank, global batch $BATCH"
echo "load before: $(uptime | sed 's/.*load average/load average/')"
OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
  $NETNS mpirun "$PREFIX" "$HOSTS" "$BASE" -- "$BENCH" --threads "$THREADS" --batch "$BATCH" \
  --steps "$STEPS" --rounds "$ROUNDS" --reps 50 --compression none,f16,bf16
echo "load after:  $(uptime | sed 's/.*load average/load average/')"
