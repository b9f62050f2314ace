#!/usr/bin/env bash
# Installs the Debian packages deeptrain builds and tests with. Idempotent: when everything is
# already installed it only checks (no apt-get update), so re-running is fast.
#   usage: scripts/install_deps.sh [--with-torch]   (--with-torch: PyTorch and torchvision, the
#   benchmarks' and the ONNX and transform tests' peers)
set -euo pipefail

# libonnx-dev: the ONNX schema (onnx.proto) compiled into the build; python3-onnx: the ONNX
# checker in tests/onnx/.
# ocl-icd-opencl-dev: oneDNN's CMake package (find_package(dnnl)) asks for OpenCL, the GPU
# runtime Debian builds it with, though deeptrain uses only its CPU engine.
PACKAGES=(build-essential cmake ninja-build pkg-config libopenblas-dev libprotobuf-dev
  libopenblas-openmp-dev protobuf-compiler libgtest-dev libcli11-dev libfmt-dev nlohmann-json3-dev zlib1g-dev
  libssl-dev libdnnl-dev ocl-icd-opencl-dev libopenmpi-dev openmpi-bin libpng-dev npm nodejs dataset-fashion-mnist
  python3-numpy shellcheck libonnx-dev python3-onnx libjpeg62-turbo-dev)

for arg in "$@"; do
  case "$arg" in
    --with-torch) PACKAGES+=(python3-torch python3-torchvision) ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "install_deps.sh: unknown option '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

# A name counts as present when installed or provided by an installed package (e.g. NodeSource's
# nodejs provides npm and conflicts with Debian's npm package).
declare -A present=()
while IFS='|' read -r status name provides; do
  [[ $status == ii* ]] || continue
  present[$name]=1
  IFS=',' read -ra names <<<"$provides"
  for n in "${names[@]}"; do n="${n%%(*}"; n="${n// /}"; [[ -n $n ]] && present[$n]=1; done
done < <(dpkg-query -W -f='${db:Status-Abbrev}|${Package}|${Provides}\n' 2>/dev/null)

missing=()
for p in "${PACKAGES[@]}"; do
  [[ -n "${present[$p]:-}" ]] || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install_deps.sh: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

if ((EUID == 0)); then
  SUDO=()
elif command -v sudo >/dev/null; then
  SUDO=(sudo)
else
  echo "install_deps.sh: missing ${missing[*]}; run as root or install sudo" >&2
  exit 1
fi
echo "install_deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update
"${SUDO[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
