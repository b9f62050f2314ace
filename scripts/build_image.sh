#!/usr/bin/env bash
# Builds the CPU image (docker/Dockerfile.cpu) without a Docker engine, with podman, and checks it
# by running a short 2-rank training inside it. Root only (chroot isolation, host networking).
#
#   scripts/build_image.sh [--tag NAME] [--storage DIR] [--base IMAGE] [--mirror URL]
#                          [--jobs N] [--data DIR] [--no-run] [--steps N]
#
#   --tag NAME      image name (default localhost/deeptrain:cpu)
#   --storage DIR   podman's image storage (default /var/tmp/deeptrain-podman); everything this
#                   script makes lives there, and `rm -rf DIR` undoes it
#   --base REPO:TAG the Debian 12 base image; default: made here once with
#                   `debootstrap --variant=minbase bookworm` and `podman import`, named
#                   localhost/debian:bookworm-debootstrap (no registry is reached)
#   --mirror URL    Debian mirror for debootstrap (default http://deb.debian.org/debian)
#   --jobs N        compile jobs inside the build (default: all cores)
#   --data DIR      data sets to mount at /data for the check run (default data/)
#   --steps N       training steps of the check run (default 4: --train-limit 100*N, batch 100)
#   --no-run        build only
#
# Podman without a daemon: builds use --isolation chroot and host networking (no network or
# user namespaces to set up), runs use --network host and explicit ulimits (podman would
# otherwise ask for the caller's hard limits, which a sandbox may refuse) and the runc runtime.
# Prints the build time, the image size and the check run's output. Exit status: 0 ok, 1 a
# step failed, 2 usage or a missing tool.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tag=localhost/deeptrain:cpu
storage=/var/tmp/deeptrain-podman
base=""
mirror=http://deb.debian.org/debian
jobs=0
data="$here/data"
run=1
steps=4

die() { echo "build_image.sh: $*" >&2; exit "${2:-1}"; }
usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    --storage) storage=${2:?--storage needs a value}; shift 2 ;;
    --base) base=${2:?--base needs a value}; shift 2
      [[ $base == *:* ]] || die "--base '$base': expected REPO:TAG" 2 ;;
    --mirror) mirror=${2:?--mirror needs a value}; shift 2 ;;
    --jobs) jobs=${2:?--jobs needs a value}; shift 2 ;;
    --data) data=${2:?--data needs a value}; shift 2 ;;
    --steps) steps=${2:?--steps needs a value}; shift 2 ;;
    --no-run) run=0; shift ;;
    -h | --help) usage 0 ;;
    *) echo "build_image.sh: unknown option '$1'" >&2; usage 2 >&2 ;;
  esac
done
[[ $jobs =~ ^[0-9]+$ ]] || die "--jobs '$jobs': not a number" 2
[[ $steps =~ ^[1-9][0-9]*$ ]] || die "--steps '$steps': not a positive number" 2
[[ $(id -u) == 0 ]] || die "needs root (podman with chroot isolation and host networking)" 2
command -v podman > /dev/null || die "podman not found: apt-get install podman" 2

# Explicit limits, for the build and the run alike: this shell's hard limit of open files, and
# at most 32768 processes (podman runs with that RLIMIT_NPROC whatever the shell's, and asking
# the container for more fails with "operation not permitted").
nofile=$(ulimit -Hn); nproc_limit=$(ulimit -Hu)
[[ $nofile == unlimited || $nofile -gt 1048576 ]] && nofile=1048576
[[ $nproc_limit == unlimited || $nproc_limit -gt 32768 ]] && nproc_limit=32768
ulimits=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc_limit:$nproc_limit")
# runc, not podman's default crun: crun refuses to start containers on a host whose cgroups are
# in hybrid mode (v1 controllers plus an empty v2 hierarchy), as this project's machines are.
command -v runc > /dev/null || die "runc not found: apt-get install runc" 2
pod=(podman --root "$storage/root" --runroot "$storage/run" --storage-driver overlay
  --cgroup-manager cgroupfs --events-backend file --runtime "$(command -v runc)")
mkdir -p "$storage"

if [[ -z $base ]]; then
  base=localhost/debian:bookworm-debootstrap
  if ! "${pod[@]}" image exists "$base"; then
    command -v debootstrap > /dev/null || die "debootstrap not found: apt-get install debootstrap" 2
    rootfs="$storage/rootfs.$$"
    trap 'rm -rf "$rootfs"' EXIT
    echo "build_image.sh: debootstrap bookworm from $mirror into $rootfs"
    t0=$SECONDS
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > "$storage/debootstrap.log" 2>&1 ||
      die "debootstrap failed; see $storage/debootstrap.log"
    # As in Debian's own images: the release, its updates and the security archive.
    rm -f "$rootfs/etc/apt/sources.list"
    cat > "$rootfs/etc/apt/sources.list.d/debian.sources" << EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | "${pod[@]}" import --change 'CMD ["/bin/bash"]' - "$base" > /dev/null
    rm -rf "$rootfs"
    trap - EXIT
    echo "build_image.sh: base image $base made in $((SECONDS - t0)) s"
  fi
fi

echo "build_image.sh: building $tag from docker/Dockerfile.cpu on $base"
t0=$SECONDS
"${pod[@]}" build --format docker --isolation chroot --network host "${ulimits[@]}" \
  --build-arg "DEBIAN_REPO=${base%:*}" --build-arg "DEBIAN_TAG=${base##*:}" --build-arg "BUILD_JOBS=$jobs" \
  -f "$here/docker/Dockerfile.cpu" -t "$tag" "$here"
build_s=$((SECONDS - t0))
size=$("${pod[@]}" image inspect --format '{{.Size}}' "$tag")
user=$("${pod[@]}" image inspect --format '{{.Config.User}}' "$tag")
echo "build_image.sh: built $tag in ${build_s} s; image size $((size / 1000000)) MB; user '$user'"
[[ -n $user && $user != root && $user != 0 ]] || die "image $tag runs as root by default"

[[ $run == 1 ]] || exit 0
[[ -e $data/mnist ]] || die "no MNIST in $data/mnist for the check run (scripts/fetch_data.sh, or --data DIR)"
data=$(cd "$data" && pwd -P)
runs=$(mktemp -d /var/tmp/deeptrain-image-runs.XXXXXX)
chmod 0777 "$runs"  # the image's user (uid 1000) writes the run directory there
echo "build_image.sh: check run: mpirun -np 2 in the image as its default user, $steps steps"
t0=$SECONDS
"${pod[@]}" run --rm --network host "${ulimits[@]}" \
  -v "$data:/data:ro" -v "$runs:/runs" "$tag" \
  mpirun -np 2 --oversubscribe deeptrain train /opt/deeptrain/examples/deep_convnet_mnist.prototxt \
  --epochs 1 --batch-size 100 --train-limit $((100 * steps)) --test-limit 500 --threads 1 \
  --run-dir /runs/check
echo "build_image.sh: check run finished in $((SECONDS - t0)) s; run directory $runs/check:"
ls "$runs/check"
