#!/usr/bin/env bash
# A multi-container MPI job with podman, as docker/compose.yaml runs it with Docker: 3 containers
# of the cluster image (docker/Dockerfile.cluster), each in its own network namespace "host" of
# tests/cluster/netns_cluster.sh (joined by a bridge), one rank each; mpirun in the first
# container starts the others' daemons over ssh. Root only; run scripts/build_image.sh first.
#
#   scripts/run_multi_container.sh [--image NAME] [--storage DIR] [--data DIR] [--steps N]
#
#   --image NAME    the CPU image to start from (default localhost/deeptrain:cpu)
#   --storage DIR   podman's storage, as for build_image.sh (default /var/tmp/deeptrain-podman)
#   --data DIR      data sets to mount at /data (default data/)
#   --steps N       training steps (default 3; global batch 90, 30 per container)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
image=localhost/deeptrain:cpu
storage=/var/tmp/deeptrain-podman
data="$here/data"
steps=3
die() { echo "run_multi_container.sh: $*" >&2; exit "${2:-1}"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --image) image=${2:?--image needs a value}; shift 2 ;;
    --storage) storage=${2:?--storage needs a value}; shift 2 ;;
    --data) data=${2:?--data needs a value}; shift 2 ;;
    --steps) steps=${2:?--steps needs a value}; shift 2 ;;
    -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" 2 ;;
  esac
done
[[ $steps =~ ^[1-9][0-9]*$ ]] || die "--steps '$steps': not a positive number" 2
[[ $(id -u) == 0 ]] || die "needs root (network namespaces, podman)" 2
[[ $image == *:* ]] || die "--image '$image': expected REPO:TAG" 2
[[ -e $data/mnist ]] || die "no MNIST in $data/mnist (scripts/fetch_data.sh, or --data DIR)" 2
data=$(cd "$data" && pwd -P)
# runc, not podman's default crun: crun refuses to start containers on a host whose cgroups are
# in hybrid mode (v1 controllers plus an empty v2 hierarchy), as this project's machines are.
command -v runc > /dev/null || die "runc not found: apt-get install runc" 2
pod=(podman --root "$storage/root" --runroot "$storage/run" --storage-driver overlay
  --cgroup-manager cgroupfs --events-backend file --runtime "$(command -v runc)")
"${pod[@]}" image exists "$image" || die "no image $image in $storage: run scripts/build_image.sh first" 2
nofile=$(ulimit -Hn); nproc_limit=$(ulimit -Hu)
[[ $nofile == unlimited || $nofile -gt 1048576 ]] && nofile=1048576
[[ $nproc_limit == unlimited || $nproc_limit -gt 32768 ]] && nproc_limit=32768
ulimits=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc_limit:$nproc_limit")

cluster=${image%:*}:${image##*:}-cluster
echo "run_multi_container.sh: building $cluster (docker/Dockerfile.cluster)"
"${pod[@]}" build --format docker --isolation chroot --network host "${ulimits[@]}" \
  --build-arg "BASE_REPO=${image%:*}" --build-arg "BASE_TAG=${image##*:}" \
  -f "$here/docker/Dockerfile.cluster" -t "$cluster" "$here" > "$storage/cluster-build.log" 2>&1 ||
  die "building $cluster failed; see $storage/cluster-build.log"

prefix=dmc$(($$ % 10000))
subnet=10.215.$((20 + $$ % 200))
keys=$(mktemp -d /var/tmp/deeptrain-ssh.XXXXXX)
runs=$(mktemp -d /var/tmp/deeptrain-mc-runs.XXXXXX)
chmod 0777 "$keys" "$runs"  # the image's user (uid 1000) writes there
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  for i in 1 2 3; do "${pod[@]}" rm -f "$prefix-node$i" > /dev/null 2>&1 || true; done
  "$here/tests/cluster/netns_cluster.sh" down "$prefix" || true
  rm -rf "$keys"
}
trap cleanup EXIT
"$here/tests/cluster/netns_cluster.sh" up "$prefix" 3 "$subnet"

hosts=() add_hosts=()
for i in 1 2 3; do
  hosts+=("$prefix-h$i")
  add_hosts+=(--add-host "$prefix-h$i:$subnet.$i")
done
run_node() {  # I PODMAN_RUN_ARGS... -- COMMAND...
  local i=$1
  shift
  "${pod[@]}" run --name "$prefix-node$i" --network "ns:/run/netns/$prefix-h$i" \
    --hostname "$prefix-h$i" "${add_hosts[@]}" "${ulimits[@]}" --shm-size 256m \
    -v "$data:/data:ro" -v "$runs:/runs" -v "$keys:/ssh" "$@"
}
run_node 2 -d "$cluster" sshd > /dev/null
run_node 3 -d "$cluster" sshd > /dev/null
echo "run_multi_container.sh: containers $prefix-node2 and $prefix-node3 serve ssh; starting the job in $prefix-node1"
t0=$SECONDS
status=0
run_node 1 --rm -e "CLUSTER_PEERS=${hosts[1]} ${hosts[2]}" "$cluster" launch \
  --hosts "$(IFS=,; echo "${hosts[*]}")" --ranks-per-node 1 --threads-per-rank 1 --bind none \
  --net "$subnet.0/24" --mca plm_rsh_no_tree_spawn 1 --mpirun-arg --report-bindings \
  -- train /opt/deeptrain/examples/deep_convnet_mnist.prototxt --epochs 1 --batch-size 90 \
  --train-limit $((90 * steps)) --test-limit 500 --json --run-dir /runs/multi || status=$?
echo "run_multi_container.sh: job ended with status $status after $((SECONDS - t0)) s; run directory $runs/multi"
exit "$status"
